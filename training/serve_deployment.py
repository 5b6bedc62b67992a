"""The model on AWS's Ray Serve container for SageMaker (``ray:serve-ml-sagemaker-cpu|cuda-v1``), the maintained
successor of the TorchServe-based PyTorch inference images.

artifact.py copies this file to the artifact's root as ``deployment.py`` beside ``config.yaml``; the container
puts /opt/ml/model and /opt/ml/model/code on the path (image v1.1+), installs code/requirements.txt, runs
``serve run config.yaml`` and forwards SageMaker's ``POST /invocations`` to ``POST /`` here with the body and
its Content-Type and Accept. The answers are inference.py's own, byte for byte: the same decoding, limits,
S3 pointers, batches of base64 images and 4xx/5xx JSON errors. Single images from concurrent requests are
classified together (Ray Serve's dynamic batching: up to MAX_BATCH images, waiting at most BATCH_WAIT_S).

    cd out/train/model && serve run config.yaml      # where ray[serve] is installed: http://127.0.0.1:8000/
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

import inference

MODEL_DIR = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
MAX_BATCH = 16
BATCH_WAIT_S = 0.005  # a lone request waits at most this long for company


@serve.deployment(max_ongoing_requests=64)
class Classifier:
    """inference.py's handlers behind one HTTP route, with single images batched across requests."""

    def __init__(self, model_dir: str = MODEL_DIR) -> None:
        # Ray pins OMP_NUM_THREADS to the replica's num_cpus (1 by default): the replica owns the machine here
        os.environ.pop("OMP_NUM_THREADS", None)
        self.model = inference.model_fn(model_dir)

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        try:
            decoded = await asyncio.to_thread(inference.input_fn, body, request.headers.get("content-type"))
            if isinstance(decoded, list):  # a batch request: classified as one batch already
                answer = await asyncio.to_thread(inference.predict_fn, decoded, self.model)
            else:
                answer = {**await self.classify(decoded), "model": self.model.identity}
            text = inference.output_fn(answer, request.headers.get("accept"))
        except inference.InferenceError as exc:
            # the JSON the SageMaker toolkit sends for it (InferenceError.message), with its status
            return Response(exc.message, status_code=exc.status_code, media_type=inference.JSON_CONTENT_TYPE)
        return Response(text, media_type=inference.JSON_CONTENT_TYPE)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def classify(self, images: list[Any]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(inference.classify_images, self.model, images)


app = Classifier.bind()
