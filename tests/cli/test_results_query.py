"""`breedfilter results` against the local stack after real routing: by label (newest first), by status, one
source's decisions, counts; table, JSON and CSV; a deployed stack's table names from its CloudFormation outputs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from breedfilter import results
from tests.images import TEXT_AS_JPG, image_bytes


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = results.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def routed(harness: Any) -> Any:
    for name in ("red-1", "red-2", "blue-1"):
        harness.put(f"in/{name}.jpg", image_bytes(name.split("-")[0]))
        harness.drain()  # one at a time: decided_at orders them
    harness.put("in/grey.jpg", image_bytes("grey"))  # none of the stand-in model's labels: review, unknown_label
    harness.put("in/notes.jpg", TEXT_AS_JPG)
    harness.drain()
    return harness


def test_by_label_newest_first_as_json(routed: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "--label", "red", "--format", "json")
    assert code == 0
    items = [json.loads(line) for line in out.splitlines()]
    assert [i["source_key"] for i in items] == ["in/red-2.jpg", "in/red-1.jpg"]
    assert items[0]["decided_at"] > items[1]["decided_at"] and isinstance(items[0]["confidence"], float)
    assert items[0]["destination_key"] == "red/in/red-2.jpg"


def test_by_status_shows_what_needs_review_and_what_was_rejected(routed: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "--status", "review")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == list(results.COLUMNS)
    assert len(lines) == 2 and "REVIEW" in lines[1] and "s3://breedfilter-inbox-local/in/grey.jpg" in lines[1]
    assert lines[1].split()[-1] == "unknown_label"  # the reason column says why it needs review
    code, out, _ = run(capsys, "--status", "REJECTED", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["source"] for r in rows] == ["s3://breedfilter-inbox-local/in/notes.jpg"]
    assert rows[0]["reason"] and rows[0]["destination"] == "s3://breedfilter-sorted-local/rejected/in/notes.jpg"


def test_one_sources_decision_and_the_counts(routed: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "--source", "s3://breedfilter-inbox-local/in/blue-1.jpg", "--format", "json")
    assert code == 0 and json.loads(out)["label"] == "blue"
    code, out, _ = run(capsys, "--counts", "--format", "json")
    assert json.loads(out) == {
        "per_label": {"red": 2, "blue": 1},
        "per_status": {"SORTED": 3, "REVIEW": 1, "REJECTED": 1},
    }
    code, out, _ = run(capsys, "--counts")
    assert out.splitlines()[1].split() == ["red", "2"] and "REVIEW 1" in out
    code, out, _ = run(capsys, "--label", "red", "--limit", "1", "--format", "json")
    assert len(out.splitlines()) == 1


def test_a_deployed_stack_is_found_by_its_outputs(routed: Any, capsys: Any) -> None:
    """moto's CloudFormation runs no SAM transform, so a stub stack carries the outputs the real one declares."""
    template = {
        "Resources": {"Nothing": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "ResultsTableName": {"Value": routed.stack.names.results_table},
            "ResultsByLabelIndexName": {"Value": "by-label"},
            "ResultsByStatusIndexName": {"Value": "by-status"},
        },
    }
    routed.aws.client("cloudformation").create_stack(StackName="breedfilter", TemplateBody=json.dumps(template))
    code, out, _ = run(capsys, "--stack", "breedfilter", "--label", "blue", "--format", "json")
    assert code == 0 and json.loads(out)["source_key"] == "in/blue-1.jpg"
    code, _, err = run(capsys, "--stack", "nope", "--counts")
    assert code == 2 and err.startswith("error: stack nope:")
    code, _, err = run(capsys, "--table", "missing-table", "--counts")
    assert code == 1 and "ResourceNotFoundException" in err and "--stack NAME" in err


def test_a_cut_listing_says_how_many_more_and_how_to_see_them(routed: Any, capsys: Any) -> None:
    code, out, err = run(capsys, "--status", "SORTED", "--limit", "1", "--format", "json")
    assert code == 0 and len(out.splitlines()) == 1  # stdout stays valid JSON lines
    assert "2 more not shown" in err and "newest 1 of 3" in err and "--all" in err and "--limit N" in err
    code, out, err = run(capsys, "--status", "SORTED", "--all", "--format", "json")
    assert len(out.splitlines()) == 3 and err == ""
    code, out, err = run(capsys, "--status", "SORTED", "--limit", "3")
    assert len(out.splitlines()) == 1 + 3 and err == ""  # all there: nothing to say
    code, out, err = run(capsys, "--source", "s3://breedfilter-inbox-local/in/red-1.jpg", "--limit", "1")
    assert err == ""


def test_the_count_of_the_rest_follows_every_page(harness: Any, capsys: Any) -> None:
    """Eight 200 KB items: a query page stops at 1 MB, so the rest spans pages that are only counted."""
    table = harness.stack.names.results_table
    padding = "x" * 200_000
    harness.dynamodb.batch_write_item(
        RequestItems={
            table: [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": {"S": f"s3://breedfilter-inbox-local/big-{i}.jpg#e:{i}"},
                            "status": {"S": "REVIEW"},
                            "decided_at": {"S": f"2026-01-01T00:00:0{i}Z"},
                            "source_bucket": {"S": "breedfilter-inbox-local"},
                            "source_key": {"S": f"big-{i}.jpg"},
                            "padding": {"S": padding},
                        }
                    }
                }
                for i in range(8)
            ]
        }
    )
    code, out, err = run(capsys, "--status", "REVIEW", "--limit", "2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["source"] for r in rows] == [
        "s3://breedfilter-inbox-local/big-7.jpg",
        "s3://breedfilter-inbox-local/big-6.jpg",
    ]
    assert err.startswith("6 more not shown: listed the newest 2 of 8")
    code, out, err = run(capsys, "--status", "REVIEW", "--limit", "0", "--format", "json")
    assert len(out.splitlines()) == 8 and err == ""
