"""`breedfilter predict` with a trained artifact (in-process) and with the local endpoint server serving it
through training/inference.py: the same answers either way, refusals per file, clear errors when there is no model."""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from breedfilter import predict
from breedfilter.twin.artifact_model import ArtifactModel
from breedfilter.twin.endpoint_server import EndpointServer
from breedfilter.twin.predictor import BadInput
from tests.image_datasets import COLOURS, make_image

LABELS = [name.split(".", 1)[1] for name in COLOURS]


@pytest.fixture(scope="module")
def artifact(trained_artifact: Path) -> Path:
    return trained_artifact


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = random.Random(3)
    paths = []
    for name, colour in COLOURS.items():
        path = tmp_path / f"{name.split('.', 1)[1]} photo.jpg"
        buffer = BytesIO()
        make_image(colour, 40, rng).save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("a text file named .jpg")
    return [*paths, bad]


def run(capsys: Any, *argv: str) -> tuple[int, list[str], str]:
    code = predict.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_predict_with_the_artifact_prints_top_k_and_refuses_bad_files(
    artifact: Path, images: list[Path], capsys: Any
) -> None:
    code, lines, _ = run(capsys, *map(str, images), "--model", str(artifact))
    assert code == 1  # one file refused
    assert lines[0].startswith("model breedfilter-test_efficientnet ")
    for path, text in zip(images[:3], lines[1:4], strict=True):
        assert text.startswith(f"{path}  ")
        ranked, verdict = text.removeprefix(f"{path}  ").split("  -> ")
        labels = [part.rsplit(" ", 1)[0] for part in ranked.split(" | ")]
        assert sorted(labels) == sorted(LABELS)  # top-3 of 3 classes
        # what the router would do, with the threshold train.py chose for this model on its valid split
        assert verdict == "sorted" or verdict.startswith(("review: below its threshold", "review: not one of"))
    assert lines[4].startswith(f"{images[3]}  error 400: not a supported image")


def test_the_endpoint_answers_exactly_what_the_artifact_does(
    artifact: Path, images: list[Path], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, local, _ = run(capsys, *map(str, images), "--model", str(artifact), "--json")
    assert code == 1
    with EndpointServer(ArtifactModel(artifact), "breedfilter-local") as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
        code, remote, _ = run(
            capsys, *map(str, images), "--endpoint", "breedfilter-local", "--region", "us-east-1", "--json"
        )
        assert code == 1
        assert [json.loads(x) for x in remote] == [json.loads(x) for x in local]
        refused = json.loads(remote[-1])
        assert refused["status"] == 400 and refused["error"].startswith("not a supported image")
        # The container contract itself: the model's refusal is a 4xx with a JSON reason, /ping is 200.
        request = urllib.request.Request(
            f"{server.url}/invocations", data=b"a text file", headers={"Content-Type": "image/jpeg"}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 400 and "not a supported image" in json.loads(answer.value.read())["error"]
        with urllib.request.urlopen(f"{server.url}/ping", timeout=30) as ping:
            assert ping.status == 200
        code, _, err = run(capsys, str(images[0]), "--endpoint", "no-such-endpoint", "--region", "us-east-1")
        assert code == 2 and "error: endpoint no-such-endpoint: ValidationError" in err


def test_no_model_is_one_clear_line(tmp_path: Path, images: list[Path], capsys: Any) -> None:
    code, _, err = run(capsys, str(images[0]), "--model", str(tmp_path / "missing.tar.gz"))
    assert code == 2 and err.startswith("error: no model artifact at") and "python training/train.py" in err


def test_the_verdict_is_the_routers_decision() -> None:
    from breedfilter import predict
    from routing.settings import FALLBACK_CONFIDENCE_THRESHOLD

    assert predict.FALLBACK_THRESHOLD == FALLBACK_CONFIDENCE_THRESHOLD  # one number, checked in one place
    top = {"predictions": [{"label": "Beagle", "index": 0, "probability": 0.7}]}
    assert predict.verdict({**top, "known": True, "threshold": 0.65}) == "sorted"
    assert predict.verdict({**top, "known": True, "threshold": 0.9}) == "review: below its threshold 0.900"
    assert predict.verdict({**top, "known": False, "unknown_score": 7.5}).startswith("review: not one of the labels")
    old = predict.verdict(top)  # a model trained before calibration: no known, no threshold
    assert old.startswith("sorted (the router's fallback 0.6")


def test_concurrent_requests_share_forward_passes_with_the_answers_each_would_get_alone(
    artifact: Path, images: list[Path]
) -> None:
    model = ArtifactModel(artifact)
    bodies = [path.read_bytes() for path in images[:-1]] * 2
    alone = [model(body, "image/jpeg") for body in bodies]
    assert model.batcher.batch_sizes == {1: len(bodies)}
    with ThreadPoolExecutor(max_workers=len(bodies) + 1) as pool:
        model._forward.acquire()  # the worker takes the first request and waits: the others queue behind it
        futures = [pool.submit(model, bodies[0], "image/jpeg")]
        while sum(model.batcher.batch_sizes.values()) == len(bodies) and not futures[0].done():
            threading.Event().wait(0.001)  # until the worker holds the first request's batch
        futures += [pool.submit(model, body, "image/jpeg") for body in bodies[1:]]
        refused = pool.submit(model, b"a text file", "image/jpeg")
        while model.batcher._queue.qsize() < len(bodies) - 1 and not any(f.done() for f in futures):
            threading.Event().wait(0.001)
        model._forward.release()
        together = [future.result() for future in futures]
        with pytest.raises(BadInput, match="not a supported image"):
            refused.result()
    model.close()
    assert model.batcher.batch_sizes[1] == len(bodies) + 1  # alone, and the first while the worker was held
    assert model.batcher.batch_sizes[len(bodies) - 1] == 1  # all the others in one forward pass
    for one, other in zip(alone, together, strict=True):
        assert [p["label"] for p in one["predictions"]] == [p["label"] for p in other["predictions"]]
        assert [p["probability"] for p in other["predictions"]] == pytest.approx(
            [p["probability"] for p in one["predictions"]], abs=1e-6
        )
        assert (other["known"], other["threshold"], other["model"]) == (one["known"], one["threshold"], one["model"])
