"""The local endpoint speaks SageMaker's contract, and the router's client classifies what it answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from routing.endpoint import EndpointClient, EndpointRejected, EndpointUnavailable, make_client, parse_answer
from tests.images import TEXT_AS_JPG, image_bytes


def http(url, data=None, content_type="image/jpeg"):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def runtime(endpoint, model, monkeypatch):
    model.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    return boto3.client("sagemaker-runtime", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))


def test_ping_and_container_invocations(endpoint, model):
    model.reset()
    assert http(f"{endpoint.url}/ping")[0] == 200
    status, answer = http(f"{endpoint.url}/invocations", image_bytes("blue"))
    assert status == 200
    assert answer["predictions"][0]["label"] == "blue"
    assert {"label", "index", "probability"} <= set(answer["predictions"][0])
    assert answer["model"] == {"name": "stand-in-colour", "version": "0"}
    assert sum(p["probability"] for p in answer["predictions"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [(TEXT_AS_JPG, "image/jpeg", 400), (b"", "image/jpeg", 400), (image_bytes(), "text/plain", 415)],
    ids=["undecodable", "empty", "wrong-content-type"],
)
def test_container_answers_4xx_with_a_json_reason(endpoint, body, content_type, status):
    code, answer = http(f"{endpoint.url}/invocations", body, content_type)
    assert code == status and answer["error"]


def test_runtime_path_answers_boto3(runtime):
    response = runtime.invoke_endpoint(
        EndpointName="breedfilter-classifier", Body=image_bytes("green", "PNG"), ContentType="image/png"
    )
    assert json.loads(response["Body"].read())["predictions"][0]["label"] == "green"
    assert response["InvokedProductionVariant"] == "AllTraffic"


def test_runtime_wraps_model_4xx_as_model_error(runtime):
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="breedfilter-classifier", Body=TEXT_AS_JPG, ContentType="image/jpeg")
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 400
    assert "cannot decode" in json.loads(error["OriginalMessage"])["error"]


def test_runtime_unknown_endpoint_is_a_validation_error(runtime):
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="nope", Body=image_bytes(), ContentType="image/jpeg")
    assert caught.value.response["Error"]["Code"] == "ValidationError"


def client(endpoint, monkeypatch, name="breedfilter-classifier", timeout=2.0, attempts=1):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    return EndpointClient(make_client(timeout, attempts), name)


def test_client_returns_ranked_predictions(endpoint, model, monkeypatch):
    model.reset()
    answer = client(endpoint, monkeypatch).classify(image_bytes("red"), "image/jpeg")
    probabilities = [p["probability"] for p in answer.predictions]
    assert answer.predictions[0]["label"] == "red" and probabilities == sorted(probabilities, reverse=True)
    assert answer.latency_ms > 0


def test_client_maps_model_4xx_to_rejection(endpoint, model, monkeypatch):
    model.reset()
    with pytest.raises(EndpointRejected) as caught:
        client(endpoint, monkeypatch).classify(TEXT_AS_JPG, "image/jpeg")
    assert caught.value.status == 400 and "cannot decode" in caught.value.reason


@pytest.mark.parametrize("fault", ["fail", "throttle", ("sleep", 1.0)], ids=["5xx", "throttled", "timeout"])
def test_client_maps_transient_failures_to_unavailable(endpoint, model, monkeypatch, fault):
    model.reset()
    model.script(fault)
    with pytest.raises(EndpointUnavailable):
        client(endpoint, monkeypatch, timeout=0.3).classify(image_bytes(), "image/jpeg")


def test_client_unknown_endpoint_is_unavailable_not_rejected(endpoint, monkeypatch):
    with pytest.raises(EndpointUnavailable, match="ValidationError"):
        client(endpoint, monkeypatch, name="missing").classify(image_bytes(), "image/jpeg")


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"{}", b'{"predictions": []}', b'{"predictions": [{"label": "x"}]}'],
    ids=["not-json", "no-predictions", "empty-predictions", "missing-fields"],
)
def test_answers_outside_the_contract_are_unavailable(payload):
    with pytest.raises(EndpointUnavailable):
        parse_answer(payload, 1.0)


@pytest.mark.parametrize(
    ("original", "reason"),
    [
        # SageMaker's inference toolkit: the message, a newline, then the traceback.
        (
            '{"error": "cannot decode image: truncated", "status": 400}\nTraceback (most recent call last):\n  File',
            "cannot decode image: truncated",
        ),
        ('{"reason": "too many pixels"}', "too many pixels"),
        ("plain text reason\nTraceback (most recent call last):", "plain text reason"),
        ("", ""),
    ],
)
def test_rejection_reason_is_the_model_message_without_a_traceback(original, reason):
    from routing.endpoint import _reason_from

    assert _reason_from(original) == reason
