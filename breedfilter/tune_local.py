"""Tune train.py on this machine: an Optuna study over training/search_space.json, pruning on the validation metric.

    breedfilter tune --local --data DIR [--trials 12] [--study NAME] [--mode subprocess|inprocess] [--jobs N]
                     [train.py flags, fixed in every trial: --model timm/tf_efficientnet_lite0 --epochs 3 ...]

Each trial runs train.py with sampled flags, in this process or as a subprocess (isolated; read through
the same metric regexes SageMaker uses). After each epoch the trial reports the objective (best_valid_accuracy)
and a median pruner stops trials worse than the others at that epoch. The study lives in SQLite
(``out/tune/NAME/study.db``): run the same command again to continue it; a trial cut off by a crash is
retried from its checkpoint. The first trial of a new study runs the recipe's defaults, so the leaderboard shows
what tuning gained. Outputs in ``out/tune/NAME/``: leaderboard.csv, tuning.png, best_hyperparameters.json
(``train.py --hyperparameters FILE`` takes it) and trial-NNN/ (each trial's model.tar.gz, metrics, train.log).
A train.py flag that names a searched parameter fixes it (it is left out of the search).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from breedfilter import metrics, search_space, tuning_report
from breedfilter.template import REPO_ROOT

TRAIN_SCRIPT = search_space.TRAINING_DIR / "train.py"
# Flags the tuner sets per trial; a user passing them would make trials overwrite each other.
PER_TRIAL = frozenset({"model_dir", "output_data_dir", "checkpoint_dir", "resume", "hyperparameters"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter tune --local",
        description="Tune train.py locally with Optuna (pruning, SQLite study, leaderboard, plot, best flags).",
        epilog="Other flags go to train.py in every trial (--data is required). python training/train.py --help",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=12, help="finished trials the study should hold (resumes)")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    parser.add_argument("--study", default="", help="study name (default: from the data dir and model)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "tune", help="studies live under here")
    parser.add_argument("--space", type=Path, default=search_space.DEFAULT_PATH, help="search space file")
    parser.add_argument("--mode", choices=["subprocess", "inprocess"], default="subprocess")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once (subprocess mode; threads split)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median")
    parser.add_argument("--prune-startup-trials", type=int, default=2, help="trials finished before pruning starts")
    parser.add_argument("--prune-warmup-epochs", type=int, default=0, help="never prune before this epoch")
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the recipe-defaults first trial")
    parser.add_argument(
        "--enqueue", action="append", default=[], metavar="JSON|FILE", help="run these flags first (repeatable)"
    )
    return parser


# -- trial runners ----------------------------------------------------------------------------------------
class Reporter:
    """Feeds the objective to Optuna after each epoch and says whether to stop (the pruner's verdict)."""

    def __init__(self, trial: Any, objective: str, log: Any) -> None:
        self.trial, self.objective, self.log = trial, objective, log
        self.last: dict[str, float] = {}
        self.pruned_at: int | None = None
        self.kept: tuple[float, float] | None = None  # (valid_accuracy, -valid_loss) of the epoch train.py keeps

    def epoch(self, values: dict[str, float]) -> bool:
        self.last.update(values)
        if "valid_accuracy" in values and "valid_loss" in values:
            key = (values["valid_accuracy"], -values["valid_loss"])
            self.kept = key if self.kept is None or key > self.kept else self.kept
        if self.objective not in values or "epoch" not in values:
            return False
        epoch = int(values["epoch"])
        self.trial.report(values[self.objective], epoch)
        self.log(f"trial {self.trial.number} epoch {epoch}: {self.objective}={values[self.objective]:.4f}")
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False


class PruningCallback:
    """train.py Trainer callback (in-process trials): report each epoch, raise TrialPruned when told."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_step_end(self, trainer: Any, step: Any) -> None:
        return None

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        values = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self.reporter.epoch(values):
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {self.reporter.pruned_at}")
        return False


def run_inprocess(argv: list[str], reporter: Reporter, log_path: Path) -> None:
    import optuna

    if str(search_space.TRAINING_DIR) not in sys.path:
        sys.path.insert(0, str(search_space.TRAINING_DIR))
    import train  # training/train.py

    with (
        log_path.open("a", encoding="utf-8") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
        _root_logging_restored(),  # train.py points the root logger at (redirected) stdout
    ):
        try:
            train.main(argv, callbacks=[PruningCallback(reporter)])
        except optuna.TrialPruned:
            raise
        except SystemExit as exc:  # argparse errors, train.py's own exits
            raise TrialError(f"train.py exited with {exc.code}; see {log_path}") from None
        except Exception as exc:
            raise TrialError(f"{type(exc).__name__}: {exc}; see {log_path}") from exc


@contextlib.contextmanager
def _root_logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_subprocess(argv: list[str], reporter: Reporter, log_path: Path, threads: int) -> None:
    """train.py as SageMaker runs it: its own process, metrics scraped from its output by the metric regexes."""
    import optuna

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(TRAIN_SCRIPT), *argv]
    tail: list[str] = []
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,  # its data loader workers stop with it
        )
        assert process.stdout is not None
        pruned = False
        for line in process.stdout:
            log_file.write(line)
            tail = [*tail[-19:], line.rstrip()]
            if "epoch=" in line and reporter.epoch(metrics.scrape(line)):
                pruned = True
                _stop(process)
                break
        process.wait()
    if pruned:
        raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
    if process.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise TrialError(f"train.py exited with {process.returncode}: {last[:300]} (see {log_path})")


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


class TrialError(Exception):
    """train.py failed in this trial (bad flags, out of memory, NaN...): the trial fails, the study goes on."""


# -- the study --------------------------------------------------------------------------------------------
class Tuner:
    def __init__(self, args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> None:
        self.args, self.train_args, self.space = args, train_args, space
        self.dir = args.out / args.study
        self.lock = threading.Lock()
        self.stdout = sys.stdout  # in-process trials redirect sys.stdout to their train.log

    def say(self, message: str) -> None:
        with self.lock:
            print(message, file=self.stdout, flush=True)

    def checkpoint_dir(self, params: dict[str, Any]) -> Path:
        # Keyed by the flags: a trial retried after a crash resumes from where it stopped.
        key = hashlib.sha256(json.dumps([self.train_args, params], sort_keys=True).encode()).hexdigest()[:16]
        return self.dir / "checkpoints" / key

    def trial_argv(self, trial_dir: Path, params: dict[str, Any]) -> list[str]:
        flags = [f"--{name.replace('_', '-')}={_flag_text(value)}" for name, value in params.items()]
        return [
            *self.train_args,
            *flags,
            f"--model-dir={trial_dir / 'model'}",
            f"--output-data-dir={trial_dir / 'output'}",
            f"--checkpoint-dir={self.checkpoint_dir(params)}",
            "--resume=true",
        ]

    def objective(self, trial: Any) -> float:
        import optuna

        params = {name: _suggest(trial, p) for name, p in ((p.name, p) for p in self.space.parameters)}
        trial_dir = self.dir / f"trial-{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("dir", str(trial_dir))
        argv = self.trial_argv(trial_dir, params)
        self.say(f"trial {trial.number} start: {json.dumps(params)}")
        reporter = Reporter(trial, self.space.objective, self.say)
        started = time.perf_counter()
        try:
            if self.args.mode == "inprocess":
                run_inprocess(argv, reporter, trial_dir / "train.log")
            else:
                threads = max(1, (os.cpu_count() or 1) // max(1, self.args.jobs))
                run_subprocess(argv, reporter, trial_dir / "train.log", threads)
        except optuna.TrialPruned:
            shutil.rmtree(self.checkpoint_dir(params), ignore_errors=True)
            self.say(
                f"trial {trial.number} PRUNED at epoch {reporter.pruned_at}: {self.space.objective}="
                f"{reporter.last.get(self.space.objective, float('nan')):.4f}, below the median of earlier trials"
            )
            raise
        except TrialError as exc:
            trial.set_user_attr("error", str(exc))
            self.say(f"trial {trial.number} FAILED: {exc}")
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            trial.set_user_attr("epochs", int(reporter.last.get("epoch", 0)))
            if reporter.kept is not None:  # breaks ties on accuracy in the leaderboard (3 breeds saturate at 1.0)
                trial.set_user_attr("valid_loss", -reporter.kept[1])
        if self.space.objective not in reporter.last:
            raise TrialError(f"train.py printed no {self.space.objective}; see {trial_dir / 'train.log'}")
        value = reporter.last[self.space.objective]  # the last value, as a SageMaker tuning job takes it
        trial.set_user_attr("artifact", str(trial_dir / "model.tar.gz"))
        shutil.rmtree(self.checkpoint_dir(params), ignore_errors=True)  # done: the model dir has the weights
        self.say(
            f"trial {trial.number} done: {self.space.objective}={value:.4f} in {time.perf_counter() - started:.0f}s"
        )
        return value


def _suggest(trial: Any, p: search_space.Parameter) -> Any:
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)


def _flag_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def storage(path: Path) -> Any:
    """The study's SQLite storage. Heartbeats mark a trial whose process died (Ctrl-C, OOM kill) as failed when the
    study is next run, and the callback re-runs it once (from its checkpoint)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: experimental in name since Optuna 2.8
        return RDBStorage(
            f"sqlite:///{path}",
            heartbeat_interval=30,
            grace_period=120,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            engine_kwargs={"connect_args": {"timeout": 60}},
        )


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], search_space.SearchSpace]:
    parser = build_parser()
    args, train_args = parser.parse_known_args(argv)
    try:
        space = search_space.load(args.space)
    except search_space.SearchSpaceError as exc:
        parser.error(str(exc))
    given = _flag_names(train_args)
    clash = sorted(given & PER_TRIAL)
    if clash:
        parser.error(f"the tuner sets {', '.join('--' + c.replace('_', '-') for c in clash)} per trial; leave it out")
    if "data" not in given and "train" not in given:
        parser.error("no data: pass --data DIR (an ImageFolder dataset with train/ valid/ test/)")
    fixed = sorted(given & set(space.names))
    space = space.without(fixed)
    if not space.parameters:
        parser.error(f"nothing left to tune: every parameter of {args.space} is fixed on the command line")
    args.fixed = fixed
    if args.mode == "inprocess" and args.jobs != 1:
        parser.error("--jobs > 1 needs --mode subprocess (one training per process)")
    _check_train_flags(parser, train_args)
    args.study = args.study or _default_study_name(train_args)
    return args, train_args, space


