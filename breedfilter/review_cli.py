"""``breedfilter review apply``: a person's decision on one image, from a script (the review page does the same).

    breedfilter review apply s3://INBOX/photos/dog.jpg Beagle          # confirm a label: the copy moves to Beagle/
    breedfilter review apply 's3://INBOX/dog.jpg#v:VERSION' Beagle      # one revision of a reused key
    breedfilter review apply s3://INBOX/photos/cat.jpg --reject         # not a dog / none of these: to rejected/
    ... [--new-label] [--by NAME] [--stack NAME] [--region REGION]

Labels are checked against those the table knows (labels sorted so far and every top-k guess); ``--new-label``
accepts one the model lacks. Where: ``--stack NAME``'s outputs (ResultsTableName, SortedBucketName), else the
local twin (its exported environment, else the running twin's state), as ``breedfilter reconcile`` finds them.
Exit 0 when applied (or already so), 1 when another reviewer decided first or AWS failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.reconcile_cli import TargetError, resolve_target
from breedfilter.review_decisions import Conflict, Reviewer, ReviewError


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


def reviewer_for(stack: str | None, region: str | None, by: str | None = None) -> tuple[Reviewer, str]:
    """A Reviewer on ``--stack NAME``, else the local twin, found as reconcile, backfill and redrive find them
    (reconcile_cli.resolve_target: the exported environment, else the running twin's state); and where that is."""
    try:
        target = resolve_target(stack, region)
    except TargetError as exc:
        raise ReviewError(str(exc)) from exc
    if not target.sorted_bucket:
        raise ReviewError(f"{target.where} has no SortedBucketName output (is it a breedfilter stack?)")
    dynamodb = target.session.resource("dynamodb", endpoint_url=target.endpoint_url)
    table = dynamodb.Table(target.results_table)
    return Reviewer(target.client("s3"), table, target.sorted_bucket, by or ""), target.where


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
