"""The debugger's statistics on a real small network: gradient and weight norms, the update/weight ratio
(checked against plain SGD's arithmetic), dead ReLUs, non-finite values, frozen layers skipped, sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from observability import tensor_stats


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid())


def train(model: nn.Module, stats: tensor_stats.TensorStats, steps: int, lr: float = 0.1) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    stats.attach(model)
    generator = torch.Generator().manual_seed(1)
    for global_step in range(1, steps + 1):
        x, y = torch.randn(32, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        step = SimpleNamespace(global_step=global_step, epoch=0, loss=loss.item())  # StepInfo: 0-based epoch
        stats.on_step_end(SimpleNamespace(model=model), step)
    stats.detach()


def test_norms_and_the_update_ratio_match_plain_sgd():
    model = network()
    stats = tensor_stats.TensorStats(interval=5)
    train(model, stats, steps=10, lr=0.1)
    assert [r["global_step"] for r in stats.records] == [1, 5, 10]
    record = stats.records[-1]
    assert set(record["params"]) == {f"{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")}
    for entry in record["params"].values():
        # plain SGD: w_t - w_{t-1} = -lr * grad, so the update norm is lr x the gradient norm
        previous = entry["weight_norm"]  # close enough to the norm before a small step for the bound below
        assert entry["update_ratio"] == pytest.approx(0.1 * entry["grad_norm"] / previous, rel=0.05)
        assert entry["grad_nonfinite"] == entry["weight_nonfinite"] == 0
    assert set(record["activations"]) == {"1", "3", "5"}
    assert 0 <= record["activations"]["1"]["zero_fraction"] <= 1
    assert "saturated_fraction" in record["activations"]["5"]
    assert record["loss"] > 0


def test_dead_relu_non_finite_values_and_frozen_layers():
    model = network()
    with torch.no_grad():
        model[2].bias.fill_(-100.0)  # the second ReLU never fires: dead
    model[0].requires_grad_(False)  # a frozen layer: no hooks, no statistics, no failure
    stats = tensor_stats.TensorStats(interval=1)
    train(model, stats, steps=2)
    record = stats.records[-1]
    assert record["activations"]["3"]["zero_fraction"] == 1.0
    assert record["activations"]["3"]["dead_fraction"] == 1.0 and record["activations"]["3"]["kind"] == "ReLU"
    assert record["activations"]["3"]["std"] == 0.0
    assert not any(name.startswith("0.") for name in record["params"])
    assert record["params"]["2.weight"]["grad_norm"] == 0.0  # no gradient flows through a dead ReLU

    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    stats = tensor_stats.TensorStats(interval=1)
    train(model, stats, steps=1)
    assert stats.records[0]["params"]["4.weight"]["weight_nonfinite"] >= 1
    assert stats.records[0]["activations"]["5"]["nonfinite"] > 0


def test_collections_can_be_narrowed():
    model = network()
    stats = tensor_stats.TensorStats(interval=1, collections=frozenset({"gradients"}))
    train(model, stats, steps=1)
    record = stats.records[0]
    assert record["activations"] == {} and "loss" not in record
    assert all(
        set(entry) == {"numel", "grad_norm", "grad_mean_abs", "grad_nonfinite"} for entry in record["params"].values()
    )


def test_activation_statistics_match_the_tensors_they_summarise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Sigmoid())
    stats = tensor_stats.TensorStats(interval=1)
    stats.attach(model)
    x = torch.randn(16, 3, 20, 20)
    with torch.no_grad():
        relu_out = model[1](model[0](x))
        sigmoid_out = model(x)
    model(x).sum().backward()
    stats.on_step_end(SimpleNamespace(model=model), SimpleNamespace(global_step=1, epoch=0, loss=1.0))
    relu, sigmoid = stats.records[0]["activations"]["1"], stats.records[0]["activations"]["3"]
    assert relu["mean"] == pytest.approx(float(relu_out.mean()), rel=1e-5)
    assert relu["std"] == pytest.approx(float(relu_out.std()), rel=1e-4)
    sample = relu_out[: tensor_stats.SAMPLE_ITEMS]  # zeros are counted on the first items of the batch
    assert relu["zero_fraction"] == pytest.approx(float((sample == 0).float().mean()))
    assert relu["dead_fraction"] == float((relu_out.amax(dim=(0, 2, 3)) <= 0).float().mean())
    assert sigmoid["std"] == pytest.approx(float(sigmoid_out.std()), rel=1e-4) and sigmoid["nonfinite"] == 0


def test_each_collection_can_have_its_own_interval():
    model = network()
    stats = tensor_stats.TensorStats(interval=5, intervals={"activations": 2})
    train(model, stats, steps=6)
    assert [r["global_step"] for r in stats.records] == [1, 2, 4, 5, 6]  # step 1 always records everything
    with_activations = [r["global_step"] for r in stats.records if r["activations"]]
    with_gradients = [r["global_step"] for r in stats.records if r["params"]]
    assert with_activations == [1, 2, 4, 6] and with_gradients == [1, 5]
    assert all("grad_norm" in entry for r in stats.records if r["params"] for entry in r["params"].values())


def test_activations_in_eval_mode_modules_are_recorded_but_validation_passes_are_not():
    model = network()
    model[1].eval()  # what freezing timm's BatchNormAct2d does to the activation inside it
    stats = tensor_stats.TensorStats(interval=1)
    train(model, stats, steps=1)
    assert "1" in stats.records[0]["activations"]

    stats = tensor_stats.TensorStats(interval=1)
    stats.attach(model, next_step=1)  # armed for step 1, then validation runs first
    with torch.inference_mode():
        model(torch.randn(4, 8))
    record = stats.after_step(model, SimpleNamespace(global_step=1, epoch=0, loss=1.0))
    assert record["activations"] == {}
