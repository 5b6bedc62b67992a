"""Unit tests of train.py's parts: options (SageMaker env), architectures, recipe, exact evaluation, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import math
import urllib.error

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import architectures
import checkpoints
import ddp
import evaluation
import imaging
import options
import recipe
import trainer

TINY = "timm/test_efficientnet"
SINGLE = ddp.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


# -- options -------------------------------------------------------------------------------------------------
def test_local_defaults_and_recipe_fill_unset_flags():
    opts = options.parse_options(["--data", "d"], env={})
    assert opts.model == "resnet50" and opts.weights == "imagenet"
    assert (opts.optimizer, opts.scheduler, opts.unfreeze_epoch) == ("adamw", "cosine", 1)
    assert opts.package is True and str(opts.model_dir) == "out/train/model"
    naive = options.parse_options(["--data", "d", "--recipe", "naive"], env={})
    assert (naive.scheduler, naive.unfreeze_epoch, naive.backbone_lr_ratio, naive.label_smoothing) == (
        "constant",
        -1,
        0.0,
        0.0,
    )
    # A flag given explicitly wins over its recipe.
    assert options.parse_options(["--data", "d", "--recipe", "naive", "--lr", "0.01"], env={}).lr == 0.01


def test_batchnorm_statistics_are_kept_by_default_only_for_pretrained_weights():
    assert options.parse_options(["--data", "d"], env={}).freeze_bn is True  # imagenet
    assert options.parse_options(["--data", "d", "--weights", "w.pth"], env={}).freeze_bn is True
    assert options.parse_options(["--data", "d", "--weights", "none"], env={}).freeze_bn is False
    assert options.parse_options(["--data", "d", "--weights", "none", "--freeze-bn", "true"], env={}).freeze_bn


def test_sagemaker_environment_and_string_booleans():
    env = {
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_CHANNEL_VALID": "/opt/ml/input/data/valid",
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    }
    opts = options.parse_options(["--epochs", "4", "--channels-last", "False", "--verify-images", "true"], env=env)
    assert str(opts.train) == "/opt/ml/input/data/train" and str(opts.valid) == "/opt/ml/input/data/valid"
    assert opts.test is None and opts.data is None
    assert str(opts.model_dir) == "/opt/ml/model" and str(opts.output_data_dir) == "/opt/ml/output/data"
    assert str(opts.checkpoint_dir) == "/opt/ml/checkpoints"
    assert str(opts.tensorboard_dir) == "/opt/ml/output/tensorboard"  # where SageMaker collects it
    elsewhere = options.parse_options([], env={**env, "SM_MODEL_DIR": "/tmp/job/model"})
    assert str(elsewhere.tensorboard_dir) == "/tmp/job/output/tensorboard"  # never the machine's real /opt/ml
    assert str(elsewhere.checkpoint_dir) == "/tmp/job/checkpoints"
    assert opts.package is False  # SageMaker tars SM_MODEL_DIR itself
    assert opts.channels_last is False and opts.verify_images is True and opts.epochs == 4
    single = options.parse_options([], env={"SM_CHANNEL_TRAINING": "/opt/ml/input/data/training", **env})
    assert str(single.data) == "/opt/ml/input/data/training"


@pytest.mark.parametrize(
    "argv",
    [[], ["--data", "d", "--epochs", "0"], ["--data", "d", "--lr", "-1"], ["--data", "d", "--amp", "maybe"]],
)
def test_bad_options_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        options.parse_options(argv, env={})
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_sagemaker_style_underscored_hyperparameter_names_are_accepted():
    opts = options.parse_options(["--data", "d", "--batch_size", "16", "--label_smoothing=0.2"], env={})
    assert opts.batch_size == 16 and opts.label_smoothing == 0.2


def test_str2bool_rejects_nonsense():
    assert options.str2bool("True") and not options.str2bool("0")
    with pytest.raises(Exception, match="expected true or false"):
        options.str2bool("perhaps")


# -- architectures -------------------------------------------------------------------------------------------
def test_preprocessing_comes_from_the_weights_config():
    lite0 = architectures.default_preprocessing("timm/tf_efficientnet_lite0")
    assert (lite0.resize, lite0.crop, lite0.interpolation, lite0.mean, lite0.std) == (
        256,
        224,
        "bicubic",
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    )
    resnet = architectures.default_preprocessing("resnet50")  # IMAGENET1K_V2: resize 232, bilinear
    assert (resnet.resize, resnet.crop, resnet.interpolation) == (232, 224, "bilinear")
    assert resnet.mean == pytest.approx(imaging.IMAGENET_MEAN)


@pytest.mark.parametrize(("name", "head"), [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"), (TINY, None)])
def test_models_by_name_get_a_new_head(name, head):
    model = architectures.build_model(name, 5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    backbone, head_params = architectures.split_parameters(model)
    assert head_params and backbone
    assert all(p.shape[0] == 5 for p in head_params)
    if head:
        assert architectures.head_module(model) is model.get_submodule(head)


def test_unknown_model_names_the_choices():
    with pytest.raises(architectures.UnknownArchitecture, match="timm/<name>"):
        architectures.build_model("resnet5000", 3)
    with pytest.raises(architectures.UnknownArchitecture, match="unknown model"):
        architectures.build_model("timm/no_such_net", 3)
    with pytest.raises(architectures.UnknownArchitecture, match="auxiliary heads"):
        architectures.build_model("inception_v3", 3)


def test_offline_imagenet_weights_fail_with_the_weights_path_hint(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(architectures.WeightsUnavailable, match=r"--weights PATH"):
        architectures.build_model("resnet18", 3, "imagenet")


def test_local_state_dict_loads_the_backbone_and_keeps_a_new_head(tmp_path):
    pretrained = architectures.build_model(TINY, 1000)  # an "ImageNet" checkpoint: 1000-class head
    path = tmp_path / "imagenet.pth"
    torch.save({f"module.{k}": v for k, v in pretrained.state_dict().items()}, path)  # DDP-prefixed keys
    model = architectures.build_model(TINY, 3, str(path))
    theirs, ours = pretrained.state_dict(), model.state_dict()
    head_keys = {k for k in ours if ours[k].shape != theirs[k].shape}
    assert head_keys and all(k.startswith("head.fc") or "classifier" in k for k in head_keys)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in head_keys)


def test_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(architectures.build_model("resnet18", 3).state_dict(), path)
    with pytest.raises(architectures.WeightsUnavailable, match="does not fit"):
        architectures.build_model(TINY, 3, str(path))
    with pytest.raises(architectures.WeightsUnavailable, match="no such file"):
        architectures.build_model(TINY, 3, str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(architectures.WeightsUnavailable, match="not a loadable state dict"):
        architectures.build_model(TINY, 3, str(tmp_path / "junk.pth"))


def test_trivialaugment_works_with_bicubic_preprocessing():
    from PIL import Image

    pre = architectures.default_preprocessing("timm/tf_efficientnet_lite0")  # bicubic
    transform = imaging.train_transform(pre, augment="trivialaugment")
    image = Image.new("RGB", (300, 260), (120, 80, 40))
    torch.manual_seed(0)
    for _ in range(40):  # each call draws another operation; bicubic rotations used to fail about half the time
        assert transform(image).shape == (3, 224, 224)


# -- recipe --------------------------------------------------------------------------------------------------
def test_warmup_then_cosine_to_zero():
    factors = [recipe.lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] < 0.01
    assert recipe.lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert {recipe.lr_factor(s, 100, 0, "constant") for s in range(100)} == {1.0}


def test_parameter_groups_give_the_backbone_its_ratio_and_skip_decay_on_1d_params():
    model = architectures.build_model("resnet18", 4)
    optimizer = recipe.make_optimizer(model, "adamw", lr=1e-2, backbone_lr_ratio=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-2) and groups["backbone"]["lr"] == pytest.approx(1e-3)
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["backbone_no_decay"]["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert isinstance(recipe.make_optimizer(model, "sgd", 0.1, 0.1, 0.0), torch.optim.SGD)


def test_staged_unfreezing_keeps_a_frozen_backbone_and_its_batchnorm_stats():
    assert not recipe.backbone_trainable(0, 1) and recipe.backbone_trainable(1, 1)
    assert not recipe.backbone_trainable(50, -1) and recipe.backbone_trainable(0, 0)
    model = architectures.build_model("resnet18", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe.set_backbone_trainable(model, False)
    model.train()
    recipe.freeze_backbone_norms(model)
    optimizer = recipe.make_optimizer(model, "adamw", 1e-2, 1.0, 0.05)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # weights, BN running stats and num_batches_tracked untouched


# -- evaluation ----------------------------------------------------------------------------------------------
class _Fixed(nn.Module):
    def forward(self, x):
        return x


def test_evaluation_averages_per_sample_whatever_the_batch_size():
    torch.manual_seed(0)
    logits, targets = torch.randn(23, 4), torch.randint(0, 4, (23,))
    expected_loss = nn.functional.cross_entropy(logits, targets).item()
    expected_accuracy = (logits.argmax(1) == targets).float().mean().item()
    results = []
    for batch_size in (1, 4, 7, 23):
        loader = DataLoader(TensorDataset(logits, targets), batch_size=batch_size)
        results.append(evaluation.evaluate(_Fixed(), loader, 4, torch.device("cpu")))
    for result in results:
        assert result.loss == pytest.approx(expected_loss, rel=1e-6)
        assert result.accuracy == pytest.approx(expected_accuracy)
        assert result.count == 23 and int(result.confusion.sum()) == 23
    # The bug this guards against: the mean of batch means differs when the last batch is short.
    batch_means = [nn.functional.cross_entropy(logits[i : i + 7], targets[i : i + 7]).item() for i in range(0, 23, 7)]
    assert sum(batch_means) / len(batch_means) != pytest.approx(expected_loss, rel=1e-3)


def test_confusion_matrix_and_per_class_accuracy():
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    targets = torch.tensor([0, 1, 1, 2])
    result = evaluation.evaluate(_Fixed(), DataLoader(TensorDataset(logits, targets), batch_size=3), 3, SINGLE.device)
    assert result.confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert result.per_class_accuracy(["a", "b", "c"]) == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert result.accuracy == 0.75


# -- samplers, checkpoints, metric lines ---------------------------------------------------------------------
def test_epoch_shuffle_depends_only_on_seed_and_epoch_and_shards_cover_a_global_batch():
    one = ddp.EpochShuffleSampler(12, SINGLE, seed=3)
    one.set_epoch(2)
    order = list(one)
    again = ddp.EpochShuffleSampler(12, SINGLE, seed=3)
    again.set_epoch(2)
    assert list(again) == order and sorted(order) == list(range(12))
    again.set_epoch(3)
    assert list(again) != order
    shards = []
    for rank in (0, 1):
        sampler = ddp.EpochShuffleSampler(12, ddp.World(rank, 2, rank, torch.device("cpu")), seed=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    # With a per-process batch of 3, global batch k of two processes == batch k of one process with batch 6.
    for k in range(2):
        assert sorted(shards[0][3 * k : 3 * k + 3] + shards[1][3 * k : 3 * k + 3]) == sorted(order[6 * k : 6 * k + 6])
    # A last batch of a single image (train-mode BatchNorm cannot take it) is left out; others are kept.
    assert [len(ddp.EpochShuffleSampler(n, SINGLE, 0, batch_size=8)) for n in (17, 16, 9, 8, 1)] == [16, 16, 8, 8, 1]
    evals = [list(ddp.ShardSampler(7, ddp.World(r, 2, r, torch.device("cpu")))) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == list(range(7))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    checkpoints.save_atomic({"identity": {"model": "resnet50", "labels": ["a", "b"]}}, tmp_path / checkpoints.LAST)
    assert checkpoints.load_last(tmp_path, {"model": "resnet50", "labels": ["a", "b"]}) is not None
    with pytest.raises(checkpoints.CheckpointMismatch, match="labels"):
        checkpoints.load_last(tmp_path, {"model": "resnet50", "labels": ["a", "c"]})
    assert checkpoints.load_last(tmp_path / "empty", {}) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_metric_lines_match_sagemaker_metric_definitions():
    import re

    line = trainer.metric_line({"epoch": 3, "valid_accuracy": 0.871, "lr": 0.000123, "backbone_trainable": True})
    assert line == "epoch=3; valid_accuracy=0.8710; lr=0.000123;"
    assert float(re.search(r"valid_accuracy=([0-9\.]+);", line).group(1)) == 0.871
    assert math.isclose(float(re.search(r"lr=([0-9\.e\-]+);", line).group(1)), 0.000123)


def test_the_plan_is_read_from_the_options_of_its_names_and_every_field_guards_a_resume():
    opts = options.parse_options(["--data", "x", "--lr", "0.123", "--epochs", "7", "--freeze-bn", "on"], env={})
    plan = trainer.Plan.from_options(opts, steps_per_epoch=5)
    assert (plan.lr, plan.epochs, plan.freeze_bn, plan.steps_per_epoch) == (0.123, 7, True, 5)
    planned = {f.name for f in dataclasses.fields(trainer.Plan)} - {"steps_per_epoch"}
    assert planned <= set(options.RESUME_KEYS)  # a checkpoint never resumes under another plan
