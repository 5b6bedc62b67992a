"""routing.decision (where an image goes) and routing.pipeline.object_metadata (what the copy carries)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import pytest

from routing import decision
from routing.decision import (
    BELOW_THRESHOLD,
    MAX_S3_KEY_BYTES,
    REJECTED,
    REJECTED_PREFIX,
    REVIEW,
    REVIEW_PREFIX,
    SORTED,
    THRESHOLD_DEFAULT,
    THRESHOLD_FROM_MODEL,
    THRESHOLD_FROM_SETTING,
    UNKNOWN_LABEL,
    Decision,
    applied_threshold,
    destination_key,
    from_prediction,
    label_prefix,
    reject,
)
from routing.endpoint import Prediction
from routing.events import SourceObject
from routing.pipeline import MAX_METADATA_BYTES, object_metadata
from routing.sniff import Sniffed

JPEG = Sniffed("jpeg", "image/jpeg", True)
PNG = Sniffed("png", "image/png", True)
MODEL = {"name": "breedfilter-resnet50", "version": "2025-11-20.3"}
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def prediction(*ranked: tuple[str, float], latency_ms: float = 41.27, **open_set: Any) -> Prediction:
    """An answer; ``known``, ``unknown_score`` and ``threshold`` as keywords (absent: an old artifact's)."""
    return Prediction(
        predictions=[{"label": label, "index": i, "probability": p} for i, (label, p) in enumerate(ranked)],
        model=dict(MODEL),
        latency_ms=latency_ms,
        **open_set,
    )


def decided(pred: Prediction, *, threshold: float | None = 0.6, top_k: int = 3, size: int = 48213) -> Decision:
    return from_prediction(pred, threshold=threshold, top_k=top_k, size=size, sniffed=JPEG)


def decide(pred: Prediction, *, threshold: float | None = 0.6, top_k: int = 3, size: int = 48213) -> dict[str, Any]:
    """The decision's fields that are set, as the results item holds them."""
    return decided(pred, threshold=threshold, top_k=top_k, size=size).fields()


# -- from_prediction ---------------------------------------------------------------------------------------


def test_above_threshold_is_sorted_under_its_label() -> None:
    d = decide(prediction(("Beagle", 0.91), ("Basset Hound", 0.06), ("Harrier", 0.03)))
    assert d["status"] == SORTED
    assert d["label"] == "Beagle"
    assert d["top_label"] == "Beagle"
    assert d["prefix"] == "Beagle"
    assert d["confidence"] == 0.91
    assert "reason" not in d
    assert "detail" not in d
    assert d["model_name"] == "breedfilter-resnet50"
    assert d["model_version"] == "2025-11-20.3"
    assert d["endpoint_latency_ms"] == 41.3
    assert d["size_bytes"] == 48213
    assert d["format"] == "jpeg"
    assert ISO_MILLIS_Z.match(d["decided_at"])
    datetime.fromisoformat(d["decided_at"].replace("Z", "+00:00"))


@pytest.mark.parametrize(("probability", "threshold"), [(0.6, 0.6), (0.75, 0.75), (1.0, 1.0), (0.0, 0.0)])
def test_probability_equal_to_threshold_is_sorted(probability: float, threshold: float) -> None:
    d = decide(prediction(("Pug", probability)), threshold=threshold)
    assert d["status"] == SORTED
    assert d["label"] == "Pug"


def test_just_below_threshold_is_review() -> None:
    d = decide(prediction(("Pug", 0.599999), ("Boxer", 0.3)), threshold=0.6)
    assert d["status"] == REVIEW


def test_below_threshold_goes_to_review_with_reason_and_detail() -> None:
    d = decide(prediction(("Beagle", 0.41), ("Harrier", 0.38), ("Basset Hound", 0.21)), threshold=0.6)
    assert d["status"] == REVIEW
    assert d["prefix"] == REVIEW_PREFIX == "review"
    assert "label" not in d  # only SORTED items carry label (the by-label index)
    assert d["top_label"] == "Beagle"
    assert d["confidence"] == 0.41
    assert d["reason"] == BELOW_THRESHOLD
    assert d["detail"] == "top probability 0.41 < threshold 0.6 (set by CONFIDENCE_THRESHOLD)"
    assert [p["label"] for p in d["top_k"]] == ["Beagle", "Harrier", "Basset Hound"]


# -- open set: known, unknown_score and the model's own threshold ---------------------------------------------


def test_unknown_image_goes_to_review_with_its_top_guess_whatever_its_probability() -> None:
    pred = prediction(("Beagle", 0.97), ("Harrier", 0.02), known=False, unknown_score=0.934, threshold=0.7)
    d = decide(pred, threshold=None)
    assert d["status"] == REVIEW and d["prefix"] == REVIEW_PREFIX
    assert d["reason"] == UNKNOWN_LABEL == "unknown_label"
    assert d["detail"] == "not any of the model's labels (the model answered known=false, unknown score 0.934)"
    assert "label" not in d  # not listed under any label
    assert d["top_label"] == "Beagle" and d["confidence"] == 0.97
    assert [p["label"] for p in d["top_k"]] == ["Beagle", "Harrier"]
    assert d["known"] is False and d["unknown_score"] == 0.934
    assert d["threshold"] == 0.7 and d["threshold_source"] == THRESHOLD_FROM_MODEL


def test_unknown_wins_over_a_threshold_set_to_zero() -> None:
    d = decide(prediction(("Beagle", 1.0), known=False), threshold=0.0)
    assert d["status"] == REVIEW and d["reason"] == UNKNOWN_LABEL
    assert d["detail"] == "not any of the model's labels (the model answered known=false)"
    assert "unknown_score" not in d


def test_models_own_threshold_is_applied_by_default() -> None:
    pred = prediction(("Beagle", 0.75), known=True, unknown_score=0.1, threshold=0.8)
    d = decide(pred, threshold=None)
    assert d["status"] == REVIEW and d["reason"] == BELOW_THRESHOLD
    assert d["detail"] == "top probability 0.75 < threshold 0.8 (the model's own)"
    assert d["threshold"] == 0.8 and d["threshold_source"] == THRESHOLD_FROM_MODEL
    assert d["known"] is True and d["unknown_score"] == 0.1
    low = decide(prediction(("Beagle", 0.55), known=True, threshold=0.5), threshold=None)
    assert low["status"] == SORTED and low["label"] == "Beagle"  # 0.55 would be review under the old 0.6
    assert low["threshold"] == 0.5 and low["threshold_source"] == THRESHOLD_FROM_MODEL
    assert "detail" not in low and "reason" not in low


def test_a_number_setting_overrides_the_models_threshold() -> None:
    pred = prediction(("Beagle", 0.75), known=True, threshold=0.5)
    d = decide(pred, threshold=0.8)
    assert d["status"] == REVIEW and d["reason"] == BELOW_THRESHOLD
    assert d["threshold"] == 0.8 and d["threshold_source"] == THRESHOLD_FROM_SETTING
    assert d["detail"] == "top probability 0.75 < threshold 0.8 (set by CONFIDENCE_THRESHOLD)"
    lenient = decide(prediction(("Beagle", 0.75), known=True, threshold=0.9), threshold=0.7)
    assert lenient["status"] == SORTED and lenient["threshold_source"] == THRESHOLD_FROM_SETTING


def test_an_old_answer_is_known_and_falls_back_to_0_6_saying_so() -> None:
    old = prediction(("Beagle", 0.65), ("Harrier", 0.3))  # no known, unknown_score or threshold
    d = decide(old, threshold=None)
    assert d["status"] == SORTED and d["label"] == "Beagle"
    assert d["known"] is True and "unknown_score" not in d
    assert d["threshold"] == 0.6 and d["threshold_source"] == THRESHOLD_DEFAULT
    assert d["detail"] == "threshold 0.6: the router's fallback: the model's answer carries no threshold"
    unsure = decide(prediction(("Beagle", 0.55)), threshold=None)
    assert unsure["status"] == REVIEW and unsure["reason"] == BELOW_THRESHOLD
    assert unsure["detail"] == (
        "top probability 0.55 < threshold 0.6 (the router's fallback: the model's answer carries no threshold)"
    )


@pytest.mark.parametrize(
    ("setting", "answer_threshold", "applied"),
    [
        (None, 0.42, (0.42, THRESHOLD_FROM_MODEL)),
        (None, None, (0.6, THRESHOLD_DEFAULT)),
        (0.9, 0.42, (0.9, THRESHOLD_FROM_SETTING)),
        (0.0, None, (0.0, THRESHOLD_FROM_SETTING)),  # zero is a setting, not "unset"
        (None, 0.0, (0.0, THRESHOLD_FROM_MODEL)),
    ],
)
def test_applied_threshold_and_its_source(
    setting: float | None, answer_threshold: float | None, applied: tuple[float, str]
) -> None:
    assert applied_threshold(prediction(("Pug", 0.5), threshold=answer_threshold), setting) == applied


def test_threshold_one_sends_everything_but_certainty_to_review() -> None:
    assert decide(prediction(("Beagle", 0.999)), threshold=1.0)["status"] == REVIEW


def test_top_k_is_truncated_and_keeps_order() -> None:
    pred = prediction(
        ("Beagle", 0.5), ("Harrier", 0.2), ("Basset Hound", 0.15), ("Foxhound", 0.1), ("Bloodhound", 0.05)
    )
    d = decide(pred, top_k=3)
    assert [p["label"] for p in d["top_k"]] == ["Beagle", "Harrier", "Basset Hound"]
    assert [p["index"] for p in d["top_k"]] == [0, 1, 2]
    assert [p["probability"] for p in d["top_k"]] == [0.5, 0.2, 0.15]
    assert [p["label"] for p in decide(pred, top_k=1)["top_k"]] == ["Beagle"]
    assert len(decide(pred, top_k=20)["top_k"]) == 5
    assert pred.predictions[3]["label"] == "Foxhound"  # the input is not modified


def test_top_k_probabilities_are_rounded_to_six_places() -> None:
    d = decide(prediction(("Beagle", 0.123456789), ("Harrier", 0.0000004)), threshold=0.1)
    assert d["confidence"] == 0.123457
    assert [p["probability"] for p in d["top_k"]] == [0.123457, 0.0]


def test_sorted_label_is_sanitised_in_the_prefix_but_kept_in_the_item() -> None:
    d = decide(prediction(("Review", 0.95)))
    assert d["status"] == SORTED
    assert d["label"] == "Review"
    assert d["prefix"].lower() not in (REVIEW_PREFIX, REJECTED_PREFIX)
    d = decide(prediction(("Bull/Terrier", 0.95)))
    assert d["label"] == "Bull/Terrier"
    assert "/" not in d["prefix"]


# -- label_prefix ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        "a/b",
        "Bull/Terrier",
        "/leading",
        "trailing/",
        "a//b",
        "review",
        "Review",
        "REVIEW",
        "rejected",
        "Rejected",
        " review ",
        "",
        "   ",
        "Beagle",
        "Chihuahua (long coat)",
        "柴犬",
    ],
)
def test_label_prefix_is_one_safe_non_reserved_segment(label: str) -> None:
    segment = label_prefix(label)
    assert segment
    assert "/" not in segment
    assert segment.lower() not in (REVIEW_PREFIX, REJECTED_PREFIX)
    assert segment == segment.strip()


