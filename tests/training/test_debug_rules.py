"""The debugger's rules fire on planted faults and stay quiet on healthy training.

The tensor rules read real TensorStats records of a small network trained here (healthy, zeroed, dead ReLUs,
a huge learning rate, skipped fp16-style steps); the loss, epoch and class rules read step losses and epoch
rows shaped as the trainer produces them. Plus the rule specs (--debugger-rules) and the verdicts."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import architectures
from observability import debug_rules, rule_spec, tensor_stats

LABELS = ["beagle", "husky", "poodle"]
TEACHER = torch.Generator().manual_seed(0)
TEACHER_WEIGHTS = torch.randn(8, 3, generator=TEACHER)  # labels = argmax(x @ W): a task a small MLP can learn


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than two that wait on each other (on a busy machine, 3x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(*, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(32)] if batch_norm else []
    return nn.Sequential(nn.Linear(8, 32), *norm, nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


@dataclass
class Run:
    """What the debugger sees of a training run: step losses, TensorStats records, epoch rows, class counts."""

    losses: list[float] = field(default_factory=list)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    classes: list[dict[str, list[Any]]] = field(default_factory=list)
    steps_per_epoch: int = 40


def train(
    model: nn.Module,
    steps: int = 120,
    lr: float = 3e-3,
    interval: int = 5,
    optimizer: str = "adam",
    steps_per_epoch: int = 40,
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    before_step: Callable[[nn.Module, int], None] | None = None,
) -> Run:
    """Train on the teacher's task with batch 8, as the trainer does, keeping what the debugger is fed."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    stats = tensor_stats.TensorStats(interval=interval)
    stats.attach(model)
    generator = torch.Generator().manual_seed(1)
    valid_x = torch.randn(64, 8, generator=generator)
    run = Run(steps_per_epoch=steps_per_epoch)
    seen, wrong, epoch_losses = [0, 0, 0], [0, 0, 0], []
    for global_step in range(1, steps + 1):
        x = torch.randn(8, 8, generator=generator)
        y = (x @ TEACHER_WEIGHTS).argmax(dim=1)
        model.train()
        logits = model(inputs(x) if inputs else x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if before_step:
            before_step(model, global_step)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        epoch = (global_step - 1) // steps_per_epoch  # 0-based, as StepInfo has it
        run.losses.append(loss.item())
        stats.on_step_end(
            SimpleNamespace(model=model), SimpleNamespace(global_step=global_step, epoch=epoch, loss=loss.item())
        )
        if stats.records and stats.records[-1]["global_step"] == global_step:
            run.records[global_step] = stats.records[-1]
        epoch_losses.append(loss.item())
        for label, predicted in zip(y.tolist(), logits.argmax(dim=1).tolist(), strict=True):
            seen[label] += 1
            wrong[label] += predicted != label
        if global_step % steps_per_epoch == 0:
            model.eval()
            with torch.no_grad():
                valid_loss = nn.functional.cross_entropy(model(valid_x), (valid_x @ TEACHER_WEIGHTS).argmax(dim=1))
            run.rows.append(epoch_row(epoch + 1, sum(epoch_losses) / len(epoch_losses), valid_loss.item()))
            run.classes.append({"labels": LABELS, "seen": seen, "wrong": wrong})
            seen, wrong, epoch_losses = [0, 0, 0], [0, 0, 0], []
    stats.detach()
    return run


def epoch_row(epoch: int, train_loss: float, valid_loss: float) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": 0.0,
        "valid_loss": valid_loss,
        "valid_accuracy": 0.0,
        "lr": 1e-3,
        "backbone_trainable": True,
        "epoch_seconds": 1.0,
        "best_valid_accuracy": 0.0,
    }


