"""Query the results table: by label (newest first), by status, one source object's decisions, counts per label.

    breedfilter results --label Beagle [--limit 20|--all] # GSI by-label, newest first (50 unless told)
    breedfilter results --status REVIEW                  # GSI by-status: what needs review (or REJECTED, SORTED)
    breedfilter results --source s3://INBOX/path/dog.jpg # every decision about that key (a table scan)
    breedfilter results --counts                         # images per label, and per status
    ... [--format table|json|csv] [--stack NAME | --table NAME] [--region REGION]

A listing cut by ``--limit`` says on stderr how many more items match and how to see them.

The table: ``--table``, else ``--stack NAME``'s CloudFormation outputs (ResultsTableName and its index names),
else $RESULTS_TABLE, else the local twin's (``breedfilter-results``, at $AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.twin.local_aws import StackNames

STATUSES = ("SORTED", "REVIEW", "REJECTED")
COLUMNS = ("decided_at", "status", "label", "confidence", "source", "destination", "reason")


@dataclass(frozen=True)
class Table:
    name: str
    by_label: str = "by-label"
    by_status: str = "by-status"


class QueryError(Exception):
    """No table to read, or AWS refused: one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breedfilter results", description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--label", help="images sorted under this label, newest first")
    what.add_argument("--status", type=str.upper, choices=STATUSES, help="decisions with this status, newest first")
    what.add_argument("--source", metavar="S3_URI", help="s3://INBOX_BUCKET/KEY: every decision about that object")
    what.add_argument("--counts", action="store_true", help="images per label and per status")
    parser.add_argument("--limit", type=_limit, default=50, help="most items listed (default 50; 0: all)")
    parser.add_argument("--all", action="store_true", help="list every matching item (same as --limit 0)")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed stack's name (reads its outputs)")
    where.add_argument("--table", help="the results table's name")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    return parser


def _limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("--limit takes a count, or 0 for all")
    return value


def resolve_table(args: argparse.Namespace, session: Any) -> Table:
    if args.table:
        return Table(args.table)
    if args.stack:
        try:
            stacks = session.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
        except Exception as exc:  # ClientError: no such stack; no credentials
            raise QueryError(f"stack {args.stack}: {_aws_message(exc)}") from exc
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        if "ResultsTableName" not in outputs:
            raise QueryError(f"stack {args.stack} has no ResultsTableName output (is it a breedfilter stack?)")
        return Table(
            outputs["ResultsTableName"],
            outputs.get("ResultsByLabelIndexName", "by-label"),
            outputs.get("ResultsByStatusIndexName", "by-status"),
        )
    return Table(os.environ.get("RESULTS_TABLE") or StackNames().results_table)


def _aws_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response:
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return str(exc)


@dataclass
class Listing:
    """The items listed (at most ``--limit``) and how many more match but were left out."""

    items: list[dict[str, Any]]
    more: int = 0


def query(dynamodb: Any, table: Table, args: argparse.Namespace) -> Listing:
    """Items, newest first for label and status queries, at most ``args.limit`` (0: all), and a count of the rest.

    Pages are followed with ``ExclusiveStartKey``; once the limit is reached the rest is only counted
    (``Select=COUNT`` on the same query or scan), so a cut listing can say how many it left out.
    """
    operation, params = _request(table, args)
    call = getattr(dynamodb, operation)
    items: list[dict[str, Any]] = []
    more = 0
    start: dict[str, Any] | None = None
    while True:
        page = call(**params, **({"ExclusiveStartKey": start} if start else {}))
        for item in page.get("Items", []):
            if args.limit and len(items) >= args.limit:
                more += 1
            else:
                items.append(plain_item(item))
        start = page.get("LastEvaluatedKey")
        if not start:
            return Listing(items, more)
        if args.limit and len(items) >= args.limit:
            return Listing(items, more + _count_rest(call, params, start))


