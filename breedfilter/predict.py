"""Classify image files with a model artifact, or with an endpoint (the local twin's or a deployed one); print top-k.

    breedfilter predict IMAGE... [--model out/train/model.tar.gz]      # the artifact, in this process
    breedfilter predict IMAGE... --endpoint NAME [--region REGION]     # sagemaker-runtime InvokeEndpoint

Endpoint mode honours AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (the local twin's endpoint server). One line per file:
``FILE  label probability | label probability ...  -> verdict`` (sorted, or review: unknown / below the model's
own threshold), or ``FILE  error STATUS: reason``; ``--json`` prints the
endpoint's answers as JSON lines. Exit status 1 when any file was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from breedfilter import units
from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.units import REPO_ROOT

DEFAULT_MODEL = REPO_ROOT / "out" / "train" / "model.tar.gz"
CONTENT_TYPE = "application/x-image"  # any image format; the model sniffs it
FALLBACK_THRESHOLD = 0.6  # the router's, for a model whose answers carry no threshold (routing.settings)


class Refused(Exception):
    """The model would not classify this file (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Unusable(Exception):
    """No model to ask (missing artifact, unknown endpoint, no credentials): one message, stop."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breedfilter predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--model", type=Path, help=f"model.tar.gz or its dir (default {DEFAULT_MODEL})")
    where.add_argument("--endpoint", help="SageMaker endpoint name (local twin or AWS)")
    parser.add_argument("--region", help="AWS region of the endpoint (default: your profile's)")
    parser.add_argument("--json", action="store_true", help="JSON lines: {file, predictions, model} or {file, error}")
    return parser


def artifact_classifier(path: Path) -> Callable[[bytes], dict[str, Any]]:
    from breedfilter.twin.artifact_model import ArtifactModel
    from breedfilter.twin.predictor import BadInput

    if not path.exists():
        raise Unusable(f"no model artifact at {path}: train one (python training/train.py --data DIR) or pass --model")
    model = ArtifactModel(path)

    def classify(body: bytes) -> dict[str, Any]:
        try:
            return model(body, CONTENT_TYPE)
        except BadInput as exc:
            raise Refused(exc.status, exc.reason) from exc

    return classify


def endpoint_classifier(name: str, region: str | None) -> Callable[[bytes], dict[str, Any]]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    runtime = boto3.Session(region_name=region).client("sagemaker-runtime")

    def classify(body: bytes) -> dict[str, Any]:
        try:
            answer = runtime.invoke_endpoint(
                EndpointName=name, ContentType=CONTENT_TYPE, Accept="application/json", Body=body
            )
        except NoCredentialsError as exc:
            raise Unusable(NO_CREDENTIALS) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ModelError":  # the container's own 4xx/5xx, wrapped by sagemaker-runtime
                status = int(exc.response.get("OriginalStatusCode") or 500)
                raise Refused(status, _reason(exc.response.get("OriginalMessage") or error.get("Message", ""))) from exc
            raise Unusable(f"endpoint {name}: {error.get('Code')}: {error.get('Message')}") from exc
        except BotoCoreError as exc:
            raise Unusable(f"endpoint {name}: {exc}") from exc
        return json.loads(answer["Body"].read())

    return classify


def _reason(message: str) -> str:
    """The model's reason from a ModelError's OriginalMessage, read as the router reads it (JSON first, the
    inference toolkit's traceback dropped): one parser, functions/router's."""
    return units.router_module("routing.endpoint").reason_from(message)


def line(path: Path, answer: dict[str, Any]) -> str:
    """``FILE  label p | label p ...  -> verdict``: what the router would do with the model's own threshold."""
    top = " | ".join(f"{p['label']} {p['probability']:.3f}" for p in answer["predictions"])
    return f"{path}  {top}  -> {verdict(answer)}"


def verdict(answer: dict[str, Any]) -> str:
    """``sorted``, ``review: unknown`` or ``review: below threshold T``; ``threshold?`` for an old model."""
    score = answer.get("unknown_score")
    if answer.get("known") is False:
        return f"review: not one of the labels (unknown score {score:.4g})"
    threshold, whose = answer.get("threshold"), "its"
    if threshold is None:  # a model trained before calibration: the router applies its fallback
        threshold, whose = FALLBACK_THRESHOLD, "the router's fallback"
    top = answer["predictions"][0]["probability"]
    return (
        ("sorted" if whose == "its" else f"sorted ({whose} {threshold:g}: the model has no threshold of its own)")
        if top >= threshold
        else f"review: below {whose} threshold {threshold:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.endpoint:
            classify = endpoint_classifier(args.endpoint, args.region)
        else:
            classify = artifact_classifier(args.model or DEFAULT_MODEL)
        refused, header = 0, False
        for path in args.images:
            try:
                body = path.read_bytes()
                answer = classify(body)
            except OSError as exc:
                refused += 1
                result = {"file": str(path), "error": exc.strerror or str(exc), "status": None}
                print(json.dumps(result) if args.json else f"{path}  error: {result['error']}")
                continue
            except Refused as exc:
                refused += 1
                result = {"file": str(path), "error": exc.reason, "status": exc.status}
                print(json.dumps(result) if args.json else f"{path}  error {exc.status}: {exc.reason}")
                continue
            if args.json:
                print(json.dumps({"file": str(path), **answer}))
            else:
                if not header:
                    model = answer.get("model", {})
                    print(f"model {model.get('name')} {model.get('version')}")
                    header = True
                print(line(path, answer))
    except Unusable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
