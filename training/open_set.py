"""Decisions a user can trust: calibrated probabilities, unknown images recognised, thresholds for a precision.

One job: from a trained model's outputs on the train and validation splits, fit what the endpoint needs to
make a decision it can stand behind, and score images with it:

- **Calibration**: one temperature ``T`` (logits / T) fitted on validation by minimising the negative
  log-likelihood (Guo et al. 2017); expected calibration error (ECE, 15 equal-width bins) before and after.
- **Unknown images** (open set), from the same forward pass, higher ``unknown_score`` = less like the labels:
  ``msp`` (1 - max probability) and ``energy`` (-T·logsumexp(logits/T)) are the baselines; ``knn`` is the
  cosine distance to the k-th nearest training image in the penultimate features (Sun et al. 2022);
  ``mahalanobis`` the smallest class-conditional Gaussian distance with a shared, shrunk covariance (Lee et
  al. 2018); ``imagenet_prior`` uses the pretrained network's own ImageNet head on the same features: which
  ImageNet classes the training images fall into (the share ``pi(j)`` of training images whose ImageNet top-1
  is class ``j``) is learned from the training data, and the score is ``-log sum_j p_imagenet(j | x) pi(j)``:
  low for a photo that looks, to ImageNet, like the training photos, high for a photo of something else
  (another breed, a cat, a teddy bear), which ImageNet's 1000 classes name. bench/open_set.py measured it best
  (the default when the weights had an ImageNet head; ``knn`` otherwise).
- **Thresholds**: the unknown-score threshold that keeps ``known_keep`` of validation images of the labels,
  then the lowest calibrated top-probability threshold at which what is SORTED reaches ``target_precision``
  on validation by two estimates at once: the errors counted, and the mean calibrated probability of the
  SORTED images (smooth where a few hundred images make the count jumpy; the count guards the calibration).

Everything the endpoint needs is a dict of tensors and plain values (``Detector.state``), saved in the
artifact as ``open_set.pt`` and loaded with ``torch.load(weights_only=True)``.

    python training/open_set.py MODEL_DIR                  # print the artifact's calibration and thresholds
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("msp", "energy", "knn", "mahalanobis", "imagenet_prior")
ECE_BINS = 15
KNN_K = 10
KNN_BANK_LIMIT = 20_000  # training images kept in the artifact's kNN bank (fp16), evenly over the classes
MAHALANOBIS_SHRINK = 0.1
STATE_FORMAT = "breedfilter-open-set/1"


# ---------------------------------------------------------------------------------------------------------------
# What the model says about a set of images


@dataclass
class Outputs:
    """A model's raw outputs on a set of images: logits, penultimate features, ImageNet-head logits, targets."""

    logits: torch.Tensor  # (N, C) float32
    features: torch.Tensor  # (N, D) float32: the input of the classification layer
    targets: torch.Tensor  # (N,) int64 (-1 where unknown)
    imagenet_logits: torch.Tensor | None = None  # (N, 1000) when the pretrained head is known

    def __len__(self) -> int:
        return int(self.targets.numel())


class FeatureTap:
    """Captures the input of ``head`` (the penultimate features) on every forward pass of the model.

    Per thread: an endpoint server may run the model from several threads at once."""

    def __init__(self, head: nn.Module):
        self._local = threading.local()
        self._handle = head.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        self._local.features = inputs[0].flatten(1)

    def take(self) -> torch.Tensor:
        features = getattr(self._local, "features", None)
        if features is None:
            raise RuntimeError("the classification layer did not run: no features were captured")
        self._local.features = None
        return features

    def close(self) -> None:
        self._handle.remove()


