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
    assert answer["known"] is True and answer["threshold"] == 0.6 and 0.0 <= answer["unknown_score"] < 0.75


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


def test_client_reads_known_unknown_score_and_threshold(endpoint, model, monkeypatch):
    model.reset()
    blue = client(endpoint, monkeypatch).classify(image_bytes("blue"), "image/jpeg")
    assert blue.known is True and blue.threshold == 0.6 and blue.unknown_score is not None
    grey = client(endpoint, monkeypatch).classify(image_bytes("grey"), "image/jpeg")
    assert grey.known is False and grey.unknown_score == pytest.approx(1.0) and grey.threshold == 0.6
    assert grey.predictions  # the top guess is kept even for an image of none of the labels


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


ONE = '{"predictions": [{"label": "Beagle", "index": 0, "probability": 0.9}], "model": {"name": "m", "version": "1"}'


def answer(extra: str = "") -> bytes:
    return (ONE + extra + "}").encode()


def test_an_answer_without_the_open_set_fields_is_known_with_no_threshold():
    parsed = parse_answer(answer(), 1.0)
    assert parsed.known is True and parsed.unknown_score is None and parsed.threshold is None
    nulls = parse_answer(answer(', "unknown_score": null, "threshold": null'), 1.0)
    assert nulls.known is True and nulls.unknown_score is None and nulls.threshold is None


@pytest.mark.parametrize(
    ("extra", "known", "unknown_score", "threshold"),
    [
        (', "known": true, "unknown_score": 0.12, "threshold": 0.73', True, 0.12, 0.73),
        (', "known": false, "unknown_score": 7.5, "threshold": 0.5', False, 7.5, 0.5),
        (', "known": false, "unknown_score": -3, "threshold": 1', False, -3.0, 1.0),
        (', "known": false', False, None, None),
        (', "threshold": 0', True, None, 0.0),
    ],
    ids=["known", "unknown", "integers", "known-only", "threshold-zero"],
)
def test_open_set_fields_are_parsed(extra, known, unknown_score, threshold):
    parsed = parse_answer(answer(extra), 1.0)
    assert parsed.known is known and parsed.unknown_score == unknown_score and parsed.threshold == threshold
    assert parsed.threshold is None or isinstance(parsed.threshold, float)


@pytest.mark.parametrize(
    "extra",
    [
        ', "known": "false"',
        ', "known": 0',
        ', "known": null',
        ', "unknown_score": "high"',
        ', "unknown_score": true',
        ', "unknown_score": NaN',
        ', "unknown_score": Infinity',
        ', "unknown_score": 1' + "0" * 400,
        ', "threshold": 1.2',
        ', "threshold": -0.1',
        ', "threshold": "0.6"',
        ', "threshold": false',
        ', "threshold": NaN',
        ', "threshold": [0.6]',
    ],
)
def test_open_set_fields_of_the_wrong_type_are_outside_the_contract(extra):
    with pytest.raises(EndpointUnavailable, match="outside the contract"):
        parse_answer(answer(extra), 1.0)


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
    from routing.endpoint import reason_from

    assert reason_from(original) == reason