def test_label_prefix_keeps_ordinary_labels() -> None:
    assert label_prefix("Beagle") == "Beagle"
    assert label_prefix("German Shepherd") == "German Shepherd"
    assert label_prefix("  Pug ") == "Pug"


def test_label_prefix_distinct_labels_stay_distinct() -> None:
    labels = ["Beagle", "Harrier", "review", "rejected", "Review"]
    assert len({label_prefix(label) for label in labels}) == len(labels)


def test_empty_label_gets_a_placeholder() -> None:
    assert label_prefix("") == label_prefix("  ")
    assert label_prefix("") not in ("", REVIEW_PREFIX, REJECTED_PREFIX)


# -- destination_key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        ("Beagle", "dogs/beagle.jpg"),
        ("review", "uploads/my dog photo.jpg"),
        ("rejected", "notes.txt"),
        ("Shiba Inu", "狗/柴犬.webp"),
        ("Pug", "2025/11/21/camera-01/batch (3)/IMG_0042=final.jpeg"),
    ],
)
def test_destination_key_keeps_the_key_below_the_prefix(prefix: str, key: str) -> None:
    assert destination_key(prefix, key) == f"{prefix}/{key}"


def test_destination_key_limit_is_counted_in_utf8_bytes() -> None:
    fits = "a" * (MAX_S3_KEY_BYTES - len("review/"))
    assert destination_key("review", fits) == f"review/{fits}"
    one_over = fits + "b"
    assert destination_key("review", one_over) != f"review/{one_over}"
    unicode_key = "ü" * 600  # 600 characters, 1200 bytes
    result = destination_key("review", unicode_key)
    assert result != f"review/{unicode_key}"
    assert len(result.encode()) <= MAX_S3_KEY_BYTES


