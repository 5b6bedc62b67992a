"""Load a function the way Lambda does (its CodeUri folder on sys.path, ``module.function``) and give it a
context object with Lambda's attributes.

    python -m breedfilter.twin.lambda_runtime functions/router app.lambda_handler < event.json
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breedfilter import units

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    function_name: str = "breedfilter-router"
    memory_limit_in_mb: int = 512
    timeout_seconds: float = 60.0
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def load_handler(code_dir: str | Path = "functions/router", handler: str = "app.lambda_handler") -> Handler:
    """Import ``handler`` from ``code_dir`` as Lambda would, returning the callable."""
    return units.lambda_handler(code_dir, handler)


if __name__ == "__main__":
    fn = load_handler(sys.argv[1], sys.argv[2])
    print(json.dumps(fn(json.load(sys.stdin), LambdaContext()), indent=2, default=str))
