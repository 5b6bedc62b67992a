"""training/open_set.py: calibration, unknown-image scores, thresholds, and the state the artifact carries.

Synthetic logits and features with known answers (a known temperature, separated clusters), so each part is
checked against what it must find.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import open_set


def _calibrated_sample(n: int, classes: int, temperature: float, seed: int = 0):
    """Logits z and targets drawn from softmax(z / temperature): the right temperature is ``temperature``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 4
    targets = torch.multinomial(torch.softmax(logits / temperature, dim=1), 1, generator=generator).flatten()
    return logits, targets


def _clusters(per_class: int, classes: int, dim: int = 16, seed: int = 0, spread: float = 0.1):
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3  # the same in every split
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(classes).repeat_interleave(per_class)
    features = centres[targets] + spread * torch.randn(len(targets), dim, generator=generator)
    logits = features @ centres.T  # a linear head that points at the centres
    return open_set.Outputs(logits, features, targets)


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with():
    logits, targets = _calibrated_sample(20_000, 5, temperature=2.5)
    assert open_set.fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.06)
    logits, targets = _calibrated_sample(20_000, 5, temperature=0.5, seed=1)
    assert open_set.fit_temperature(logits, targets) == pytest.approx(0.5, rel=0.06)


def test_a_split_without_errors_does_not_make_every_probability_one():
    generator = torch.Generator().manual_seed(3)
    targets = torch.arange(4).repeat(75)
    logits = torch.randn(300, 4, generator=generator)
    logits[torch.arange(300), targets] += 8  # every image right, by a wide margin
    temperature = open_set.fit_temperature(logits, targets)
    top = torch.softmax(logits.double() / temperature, dim=1).max(dim=1).values
    assert temperature > 0.05  # not driven to the bound
    assert float(top.mean()) < 1 - 1 / 3000  # no more sure than 300 images can show
    assert float(top.mean()) > 0.99


def test_ece_is_small_for_calibrated_probabilities_and_drops_after_fitting_the_temperature():
    logits, targets = _calibrated_sample(20_000, 5, temperature=3.0)
    raw = open_set.ece(open_set.reliability(torch.softmax(logits.double(), 1), targets))
    temperature = open_set.fit_temperature(logits, targets)
    fitted = open_set.ece(open_set.reliability(torch.softmax(logits.double() / temperature, 1), targets))
    assert raw > 0.1  # overconfident by a factor of 3 in the logits
    assert fitted < 0.02
    assert fitted < raw / 5


def test_reliability_bins_count_every_image_once_and_report_accuracy():
    probabilities = torch.tensor([[1.0, 0.0], [0.55, 0.45], [0.05, 0.95], [0.5, 0.5]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 1, 0])
    rows = open_set.reliability(probabilities, targets, bins=10)
    assert sum(r["count"] for r in rows) == 4
    top = rows[-1]
    assert top["count"] == 2 and top["accuracy"] == 1.0 and top["confidence"] == pytest.approx(0.975)
    assert rows[4]["count"] == 1 and rows[4]["accuracy"] == 1.0  # exactly 0.5, argmax takes the first: right
    assert rows[5]["count"] == 1 and rows[5]["accuracy"] == 0.0  # 0.55 for class 0, truly 1


def test_auroc_equals_the_pairwise_count_with_ties_as_halves():
    known = torch.tensor([0.1, 0.2, 0.2, 0.5])
    unknown = torch.tensor([0.2, 0.6, 0.05])
    pairs = [(1.0 if u > k else 0.5 if u == k else 0.0) for u in unknown for k in known]
    assert open_set.auroc(known, unknown) == pytest.approx(sum(pairs) / len(pairs))
    assert open_set.auroc(torch.zeros(3), torch.ones(3)) == 1.0
    assert math.isnan(open_set.auroc(torch.zeros(3), torch.zeros(0)))


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_feature_methods_score_far_away_images_as_unknown(method):
    train = _clusters(40, 4)
    valid = _clusters(10, 4, seed=1)
    stats = open_set.fit_statistics(train, [method])
    far = open_set.Outputs(
        torch.zeros(20, 4), torch.randn(20, 16, generator=torch.Generator().manual_seed(5)) * 3, -torch.ones(20)
    )
    known_scores = open_set.outputs_scores(method, valid, stats, 1.0)
    unknown_scores = open_set.outputs_scores(method, far, stats, 1.0)
    assert open_set.auroc(known_scores, unknown_scores) > 0.99


def test_imagenet_prior_learns_the_imagenet_classes_of_the_training_images():
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(2).repeat_interleave(50)
    imagenet = torch.randn(100, 1000, generator=generator)
    imagenet[targets == 0, 207] += 12  # label 0 looks like ImageNet class 207 (golden retriever)
    imagenet[targets == 1, 208] += 12
    imagenet[:3, 281] += 30  # three images of label 0 look like a tabby cat
    train = open_set.Outputs(torch.zeros(100, 2), torch.zeros(100, 8), targets, imagenet)
    prior = open_set.fit_statistics(train, ["imagenet_prior"])["prior"]
    assert prior.nonzero().flatten().tolist() == [207, 208, 281]
    assert prior[[207, 208, 281]].tolist() == pytest.approx([0.47, 0.5, 0.03])

    test_imagenet = torch.randn(3, 1000, generator=generator)
    test_imagenet[0, 208] += 15  # one of the labels
    test_imagenet[1, 281] += 15  # a cat, like a few training images: in between
    test_imagenet[2, 340] += 15  # a zebra, like none
    scores = open_set.scores(
        "imagenet_prior", torch.zeros(3, 2), torch.zeros(3, 8), {"prior": prior}, imagenet=test_imagenet
    )
    assert scores[0] == pytest.approx(-math.log(0.5), abs=0.05)
    assert scores[0] < scores[1] < scores[2]
    assert scores[2] > 8


