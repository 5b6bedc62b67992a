"""Fixtures: one moto server and one local endpoint server per session; a fresh stack per test.

Nothing here reaches AWS: fake credentials, and every client points at 127.0.0.1 through AWS_ENDPOINT_URL*.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from breedfilter.twin.endpoint_server import EndpointServer
from breedfilter.twin.lambda_runtime import LambdaContext, load_handler
from breedfilter.twin.local_aws import (
    FAKE_CREDENTIALS,
    LocalAws,
    Stack,
    StackNames,
    aws_environment,
    object_keys,
    queue_depth,
    router_environment,
    scan_items,
)
from breedfilter.twin.moto_s3_conditions import install as install_s3_conditions
from breedfilter.twin.sqs_poller import PollReport, SqsEventSource
from breedfilter.twin.stand_in_model import ColourModel
from tests.endpoint_faults import ScriptedModel

# No test may reach AWS, even one that forgets a fixture.
os.environ.update(FAKE_CREDENTIALS)
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["POWERTOOLS_TRACE_DISABLED"] = "1"
os.environ["POWERTOOLS_DEV"] = "0"
# The endpoint's forward pass in fp32 everywhere a test ties its numbers to training's evaluation (fp32), on any
# CPU; the precision tests (tests/training/test_inference.py) set bf16 and auto themselves.
os.environ["BREEDFILTER_PRECISION"] = "fp32"
# Training runs record to MLflow by default, each into an embedded store in its output dir, whose first use builds
# the SQLite schema (seconds). The tests' runs share one store per session instead, and cache features under it,
# never in the home directory; the tests of the embedded default unset MLFLOW_TRACKING_URI themselves.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="breedfilter-tests-"))
atexit.register(shutil.rmtree, _SESSION_DIR, True)
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
os.environ["BREEDFILTER_FEATURE_CACHE"] = str(_SESSION_DIR / "features")
# moto ignores CopyObject's If-None-Match and copy-source If-Match; S3 honours both, and the router relies on them
# (LocalAws.start installs it too; this covers in-process mock_aws).
install_s3_conditions()


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's in-process AWS with fake credentials (no endpoint or profile from the environment): an S3 client."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no AWS credentials anywhere (environment, files, instance metadata); were a request sent
    anyway, it would go nowhere."""
    for name in (
        *FAKE_CREDENTIALS,
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model.tar.gz from training/train.py: a tiny network, one epoch on generated colour classes."""
    import train  # training/ is on the path, as on SageMaker
    from tests.image_datasets import make_dataset

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "data", {"train": 12, "valid": 4, "test": 4}, size=40)
    out = root / "run"
    train.main(
        [
            "--data", str(data), "--model", "timm/test_efficientnet", "--weights", "none", "--image-size", "32",
            "--num-workers", "0", "--epochs", "1", "--lr", "0.01", "--unfreeze-epoch", "0",
            "--model-dir", str(out / "model"), "--output-data-dir", str(out / "output"),
            "--checkpoint-dir", str(out / "ckpt"), "--tensorboard-dir", "none",
        ]
    )  # fmt: skip
    return out / "model.tar.gz"


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws() as aws:
        yield aws


@pytest.fixture(scope="session")
def model() -> ScriptedModel:
    return ScriptedModel(ColourModel())


@pytest.fixture(scope="session")
def endpoint(model: ScriptedModel) -> Iterator[EndpointServer]:
    with EndpointServer(model, "breedfilter-classifier") as server:
        yield server


@dataclass
class Harness:
    """The stack under test, with the router wired to it the way the local twin wires it."""

    aws: LocalAws
    stack: Stack
    model: ScriptedModel
    s3: Any
    sqs: Any
    dynamodb: Any
    handler: Any
    source: SqsEventSource

    @property
    def inbox(self) -> str:
        return self.stack.names.inbox_bucket

    @property
    def sorted(self) -> str:
        return self.stack.names.sorted_bucket

    def put(self, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
        return self.s3.put_object(Bucket=self.inbox, Key=key, Body=body, **extra)

    def drain(self, max_seconds: float = 30.0) -> PollReport:
        return self.source.drain(max_seconds=max_seconds)

    def keys(self, bucket: str) -> list[str]:
        return object_keys(self.s3, bucket)

    def inbox_versions(self) -> list[dict[str, Any]]:
        listing = self.s3.list_object_versions(Bucket=self.inbox)
        return listing.get("Versions", []) + listing.get("DeleteMarkers", [])

    def items(self) -> list[dict[str, Any]]:
        return scan_items(self.dynamodb, self.stack.names.results_table)

    def item_for(self, key: str) -> dict[str, Any]:
        found = [item for item in self.items() if item["source_key"] == key]
        assert len(found) == 1, f"expected one item for {key!r}, found {len(found)}"
        return found[0]

    def queue_depth(self, url: str | None = None) -> int:
        return queue_depth(self.sqs, url or self.stack.queue_url)

    def receive_one(self) -> dict[str, Any]:
        messages = self.sqs.receive_message(QueueUrl=self.stack.queue_url, MaxNumberOfMessages=1)["Messages"]
        return messages[0]

    def send_body(self, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.stack.queue_url, MessageBody=text)

    def invoke(self, event: dict[str, Any]) -> Any:
        return self.handler(event, LambdaContext())


def build_harness(
    local_aws: LocalAws,
    endpoint: EndpointServer,
    model: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
    *,
    versioned_inbox: bool = True,
    env: dict[str, str] | None = None,
    names: StackNames | None = None,
) -> Harness:
    local_aws.reset()
    model.reset()
    stack = local_aws.provision(names, versioned_inbox=versioned_inbox, max_receive_count=3)
    variables = {
        **aws_environment(local_aws.url, endpoint.url),
        **router_environment(stack),
        "ENDPOINT_TIMEOUT_SECONDS": "1",
        "ENDPOINT_MAX_ATTEMPTS": "3",
        **(env or {}),
    }
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    handler = load_handler()
    import app  # loaded by load_handler, as Lambda loads it

    app.router_for.cache_clear()
    sqs = local_aws.client("sqs")
    return Harness(
        aws=local_aws,
        stack=stack,
        model=model,
        s3=local_aws.client("s3"),
        sqs=sqs,
        dynamodb=local_aws.client("dynamodb"),
        handler=handler,
        # time_scale=0: a failed message is visible again at once (unit tests need not wait the scaled
        # visibility timeout; tests/cli/test_twin_fidelity.py checks the scaled clock)
        source=SqsEventSource(sqs, stack.queue_url, handler, batch_size=10, time_scale=0),
    )


@pytest.fixture
def harness(
    local_aws: LocalAws, endpoint: EndpointServer, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> Harness:
    return build_harness(local_aws, endpoint, model, monkeypatch)


@pytest.fixture
def make_harness(local_aws: LocalAws, endpoint: EndpointServer, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch):
    def make(**kwargs: Any) -> Harness:
        return build_harness(local_aws, endpoint, model, monkeypatch, **kwargs)

    return make