def replay(rules: list[debug_rules.Rule], run: Run) -> list[tuple[str, debug_rules.Finding]]:
    """Feed the rules as the debugger does: each step's loss, then its record, then the epoch's row."""
    findings = []

    def collect(rule: debug_rules.Rule, finding: debug_rules.Finding | None) -> None:
        if finding is not None:
            findings.append((rule.name, finding))

    for index, loss in enumerate(run.losses):
        global_step = index + 1
        epoch = index // run.steps_per_epoch + 1
        for rule in rules:
            collect(rule, rule.on_step(global_step, epoch, loss))
        if global_step in run.records:
            for rule in rules:
                collect(rule, rule.on_record(run.records[global_step]))
        if global_step % run.steps_per_epoch == 0 and epoch <= len(run.rows):
            for rule in rules:
                collect(rule, rule.on_epoch(run.rows[epoch - 1], run.classes[epoch - 1]))
    return findings


def rule(name: str, spec: str = "default") -> debug_rules.Rule:
    (only,) = [r for r in debug_rules.build_rules(spec) if r.name == name]
    return only


def first(findings: list[tuple[str, debug_rules.Finding]], name: str) -> debug_rules.Finding:
    matching = [finding for rule_name, finding in findings if rule_name == name]
    assert matching, f"{name} did not fire; fired: {sorted({n for n, _ in findings})}"
    return matching[0]


# -- specs -----------------------------------------------------------------------------------------------
def test_the_catalogue_names_sagemakers_rules_with_their_parameters():
    assert list(debug_rules.CATALOGUE) == [
        "exploding_tensor",
        "vanishing_gradient",
        "poor_weight_initialization",
        "loss_not_decreasing",
        "overfit",
        "overtraining",
        "class_imbalance",
        "dead_relu",
    ]
    actions = {name: action for name, (action, _) in debug_rules.CATALOGUE.items()}
    assert actions.pop("exploding_tensor") == "stop" and set(actions.values()) == {"log"}
    thresholds = {name: defaults for name, (_, defaults) in debug_rules.CATALOGUE.items()}
    assert thresholds["exploding_tensor"]["threshold"] == 1e20
    assert thresholds["vanishing_gradient"]["threshold"] == 1e-7
    assert {"num_steps", "diff_percent", "increase_threshold_percent"} <= set(thresholds["loss_not_decreasing"])
    assert {"ratio_threshold", "patience", "start_step"} <= set(thresholds["overfit"])
    assert {"patience_train", "patience_validation", "delta"} == set(thresholds["overtraining"])
    assert {"threshold", "distribution_range", "patience", "steps"} == set(thresholds["poor_weight_initialization"])
    assert thresholds["class_imbalance"]["threshold_imbalance"] == 10
    assert thresholds["class_imbalance"]["threshold_misprediction"] == 0.7
    assert thresholds["dead_relu"]["threshold_layer"] == 50
    for name, (_, defaults) in debug_rules.CATALOGUE.items():
        assert all(isinstance(value, float) for value in defaults.values()), name


def test_build_rules_reads_a_spec():
    rules = debug_rules.build_rules("")
    assert [r.name for r in rules] == list(debug_rules.CATALOGUE)
    assert [r.name for r in debug_rules.build_rules("default")] == list(debug_rules.CATALOGUE)
    assert debug_rules.build_rules("none") == []
    (overfit,) = debug_rules.build_rules("none,overfit=stop,overfit.ratio_threshold=2.5")
    assert isinstance(overfit, debug_rules.Overfit)
    assert overfit.action == "stop" and overfit.thresholds["ratio_threshold"] == 2.5
    assert overfit.thresholds["patience"] == debug_rules.CATALOGUE["overfit"][1]["patience"]
    names = [r.name for r in debug_rules.build_rules("exploding_tensor=log,dead_relu=off")]
    assert "dead_relu" not in names and rule("exploding_tensor", "exploding_tensor=log").action == "log"
    assert rule("dead_relu", "dead_relu.patience=5").thresholds["patience"] == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("exploding_tensors", "unknown rule 'exploding_tensors'"),
        ("overfit.ratio=2", "overfit has no threshold 'ratio'"),
        ("overfit.patience=two", "needs a number"),
        ("overfit=maybe", "the action must be one of"),
        ("dead_relu.patience=0", "dead_relu.patience=0: must be at least 1"),
        ("loss_not_decreasing.num_steps=2.5", "must be a whole number"),
        ("overfit.ratio_threshold=-1", "must be a finite number >= 0"),
        ("vanishing_gradient.threshold=nan", "must be a finite number >= 0"),
        ("overfit,none", "'none' must come first"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str):
    with pytest.raises(rule_spec.RuleSpecError, match=message.replace("(", r"\(")):
        debug_rules.build_rules(spec)