def imagenet_logits(features: torch.Tensor, head: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """The pretrained network's own ImageNet logits from the same features (None without its head)."""
    if not head:
        return None
    weight = head["weight"].to(features.device, torch.float32)
    bias = head.get("bias")
    return F.linear(features.float(), weight, None if bias is None else bias.to(features.device, torch.float32))


def collect(
    model: nn.Module,
    head: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    pretrained_head: dict[str, torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Outputs:
    """Run ``model`` over ``(images, targets)`` batches and keep logits, features and ImageNet logits (CPU)."""
    tap = FeatureTap(head)
    logits, features, targets, prior = [], [], [], []
    model.eval()
    try:
        with torch.inference_mode():
            for images, batch_targets in batches:
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if autocast_dtype is not None:
                    with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                        out = model(images)
                else:
                    out = model(images)
                feats = tap.take().float()
                logits.append(out.float().cpu())
                features.append(feats.cpu())
                targets.append(torch.as_tensor(batch_targets).long().cpu())
                extra = imagenet_logits(feats, pretrained_head)
                if extra is not None:
                    prior.append(extra.cpu())
    finally:
        tap.close()
    if not logits:
        raise ValueError("no images to collect outputs from")
    return Outputs(torch.cat(logits), torch.cat(features), torch.cat(targets), torch.cat(prior) if prior else None)


# ---------------------------------------------------------------------------------------------------------------
# Calibration


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature minimising validation NLL (LBFGS on log T, T within [0.05, 20]).

    A split the model gets entirely right does not determine T (the NLL falls as T goes to 0, every probability
    to 1.0): then the targets are smoothed by 1/(N+1) (Laplace), since N images cannot show an error rate below
    about 1/N. One error is enough to make the minimum finite, and the plain NLL is used."""
    logits, targets = logits.double(), targets.long()
    separable = bool((logits.argmax(dim=1) == targets).all())
    smoothing = 1.0 / (len(targets) + 1) if separable else 0.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets, label_smoothing=smoothing)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    return min(max(temperature, 0.05), 20.0)


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, targets.long()))


def reliability(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top prediction."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).double()
    rows = []
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = (confidence > lo) & (confidence <= hi) if i else (confidence >= lo) & (confidence <= hi)
        count = int(inside.sum())
        rows.append(
            {
                "lo": round(lo, 4),
                "hi": round(hi, 4),
                "count": count,
                "confidence": float(confidence[inside].double().mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return rows


def ece(rows: Sequence[dict[str, Any]]) -> float:
    """Expected calibration error from ``reliability`` rows: sum of |accuracy - confidence| weighted by count."""
    total = sum(r["count"] for r in rows)
    if not total:
        return float("nan")
    return sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / total


# ---------------------------------------------------------------------------------------------------------------
# Unknown-image detectors


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=1)


def _bank(features: torch.Tensor, targets: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` normalised training features, the same share from every class (fp16 in the artifact)."""
    if len(targets) <= limit:
        return _normalise(features).half()
    keep = []
    generator = torch.Generator().manual_seed(0)
    classes = targets.unique()
    per_class = max(1, limit // len(classes))
    for c in classes:
        rows = (targets == c).nonzero().flatten()
        keep.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    return _normalise(features[torch.cat(keep)]).half()


def _imagenet_prior(imagenet: torch.Tensor) -> torch.Tensor:
    """``pi(j)``: the share of training images whose ImageNet top-1 class is ``j`` (float64, sums to 1)."""
    counts = torch.bincount(imagenet.argmax(dim=1), minlength=imagenet.shape[1]).double()
    return counts / counts.sum()


def fit_statistics(train: Outputs, methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """What each method needs from the training images (only tensors and plain values)."""
    stats: dict[str, Any] = {}
    needs = set(methods)
    if "knn" in needs:
        stats["knn_bank"] = _bank(train.features, train.targets, KNN_BANK_LIMIT)
        stats["knn_k"] = min(KNN_K, len(train))
    if "mahalanobis" in needs:
        features = train.features.double()
        classes = int(train.logits.shape[1])
        means = torch.stack(
            [
                features[train.targets == c].mean(dim=0) if (train.targets == c).any() else features.mean(dim=0)
                for c in range(classes)
            ]
        )
        centred = features - means[train.targets]
        covariance = centred.T @ centred / max(1, len(features) - 1)
        scale = covariance.diagonal().mean()
        shrunk = (1 - MAHALANOBIS_SHRINK) * covariance + MAHALANOBIS_SHRINK * scale * torch.eye(len(covariance))
        stats["class_means"] = means.float()
        stats["precision_matrix"] = torch.linalg.inv(shrunk).float()
    if "imagenet_prior" in needs and train.imagenet_logits is not None:
        stats["prior"] = _imagenet_prior(train.imagenet_logits)
    return stats


def available(method: str, stats: dict[str, Any], has_imagenet_head: bool) -> bool:
    if method == "imagenet_prior":
        return has_imagenet_head and "prior" in stats
    if method == "knn":
        return "knn_bank" in stats
    if method == "mahalanobis":
        return "class_means" in stats
    return method in {"msp", "energy"}


def scores(
    method: str,
    logits: torch.Tensor,
    features: torch.Tensor,
    stats: dict[str, Any],
    temperature: float = 1.0,
    imagenet: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unknown scores (N,), float64: higher means less like any of the model's labels."""
    logits = logits.double()
    if method == "msp":
        return 1.0 - torch.softmax(logits / temperature, dim=1).max(dim=1).values
    if method == "energy":
        return -temperature * torch.logsumexp(logits / temperature, dim=1)
    if method == "knn":
        bank = stats["knn_bank"].to(features.device, torch.float32)
        similarity = _normalise(features) @ bank.T
        k = min(int(stats["knn_k"]), similarity.shape[1])
        return (1.0 - similarity.topk(k, dim=1).values[:, -1]).double()
    if method == "mahalanobis":
        means = stats["class_means"].to(features.device, torch.float32)
        precision = stats["precision_matrix"].to(features.device, torch.float32)
        diff = features.float().unsqueeze(1) - means.unsqueeze(0)  # (N, C, D)
        distances = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
        return distances.min(dim=1).values.double()
    if method == "imagenet_prior":
        if imagenet is None:
            raise ValueError("imagenet_prior needs the pretrained network's ImageNet head")
        prior = stats["prior"].to(imagenet.device, torch.float64)
        return -torch.log(torch.softmax(imagenet.double(), dim=1) @ prior + 1e-12)
    raise ValueError(f"unknown open-set method {method!r}: one of {', '.join(METHODS)}")


def outputs_scores(method: str, outputs: Outputs, stats: dict[str, Any], temperature: float) -> torch.Tensor:
    return scores(method, outputs.logits, outputs.features, stats, temperature, outputs.imagenet_logits)


def quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q, interpolation="higher"))  # keeps at least q


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """Probability that an unknown image scores higher than a known one (ties count half)."""
    known, unknown = known.double().flatten(), unknown.double().flatten()
    if not len(known) or not len(unknown):
        return float("nan")
    both = torch.cat([known, unknown])
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    for value in both.unique():  # average ranks of ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    rank_sum = ranks[len(known) :].sum()
    n_u, n_k = len(unknown), len(known)
    return float((rank_sum - n_u * (n_u + 1) / 2) / (n_u * n_k))


# ---------------------------------------------------------------------------------------------------------------
# Thresholds


def precision_curve(probabilities: torch.Tensor, targets: torch.Tensor, passes: torch.Tensor) -> list[dict[str, float]]:
    """For each distinct top probability t of the images that pass the unknown gate, what SORTED would be at
    threshold t: ``coverage`` (share of all images), ``precision`` (share right, counted) and
    ``calibrated_precision`` (the mean calibrated top probability of the SORTED images: what calibration expects)."""
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == targets
    total = len(targets)
    order = confidence[passes].argsort(descending=True)
    conf = confidence[passes][order]
    right = correct[passes][order].double().cumsum(0)
    expected = conf.double().cumsum(0)
    rows = []
    for i in range(len(conf)):
        if i + 1 < len(conf) and conf[i + 1] == conf[i]:
            continue  # the cut must fall between distinct probabilities
        n = i + 1
        rows.append(
            {
                "threshold": float(conf[i]),
                "coverage": n / total,
                "precision": float(right[i]) / n,
                "calibrated_precision": float(expected[i]) / n,
            }
        )
    return rows


def choose_probability_threshold(curve: Sequence[dict[str, float]], target: float) -> tuple[float, bool]:
    """The lowest threshold at which both the counted and the calibrated precision reach ``target`` (the most
    coverage); when none does, the threshold with the best counted precision (the highest among ties), and False."""
    if not curve:
        return 1.0, False
    meeting = [row for row in curve if min(row["precision"], row["calibrated_precision"]) >= target]
    if meeting:
        return min(row["threshold"] for row in meeting), True
    best = max(curve, key=lambda row: (min(row["precision"], row["calibrated_precision"]), row["threshold"]))
    return best["threshold"], False


# ---------------------------------------------------------------------------------------------------------------
# The detector the endpoint runs


@dataclass
class Detector:
    """Temperature, unknown-image method and its statistics, and the thresholds: everything in ``open_set.pt``."""

    temperature: float
    method: str | None
    stats: dict[str, Any]
    probability_threshold: float
    unknown_threshold: float | None
    pretrained_head: dict[str, torch.Tensor] | None = None

    def state(self) -> dict[str, Any]:
        keep = _method_keys(self.method)
        return {
            "format": STATE_FORMAT,
            "temperature": float(self.temperature),
            "method": self.method or "",
            "probability_threshold": float(self.probability_threshold),
            "unknown_threshold": float("nan") if self.unknown_threshold is None else float(self.unknown_threshold),
            "stats": {k: v for k, v in self.stats.items() if k in keep},
            "pretrained_head": dict(self.pretrained_head or {}) if self.method in _PRIOR_METHODS else {},
        }

    @classmethod
    def from_state(cls, state: Any) -> Detector:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an open-set state ({STATE_FORMAT})")
        unknown = float(state["unknown_threshold"])
        return cls(
            temperature=float(state["temperature"]),
            method=state.get("method") or None,
            stats=dict(state.get("stats") or {}),
            probability_threshold=float(state["probability_threshold"]),
            unknown_threshold=None if math.isnan(unknown) else unknown,
            pretrained_head=dict(state.get("pretrained_head") or {}) or None,
        )

    def decide(
        self, logits: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(calibrated probabilities, unknown scores or None, known mask) for a batch."""
        probabilities = torch.softmax(logits.double() / self.temperature, dim=1)
        if self.method is None or self.unknown_threshold is None:
            return probabilities, None, torch.ones(len(logits), dtype=torch.bool)
        extra = imagenet_logits(features, self.pretrained_head)
        unknown = scores(self.method, logits, features, self.stats, self.temperature, extra)
        return probabilities, unknown, unknown <= self.unknown_threshold


_PRIOR_METHODS = frozenset({"imagenet_prior"})


def _method_keys(method: str | None) -> set[str]:
    return {
        None: set(),
        "msp": set(),
        "energy": set(),
        "knn": {"knn_bank", "knn_k"},
        "mahalanobis": {"class_means", "precision_matrix"},
        "imagenet_prior": {"prior"},
    }.get(method, set())


def default_method(has_imagenet_head: bool) -> str:
    """The method train.py ships when not told (``--unknown-method auto``): measured by bench/open_set.py."""
    return "imagenet_prior" if has_imagenet_head else "knn"


@dataclass
class Fitted:
    """A fitted detector plus what the run files and the report show about it."""

    detector: Detector
    summary: dict[str, Any]


def fit(
    train: Outputs,
    valid: Outputs,
    *,
    method: str,
    target_precision: float,
    known_keep: float,
    pretrained_head: dict[str, torch.Tensor] | None = None,
    unknowns: Outputs | None = None,
) -> Fitted:
    """Calibrate on ``valid``, fit ``method`` on ``train``, choose both thresholds on ``valid``."""
    has_head = pretrained_head is not None and train.imagenet_logits is not None
    chosen: str | None = None if method == "none" else method
    if chosen == "auto":
        chosen = default_method(has_head)
    temperature = fit_temperature(valid.logits, valid.targets)
    before = reliability(torch.softmax(valid.logits.double(), dim=1), valid.targets)
    after = reliability(torch.softmax(valid.logits.double() / temperature, dim=1), valid.targets)
    stats = fit_statistics(train, [chosen] if chosen else [])
    if chosen is not None and not available(chosen, stats, has_head):
        raise ValueError(
            f"--unknown-method {chosen} needs the pretrained network's ImageNet head, which these weights do not "
            "have (--weights none, or a file without its classifier); use knn, mahalanobis, energy or msp"
        )
    unknown_threshold = None
    valid_scores = unknown_scores = None
    if chosen is not None:
        valid_scores = outputs_scores(chosen, valid, stats, temperature)
        unknown_threshold = quantile(valid_scores, known_keep)
        passes = valid_scores <= unknown_threshold
    else:
        passes = torch.ones(len(valid), dtype=torch.bool)
    probabilities = torch.softmax(valid.logits.double() / temperature, dim=1)
    curve = precision_curve(probabilities, valid.targets, passes)
    threshold, met = choose_probability_threshold(curve, target_precision)
    expected = _expected(probabilities, valid.targets, passes, threshold)
    detector = Detector(temperature, chosen, stats, threshold, unknown_threshold, pretrained_head if has_head else None)
    unknown_summary = None
    if unknowns is not None and chosen is not None and len(unknowns):
        unknown_scores = outputs_scores(chosen, unknowns, stats, temperature)
        unknown_summary = evaluate_unknowns(detector, unknowns, valid_scores, unknown_scores)
    summary = {
        "method": chosen,
        "calibration": {
            "temperature": temperature,
            "ece_before": ece(before),
            "ece_after": ece(after),
            "nll_before": nll(valid.logits, valid.targets),
            "nll_after": nll(valid.logits, valid.targets, temperature),
            "reliability": {"before": before, "after": after},
        },
        "thresholds": {
            "target_precision": target_precision,
            "known_keep": known_keep if chosen else None,
            "probability": threshold,
            "unknown": unknown_threshold,
            "expected": expected,
            "met": met,
        },
        "curve": _thin(curve),
        "unknown_scores": {
            "valid": None if valid_scores is None else [round(float(v), 6) for v in valid_scores],
            "unknowns": None if unknown_scores is None else [round(float(v), 6) for v in unknown_scores],
        },
        "unknowns": unknown_summary,
    }
    return Fitted(detector, summary)


def _expected(
    probabilities: torch.Tensor, targets: torch.Tensor, passes: torch.Tensor, threshold: float
) -> dict[str, float]:
    confidence, predicted = probabilities.max(dim=1)
    sorted_mask = passes & (confidence >= threshold)
    n = int(sorted_mask.sum())
    return {
        "coverage": n / len(targets),
        "precision": float((predicted[sorted_mask] == targets[sorted_mask]).double().mean()) if n else float("nan"),
        "known_kept": float(passes.double().mean()),
    }


def evaluate_unknowns(
    detector: Detector, unknowns: Outputs, valid_scores: torch.Tensor | None, unknown_scores: torch.Tensor
) -> dict[str, Any]:
    """The share of ``unknowns`` that would be SORTED and the AUROC, from their already computed scores."""
    confidence = torch.softmax(unknowns.logits.double() / detector.temperature, dim=1).max(dim=1).values
    known = unknown_scores <= detector.unknown_threshold
    sorted_share = float((known & (confidence >= detector.probability_threshold)).double().mean())
    return {
        "count": len(unknowns),
        "sorted_share": sorted_share,
        "auroc": None if valid_scores is None else auroc(valid_scores, unknown_scores),
    }


def _thin(curve: Sequence[dict[str, float]], points: int = 200) -> list[dict[str, float]]:
    if len(curve) <= points:
        return [{k: round(v, 6) for k, v in row.items()} for row in curve]
    step = len(curve) / points
    picked = [curve[int(i * step)] for i in range(points)] + [curve[-1]]
    return [{k: round(v, 6) for k, v in row.items()} for row in picked]


def describe(summary: dict[str, Any]) -> str:
    """The lines train.py prints about the decisions its model will make."""
    cal, thr = summary["calibration"], summary["thresholds"]
    exp = thr["expected"]
    lines = [
        f"calibration: temperature {cal['temperature']:.3f}, ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} "
        f"(validation)",
    ]
    if summary["method"]:
        lines.append(
            f"unknown images: {summary['method']}, unknown_score threshold {thr['unknown']:.6g} keeps "
            f"{exp['known_kept']:.1%} of validation images of the labels"
        )
    else:
        lines.append("unknown images: no detector (--unknown-method none): every image counts as one of the labels")
    verdict = "reaches" if thr["met"] else "does NOT reach"
    lines.append(
        f"threshold {thr['probability']:.4f} {verdict} the target precision {thr['target_precision']:.2%} on "
        f"validation: expected coverage {exp['coverage']:.1%} SORTED at precision {exp['precision']:.2%}"
    )
    if not thr["met"]:
        lines.append(
            "  the validation split is too small or the model too weak to show that precision; the threshold "
            "is the one with the best precision seen (more validation images, or --target-precision lower)"
        )
    if summary.get("unknowns"):
        u = summary["unknowns"]
        lines.append(
            f"held-out unknowns: {u['count']} images, {u['sorted_share']:.2%} would be SORTED, AUROC {u['auroc']:.4f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    for arg in argv if argv is not None else sys.argv[1:]:
        config = json.loads((Path(arg) / "config.json").read_text(encoding="utf-8"))
        print(json.dumps(config.get("open_set"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
