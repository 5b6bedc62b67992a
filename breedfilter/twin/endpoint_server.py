"""A local SageMaker endpoint: the container contract and the runtime path boto3 calls.

- ``GET /ping``; ``POST /invocations``: what a SageMaker inference container serves (raw 4xx/5xx).
- ``POST /endpoints/{name}/invocations``: what sagemaker-runtime's InvokeEndpoint reaches. A container error
  is wrapped as SageMaker does (424 ``ModelError`` with ``OriginalStatusCode``/``OriginalMessage``), an unknown
  endpoint is a ``ValidationError``, and ``Throttled`` becomes a 429 ``ThrottlingException``.
Point boto3 at it with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT``.

    python -m breedfilter.twin.endpoint_server --port 8080 --model out/train/model.tar.gz
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from breedfilter.twin.artifact_model import ArtifactModel
from breedfilter.twin.predictor import MAX_BODY_BYTES, BadInput, ModelFailure, Predictor, Throttled
from breedfilter.twin.stand_in_model import ColourModel

_RUNTIME_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")


class EndpointServer:
    """Serves ``predictor`` on 127.0.0.1 in a background thread; ``with EndpointServer(...) as server``."""

    def __init__(self, predictor: Predictor, endpoint_name: str, host: str = "127.0.0.1", port: int = 0):
        self.predictor = predictor
        self.endpoint_name = endpoint_name
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # keep-alive connections, closed by stop()
        self._connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> EndpointServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="endpoint-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command line); ``start`` serves in the background instead."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._connections_lock:  # idle keep-alive clients would hold their handler threads open
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> EndpointServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def invoke_container(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        """What the container answers: (status, JSON body). Which content types it takes is the model's to say
        (training/inference.py answers 415 for others), as in a SageMaker container."""
        media_type = content_type.split(";")[0].strip().lower()
        if not body:
            return 400, {"error": "empty request body"}
        if len(body) > MAX_BODY_BYTES:
            return 413, {"error": f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}"}
        try:
            return 200, self.predictor(body, media_type)
        except (BadInput, ModelFailure) as exc:
            return exc.status, {"error": exc.reason}


def _handler_for(server: EndpointServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # http.server sends the headers and the body in two writes: with Nagle's algorithm on, a keep-alive client
        # waits for the delayed ACK between them (about 40 ms a request on loopback)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the demo print summaries
            return

        def setup(self) -> None:
            super().setup()
            with server._connections_lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._connections_lock:
                server._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, {"status": "healthy", "endpoint": server.endpoint_name})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            content_type = self.headers.get("Content-Type", "application/octet-stream")
            if self.path == "/invocations":
                try:
                    status, answer = server.invoke_container(body, content_type)
                except Throttled:
                    status, answer = 429, {"error": "throttled"}
                except Exception as exc:
                    status, answer = 500, {"error": f"model failure: {exc}"}
                self._send(status, answer)
                return
            match = _RUNTIME_PATH.match(self.path)
            if not match:
                self._send(404, {"error": f"no route {self.path}"})
                return
            self._runtime_invoke(match["name"], body, content_type)

        def _runtime_invoke(self, name: str, body: bytes, content_type: str) -> None:
            if name != server.endpoint_name:
                self._aws_error(400, "ValidationError", f"Endpoint {name} of account 123456789012 not found.")
                return
            try:
                status, answer = server.invoke_container(body, content_type)
            except Throttled:
                self._aws_error(429, "ThrottlingException", "Rate exceeded")
                return
            except Exception as exc:
                status, answer = 500, {"error": f"model failure: {exc}"}
            if status == 200:
                self._send(200, answer, {"x-Amzn-Invoked-Production-Variant": "AllTraffic"})
                return
            side = "client" if status < 500 else "server"
            original = json.dumps(answer)
            self._aws_error(
                HTTPStatus.FAILED_DEPENDENCY,
                "ModelError",
                f'Received {side} error ({status}) from primary with message "{original}".',
                OriginalStatusCode=status,
                OriginalMessage=original,
                LogStreamArn=f"arn:aws:logs:local:123456789012:log-group:/aws/sagemaker/Endpoints/{name}",
            )

        def _aws_error(self, status: int, code: str, message: str, **fields: Any) -> None:
            self._send(status, {"message": message, **fields}, {"x-amzn-ErrorType": f"{code}:"})

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--endpoint-name", default="breedfilter-classifier")
    parser.add_argument("--model", help="model.tar.gz or its dir, served through training/inference.py")
    args = parser.parse_args()
    if args.model:
        predictor: Predictor = ArtifactModel(args.model)
    else:
        print("no --model: serving the stand-in colour model (red/green/blue)", flush=True)
        predictor = ColourModel()
    server = EndpointServer(predictor, args.endpoint_name, port=args.port)
    print(f"serving {args.endpoint_name} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
