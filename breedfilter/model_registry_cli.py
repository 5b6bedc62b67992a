"""``breedfilter model``: what the model registry holds, and the deploy line of the newest approved version.

    breedfilter model approved [--name NAME] [--tracking-uri URI] [--region R] [--json]
    breedfilter model versions [--name NAME] [--tracking-uri URI]

A version exists only when training passed the registry's gate (training/model_registry.py); the newest one
carries the alias ``approved``. The tracking store is ``--tracking-uri``, else MLFLOW_TRACKING_URI, else the
embedded store a local ``python training/train.py`` writes (sqlite:///out/train/output/mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from breedfilter import units

LOCAL_STORE = Path("out/train/output")


class RegistryError(Exception):
    """Nothing to show, or the store cannot be read: one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breedfilter model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("approved", "the newest approved version and its sam deploy line"),
        ("versions", "every registered version with its gate verdict"),
    ):
        command = sub.add_parser(action, help=text, description=text)
        command.add_argument("--name", default="breedfilter", help="registered model name (train.py --register-model)")
        command.add_argument("--tracking-uri", default="", help="MLflow tracking URI or SageMaker MLflow ARN")
        command.add_argument("--region", default=None, help="for the deploy line's inference image")
        command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def tracking_uri(option: str) -> str:
    """train.py's own choice (the option, MLFLOW_TRACKING_URI, else the embedded store), which must exist."""
    tracking = units.training_module("observability.mlflow_tracking")
    uri = tracking.tracking_uri(option, LOCAL_STORE)
    store = LOCAL_STORE / tracking.EMBEDDED_DB
    if uri == tracking.embedded_uri(LOCAL_STORE) and not store.is_file():
        raise RegistryError(
            f"no tracking store: {store} does not exist (train with python training/train.py --register-model NAME, "
            "or pass --tracking-uri / set MLFLOW_TRACKING_URI)"
        )
    return uri


def describe(version: Any) -> dict[str, Any]:
    tags = dict(version.tags or {})
    registry = units.training_module("model_registry")
    return {
        "name": version.name,
        "version": version.version,
        "aliases": list(getattr(version, "aliases", []) or []),
        "run_id": version.run_id,
        "source": version.source,
        "model_data_url": tags.get(registry.MODEL_DATA_TAG, ""),
        "gate": tags.get("gate", ""),
        "verdict": tags.get("gate.verdict", ""),
        "description": version.description or "",
    }


def deploy_lines(model_data_url: str, region: str, folder: str = "model") -> list[str]:
    """The sam deploy line for an artifact in S3; for a local one, how to put it there first."""
    from breedfilter import sagemaker_jobs

    if model_data_url.startswith("s3://"):
        return [f"  {sagemaker_jobs.deploy_line(model_data_url, region)}"]
    if not model_data_url:
        return ["  (this version records no model.tar.gz location: train with --model-data-url)"]
    target = f"s3://BUCKET/models/{folder}/model.tar.gz"
    return [
        f"  the artifact is local ({model_data_url}): upload it, then deploy that URI",
        f"  aws s3 cp {shlex.quote(model_data_url)} {target}",
        f"  {sagemaker_jobs.deploy_line(target, region)}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        print("error: breedfilter model needs mlflow: pip install -e '.[training]'", file=sys.stderr)
        return 2
    try:
        uri = tracking_uri(args.tracking_uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        if args.action == "versions":
            found = client.search_model_versions(f"name = '{args.name}'", order_by=["version_number DESC"])
            if not found:
                raise RegistryError(f"no versions of {args.name!r} in {uri}")
            rows = [describe(v) for v in found]
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for row in rows:
                    alias = f" [{', '.join(row['aliases'])}]" if row["aliases"] else ""
                    print(f"{row['name']} version {row['version']}{alias}: {row['verdict']} ({row['description']})")
            return 0
        registry = units.training_module("model_registry")
        try:
            version = registry.approved(client, args.name)
        except MlflowException as exc:
            raise RegistryError(f"no approved version of {args.name!r} in {uri}: {str(exc).splitlines()[0]}") from exc
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:
        print(f"error: the tracking store {args.tracking_uri or 'in use'}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    row = describe(version)
    if args.json:
        print(json.dumps(row, indent=1))
        return 0
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    print(f"{row['name']} version {row['version']} (alias approved): {row['description']}")
    print(f"  gate: {row['gate']}")
    print(f"  {row['verdict']}")
    print(f"  MLflow run {row['run_id']}, model files {row['source']}")
    print("serve it (after `sam build`):")
    for line in deploy_lines(row["model_data_url"], region, f"{row['name']}-v{row['version']}"):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