def _request(table: Table, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.source:
        bucket, _, key = args.source.removeprefix("s3://").partition("/")
        return "scan", {
            "TableName": table.name,
            "FilterExpression": "source_bucket = :b AND source_key = :k",
            "ExpressionAttributeValues": {":b": {"S": bucket}, ":k": {"S": key}},
        }
    index, name, value = (
        (table.by_label, "label", args.label) if args.label else (table.by_status, "status", args.status)
    )
    return "query", {
        "TableName": table.name,
        "IndexName": index,
        "KeyConditionExpression": "#k = :v",
        "ExpressionAttributeNames": {"#k": name},
        "ExpressionAttributeValues": {":v": {"S": value}},
        "ScanIndexForward": False,
    }


def _count_rest(call: Any, params: dict[str, Any], start: dict[str, Any]) -> int:
    total = 0
    while start:
        page = call(**params, Select="COUNT", ExclusiveStartKey=start)
        total += page.get("Count", 0)
        start = page.get("LastEvaluatedKey")
    return total


def cut_notice(listing: Listing, args: argparse.Namespace) -> str | None:
    """One line for a listing cut by ``--limit``: how many more match, and how to see them."""
    if not listing.more:
        return None
    shown, total = len(listing.items), len(listing.items) + listing.more
    which = "first" if args.source else "newest"
    return (
        f"{listing.more} more not shown: listed the {which} {shown} of {total}; "
        f"--all lists every one, --limit N the {which} N"
    )


def counts(dynamodb: Any, table: Table) -> dict[str, Any]:
    """Per status (SELECT COUNT on the status index) and per label (the SORTED items' labels)."""
    per_status: dict[str, int] = {}
    per_label: Counter[str] = Counter()
    for status in STATUSES:
        total = 0
        for page in dynamodb.get_paginator("query").paginate(
            TableName=table.name,
            IndexName=table.by_status,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status", "#l": "label"},
            ExpressionAttributeValues={":s": {"S": status}},
            ProjectionExpression="#l",
        ):
            total += page.get("Count", 0)
            if status == "SORTED":
                per_label.update(item["label"]["S"] for item in page.get("Items", []) if "label" in item)
        per_status[status] = total
    return {"per_label": dict(sorted(per_label.items(), key=lambda kv: (-kv[1], kv[0]))), "per_status": per_status}


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB client item (typed JSON) as plain values: Decimals as int or float."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return plain_numbers({k: deserializer.deserialize(v) for k, v in item.items()})


def plain_numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_numbers(v) for v in value]
    return value


def row(item: dict[str, Any]) -> dict[str, str]:
    destination = f"s3://{item['destination_bucket']}/{item['destination_key']}" if item.get("destination_key") else ""
    confidence = item.get("confidence")
    return {
        "decided_at": str(item.get("decided_at", "")),
        "status": str(item.get("status", "")),
        "label": str(item.get("label") or item.get("top_label") or ""),
        "confidence": f"{confidence:.3f}" if isinstance(confidence, int | float) else "",
        "source": f"s3://{item.get('source_bucket')}/{item.get('source_key')}",
        "destination": destination,
        "reason": str(item.get("reason", "")),
    }


def render(items: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return "\n".join(json.dumps(item, sort_keys=True) for item in items)
    rows = [row(item) for item in items]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "no items"
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


def render_counts(summary: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(summary, sort_keys=True)
    if fmt == "csv":
        lines = ["kind,name,count"]
        lines += [f"label,{k},{v}" for k, v in summary["per_label"].items()]
        lines += [f"status,{k},{v}" for k, v in summary["per_status"].items()]
        return "\n".join(lines)
    width = max([5, *(len(k) for k in summary["per_label"])])
    lines = [f"{'label'.ljust(width)}  images"]
    lines += [f"{k.ljust(width)}  {v}" for k, v in summary["per_label"].items()]
    lines.append(", ".join(f"{k} {v}" for k, v in summary["per_status"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.all:
        args.limit = 0
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    table: Table | None = None
    try:
        session = boto3.Session(region_name=args.region)
        table = resolve_table(args, session)
        dynamodb = session.client("dynamodb")
        if args.counts:
            print(render_counts(counts(dynamodb, table), args.format))
        else:
            listing = query(dynamodb, table, args)
            print(render(listing.items, args.format))
            notice = cut_notice(listing, args)
            if notice:  # on stderr: JSON and CSV on stdout stay whole
                print(notice, file=sys.stderr)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoCredentialsError:
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        hint = ""
        if isinstance(exc, ClientError) and exc.response["Error"].get("Code") == "ResourceNotFoundException":
            hint = " (a deployed stack? pass --stack NAME; the local twin? point AWS_ENDPOINT_URL at it)"
        print(f"error: table {table.name if table else '?'}: {_aws_message(exc)}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