@pytest.mark.parametrize(
    "key",
    ["x" * 1020, "dogs/" + "a" * 1100, "狗" * 400, "\U0001f436" * 300, "deep/" * 250 + "beagle.jpg"],
)
def test_long_keys_fall_back_to_a_bounded_deterministic_hash(key: str) -> None:
    assert len(f"Beagle/{key}".encode()) > MAX_S3_KEY_BYTES
    first = destination_key("Beagle", key)
    assert len(first.encode()) <= MAX_S3_KEY_BYTES
    assert first.startswith("Beagle/")
    assert first == destination_key("Beagle", key)  # a redelivery copies to the same key
    assert destination_key("Beagle", key + "2") != first  # another key, another destination
    assert destination_key("review", key).startswith("review/")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("camera/IMG_0001.jpg", "Beagle/camera/IMG_0001~{tag}.jpg"),
        ("IMG_0001.JPG", "Beagle/IMG_0001~{tag}.JPG"),
        ("a/b/c/archive.tar.gz", "Beagle/a/b/c/archive.tar~{tag}.gz"),
        ("no-extension", "Beagle/no-extension~{tag}"),
        ("dir/.hidden", "Beagle/dir/.hidden~{tag}"),
        ("dots.in/folder/name", "Beagle/dots.in/folder/name~{tag}"),
        ("狗/柴犬 🐕.webp", "Beagle/狗/柴犬 🐕~{tag}.webp"),
        ("odd/", "Beagle/odd/~{tag}"),
    ],
)
def test_a_revisions_own_name_keeps_folder_and_extension(key: str, expected: str) -> None:
    revision = "v:3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"
    tag = decision.revision_tag(revision)
    assert re.fullmatch(r"[0-9a-f]{12}", tag)
    assert destination_key("Beagle", key, revision=revision) == expected.format(tag=tag)