def _flag_names(tokens: Sequence[str]) -> set[str]:
    return {t[2:].partition("=")[0].replace("-", "_") for t in tokens if t.startswith("--")}


def _check_train_flags(parser: argparse.ArgumentParser, train_args: list[str]) -> None:
    """train.py's own parser judges the fixed flags now, not in every trial."""
    options = search_space.train_options_module()
    try:
        with contextlib.redirect_stderr(_Capture()) as captured:
            options.parse_options(train_args, env={})
    except SystemExit:
        parser.error(f"train.py flags: {captured.text.strip().splitlines()[-1] if captured.text else train_args}")


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        return None


def _default_study_name(train_args: list[str]) -> str:
    values = dict(_pairs(train_args))
    data = Path(values.get("data", values.get("train", "data"))).resolve().name
    model = values.get("model", "resnet50").removeprefix("timm/")
    return f"{data}-{model}".replace("/", "-")


def _pairs(tokens: list[str]) -> Iterator[tuple[str, str]]:
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            yield name.replace("-", "_"), value
        i += 1


def _enqueue_items(items: list[str], parser_name: str) -> list[dict[str, Any]]:
    out = []
    for item in items:
        path = Path(item)
        text = path.read_text(encoding="utf-8") if path.is_file() else item
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{parser_name}: --enqueue {item}: neither a file nor JSON ({exc})") from None
        out.append({k.replace("-", "_"): v for k, v in params.items()})
    return out


