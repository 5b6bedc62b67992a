"""A trained model.tar.gz (or its unpacked dir) as a predictor, through training/inference.py's own handlers.

The local endpoint server serves it (``EndpointServer(ArtifactModel(path), name)``) and ``breedfilter predict
--model`` calls it directly: the same ``model_fn`` and ``input_fn``/``predict_fn`` a SageMaker endpoint runs.
The model's refusals (InferenceError 4xx with a reason) become the server's BadInput, its failures ModelFailure.
Single images from concurrent requests are decoded and transformed in their own threads and classified together
(``MicroBatcher``: inference.SERVE_MAX_BATCH images, waiting at most SERVE_BATCH_WAIT_S, as on Ray Serve).

    python -m breedfilter.twin.artifact_model out/train/model.tar.gz IMAGE...
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from breedfilter.twin.micro_batcher import MicroBatcher
from breedfilter.twin.predictor import BadInput, ModelFailure
from breedfilter.units import training_module


class ArtifactModel:
    """``model(body, content_type) -> {"predictions": [...], "model": {...}}``, as the endpoint contract says."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        self.inference = training_module("inference")
        if path.is_dir():
            model_dir = path
        elif path.is_file():
            self._unpacked = tempfile.TemporaryDirectory(prefix="breedfilter-model-")
            # offline=False: an artifact that a container would have to install packages for (written before
            # artifacts carried them) still serves here, with this environment's packages; it is logged
            model_dir = training_module("artifact").extract(path, Path(self._unpacked.name), offline=False)
        else:
            raise FileNotFoundError(f"no model artifact at {path} (train one: python training/train.py --data DIR)")
        self.model = self.inference.model_fn(str(model_dir))
        self.path = path
        self.batcher: MicroBatcher[Any, dict[str, Any]] = MicroBatcher(
            self._classify,
            max_batch=self.inference.SERVE_MAX_BATCH,
            max_wait_s=self.inference.SERVE_BATCH_WAIT_S,
            name="artifact-model-batcher",
        )
        self._forward = threading.Lock()  # batch requests run their own forward pass, one at a time with the batcher's

    def close(self) -> None:
        self.batcher.close()

    def _classify(self, tensors: list[Any]) -> list[dict[str, Any]]:
        with self._forward:
            return self.inference.classify_tensors(self.model, tensors)

    @property
    def identity(self) -> dict[str, str]:
        return self.model.identity

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        inference = self.inference
        try:
            with self.batcher.arriving():
                decoded = inference.decode_request(body, content_type, self.model.decode)
                if isinstance(decoded, Image.Image):
                    return {**self.batcher(self.model.transform(decoded)), "model": self.model.identity}
            with self._forward:  # a batch of base64 images, or a refusal
                return inference.predict_fn(decoded, self.model)
        except inference.InferenceError as exc:
            if exc.status >= 500:
                raise ModelFailure(exc.reason, exc.status) from exc
            raise BadInput(exc.reason, exc.status) from exc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m breedfilter.twin.artifact_model MODEL(.tar.gz|dir) IMAGE...", file=sys.stderr)
        return 2
    model = ArtifactModel(args[0])
    for image in args[1:]:
        try:
            print(image, json.dumps(model(Path(image).read_bytes(), "application/x-image")))
        except BadInput as exc:
            print(image, json.dumps({"error": exc.reason, "status": exc.status}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