# -- healthy training: nothing fires ---------------------------------------------------------------------
def test_a_healthy_run_fires_no_rule_and_every_verdict_says_what_it_checked():
    run = train(mlp(), steps=120, lr=3e-3, interval=5)
    assert run.rows[0]["train_loss"] > 0.9 and run.rows[-1]["train_loss"] < 0.4  # 3 epochs x 40 steps, 1.0 -> 0.3
    rules = debug_rules.build_rules("default")
    assert replay(rules, run) == []
    verdicts = {v["rule"]: v for v in (r.verdict() for r in rules)}
    assert {v["status"] for v in verdicts.values()} == {"ok"}
    for verdict in verdicts.values():
        assert verdict["source"] == "debugger" and verdict["count"] == 0 and verdict["step"] is None
        assert verdict["recommendation"].count("--") >= 1 and any(ch.isdigit() for ch in verdict["evidence"])
    assert "largest gradient norm" in verdicts["exploding_tensor"]["evidence"]
    assert "smallest gradient mean-abs" in verdicts["vanishing_gradient"]["evidence"]
    assert "activation std" in verdicts["poor_weight_initialization"]["evidence"]
    assert "windows of 25 steps" in verdicts["loss_not_decreasing"]["evidence"]
    assert "training labels per class" in verdicts["class_imbalance"]["evidence"]
    assert "ReLU layers" in verdicts["dead_relu"]["evidence"]
    assert verdicts["overfit"]["thresholds"] == debug_rules.CATALOGUE["overfit"][1]


def test_one_odd_tensor_does_not_make_gradients_vanish():
    # A bias right before a BatchNorm gets no gradient (the norm removes it): one tensor of six.
    run = train(mlp(batch_norm=True), steps=20, interval=1)
    smallest = min(run.records[20]["params"].items(), key=lambda item: item[1]["grad_mean_abs"])
    assert smallest[0] == "0.bias" and smallest[1]["grad_mean_abs"] < 1e-7
    vanishing = rule("vanishing_gradient")
    assert replay([vanishing], run) == []
    verdict = vanishing.verdict()
    assert verdict["status"] == "ok" and "(0.bias, step" in verdict["evidence"]


def test_a_zero_new_head_on_a_real_backbone_is_not_a_poor_initialisation():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    architectures.init_head(model, "zero")  # --head-init zero: every backbone gradient is 0 at step 1
    run = train(model, steps=6, interval=1, lr=1e-3, inputs=lambda x: x.repeat(1, 96).reshape(8, 3, 16, 16))
    assert sum(p["grad_mean_abs"] == 0 for p in run.records[1]["params"].values()) > 0.9 * len(run.records[1]["params"])
    rules = debug_rules.build_rules("none,poor_weight_initialization,vanishing_gradient,dead_relu,exploding_tensor")
    assert replay(rules, run) == []
    verdicts = {r.name: r.verdict() for r in rules}
    assert verdicts["dead_relu"]["status"] == "not_applicable"  # SiLU: nothing can die
    assert verdicts["poor_weight_initialization"]["status"] == "ok"
    # Still all zeros (a warmup that starts at lr 0 leaves it so), but with a gradient: it will move.
    head = run.records[1]["params"]["classifier.weight"]
    assert head["grad_mean_abs"] > 0
    still_zero = run.records[1] | {
        "params": run.records[1]["params"] | {"classifier.weight": head | {"weight_norm": 0.0}}
    }
    assert rule("poor_weight_initialization").on_record(still_zero) is None


