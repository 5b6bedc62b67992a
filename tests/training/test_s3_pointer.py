"""Photos by S3 pointer: training/s3_pointer.py and inference.py's JSON path, against moto's S3 in-process."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

import inference
import s3_pointer
from inference import InferenceError
from tests.images import image_bytes

BUCKET = "inbox"


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3_pointer._clients.clear()  # a client made outside this mock would reach the real endpoint
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client
        s3_pointer._clients.clear()


def pointer(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_pointer_decodes_to_the_same_image_as_the_body(s3):
    body = image_bytes("green", "PNG", size=(64, 48))
    version = s3.put_object(Bucket=BUCKET, Key="a dir/phone #1.png", Body=body)["VersionId"]
    s3.put_object(Bucket=BUCKET, Key="a dir/phone #1.png", Body=image_bytes("red", "PNG"))  # a later revision
    by_pointer = inference.input_fn(
        pointer(s3_uri=f"s3://{BUCKET}/a dir/phone #1.png", version_id=version), "application/json"
    )
    direct = inference.input_fn(body, "image/png")
    assert list(by_pointer.getdata()) == list(direct.getdata())  # the revision named, not the newest


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"s3_uri": f"s3://{BUCKET}/missing.jpg"}, 404, "no such object"),
        ({"s3_uri": f"s3://{BUCKET}/photo.jpg", "etag": "0" * 32}, 412, "no longer holds"),
        ({"s3_uri": "https://example.com/x.jpg"}, 400, "s3://bucket/key"),
        ({"s3_uri": f"s3://{BUCKET}/"}, 400, "names no object"),
        ({"s3_uri": f"s3://{BUCKET}/photo.jpg", "version_id": 7}, 400, "version_id must be a string"),
        ({"s3_uri": f"s3://{BUCKET}/photo.jpg", "extra": 1}, 400, "unknown field"),
    ],
)
def test_a_pointer_that_cannot_be_followed_is_a_clear_4xx(s3, fields, status, words):
    s3.put_object(Bucket=BUCKET, Key="photo.jpg", Body=image_bytes())
    with pytest.raises(InferenceError) as caught:
        inference.input_fn(pointer(**fields), "application/json")
    assert caught.value.status_code == status and words in caught.value.reason


def test_an_object_over_the_cap_is_refused_before_it_is_read(s3, monkeypatch):
    body = image_bytes("blue", "PNG", size=(200, 200))
    s3.put_object(Bucket=BUCKET, Key="big.png", Body=body)
    monkeypatch.setenv(s3_pointer.MAX_BYTES_VARIABLE, str(len(body) - 1))
    with pytest.raises(InferenceError) as caught:
        inference.input_fn(pointer(s3_uri=f"s3://{BUCKET}/big.png"), "application/json")
    assert caught.value.status_code == 413 and f"{len(body)} bytes" in caught.value.reason
    monkeypatch.setenv(s3_pointer.MAX_BYTES_VARIABLE, str(len(body)))
    assert inference.input_fn(pointer(s3_uri=f"s3://{BUCKET}/big.png"), "application/json").size == (200, 200)


def test_a_pointer_to_bytes_that_are_no_image_is_the_same_4xx_as_such_a_body(s3):
    s3.put_object(Bucket=BUCKET, Key="notes.jpg", Body=b"plain text, named .jpg")
    with pytest.raises(InferenceError) as by_pointer:
        inference.input_fn(pointer(s3_uri=f"s3://{BUCKET}/notes.jpg"), "application/json")
    with pytest.raises(InferenceError) as by_body:
        inference.input_fn(b"plain text, named .jpg", "image/jpeg")
    assert (by_pointer.value.status_code, by_pointer.value.reason) == (by_body.value.status_code, by_body.value.reason)
