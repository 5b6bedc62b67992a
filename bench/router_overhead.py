"""What the whole route costs per image on the local twin (upload -> S3 notification -> SQS -> handler ->
endpoint -> copy -> item -> delete), against the baseline of calling the same endpoint directly.

    .venv/bin/python bench/router_overhead.py [--images 60]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

from breedfilter.demo import patched_environ
from breedfilter.twin.endpoint_server import EndpointServer
from breedfilter.twin.lambda_runtime import load_handler
from breedfilter.twin.local_aws import FAKE_CREDENTIALS, LocalAws, aws_environment, router_environment
from breedfilter.twin.sqs_poller import SqsEventSource
from breedfilter.twin.stand_in_model import ColourModel


def images(n: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()
    bodies = images(args.images)
    os.environ.update(FAKE_CREDENTIALS)
    with LocalAws() as aws, EndpointServer(ColourModel(), "breedfilter-classifier") as endpoint:
        stack = aws.provision()
        env = {**aws_environment(aws.url, endpoint.url), **router_environment(stack)}
        env.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true")
        with patched_environ(env):
            handler = load_handler()  # puts functions/router on sys.path, as Lambda does
            from routing.endpoint import EndpointClient, make_client

            client = EndpointClient(make_client(10, 3), stack.names.endpoint_name)
            client.classify(bodies[0], "image/jpeg")  # warm the connection
            started = time.perf_counter()
            for body in bodies:
                client.classify(body, "image/jpeg")
            direct = (time.perf_counter() - started) / len(bodies) * 1000

            s3, sqs = aws.client("s3"), aws.client("sqs")
            for i, body in enumerate(bodies):
                s3.put_object(Bucket=stack.names.inbox_bucket, Key=f"bench/{i:04d}.jpg", Body=body)
            source = SqsEventSource(sqs, stack.queue_url, handler, batch_size=10)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                report = source.drain(max_seconds=600)
            routed = (time.perf_counter() - started) / len(bodies) * 1000
    assert report.succeeded == len(bodies), report
    print(f"{len(bodies)} JPEGs 320x240, stand-in model, moto on loopback (ms per image, ratio to the baseline)")
    print(f"  baseline: InvokeEndpoint directly          {direct:7.1f} ms   x1.00")
    print(f"  router: SQS batch -> route -> copy/record   {routed:7.1f} ms   x{routed / direct:.2f}")
    print("  (the router adds HEAD, GET, idempotency put/update, CopyObject, conditional PutItem, DeleteObject;")
    print("   against moto these cost more than against S3/DynamoDB in-region, so the ratio is an upper bound)")


if __name__ == "__main__":
    main()
