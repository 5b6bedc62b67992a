"""Router settings, read from the environment that template.yaml gives the function.

python -c "import routing.settings as s; print(s.Settings.from_env())"   # from functions/router
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_MAX_IMAGE_BYTES = 4 * 1024 * 1024  # SageMaker serverless payloads cap at 4 MB, real-time at 6 MB
INVOKE_ENDPOINT_MAX_BYTES = 6 * 1024 * 1024
# Larger objects are sent by S3 pointer (the endpoint reads them itself) up to this size; 0 turns pointers off.
DEFAULT_MAX_POINTER_IMAGE_BYTES = 50 * 1024 * 1024
MAX_POINTER_IMAGE_BYTES_LIMIT = 1024 * 1024 * 1024
MAX_TOP_K = 20
MAX_RECORD_CONCURRENCY = 10  # an SQS batch's most records (template BatchSize), and botocore's default pool size
CONNECT_TIMEOUT_SECONDS = 2.0
MODEL_THRESHOLD = "model"  # CONFIDENCE_THRESHOLD=model: each answer's own threshold (the default)
# Applied when CONFIDENCE_THRESHOLD=model and the answer carries no threshold (an artifact from before them).
FALLBACK_CONFIDENCE_THRESHOLD = 0.6


def parse_threshold(raw: str) -> float | None:
    """``model`` (any case) -> None, the model's own threshold; else a number (``check`` bounds it)."""
    return None if raw.strip().lower() == MODEL_THRESHOLD else float(raw)


# Settings field -> the environment variable template.yaml sets (and its parser, for the optional ones).
REQUIRED_ENV = {
    "sorted_bucket": "SORTED_BUCKET",
    "results_table": "RESULTS_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "endpoint_name": "ENDPOINT_NAME",
}
OPTIONAL_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "confidence_threshold": ("CONFIDENCE_THRESHOLD", parse_threshold),
    "max_image_bytes": ("MAX_IMAGE_BYTES", int),
    "max_pointer_image_bytes": ("MAX_POINTER_IMAGE_BYTES", int),
    "top_k": ("TOP_K", int),
    "endpoint_timeout_seconds": ("ENDPOINT_TIMEOUT_SECONDS", float),
    "endpoint_max_attempts": ("ENDPOINT_MAX_ATTEMPTS", int),
    "idempotency_ttl_seconds": ("IDEMPOTENCY_TTL_SECONDS", int),
    "record_concurrency": ("RECORD_CONCURRENCY", int),
}
# What each parser accepts, for the error message of a value it refuses.
EXPECTED = {int: "a valid int", float: "a valid float", parse_threshold: f"{MODEL_THRESHOLD!r} or a number in [0, 1]"}
ENV_VARIABLES = frozenset(REQUIRED_ENV.values()) | {var for var, _ in OPTIONAL_ENV.values()}


class ConfigError(RuntimeError):
    """The function's environment is missing a setting or has a bad value."""


@dataclass(frozen=True)
class Settings:
    sorted_bucket: str
    results_table: str
    idempotency_table: str
    endpoint_name: str
    confidence_threshold: float | None = None  # None: the model's own threshold, from each answer
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # the largest object sent in the request body
    max_pointer_image_bytes: int = DEFAULT_MAX_POINTER_IMAGE_BYTES  # larger ones, up to this, by S3 pointer
    top_k: int = 3
    endpoint_timeout_seconds: float = 10.0
    endpoint_max_attempts: int = 3
    idempotency_ttl_seconds: int = 86_400
    record_concurrency: int = 4  # records of one invocation routed at once (endpoint requests in flight)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [var for var in REQUIRED_ENV.values() if not env.get(var, "").strip()]
        if missing:
            raise ConfigError(
                f"router is missing environment variable(s) {', '.join(missing)}; "
                "template.yaml sets them on the deployed function and the local twin sets them locally"
            )
        values: dict[str, object] = {field: env[var].strip() for field, var in REQUIRED_ENV.items()}
        for field, (var, kind) in OPTIONAL_ENV.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{var}={raw!r} is not {EXPECTED[kind]}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        threshold = self.confidence_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(
                f"CONFIDENCE_THRESHOLD must be {MODEL_THRESHOLD!r} or a number within [0, 1], got {threshold}"
            )
        if not 0 < self.max_image_bytes <= INVOKE_ENDPOINT_MAX_BYTES:
            raise ConfigError(
                f"MAX_IMAGE_BYTES must be within 1..{INVOKE_ENDPOINT_MAX_BYTES} (InvokeEndpoint's payload limit), "
                f"got {self.max_image_bytes}"
            )
        pointer = self.max_pointer_image_bytes
        if pointer != 0 and not self.max_image_bytes <= pointer <= MAX_POINTER_IMAGE_BYTES_LIMIT:
            raise ConfigError(
                f"MAX_POINTER_IMAGE_BYTES must be 0 (no S3 pointers) or within MAX_IMAGE_BYTES "
                f"({self.max_image_bytes})..{MAX_POINTER_IMAGE_BYTES_LIMIT}, got {pointer}"
            )
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ConfigError(f"TOP_K must be within 1..{MAX_TOP_K}, got {self.top_k}")
        if not (math.isfinite(self.endpoint_timeout_seconds) and self.endpoint_timeout_seconds > 0):
            raise ConfigError(
                f"ENDPOINT_TIMEOUT_SECONDS must be a finite number > 0, got {self.endpoint_timeout_seconds}"
            )
        if self.endpoint_max_attempts < 1:
            raise ConfigError(f"ENDPOINT_MAX_ATTEMPTS must be at least 1, got {self.endpoint_max_attempts}")
        if not 1 <= self.record_concurrency <= MAX_RECORD_CONCURRENCY:
            raise ConfigError(
                f"RECORD_CONCURRENCY must be within 1..{MAX_RECORD_CONCURRENCY}, got {self.record_concurrency}"
            )
        if self.idempotency_ttl_seconds < 60:
            raise ConfigError(f"IDEMPOTENCY_TTL_SECONDS must be at least 60, got {self.idempotency_ttl_seconds}")

    def worst_case_seconds_per_image(self) -> float:
        """How long one image can take when the endpoint hangs: every attempt times out, plus S3/DynamoDB."""
        per_attempt = self.endpoint_timeout_seconds + min(CONNECT_TIMEOUT_SECONDS, self.endpoint_timeout_seconds)
        return self.endpoint_max_attempts * per_attempt + 2.0
