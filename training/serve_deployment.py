"""The model on AWS's Ray Serve container for SageMaker (``ray:serve-ml-sagemaker-cpu|cuda-v1``), the maintained
successor of the TorchServe-based PyTorch inference images.

artifact.py copies this file to the artifact's root as ``deployment.py`` beside ``config.yaml``; the container
puts /opt/ml/model and /opt/ml/model/code on the path (image v1.1+), runs ``serve run config.yaml`` (there is
no code/requirements.txt for it to install: a timm architecture's timm is vendored in code/) and forwards
SageMaker's ``POST /invocations`` to ``POST /`` here with the body and its Content-Type and Accept. The answers
are inference.py's own, byte for byte: the same decoding, limits, S3 pointers, batches of base64 images and
4xx/5xx JSON errors. Single images from concurrent requests are decoded and transformed in threads, then
classified together (Ray Serve's dynamic batching: up to inference.SERVE_MAX_BATCH images, waiting at most
SERVE_BATCH_WAIT_S); a batch that fails is retried an image at a time, so one image's failure is its own. One
forward pass runs at a time (the model's feature tap is shared).

    cd out/train/model && serve run config.yaml      # where ray[serve] is installed: http://127.0.0.1:8000/
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

import inference

MODEL_DIR = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")


@serve.deployment(max_ongoing_requests=64)
class Classifier:
    """inference.py's handlers behind one HTTP route, with single images batched across requests."""

    def __init__(self, model_dir: str = MODEL_DIR) -> None:
        # Ray pins OMP_NUM_THREADS to the replica's num_cpus (1 by default): the replica owns the machine here
        os.environ.pop("OMP_NUM_THREADS", None)
        self.model = inference.model_fn(model_dir)
        self._forward = threading.Lock()

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        try:
            decoded = await asyncio.to_thread(inference.input_fn, body, request.headers.get("content-type"))
            if isinstance(decoded, list):  # a batch request: classified as one batch already
                answer = await asyncio.to_thread(self._locked, inference.predict_fn, decoded, self.model)
            else:
                tensor = await asyncio.to_thread(self.model.transform, decoded)
                ranked = await self.classify(tensor)
                if isinstance(ranked, Exception):
                    raise ranked
                answer = {**ranked, "model": self.model.identity}
            text = inference.output_fn(answer, request.headers.get("accept"))
        except inference.InferenceError as exc:
            # the JSON the SageMaker toolkit sends for it (InferenceError.message), with its status
            return Response(exc.message, status_code=exc.status_code, media_type=inference.JSON_CONTENT_TYPE)
        return Response(text, media_type=inference.JSON_CONTENT_TYPE)

    @serve.batch(max_batch_size=inference.SERVE_MAX_BATCH, batch_wait_timeout_s=inference.SERVE_BATCH_WAIT_S)
    async def classify(self, tensors: list[Any]) -> list[dict[str, Any] | Exception]:
        return await asyncio.to_thread(self._classify_each, tensors)

    def _classify_each(self, tensors: list[Any]) -> list[dict[str, Any] | Exception]:
        try:
            return self._locked(inference.classify_tensors, self.model, tensors)
        except Exception as exc:
            if len(tensors) == 1:
                return [exc]
        return [self._classify_each([tensor])[0] for tensor in tensors]

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self._forward:
            return fn(*args)


app = Classifier.bind()
