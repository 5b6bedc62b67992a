"""``breedfilter review``: a local review page for the images the model did not sort, against the local twin or a
deployed stack (your own credentials; nothing new to deploy).

The page (review_page.html) shows REVIEW items newest first as tiles (presigned URLs, 15 minutes), filtered by
reason (``below_threshold``, ``unknown_label``) or top guess, or a label folder's SORTED images to fix a wrong one.
Each tile offers the model's top-k guesses as one-click answers, a search over every label, and "none of these"
(to ``rejected/``); keys: 1-9 pick a guess, x rejects, / searches, j/k move between tiles. Every answer goes
through review_decisions.Reviewer, as ``breedfilter review apply`` does: the copy moves once, and a second
reviewer of the same image is told (409).

    breedfilter review                       # the local twin (breedfilter local up, or make demo's stack)
    breedfilter review --stack breedfilter   # a deployed stack
    ... [--port 8765] [--no-open] [--by NAME]

API (JSON): GET /api/items?status=REVIEW|SORTED&label=&reason=&guess=&limit=; GET /api/labels;
POST /api/decide {"source", "seen_key", "label" | "reject": true}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import webbrowser
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from boto3.dynamodb.conditions import Key

from breedfilter.results import Table, plain_numbers
from breedfilter.review_cli import known_labels, reviewer_for
from breedfilter.review_decisions import Conflict, Reviewer, ReviewError

URL_SECONDS = 900
MAX_LIMIT = 200
SHOWN = ("pk", "status", "label", "top_label", "confidence", "reason", "detail", "top_k", "known", "threshold")
SHOWN += ("decided_at", "source_bucket", "source_key", "destination_key", "reviewed_by", "reviewed_at")


class ReviewApp:
    """What the page's API does, apart from HTTP: list items, the labels, decide."""

    def __init__(self, reviewer: Reviewer) -> None:
        self.reviewer = reviewer
        self.indexes = Table(reviewer.table.name)  # the by-label and by-status indexes template.yaml names
        self._labels: set[str] | None = None

    def items(
        self, status: str = "REVIEW", label: str = "", reason: str = "", guess: str = "", limit: int = 60
    ) -> list:
        status = status.upper()
        if status not in ("REVIEW", "SORTED", "REJECTED"):
            raise ReviewError(f"status must be REVIEW, SORTED or REJECTED, not {status!r}")
        limit = max(1, min(limit, MAX_LIMIT))
        table = self.reviewer.table
        if label:  # a label folder: by-label index, newest first
            query = {"IndexName": self.indexes.by_label, "KeyConditionExpression": Key("label").eq(label)}
        else:
            query = {"IndexName": self.indexes.by_status, "KeyConditionExpression": Key("status").eq(status)}
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {**query, "ScanIndexForward": False}
        while len(found) < limit:
            page = table.query(**request)
            for item in page.get("Items", []):
                if reason and item.get("reason") != reason:
                    continue
                if guess and item.get("top_label") != guess:
                    continue
                found.append(item)
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [self._shown(item) for item in found[:limit]]

    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = known_labels(self.reviewer.table)
        return sorted(self._labels)

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        source, seen = body.get("source"), body.get("seen_key")
        label, reject = body.get("label"), bool(body.get("reject"))
        if not isinstance(source, str) or not source:
            raise ReviewError("the answer names no source")
        if reject == (label is not None):
            raise ReviewError("answer with a label or reject, not both or neither")
        item = self.reviewer.item(source)
        if seen and item.get("destination_key") != seen:  # decided since this page loaded
            who = item.get("reviewed_by", "the router")
            raise Conflict(f"{source} was decided meanwhile by {who}: now {item.get('status')} {item.get('label', '')}")
        labels = None if reject or body.get("new_label") else set(self.labels())
        outcome = self.reviewer.apply(item, None if reject else str(label), labels=labels)
        if outcome.label and self._labels is not None:
            self._labels.add(outcome.label)
        return {"item": self._shown(outcome.item), "changed": outcome.changed, "message": outcome.line(source)}

    def _shown(self, item: dict[str, Any]) -> dict[str, Any]:
        shown = {key: plain_numbers(item[key]) for key in SHOWN if key in item}
        shown["image_url"] = self.reviewer.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.reviewer.sorted_bucket, "Key": item["destination_key"]},
            ExpiresIn=URL_SECONDS,
        )
        return shown


def page_html() -> bytes:
    return (Path(__file__).parent / "review_page.html").read_bytes()  # package data (pyproject.toml)


class ReviewServer:
    """``with ReviewServer(app) as server``: the page and its API on 127.0.0.1 in a background thread."""

    def __init__(self, app: ReviewApp, port: int = 0) -> None:
        self.app = app
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(app))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> ReviewServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="review-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()


def _handler_for(app: ReviewApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path in ("/", "/index.html"):
                self._send(200, page_html(), "text/html; charset=utf-8")
            elif url.path == "/api/items":
                self._answer(
                    lambda: {
                        "items": app.items(
                            query.get("status", "REVIEW"),
                            query.get("label", ""),
                            query.get("reason", ""),
                            query.get("guess", ""),
                            int(query.get("limit", "60") or 60),
                        )
                    }
                )
            elif url.path == "/api/labels":
                self._answer(lambda: {"labels": app.labels()})
            else:
                self._json(404, {"error": f"no page {url.path}"})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/api/decide":
                self._json(404, {"error": f"no route {self.path}"})
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._json(400, {"error": "the answer is not JSON"})
                return
            self._answer(lambda: app.decide(body if isinstance(body, dict) else {}))

        def _answer(self, work: Any) -> None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self._json(200, work())
            except Conflict as exc:
                self._json(409, {"error": str(exc)})
            except (ReviewError, ValueError) as exc:
                self._json(400, {"error": str(exc)})
            except (ClientError, BotoCoreError) as exc:
                self._json(502, {"error": f"AWS: {exc}"})

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="breedfilter review", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", help="a deployed stack's name (default: the local twin)")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--by", help="who reviews (default: your user name)")
    parser.add_argument("--no-open", action="store_true", help="do not open a browser")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        reviewer, where = reviewer_for(args.stack, args.region, args.by)
        app = ReviewApp(reviewer)
        app.items(limit=1)  # reach the table now: a wrong stack or no twin is said here, not in the page
    except ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # ClientError, no credentials, nothing listening at the twin's endpoint
        print(f"error: cannot read the results table of {where}: {exc}", file=sys.stderr)
        print(
            "(the local twin? start it with: breedfilter local up; a deployed stack? pass --stack NAME)",
            file=sys.stderr,
        )
        return 1
    server = ReviewServer(app, args.port)
    print(f"review page: {server.url}  ({where}, reviewing as {reviewer.by}; Ctrl-C stops)", flush=True)
    if not args.no_open:
        webbrowser.open(server.url)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