def test_revision_names_are_deterministic_and_distinct() -> None:
    key = "camera/IMG_0001.jpg"
    revisions = ["v:1", "v:2", "e:45c48cce2e2d7fbdea1afc51c7c6ad26", "e:45c48cce2e2d7fbdea1afc51c7c6ad27"]
    names = [destination_key("Beagle", key, revision=r) for r in revisions]
    assert names == [destination_key("Beagle", key, revision=r) for r in revisions]  # a redelivery: same name
    assert len(set(names)) == len(names)
    assert destination_key("Beagle", key) not in names  # never the readable name


@pytest.mark.parametrize("key", ["x" * 1020, "dogs/" + "a" * 1100, "狗" * 400, "a" * (MAX_S3_KEY_BYTES - 12)])
def test_long_keys_keep_their_hash_and_add_the_revision(key: str) -> None:
    named = destination_key("Beagle", key, revision="v:1")
    assert len(named.encode()) <= MAX_S3_KEY_BYTES
    assert named == f"Beagle/_long-keys/{hashlib.sha256(key.encode()).hexdigest()}~{decision.revision_tag('v:1')}"
    assert named != destination_key("Beagle", key) and named != destination_key("Beagle", key, revision="v:2")


# -- reject ----------------------------------------------------------------------------------------------


