"""``breedfilter local up|down|env|status``: keep the local twin running for interactive use.

``up`` gets a model as ``make demo`` does (``--model``, else trained on ``--data`` or generated shapes, cached),
starts the twin in a background process that routes live (moto, the local endpoint, the router polling the
inbox queue), and prints the environment to export so that ``aws s3 cp x.jpg s3://<inbox>/`` routes and
``breedfilter results`` sees it. ``down`` stops that process and checks that its ports are free. The state
(pid, addresses, environment) lives in ``out/local/twin.json``; the twin's log in ``out/local/twin.log``.
The stack itself (objects, messages, items) lives in the twin's memory, as moto keeps it: ``down`` or a
crash forgets it. A twin that died is reported by the next command, with its log's last lines.

Retries follow template.yaml on a scaled clock: a failed message is back after the queue's visibility
timeout x ``--time-scale`` (default $BREEDFILTER_TWIN_TIME_SCALE or 0.01: 390 s -> 3.9 s), and goes to the
dead-letter queue after the template's maxReceiveCount receives.

    breedfilter local up [--model F|--data DIR] [--foreground] [--time-scale X] [-- TRAIN.PY FLAGS]
    eval "$(breedfilter local env)"
    breedfilter local status
    breedfilter local down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from breedfilter.arguments import split_train_flags
from breedfilter.twin.sqs_poller import DEFAULT_TIME_SCALE, TIME_SCALE_VARIABLE, twin_time_scale
from breedfilter.units import REPO_ROOT

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
LOG_TAIL_LINES = 8
NOT_RUNNING = "no local twin is running: start one with `breedfilter local up`"


def state_path(state_dir: Path) -> Path:
    return state_dir / "twin.json"


def find_twin(state_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)`` for the running twin; ``(None, notice)`` for one that died; ``(None, None)`` for none.

    A state file whose process is gone (killed, crashed, its pid reused) is removed; the notice says so once,
    with the pid and the last lines of the twin's log.
    """
    path = state_path(state_dir)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, json.JSONDecodeError) as exc:
        path.unlink(missing_ok=True)
        return None, f"removed an unreadable state file {path} ({exc})"
    pid = int(state.get("pid", 0) or 0)
    if _alive(pid):
        return state, None
    path.unlink(missing_ok=True)
    return None, death_notice(pid, Path(state.get("log") or state_dir / "twin.log"), state.get("started_at"))


def death_notice(pid: int, log_path: Path, started_at: str | None = None) -> str:
    """``the local twin (pid N) died; its log: …`` with the log's last lines, for a twin found dead."""
    since = f", started {started_at}" if started_at else ""
    shown = _display_path(log_path)
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"the local twin (pid {pid}{since}) died; its log {shown} is gone. Its stack (kept in memory) is lost."
    tail = [line for line in lines if line.strip()][-LOG_TAIL_LINES:]
    last = "\n".join(f"  | {line}" for line in tail) if tail else "  | (empty)"
    return (
        f"the local twin (pid {pid}{since}) died; its log: {shown} (last lines:)\n{last}\n"
        "Its stack (kept in memory) is lost; `breedfilter local up` starts a new one."
    )


def _display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The running twin's state, or None (a stale file of a dead process is removed)."""
    return find_twin(state_dir)[0]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        with contextlib.suppress(OSError, IndexError):
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False  # killed, not yet reaped by its parent
        with contextlib.suppress(OSError):  # the pid may have been reused by something else
            return b"breedfilter.local_cli" in (proc / "cmdline").read_bytes()
    return True


def export_lines(exports: dict[str, str]) -> str:
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in sorted(exports.items()))


# -- up ---------------------------------------------------------------------------------------------------------