# -- planted faults --------------------------------------------------------------------------------------
def test_a_zeroed_network_is_a_poor_initialisation_with_vanishing_gradients_dead_relus_and_a_flat_loss():
    model = mlp()
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    run = train(model, steps=80, interval=1)
    rules = debug_rules.build_rules("default")
    findings = replay(rules, run)

    init = first(findings, "poor_weight_initialization")
    assert (init.step, init.epoch, init.tensor) == (1, 1, "0.weight")
    assert "3 of 3 weight tensors are all zeros with a zero gradient" in init.evidence
    vanishing = first(findings, "vanishing_gradient")
    assert vanishing.step == 2 and vanishing.tensor == "0.weight"  # patience 2: the second sampled step
    assert "5 of 6 trainable tensors (83%)" in vanishing.evidence
    dead = first(findings, "dead_relu")
    assert (dead.step, dead.tensor) == (3, "1") and "100% of the units of 1 (ReLU)" in dead.evidence
    flat = first(findings, "loss_not_decreasing")
    assert flat.step == 75 and flat.tensor == "loss"  # windows 2 and 3 of 25 steps: no progress from the start
    assert "below the first window's 1.09" in flat.evidence
    assert not any(name == "exploding_tensor" for name, _ in findings)

    verdict = rule_verdict(rules, "dead_relu")
    assert (verdict["status"], verdict["step"], verdict["epoch"], verdict["tensor"]) == ("fired", 3, 1, "1")
    assert verdict["count"] == 1 and verdict["action"] == "log"  # both ReLU layers died together: one finding
    assert "also 3" in verdict["evidence"]


def rule_verdict(rules: list[debug_rules.Rule], name: str) -> dict[str, Any]:
    return next(r.verdict() for r in rules if r.name == name)


def test_a_huge_learning_rate_explodes_and_the_rule_asks_to_stop():
    run = train(mlp(), steps=8, lr=1e3, optimizer="sgd", interval=1)
    nan_step = next(i + 1 for i, loss in enumerate(run.losses) if not math.isfinite(loss))
    exploding = rule("exploding_tensor")
    findings = [finding for _, finding in replay([exploding], run)]
    assert [(f.step, f.tensor) for f in findings] == [(nan_step, "loss"), (nan_step, "0.weight")]
    assert findings[0].evidence == f"the training loss is nan at step {nan_step} (epoch 1)"
    assert "NaN/Inf weight values in 0.weight" in findings[1].evidence
    assert "NaN/Inf gradients in 6 tensors" in findings[1].evidence
    verdict = exploding.verdict()
    assert (verdict["status"], verdict["action"], verdict["step"], verdict["tensor"]) == (
        "fired",
        "stop",
        nan_step,
        "loss",
    )
    assert verdict["count"] == 2  # the loss and the tensors stay NaN: each condition fired once


def test_nan_weights_are_named():
    def poison(model: nn.Module, global_step: int) -> None:
        if global_step == 3:
            with torch.no_grad():
                model[2].weight[0, 0] = float("nan")

    run = train(mlp(), steps=5, interval=1, before_step=poison)
    findings = replay([rule("exploding_tensor")], run)
    finding = first(findings, "exploding_tensor")
    assert (finding.step, finding.tensor) == (3, "2.weight") and "NaN/Inf weight values in 2.weight" in finding.evidence


def test_a_gradient_norm_above_the_threshold_fires():
    def blow_up(model: nn.Module, global_step: int) -> None:
        if global_step == 3:
            model[2].weight.grad.mul_(1e25)  # Adam's step stays bounded: only the gradient is huge

    run = train(mlp(), steps=4, interval=1, before_step=blow_up)
    assert run.records[3]["params"]["2.weight"]["weight_nonfinite"] == 0
    finding = first(replay([rule("exploding_tensor")], run), "exploding_tensor")
    assert (finding.step, finding.tensor) == (3, "2.weight") and finding.value > 1e20
    assert f"a gradient norm of {finding.value:.3g} (above 1e+20) in 2.weight" in finding.evidence


