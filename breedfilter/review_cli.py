"""``breedfilter review apply``: a person's decision on one image, from a script (the review page does the same).

    breedfilter review apply s3://INBOX/photos/dog.jpg Beagle          # confirm a label: the copy moves to Beagle/
    breedfilter review apply 's3://INBOX/dog.jpg#v:VERSION' Beagle      # one revision of a reused key
    breedfilter review apply s3://INBOX/photos/cat.jpg --reject         # not a dog / none of these: to rejected/
    ... [--new-label] [--by NAME] [--stack NAME] [--region REGION]

Labels are checked against those the table knows (labels sorted so far and every top-k guess); ``--new-label``
accepts one the model lacks. Where: ``--stack NAME``'s outputs (ResultsTableName, SortedBucketName), else the
local twin's (at $AWS_ENDPOINT_URL). Exit 0 when applied (or already so), 1 when another reviewer decided first
or AWS failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.review_decisions import Conflict, Reviewer, ReviewError
from breedfilter.twin.local_aws import StackNames


@dataclass(frozen=True)
class Stack:
    results_table: str
    sorted_bucket: str
    by_status_index: str = "by-status"


def resolve_stack(stack: str | None, session: Any) -> Stack:
    """A deployed stack's outputs, or the local twin's names."""
    if not stack:
        names = StackNames()
        return Stack(names.results_table, names.sorted_bucket)
    try:
        found = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:  # no such stack, no credentials
        raise ReviewError(f"stack {stack}: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs", [])}
    if "ResultsTableName" not in outputs or "SortedBucketName" not in outputs:
        raise ReviewError(f"stack {stack} has no ResultsTableName/SortedBucketName outputs (a breedfilter stack?)")
    return Stack(
        outputs["ResultsTableName"], outputs["SortedBucketName"], outputs.get("ResultsByStatusIndexName", "by-status")
    )


def known_labels(table: Any) -> set[str]:
    """Every label the table has seen: sorted images' labels and the model's top-k guesses."""
    labels: set[str] = set()
    scan: dict[str, Any] = {"ProjectionExpression": "#label, top_k", "ExpressionAttributeNames": {"#label": "label"}}
    while True:
        page = table.scan(**scan)
        for item in page.get("Items", []):
            if item.get("label"):
                labels.add(item["label"])
            labels.update(guess["label"] for guess in item.get("top_k") or [] if guess.get("label"))
        if "LastEvaluatedKey" not in page:
            return labels
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def reviewer_for(stack: str | None, region: str | None, by: str | None = None) -> tuple[Reviewer, Stack]:
    import boto3

    session = boto3.Session(region_name=region)
    where = resolve_stack(stack, session)
    table = session.resource("dynamodb").Table(where.results_table)
    return Reviewer(session.client("s3"), table, where.sorted_bucket, by or ""), where


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breedfilter review apply", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="s3://INBOX_BUCKET/KEY (or a source id, s3://…#v:VERSION)")
    parser.add_argument("label", nargs="?", help="the right label (omit with --reject)")
    parser.add_argument("--reject", action="store_true", help="not a dog / none of these: move it to rejected/")
    parser.add_argument("--new-label", action="store_true", help="accept a label the table has never seen")
    parser.add_argument("--by", help="who decides (default: your user name)")
    parser.add_argument("--stack", help="a deployed stack's name (default: the local twin)")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "apply":
        print("usage: breedfilter review apply SOURCE (LABEL | --reject) [--stack NAME]", file=sys.stderr)
        return 2
    parser = build_parser()
    options = parser.parse_args(args[1:])
    if options.reject == (options.label is not None):
        parser.error("give a LABEL or --reject, not both or neither")
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        reviewer, _ = reviewer_for(options.stack, options.region, options.by)
        item = reviewer.item(options.source)
        labels = None if options.reject or options.new_label else known_labels(reviewer.table)
        outcome = reviewer.apply(item, None if options.reject else options.label, labels=labels)
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoCredentialsError:
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(outcome.line(item["pk"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