def up(args: argparse.Namespace, train_flags: list[str]) -> int:
    from breedfilter import demo_model

    state_dir = args.state_dir
    running, notice = find_twin(state_dir)
    if notice:
        print(notice)
    if running:
        print(f"the local twin is already running (pid {running['pid']}); `breedfilter local down` stops it")
        print(export_lines(running["exports"]))
        return 0
    try:
        model = demo_model.obtain(args.model, args.data, train_flags, retrain=args.retrain)
    except demo_model.ModelError as exc:
        print(f"local up: {exc}", file=sys.stderr)
        return 2
    print(f"model: {model.origin}")
    if args.foreground:
        return serve(model.path, state_dir, args.aws_port, args.endpoint_port, args.time_scale, announce=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "twin.log"
    command = [sys.executable, "-m", "breedfilter.local_cli", "--state-dir", str(state_dir), "serve"]
    command += [
        "--model",
        str(model.path),
        "--aws-port",
        str(args.aws_port),
        "--endpoint-port",
        str(args.endpoint_port),
    ]
    if args.time_scale is not None:
        command += ["--time-scale", str(args.time_scale)]
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal's Ctrl-C
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state["pid"] == process.pid:
            _print_up(state)
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.2)
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-20:])
    print(f"local up: the twin did not start; the last lines of {log_path}:\n{tail}", file=sys.stderr)
    return 1


def _print_up(state: dict[str, Any]) -> None:
    exports = state["exports"]
    print(
        f"local twin up (pid {state['pid']}): AWS (moto) at {exports['AWS_ENDPOINT_URL']}, "
        f"endpoint {exports['ENDPOINT_NAME']} at {exports['AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME']}; "
        "routing the inbox live"
    )
    print(f"log: {state['log']}")
    print(
        "state: in memory (moto keeps the buckets, queues and tables in the twin's process): "
        "`breedfilter local down` or a crash forgets every object, message and item"
    )
    if "time_scale" in state:
        back, receives = state["visibility_timeout"] * state["time_scale"], state["max_receive_count"]
        print(
            f"retries: a failed message is back after {back:g} s (the queue's {state['visibility_timeout']} s "
            f"visibility timeout x time scale {state['time_scale']:g}, ${TIME_SCALE_VARIABLE}); the dead-letter "
            f"queue takes it after {receives} receives (about {back * receives:g} s)"
        )
    print()
    print('# export these (or: eval "$(.venv/bin/breedfilter local env)") so aws and breedfilter reach the twin:')
    print(export_lines(exports))
    print()
    print("then:")
    print(f"  aws s3 cp photo.jpg s3://{exports['INBOX_BUCKET']}/uploads/     # AWS CLI v2 reads AWS_ENDPOINT_URL")
    print(f"  aws s3 ls --recursive s3://{exports['SORTED_BUCKET']}/")
    print("  .venv/bin/breedfilter results --counts       # or --status REVIEW, --label LABEL")
    print(f"  .venv/bin/breedfilter predict photo.jpg --endpoint {exports['ENDPOINT_NAME']}")
    print("  .venv/bin/breedfilter local down             # stops it and forgets the stack (nothing on disk)")


# -- serve (the background process) ---------------------------------------------------------------------------


def serve(
    model_path: Path,
    state_dir: Path,
    aws_port: int | None,
    endpoint_port: int,
    time_scale: float | None = None,
    announce: bool = False,
) -> int:
    """Run the twin until SIGTERM/SIGINT; the state file exists exactly while it serves."""
    import logging

    from breedfilter.twin.artifact_model import ArtifactModel
    from breedfilter.twin.local_twin import LocalTwin

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    predictor = ArtifactModel(model_path)
    path = state_path(state_dir)
    with LocalTwin(predictor, quiet_router=False, time_scale=time_scale, aws_port=aws_port or None,
                   endpoint_port=endpoint_port) as twin:  # fmt: skip
        assert twin.stack is not None
        twin.start_polling(reconcile=True)
        state = {
            "pid": os.getpid(),
            "model": str(model_path),
            "log": str(state_dir / "twin.log"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "time_scale": twin.time_scale,
            "visibility_timeout": twin.stack.visibility_timeout,
            "max_receive_count": twin.stack.max_receive_count,
            "exports": twin.exports(),
        }
        state_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1), encoding="utf-8")
        temporary.replace(path)
        if announce:
            _print_up(state)
            print("Ctrl-C stops it.", flush=True)
        logging.getLogger("breedfilter.twin.local_twin").info("serving; state in %s", path)
        try:
            while not stopping.wait(0.5):
                pass
        finally:
            path.unlink(missing_ok=True)
    logging.getLogger("breedfilter.twin.local_twin").info("stopped")
    return 0


# -- down, env, status ------------------------------------------------------------------------------------------