def test_steps_a_loss_scaler_skips_fire_only_when_every_sampled_step_is_skipped():
    def overflow(steps: set[int]) -> Callable[[nn.Module, int], None]:
        def plant(model: nn.Module, global_step: int) -> None:
            if global_step in steps:  # what an fp16 overflow leaves in a gradient
                model[0].weight.grad[0, 0] = float("inf")

        return plant

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    run = train(mlp(), steps=12, interval=1, scaler=scaler, before_step=overflow({1, 2}))
    assert run.records[1]["params"]["0.weight"]["grad_nonfinite"] == 1
    assert run.records[1]["params"]["0.weight"]["weight_nonfinite"] == 0  # the scaler skipped the step
    exploding = rule("exploding_tensor")
    assert replay([exploding], run) == []
    assert "2 sampled steps skipped by the loss scaler" in exploding.verdict()["evidence"]

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    run = train(mlp(), steps=12, interval=1, scaler=scaler, before_step=overflow(set(range(1, 13))))
    finding = first(replay([rule("exploding_tensor")], run), "exploding_tensor")
    assert (finding.step, finding.tensor) == (3, "0.weight") and "steps 1, 2, 3" in finding.evidence


def test_poorly_scaled_weights_spread_or_collapse_the_activations():
    def deep(std: float) -> nn.Module:
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(8, 128), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Linear(128, 128), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(128, 3))
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
        return model

    finding = first(
        replay([rule("poor_weight_initialization")], train(deep(1.0), steps=2, interval=1)),
        "poor_weight_initialization",
    )
    assert finding.step == 1 and "activation std spreads" in finding.evidence and finding.tensor == "1"
    assert finding.value > 100
    finding = first(
        replay([rule("poor_weight_initialization")], train(deep(1e-4), steps=2, interval=1)),
        "poor_weight_initialization",
    )
    assert finding.step == 1 and "activations collapsed" in finding.evidence

    record = train(deep(1.0), steps=1, interval=1).records[1]
    assert rule("poor_weight_initialization").on_record(record) is not None
    late = rule("poor_weight_initialization", "poor_weight_initialization.steps=10")
    assert late.on_record(record | {"global_step": 20}) is None  # only the first 10 steps are judged
    assert late.verdict()["status"] == "not_applicable"


def test_a_layer_of_dead_relus_fires_after_its_patience():
    def kill(model: nn.Module, global_step: int) -> None:
        if global_step == 1:
            with torch.no_grad():
                model[2].bias.fill_(-100.0)  # the second ReLU never fires again (its gradient is 0)

    run = train(mlp(), steps=12, interval=2, before_step=kill)
    dead = rule("dead_relu")
    finding = first(replay([dead], run), "dead_relu")
    # sampled steps 1 (after the kill: the ReLU ran before it), 2, 4, 6: dead from step 2 on, patience 3
    assert (finding.step, finding.tensor) == (6, "3") and "100% of the units of 3" in finding.evidence
    assert dead.verdict()["count"] == 1


# -- losses ----------------------------------------------------------------------------------------------
def noisy(values: list[float], seed: int = 0, spread: float = 0.35) -> list[float]:
    """Per-step losses of batch 8: the trend times log-normal noise."""
    rng = random.Random(seed)
    return [value * math.exp(rng.gauss(0, spread) - spread**2 / 2) for value in values]