def test_reject_fields() -> None:
    heic = Sniffed("heic", "image/heic", False)
    r = reject(decision.UNSUPPORTED_FORMAT, "heic images are not supported", size=812_345, sniffed=heic)
    assert r.status == REJECTED
    assert r.reason == "unsupported_format"
    assert r.detail == "heic images are not supported"
    assert r.prefix == REJECTED_PREFIX == "rejected"
    assert r.size_bytes == 812_345
    assert r.format == "heic"
    assert ISO_MILLIS_Z.match(r.decided_at)
    assert r.label is None
    assert r.confidence is None


def test_reject_without_sniffed_has_no_format() -> None:
    r = reject(decision.EMPTY, "the object is empty (0 bytes)", size=0)
    assert r.status == REJECTED
    assert r.format is None
    assert r.size_bytes == 0


def test_reason_codes_are_stable_and_distinct() -> None:
    codes = [
        decision.EMPTY,
        decision.TOO_LARGE,
        decision.NOT_AN_IMAGE,
        decision.UNSUPPORTED_FORMAT,
        decision.MODEL_REJECTED,
        decision.BELOW_THRESHOLD,
        decision.UNKNOWN_LABEL,
    ]
    assert codes == [
        "empty",
        "too_large",
        "not_an_image",
        "unsupported_format",
        "model_rejected",
        "below_threshold",
        "unknown_label",
    ]


# -- object_metadata ---------------------------------------------------------------------------------------


