"""Distributed data parallel plumbing: one process, or many under ``torchrun`` (what SageMaker's torch_distributed
launches). gloo on CPU, nccl on GPU; the same calls are no-ops in a single process.

    torchrun --nproc_per_node 2 training/train.py --data DIR     # two processes on one machine
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(prefer_cuda: bool = True) -> World:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = prefer_cuda and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    return World(rank=rank, size=size, local_rank=local_rank, device=device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across processes (in place), for exact per-sample metrics over sharded evaluation."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) everywhere, so every rank evaluates the model it saves.

    DDP copies buffers from rank 0 only before each forward pass: after the last training step each rank
    holds its own statistics."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def broadcast_flag(flag: bool, world: World) -> bool:
    """Rank 0's decision (early stop, a rule's stop) for every process."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1 if flag else 0], device=world.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


class ShardSampler(Sampler[int]):
    """Every index exactly once across processes (no padding, unlike DistributedSampler): exact evaluation."""

    def __init__(self, length: int, world: World):
        self.indices = list(range(world.rank, length, world.size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), sharded across processes.

    The order of an epoch depends only on the seed and the epoch number, so a run resumed from a checkpoint
    sees exactly the batches an uninterrupted run sees. With several processes each gets an equal share
    (the shortest share sets the length, so no process waits on a missing batch). A last batch that would
    hold a single image is left out (a different one each epoch).
    """

    def __init__(self, length: int, world: World, seed: int, batch_size: int = 0):
        self.length, self.world, self.seed, self.epoch = length, world, seed, 0
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        share = order[self.world.rank :: self.world.size]
        return iter(share[: len(self)])

    def __len__(self) -> int:
        share = self.length // self.world.size
        if self.batch_size > 1 and share > 1 and share % self.batch_size == 1:
            share -= 1  # a last batch of one image breaks train-mode BatchNorm: leave it out this epoch
        return share