def down(args: argparse.Namespace) -> int:
    state, notice = find_twin(args.state_dir)
    if state is None:
        print(notice or "no local twin is running")
        return 0
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    state_path(args.state_dir).unlink(missing_ok=True)
    ports = [_port(state["exports"][k]) for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")]
    busy = [port for port in ports if _listening(port)]
    if busy:
        print(f"local down: stopped pid {pid}, but ports {busy} still answer", file=sys.stderr)
        return 1
    print(f"local twin stopped (pid {pid}); ports {', '.join(map(str, ports))} are free")
    return 0


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def env(args: argparse.Namespace) -> int:
    state, notice = find_twin(args.state_dir)
    if state is None:
        print(notice or NOT_RUNNING, file=sys.stderr)
        return 1
    print(export_lines(state["exports"]))
    return 0


def status(args: argparse.Namespace) -> int:
    state, notice = find_twin(args.state_dir)
    if state is None:
        print(notice or NOT_RUNNING)
        return 1
    import boto3

    from breedfilter.twin.local_aws import StackNames, count_items, object_keys, queue_depth

    exports, names = state["exports"], StackNames()
    session = boto3.Session(
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        region_name=exports["AWS_DEFAULT_REGION"],
    )
    s3 = session.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL"])
    sqs = session.client("sqs", endpoint_url=exports["AWS_ENDPOINT_URL"])
    dynamodb = session.client("dynamodb", endpoint_url=exports["AWS_ENDPOINT_URL"])
    inbox = len(object_keys(s3, exports["INBOX_BUCKET"]))
    sorted_count = len(object_keys(s3, exports["SORTED_BUCKET"]))
    queue, dlq = (
        queue_depth(sqs, sqs.get_queue_url(QueueName=name)["QueueUrl"])
        for name in (names.inbox_queue, names.dead_letter_queue)
    )
    items = count_items(dynamodb, exports["RESULTS_TABLE"])  # every page: one scan page stops at 1 MB
    print(f"local twin running (pid {state['pid']}, since {state['started_at']}), model {state['model']}")
    print(f"  AWS (moto) {exports['AWS_ENDPOINT_URL']}, endpoint {exports['AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME']}")
    print(
        f"  inbox {inbox} objects, sorted {sorted_count} objects, results {items} items, "
        f"queue {queue} messages, dead-letter queue {dlq}"
    )
    print(f"  log: {state['log']}; state in memory: `down` or a crash forgets it")
    return 0


# -- command line -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)  # default: $BREEDFILTER_LOCAL_DIR
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the twin in the background and print what to export")
    start.add_argument("--model", help="model.tar.gz (or its dir, or s3://…) to serve instead of training one")
    start.add_argument("--data", type=Path, help="ImageFolder dataset to train the model on")
    start.add_argument("--retrain", action="store_true", help="train even if a cached model matches")
    start.add_argument("--foreground", action="store_true", help="serve in this terminal until Ctrl-C")
    start.add_argument("--aws-port", type=int, default=0, help="moto's port (default: a free one)")
    start.add_argument("--endpoint-port", type=int, default=0, help="the endpoint's port (default: a free one)")
    start.add_argument(
        "--time-scale",
        type=_time_scale,
        help=f"retries wait the visibility timeout x this (default ${TIME_SCALE_VARIABLE} or {DEFAULT_TIME_SCALE})",
    )
    commands.add_parser("down", help="stop the twin")
    commands.add_parser("env", help="print the export lines again")
    commands.add_parser("status", help="is it running, and what is in it")
    run = commands.add_parser("serve", help=argparse.SUPPRESS)
    run.add_argument("--model", type=Path, required=True)
    run.add_argument("--aws-port", type=int, default=0)
    run.add_argument("--endpoint-port", type=int, default=0)
    run.add_argument("--time-scale", type=_time_scale)
    return parser


def _time_scale(text: str) -> float:
    try:
        return twin_time_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    own, train_flags = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    args.state_dir = (
        args.state_dir or Path(os.environ.get("BREEDFILTER_LOCAL_DIR") or REPO_ROOT / "out" / "local")
    ).resolve()
    if train_flags and args.command != "up":
        print("local: train.py flags after -- only go with `up`", file=sys.stderr)
        return 2
    if args.command == "up":
        return up(args, train_flags)
    if args.command == "down":
        return down(args)
    if args.command == "env":
        return env(args)
    if args.command == "status":
        return status(args)
    return serve(args.model, args.state_dir, args.aws_port, args.endpoint_port, args.time_scale)


if __name__ == "__main__":
    sys.exit(main())