def losses_run(losses: list[float], first_step: int = 1) -> tuple[list[debug_rules.Finding], debug_rules.Rule]:
    loss_rule = rule("loss_not_decreasing")
    found = [loss_rule.on_step(first_step + i, 1 + i // 40, loss) for i, loss in enumerate(losses)]
    return [finding for finding in found if finding is not None], loss_rule


def test_a_loss_that_learns_then_plateaus_does_not_fire():
    decay = [0.3 + 0.8 * math.exp(-step / 30) for step in range(120)]  # 1.1 -> 0.3 over 3 epochs of 40 steps
    for seed in range(20):
        findings, loss_rule = losses_run(noisy(decay, seed))
        assert findings == [], (seed, findings)
    plateau = [0.3 + 0.8 * math.exp(-step / 30) for step in range(2000)]  # 50 epochs, converged after 5
    for seed in range(5):
        findings, loss_rule = losses_run(noisy(plateau, seed))
        assert findings == [], (seed, findings)
    assert loss_rule.verdict()["status"] == "ok" and "80 windows of 25 steps" in loss_rule.verdict()["evidence"]
    findings, loss_rule = losses_run(noisy([0.3] * 400), first_step=5001)  # resumed on the plateau
    assert findings == [] and "resumed at step 5001" in loss_rule.verdict()["evidence"]


def test_a_flat_or_rising_loss_fires():
    findings, loss_rule = losses_run(noisy([math.log(3)] * 120))
    assert [f.step for f in findings] == [75] and "it should be at least 10% below" in findings[0].evidence
    verdict = loss_rule.verdict()
    assert verdict["status"] == "fired" and verdict["epoch"] == 2 and verdict["count"] == 1

    learns_then_diverges = [1.1 - 0.9 * step / 50 for step in range(50)] + [0.2 + 0.02 * step for step in range(100)]
    findings, _ = losses_run(noisy(learns_then_diverges, spread=0.2))
    assert [f.step for f in findings] == [125]  # windows 4 and 5; back above its start too, reported once
    assert "rose to 1.439 (steps 101-125) from its lowest window mean 0.409 (steps 51-75)" in findings[0].evidence

    findings, loss_rule = losses_run(noisy([1.0] * 30))
    assert findings == [] and loss_rule.verdict()["status"] == "not_applicable"


# -- epochs ----------------------------------------------------------------------------------------------
def epochs(
    rule_name: str, train_losses: list[float], valid_losses: list[float], spec: str = "default"
) -> tuple[list[debug_rules.Finding], debug_rules.Rule]:
    checked = rule(rule_name, spec)
    findings = []
    for epoch, (train_loss, valid_loss) in enumerate(zip(train_losses, valid_losses, strict=True), start=1):
        checked.on_step(epoch * 40, epoch, train_loss)
        finding = checked.on_epoch(epoch_row(epoch, train_loss, valid_loss), None)
        findings += [finding] if finding else []
    return findings, checked


def test_overfit_fires_on_a_memorised_dataset_only():
    findings, overfit = epochs("overfit", [0.9, 0.4, 0.1, 0.03, 0.01, 0.01], [1.0, 0.9, 1.0, 1.2, 1.4, 1.5])
    assert len(findings) == 1 and (findings[0].epoch, findings[0].step) == (3, 120)  # epochs 2 and 3
    assert "validation loss 1 vs training loss 0.1 at epoch 3" in findings[0].evidence
    assert overfit.verdict()["tensor"] == "valid_loss"

    healthy = [
        ([1.0, 0.6, 0.4], [0.9, 0.6, 0.45]),
        ([0.02, 0.005, 0.002], [0.05, 0.03, 0.02]),
        ([0.6, 0.35, 0.3], [0.4, 0.2, 0.15]),
    ]
    for train_losses, valid_losses in healthy:  # learning; tiny losses on easy data; label smoothing's floor
        findings, overfit = epochs("overfit", train_losses, valid_losses)
        assert findings == [] and overfit.verdict()["status"] == "ok"
    findings, _ = epochs("overfit", [0.9, 0.1, 0.03, 0.01, 0.01], [1.0, 1.0, 1.2, 1.4, 1.5], "overfit.start_step=130")
    assert [f.epoch for f in findings] == [5]  # epochs 2 and 3 ended at steps 80 and 120: before the start


def test_overtraining_fires_when_validation_or_training_stops_improving():
    valid = [1.0, 0.7, 0.5, 0.45, 0.46, 0.47, 0.5, 0.52, 0.55]
    train_losses = [1.0, 0.7, 0.5, 0.4, 0.33, 0.27, 0.22, 0.18, 0.15]
    findings, overtraining = epochs("overtraining", train_losses, valid)
    assert [f.epoch for f in findings] == [9] and findings[0].tensor == "valid_loss"
    assert "best 0.45 at epoch 4" in findings[0].evidence and "from 0.4 to 0.15" in findings[0].evidence

    findings, _ = epochs(
        "overtraining", [1.0, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [1.0, 0.6] + [0.55 - 0.02 * i for i in range(6)]
    )
    assert [f.tensor for f in findings] == ["train_loss"] and findings[0].epoch == 8

    valid = [0.9, 0.6, 0.45, 0.4, 0.38, 0.37, 0.36, 0.37, 0.35, 0.34, 0.345, 0.33]  # slower, with bumps
    findings, overtraining = epochs("overtraining", [1.0 - 0.07 * epoch for epoch in range(12)], valid)
    assert findings == [] and "validation loss best 0.34 at epoch 10, last 0.33" in overtraining.verdict()["evidence"]


# -- classes ---------------------------------------------------------------------------------------------
def classes_run(
    per_epoch: list[tuple[list[int], list[int]]], spec: str = "default"
) -> tuple[list[debug_rules.Finding], debug_rules.Rule]:
    checked = rule("class_imbalance", spec)
    findings = []
    for epoch, (seen, wrong) in enumerate(per_epoch, start=1):
        finding = checked.on_epoch(epoch_row(epoch, 0.5, 0.5), {"labels": LABELS, "seen": seen, "wrong": wrong})
        findings += [finding] if finding else []
    return findings, checked


def test_class_imbalance_fires_on_skewed_or_missing_classes():
    findings, _ = classes_run([([300, 25, 20], [10, 5, 5])] * 2)
    assert [f.epoch for f in findings] == [2]  # 345 labels after epoch 1: below samples=500
    assert findings[0].tensor == "poodle" and "a ratio of 15" in findings[0].evidence

    findings, _ = classes_run([([300, 250, 0], [10, 5, 0])] * 2)
    assert (
        findings[0].tensor == "poodle"
        and "1 of 3 classes never seen in 550 training labels: poodle" in findings[0].evidence
    )

    findings, _ = classes_run([([136, 136, 136], [40, 50, 60]), ([136, 136, 136], [4, 5, 110])])
    assert len(findings) == 1 and findings[0].tensor == "poodle" and findings[0].epoch == 2
    assert "110 of its 136 training images mispredicted" in findings[0].evidence


def test_class_imbalance_stays_quiet_on_balanced_classes_and_early_mistakes():
    findings, imbalance = classes_run([([136, 136, 136], [120, 125, 130]), ([136, 130, 140], [20, 25, 30])])
    assert findings == []
    verdict = imbalance.verdict()
    assert verdict["status"] == "ok" and "ratio 1.04" in verdict["evidence"]
    findings, imbalance = classes_run([([30, 2, 1], [10, 1, 1])])  # a quick run: too few labels to judge
    assert findings == [] and imbalance.verdict()["status"] == "not_applicable"
    findings, _ = classes_run([([30, 2, 1], [10, 1, 1])], "class_imbalance.samples=20")
    assert findings and findings[0].tensor == "poodle"


# -- firing state ----------------------------------------------------------------------------------------
def test_a_condition_fires_once_while_it_holds_and_again_after_it_cleared():
    exploding = rule("exploding_tensor")
    fired = [exploding.on_step(step, 1, loss) for step, loss in enumerate([1.0, math.nan, math.inf, 0.9, math.nan], 1)]
    assert [f.step if f else None for f in fired] == [None, 2, None, None, 5]
    verdict = exploding.verdict()
    assert (verdict["status"], verdict["step"], verdict["tensor"], verdict["count"]) == ("fired", 2, "loss", 2)
    assert verdict["evidence"] == "the training loss is nan at step 2 (epoch 1)"
    assert verdict["thresholds"] == {"threshold": 1e20, "skipped_patience": 3.0}
