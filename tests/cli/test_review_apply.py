"""A person's decision on a routed image, on the local stack after real routing: the sorted copy moves once, the
results item says who decided what (with the previous state kept), two reviewers at once (one wins, the other is
told), a crash at either step converges on the next try, and bad input gets one clear line.

    .venv/bin/python -m pytest tests/cli/test_review_apply.py
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from breedfilter import review_cli
from breedfilter.review_decisions import Conflict, Reviewer
from tests.images import image_bytes
from tests.support import crash_once

INBOX = "s3://breedfilter-inbox-local"


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = review_cli.main(["apply", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def routed(harness: Any) -> Any:
    for name in ("red-1", "blue-1"):
        harness.put(f"in/{name}.jpg", image_bytes(name.split("-")[0]))
    harness.put("in/grey.jpg", image_bytes("grey"))  # none of the stand-in's labels: review/, unknown_label
    harness.drain()
    assert harness.item_for("in/grey.jpg")["status"] == "REVIEW"
    return harness


def reviewer(harness: Any, by: str) -> Reviewer:
    table = boto3.resource("dynamodb").Table(harness.stack.names.results_table)  # the harness's environment
    return Reviewer(harness.s3, table, harness.sorted, by)


def test_confirming_a_label_moves_the_copy_and_records_who_and_what_was_before(routed: Any, capsys: Any) -> None:
    code, out, err = run(capsys, f"{INBOX}/in/grey.jpg", "green", "--by", "ana")
    assert (code, err) == (0, "")
    assert out.strip().endswith("SORTED as green -> green/in/grey.jpg")
    assert sorted(routed.keys(routed.sorted)) == ["blue/in/blue-1.jpg", "green/in/grey.jpg", "red/in/red-1.jpg"]
    moved = routed.s3.get_object(Bucket=routed.sorted, Key="green/in/grey.jpg")
    assert moved["Body"].read() == image_bytes("grey")
    assert moved["Metadata"]["breedfilter-label-source"] == "human"
    item = routed.item_for("in/grey.jpg")
    assert (item["status"], item["label"], item["label_source"], item["reviewed_by"]) == (
        "SORTED",
        "green",
        "human",
        "ana",
    )
    assert "reason" not in item and item["review_revision"] == 1
    (before,) = item["review_history"]
    assert (before["status"], before["reason"], before["destination_key"]) == (
        "REVIEW",
        "unknown_label",
        "review/in/grey.jpg",
    )
    # the by-label index lists it with the model's own sorted images
    answer = routed.dynamodb.query(
        TableName=routed.stack.names.results_table, IndexName="by-label",
        KeyConditionExpression="#l = :l", ExpressionAttributeNames={"#l": "label"},
        ExpressionAttributeValues={":l": {"S": "green"}},
    )  # fmt: skip
    assert [i["source_key"]["S"] for i in answer["Items"]] == ["in/grey.jpg"]
    code, out, _ = run(capsys, f"{INBOX}/in/grey.jpg", "green")  # the same decision again: nothing to do
    assert code == 0 and "already so" in out
    assert routed.item_for("in/grey.jpg")["review_revision"] == 1


def test_a_wrong_label_is_fixed_and_an_image_of_none_is_rejected(routed: Any, capsys: Any) -> None:
    assert run(capsys, f"{INBOX}/in/red-1.jpg", "blue")[0] == 0
    item = routed.item_for("in/red-1.jpg")
    assert (item["label"], item["destination_key"]) == ("blue", "blue/in/red-1.jpg")
    assert item["review_history"][0]["label"] == "red" and "label_source" not in item["review_history"][0]
    code, out, _ = run(capsys, f"{INBOX}/in/grey.jpg", "--reject")
    assert code == 0 and "REJECTED -> rejected/in/grey.jpg" in out
    item = routed.item_for("in/grey.jpg")
    assert (item["status"], item["reason"], item.get("label")) == ("REJECTED", "human_rejected", None)
    assert sorted(routed.keys(routed.sorted)) == ["blue/in/blue-1.jpg", "blue/in/red-1.jpg", "rejected/in/grey.jpg"]


def test_two_reviewers_at_once_one_wins_and_the_other_is_told(routed: Any) -> None:
    first, second = reviewer(routed, "ana"), reviewer(routed, "ben")
    source = routed.item_for("in/grey.jpg")["pk"]
    seen_by_first, seen_by_second = first.item(source), second.item(source)  # both pages show the same item
    first.apply(seen_by_first, "green")
    with pytest.raises(Conflict, match="decided meanwhile by ana: now SORTED as green"):
        second.apply(seen_by_second, "blue")
    assert sorted(routed.keys(routed.sorted)) == ["blue/in/blue-1.jpg", "green/in/grey.jpg", "red/in/red-1.jpg"]
    item = routed.item_for("in/grey.jpg")
    assert (item["label"], item["reviewed_by"], len(item["review_history"])) == ("green", "ana", 1)


@pytest.mark.parametrize("step", ["_record", "_delete_if_own"], ids=["after-copy", "after-record"])
def test_a_crash_at_either_step_converges_on_the_next_try(routed: Any, monkeypatch: Any, step: str) -> None:
    crashed = crash_once(monkeypatch, Reviewer, step)
    source = routed.item_for("in/grey.jpg")["pk"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        reviewer(routed, "ana").apply(reviewer(routed, "ana").item(source), "green")
    assert crashed == [step]
    again = reviewer(routed, "ana")
    outcome = again.apply(again.item(source), "green")
    assert outcome.changed == (step == "_record")
    assert sorted(routed.keys(routed.sorted)) == ["blue/in/blue-1.jpg", "green/in/grey.jpg", "red/in/red-1.jpg"]
    item = routed.item_for("in/grey.jpg")
    assert (item["label"], item["review_revision"], len(item["review_history"])) == ("green", 1, 1)


def test_a_name_held_by_another_image_gets_this_revisions_own_name(routed: Any) -> None:
    routed.s3.put_object(Bucket=routed.sorted, Key="green/in/grey.jpg", Body=b"another photo",
                         Metadata={"breedfilter-source-revision": "v:someone-else"})  # fmt: skip
    ana = reviewer(routed, "ana")
    outcome = ana.apply(ana.item(f"{INBOX}/in/grey.jpg"), "green")
    assert outcome.destination_key.startswith("green/in/grey~") and outcome.destination_key.endswith(".jpg")
    assert routed.s3.get_object(Bucket=routed.sorted, Key="green/in/grey.jpg")["Body"].read() == b"another photo"
    assert routed.item_for("in/grey.jpg")["destination_key"] == outcome.destination_key


def test_bad_input_gets_one_clear_line(routed: Any, capsys: Any) -> None:
    code, _, err = run(capsys, f"{INBOX}/in/grey.jpg", "gren")
    assert code == 2 and "unknown label 'gren' (did you mean green?)" in err and "--new-label" in err
    code, _, _ = run(capsys, f"{INBOX}/in/grey.jpg", "purple", "--new-label")
    assert code == 0 and routed.item_for("in/grey.jpg")["label"] == "purple"
    code, _, err = run(capsys, f"{INBOX}/in/nothing.jpg", "red")
    assert code == 2 and err.strip() == f"error: no decision for {INBOX}/in/nothing.jpg in the results table"
    code, _, err = run(capsys, "photos/dog.jpg", "red")
    assert code == 2 and "is not s3://BUCKET/KEY" in err
    routed.s3.delete_object(Bucket=routed.sorted, Key="blue/in/blue-1.jpg")
    code, _, err = run(capsys, f"{INBOX}/in/blue-1.jpg", "red")
    assert code == 2 and "blue/in/blue-1.jpg is gone" in err
    with pytest.raises(SystemExit):
        review_cli.main(["apply", f"{INBOX}/in/grey.jpg", "red", "--reject"])


def test_a_reviewer_overtaken_between_its_copy_and_its_record_removes_its_copy(routed: Any, monkeypatch: Any) -> None:
    ana, ben = reviewer(routed, "ana"), reviewer(routed, "ben")
    source = routed.item_for("in/grey.jpg")["pk"]
    record = Reviewer._record

    def overtaken(self: Reviewer, *args: Any, **kwargs: Any) -> Any:
        if self is ana:  # ben decides while ana's copy is made and her record not yet written
            ben.apply(ben.item(source), "blue")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(Reviewer, "_record", overtaken)
    with pytest.raises(Conflict, match="by ben: now SORTED as blue"):
        ana.apply(ana.item(source), "green")
    assert sorted(routed.keys(routed.sorted)) == ["blue/in/blue-1.jpg", "blue/in/grey.jpg", "red/in/red-1.jpg"]
    assert routed.item_for("in/grey.jpg")["reviewed_by"] == "ben"