def metadata_bytes(meta: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


def test_metadata_for_a_sorted_image() -> None:
    source = SourceObject("inbox", "dogs/beagle.jpg", version_id="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH")
    meta = object_metadata(source, decided(prediction(("Beagle", 0.91))))
    assert meta["breedfilter-status"] == "SORTED"
    assert meta["breedfilter-label"] == "Beagle"
    assert meta["breedfilter-confidence"] == "0.91"
    assert meta["breedfilter-model-version"] == "2025-11-20.3"
    assert meta["breedfilter-source-revision"] == "v:3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"
    assert meta["breedfilter-source-bucket"] == "inbox"
    assert unquote(meta["breedfilter-source-key"]) == "dogs/beagle.jpg"
    assert "breedfilter-source-version-id" not in meta  # given only with the version copied
    copied = object_metadata(source, decided(prediction(("Beagle", 0.91))), version_id="3HL4kqtJlcpXroDTDmJ")
    assert copied["breedfilter-source-version-id"] == "3HL4kqtJlcpXroDTDmJ"
    assert "breedfilter-reason" not in meta  # empty values are left out


def test_metadata_for_review_carries_top_label_and_reason() -> None:
    source = SourceObject("inbox", "uploads/labrador.png", etag="45c48cce2e2d7fbdea1afc51c7c6ad26")
    meta = object_metadata(source, decided(prediction(("Labrador Retriever", 0.4)), threshold=0.6))
    assert meta["breedfilter-status"] == "REVIEW"
    assert unquote(meta["breedfilter-label"]) == "Labrador Retriever"
    assert meta["breedfilter-reason"] == "below_threshold"
    assert meta["breedfilter-source-revision"] == "e:45c48cce2e2d7fbdea1afc51c7c6ad26"


def test_metadata_carries_known_unknown_score_and_the_applied_threshold() -> None:
    source = SourceObject("inbox", "uploads/cat.jpg", version_id="v1")
    pred = prediction(("Beagle", 0.88), known=False, unknown_score=0.91, threshold=0.7)
    meta = object_metadata(source, decided(pred, threshold=None))
    assert meta["breedfilter-status"] == "REVIEW"
    assert meta["breedfilter-reason"] == "unknown_label"
    assert unquote(meta["breedfilter-label"]) == "Beagle"  # the top guess, as for any review
    assert meta["breedfilter-known"] == "false"
    assert meta["breedfilter-unknown-score"] == "0.91"
    assert meta["breedfilter-threshold"] == "0.7"
    assert meta["breedfilter-threshold-source"] == "model"
    sorted_meta = object_metadata(source, decided(prediction(("Beagle", 0.9)), threshold=None))
    assert sorted_meta["breedfilter-known"] == "true" and sorted_meta["breedfilter-threshold-source"] == "default"
    assert "breedfilter-unknown-score" not in sorted_meta
    rejected = object_metadata(source, reject(decision.EMPTY, "empty", size=0))
    assert not any(k in rejected for k in ("breedfilter-known", "breedfilter-threshold"))


@pytest.mark.parametrize(
    "key",
    [
        "hunde/Müller's Dackel.jpg",
        "emoji/\U0001f436 good boy.png",
        "line\nbreak\r\ttab.jpg",
        "狗/柴犬.webp",
    ],
)
def test_metadata_is_ascii_header_safe_and_reversible(key: str) -> None:
    source = SourceObject("inbox", key, version_id="v1")
    meta = object_metadata(source, decided(prediction(("Pudelpointer-Müller", 0.9))))
    for name, value in meta.items():
        assert name.isascii() and value.isascii()
        assert not any(ord(c) < 32 or ord(c) == 127 for c in value), (name, value)
    assert unquote(meta["breedfilter-source-key"]) == key
    assert unquote(meta["breedfilter-label"]) == "Pudelpointer-Müller"


@pytest.mark.parametrize("char", ["ü", "狗", "\U0001f436", "a"])
def test_metadata_stays_under_two_kilobytes_for_a_1000_character_key(char: str) -> None:
    from urllib.parse import quote, unquote

    key = "uploads/" + char * 1000
    source = SourceObject("inbox", key, version_id="v" * 32)
    meta = object_metadata(source, decided(prediction(("Beagle", 0.3))))
    assert metadata_bytes(meta) <= MAX_METADATA_BYTES
    assert MAX_METADATA_BYTES <= 2000
    assert all(value.isascii() for value in meta.values())
    # The short values survive the trimming; only the long one is cut.
    assert meta["breedfilter-status"] == "REVIEW"
    assert meta["breedfilter-reason"] == "below_threshold"
    assert meta["breedfilter-source-revision"] == "v:" + "v" * 32
    # The key is kept whole when it fits once escaped, else left out (the results item keeps it): never cut.
    if "breedfilter-source-key" in meta:
        assert unquote(meta["breedfilter-source-key"]) == key
    else:
        assert len(quote(key, safe=" /:.,()-_")) + metadata_bytes(meta) > MAX_METADATA_BYTES


def test_metadata_source_key_round_trips_when_it_fits() -> None:
    from urllib.parse import unquote

    key = "uploads/my dog Ünïcødé 狗 🐶.jpg"
    meta = object_metadata(SourceObject("inbox", key, etag="e"), decided(prediction(("Beagle", 0.9))))
    assert meta["breedfilter-source-key"].isascii()
    assert unquote(meta["breedfilter-source-key"]) == key