def tune(args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> dict[str, Any]:
    import optuna

    study_dir = args.out / args.study
    study_dir.mkdir(parents=True, exist_ok=True)
    db = storage(study_dir / "study.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=args.prune_startup_trials, n_warmup_steps=args.prune_warmup_epochs, interval_steps=1
        )
        if args.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=args.study,
        storage=db,
        load_if_exists=True,
        direction=space.direction,
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=pruner,
    )
    fresh = not study.trials
    study.set_user_attr("train_args", train_args)
    study.set_user_attr("objective", space.objective)
    tuner = Tuner(args, train_args, space)
    if fresh:
        queue = [] if args.no_baseline else [baseline_params(space, train_args)]
        queue += _enqueue_items(args.enqueue, "breedfilter tune --local")
        for params in queue:
            study.enqueue_trial({k: v for k, v in params.items() if k in space.names}, skip_if_exists=True)
    finished = [t for t in study.trials if t.state.is_finished()]
    remaining = max(0, args.trials - len(finished))
    tuner.say(
        f"study {args.study}: {len(finished)} trials so far, running {remaining} more "
        f"({args.mode}, {args.jobs} at a time); searching {', '.join(space.names)}"
        + (f"; fixed on the command line: {', '.join(args.fixed)}" if args.fixed else "")
    )
    if remaining:
        try:
            study.optimize(
                tuner.objective, n_trials=remaining, timeout=args.timeout, n_jobs=args.jobs, catch=(TrialError,)
            )
        except KeyboardInterrupt:
            tuner.say("interrupted: the study is saved; run the same command to continue it")
    return tuning_report.write(study, space, tuner.dir, train_args)


def baseline_params(space: search_space.SearchSpace, train_args: list[str]) -> dict[str, Any]:
    """The recipe's own values for the searched flags (what train.py would do untuned)."""
    options = search_space.train_options_module()
    defaults = vars(options.parse_options([*train_args], env={}))
    return {p.name: defaults[p.name] for p in space.parameters if p.contains(defaults.get(p.name))}


def main(argv: Sequence[str] | None = None) -> int:
    args, train_args, space = parse(sys.argv[1:] if argv is None else argv)
    try:
        import optuna  # noqa: F401
    except ImportError:
        print("error: the local tuner needs Optuna: pip install -e '.[tune]'", file=sys.stderr)
        return 2
    summary = tune(args, train_args, space)
    print(summary["text"])
    return 0 if summary["best"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