def test_precision_curve_and_the_threshold_for_a_target_precision():
    # 200 images, 4 classes: the 190 most confident right, then 10 wrong at lower confidence
    confidence = torch.linspace(0.99, 0.4, 200, dtype=torch.float64)
    targets = torch.zeros(200, dtype=torch.long)
    predicted = torch.zeros(200, dtype=torch.long)
    predicted[190:] = 1
    probabilities = torch.zeros(200, 4, dtype=torch.float64)
    probabilities[torch.arange(200), predicted] = confidence
    for other in range(1, 4):  # the rest spread evenly: the top probability stays the confidence
        probabilities[torch.arange(200), (predicted + other) % 4] = (1 - confidence) / 3
    curve = open_set.precision_curve(probabilities, targets, torch.ones(200, dtype=torch.bool))
    threshold, met = open_set.choose_probability_threshold(curve, 0.99)
    assert met
    chosen = next(row for row in curve if row["threshold"] == threshold)
    assert chosen["precision"] >= 0.99 and chosen["calibrated_precision"] >= 0.99
    # counted: the 190 right ones and one wrong one (190/191 = 0.9948), no more (190/192 = 0.9896)
    assert round(chosen["coverage"] * 200) <= 191
    lower = [row for row in curve if row["threshold"] < threshold]
    assert all(min(row["precision"], row["calibrated_precision"]) < 0.99 for row in lower)
    # the calibrated estimate alone (these confidences average far below 0.99) limits the coverage too
    assert chosen["calibrated_precision"] == pytest.approx(float(confidence[: round(chosen["coverage"] * 200)].mean()))
    assert open_set.choose_probability_threshold(curve, 0.9999)[1] is False


def test_images_rejected_by_the_unknown_gate_count_against_coverage_not_precision():
    probabilities = torch.tensor([[0.9, 0.1]] * 10, dtype=torch.float64)
    targets = torch.zeros(10, dtype=torch.long)
    passes = torch.tensor([True] * 5 + [False] * 5)
    curve = open_set.precision_curve(probabilities, targets, passes)
    assert curve == [{"threshold": 0.9, "coverage": 0.5, "precision": 1.0, "calibrated_precision": pytest.approx(0.9)}]


def test_fit_keeps_the_asked_share_of_known_images_and_chooses_a_threshold():
    train, valid = _clusters(60, 5), _clusters(60, 5, seed=1, spread=0.8)
    fitted = open_set.fit(train, valid, method="knn", target_precision=0.95, known_keep=0.9)
    summary = fitted.summary
    assert summary["method"] == "knn"
    assert summary["thresholds"]["expected"]["known_kept"] >= 0.9
    probabilities, scores, known = fitted.detector.decide(valid.logits, valid.features)
    assert known.double().mean() == pytest.approx(summary["thresholds"]["expected"]["known_kept"])
    assert torch.allclose(probabilities.sum(1), torch.ones(len(valid), dtype=torch.float64))
    assert scores is not None
    assert len(summary["unknown_scores"]["valid"]) == len(valid)


def test_fit_refuses_the_imagenet_prior_without_the_pretrained_head():
    train, valid = _clusters(20, 3), _clusters(10, 3, seed=1)
    with pytest.raises(ValueError, match="ImageNet head"):
        open_set.fit(train, valid, method="imagenet_prior", target_precision=0.9, known_keep=0.95)
    assert open_set.fit(train, valid, method="auto", target_precision=0.9, known_keep=0.95).summary["method"] == "knn"


def test_no_detector_means_every_image_is_known():
    train, valid = _clusters(20, 3), _clusters(10, 3, seed=1)
    fitted = open_set.fit(train, valid, method="none", target_precision=0.9, known_keep=0.95)
    _, scores, known = fitted.detector.decide(valid.logits, valid.features)
    assert scores is None and bool(known.all())
    assert fitted.summary["thresholds"]["unknown"] is None


@pytest.mark.parametrize("method", ["knn", "mahalanobis", "imagenet_prior", "energy"])
def test_the_state_loads_with_weights_only_and_decides_the_same(method):
    train, valid = _clusters(30, 3), _clusters(10, 3, seed=1)
    head = {"weight": torch.randn(50, 16), "bias": torch.randn(50)}
    for o in (train, valid):
        o.imagenet_logits = open_set.imagenet_logits(o.features, head)
    fitted = open_set.fit(train, valid, method=method, target_precision=0.9, known_keep=0.95, pretrained_head=head)
    buffer = io.BytesIO()
    torch.save(fitted.detector.state(), buffer)
    buffer.seek(0)
    loaded = open_set.Detector.from_state(torch.load(buffer, weights_only=True))
    before = fitted.detector.decide(valid.logits, valid.features)
    after = loaded.decide(valid.logits, valid.features)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert torch.allclose(before[1], after[1], atol=1e-3)  # the kNN bank is stored in half precision
    assert bool(loaded.stats) == (method != "energy")
    assert (loaded.pretrained_head is not None) == (method == "imagenet_prior")


def test_feature_tap_captures_the_classification_layers_input():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    tap = open_set.FeatureTap(net[2])
    x = torch.randn(3, 4)
    net(x)
    assert torch.equal(tap.take(), torch.relu(net[0](x)))
    with pytest.raises(RuntimeError, match="did not run"):
        tap.take()
    tap.close()
