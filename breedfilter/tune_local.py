"""Tune train.py on this machine: an Optuna study over training/search_space.json, pruning on the validation metric.

    breedfilter tune --local --data DIR [--trials 12] [--study NAME] [--mode subprocess|inprocess] [--jobs N]
                     [train.py flags, fixed in every trial: --model timm/tf_efficientnet_lite0 --epochs 3 ...]

Each trial runs train.py with sampled flags, as a subprocess (isolated; read through the same metric regexes
SageMaker uses) or in this process. After each epoch the trial reports the objective (best_valid_accuracy) and a
median pruner stops trials worse than the earlier ones at that epoch. The study lives in SQLite
(``out/tune/NAME/study.db``): run the same command again to continue it; a trial cut off by Ctrl-C or a crash
resumes from its checkpoint. The first trial of a new study runs the recipe's defaults, so the leaderboard shows
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

from breedfilter import metrics, search_space, tuning_report, units
from breedfilter.arguments import positive_int
from breedfilter.processes import exit_text, spawn_group, stop_group
from breedfilter.units import REPO_ROOT

TRAIN_SCRIPT = units.TRAINING_DIR / "train.py"
# Flags the tuner sets per trial; a user passing them would make trials overwrite each other.
PER_TRIAL = frozenset({"model_dir", "output_data_dir", "checkpoint_dir", "resume", "hyperparameters"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter tune --local",
        description="Tune train.py locally with Optuna (pruning, SQLite study, leaderboard, plot, best flags).",
        epilog="Other flags go to train.py in every trial (--data is required). python training/train.py --help",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--trials", type=int, default=12, help="complete or pruned trials the study should hold (a rerun continues)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    parser.add_argument("--study", default="", help="study name (default: from the data dir and model)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "tune", help="studies live under here")
    parser.add_argument("--space", type=Path, default=search_space.DEFAULT_PATH, help="search space file")
    parser.add_argument("--mode", choices=["subprocess", "inprocess"], default="subprocess")
    parser.add_argument("--jobs", type=positive_int, default=1, help="trials at once (subprocess mode; cores split)")
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

    def record(self, row: dict[str, Any]) -> dict[str, float]:
        """Keep an epoch's numbers (a metric line's, or a history row's); returns them."""
        values = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.last.update(values)
        if "valid_accuracy" in values and "valid_loss" in values:
            key = (values["valid_accuracy"], -values["valid_loss"])
            self.kept = key if self.kept is None or key > self.kept else self.kept
        return values

    def epoch(self, row: dict[str, Any]) -> bool:
        """Record an epoch, report the objective to Optuna; True when the pruner says stop."""
        values = self.record(row)
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
    """train.py Trainer callback (in-process trials): report each epoch, raise TrialPruned when told, and stop
    at the next step once the tuner is asked to stop (Ctrl-C, SIGTERM)."""

    def __init__(self, reporter: Reporter, stopping: threading.Event) -> None:
        self.reporter, self.stopping = reporter, stopping

    def on_step_end(self, trainer: Any, step: Any) -> None:
        if self.stopping.is_set():
            raise Interrupted()

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        if self.reporter.epoch(row):
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {self.reporter.pruned_at}")
        return False


def run_inprocess(argv: list[str], reporter: Reporter, log_path: Path, stopping: threading.Event) -> None:
    import optuna

    train = units.training_module("train")  # training/train.py

    with (
        log_path.open("a", encoding="utf-8") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
        _root_logging_restored(),  # train.py points the root logger at (redirected) stdout
    ):
        try:
            train.main(argv, callbacks=[PruningCallback(reporter, stopping)])
        except (optuna.TrialPruned, Interrupted):
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


def run_subprocess(argv: list[str], reporter: Reporter, log_path: Path, threads: int, tuner: Tuner) -> None:
    """train.py as SageMaker runs it: its own process, metrics scraped from its output by the metric regexes."""
    import optuna

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(TRAIN_SCRIPT), *argv]
    tail: list[str] = []
    pruned = False
    with log_path.open("a", encoding="utf-8", buffering=1) as log_file:
        log_file.write("$ " + " ".join(command) + "\n")
        process = spawn_group(command, env)
        tuner.children.add(process)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log_file.write(line)
                tail = [*tail[-19:], line.rstrip()]
                if "epoch=" in line and reporter.epoch(metrics.scrape(line)):
                    pruned = True
                    break
        except BaseException:
            stop_group(process)
            raise
        finally:
            if pruned:
                stop_group(process)
            process.wait()
            tuner.children.discard(process)
    if tuner.stopping.is_set():
        raise Interrupted()
    if pruned:
        raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
    if process.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise TrialError(f"train.py {exit_text(process.returncode)}: {last[:300]} (see {log_path})")


class TrialError(Exception):
    """train.py failed in this trial (bad flags, out of memory, NaN...): the trial fails, the study goes on."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: the trial stops, and the next run of the same command resumes it."""


# -- the study --------------------------------------------------------------------------------------------
class Tuner:
    def __init__(self, args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> None:
        self.args, self.train_args, self.space = args, train_args, space
        self.dir = args.out / args.study
        self.lock = threading.Lock()
        self.stdout = sys.stdout  # in-process trials redirect sys.stdout to their train.log
        self.children: set[subprocess.Popen] = set()
        self.stopping = threading.Event()
        self.study: Any = None
        self.fingerprint = _fingerprint(train_args, space)

    def stop_all(self) -> None:
        self.stopping.set()
        for process in list(self.children):
            stop_group(process)

    def request_stop(self, signum: int, frame: Any) -> None:
        """Signal handler (Ctrl-C, SIGTERM, SIGHUP): end the running trials' processes and start no new trial.
        Nothing is raised here, so no SQLite transaction of the study is cut in half; the trial code sees its
        process end and marks the trial interrupted. A second signal stops at once."""
        if self.stopping.is_set():
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.stopping.set()
        if self.study is not None:
            with contextlib.suppress(RuntimeError):
                self.study.stop()
        for process in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def say(self, message: str) -> None:
        with self.lock:
            print(message, file=self.stdout, flush=True)

    def checkpoint_dir(self, params: dict[str, Any]) -> Path:
        # Keyed by the study's settings and the trial's flags: a trial resumed after a crash finds its epochs.
        key = hashlib.sha256(json.dumps([self.fingerprint, params], sort_keys=True).encode()).hexdigest()[:16]
        return self.dir / "checkpoints" / key

    def tracking_flags(self, trial_dir: Path) -> list[str]:
        """Every trial in one MLflow experiment named after the study, in one store beside study.db (unless the
        flags or MLFLOW_TRACKING_URI name another), each run named after its trial."""
        flags = [f"--mlflow-run-name={trial_dir.name}"]
        uri = self.tracking_uri()
        if uri is not None:
            flags.append(f"--mlflow-uri={uri}")
        if "mlflow_experiment" not in self.args.given:
            flags.append(f"--mlflow-experiment={self.args.study}")
        return flags

    def tracking_uri(self) -> str | None:
        """The study's own MLflow store, unless the flags or MLFLOW_TRACKING_URI name one (or --mlflow off)."""
        if not self.args.given.get("mlflow", True) or "mlflow_uri" in self.args.given:
            return None
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return None
        return f"sqlite:///{(self.dir / 'mlflow.db').resolve()}"

    def prepare_tracking(self) -> None:
        """The study's store and experiment exist before trials run side by side (a new SQLite store's schema
        is built once, not raced by two trials)."""
        uri = self.tracking_uri()
        if uri is not None and "mlflow_experiment" not in self.args.given:
            units.training_module("observability.mlflow_tracking").prepare(uri, self.args.study)

    def trial_argv(self, trial_dir: Path, params: dict[str, Any]) -> list[str]:
        flags = [f"--{name.replace('_', '-')}={search_space.flag_text(value)}" for name, value in params.items()]
        if self.args.jobs > 1 and "num_workers" not in self.args.given:  # trials at once share the cores
            flags.append(f"--num-workers={max(1, (os.cpu_count() or 1) // self.args.jobs)}")
        return [
            *self.train_args,
            *flags,
            *self.tracking_flags(trial_dir),
            f"--model-dir={trial_dir / 'model'}",
            f"--output-data-dir={trial_dir / 'output'}",
            f"--checkpoint-dir={self.checkpoint_dir(params)}",
            "--resume=true",
        ]

    def objective(self, trial: Any) -> float:
        import optuna

        params = {name: _suggest(trial, p) for name, p in ((p.name, p) for p in self.space.parameters)}
        if self.stopping.is_set():  # asked to stop while Optuna was starting this trial (--jobs > 1)
            trial.set_user_attr("interrupted", True)
            raise Interrupted()
        trial_dir = self.dir / f"trial-{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("dir", str(trial_dir))
        argv = self.trial_argv(trial_dir, params)
        self.say(f"trial {trial.number} start: {json.dumps(params)}")
        reporter = Reporter(trial, self.space.objective, self.say)
        started = time.perf_counter()
        try:
            if self.args.mode == "inprocess":
                run_inprocess(argv, reporter, trial_dir / "train.log", self.stopping)
            else:
                threads = max(1, (os.cpu_count() or 1) // self.args.jobs)
                run_subprocess(argv, reporter, trial_dir / "train.log", threads, self)
            _fill_from_metrics_file(reporter, trial_dir / "output" / "metrics.json")
        except (KeyboardInterrupt, Interrupted):
            trial.set_user_attr("interrupted", True)
            self.say(f"trial {trial.number} interrupted: the same command resumes it from its checkpoint")
            raise Interrupted() from None
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
            error = f"train.py reported no {self.space.objective}; see {trial_dir / 'train.log'}"
            trial.set_user_attr("error", error)
            raise TrialError(error)
        value = reporter.last[self.space.objective]  # the last value, as a SageMaker tuning job takes it
        trial.set_user_attr("artifact", str(trial_dir / "model.tar.gz"))
        shutil.rmtree(self.checkpoint_dir(params), ignore_errors=True)  # done: the model dir has the weights
        self.say(
            f"trial {trial.number} done: {self.space.objective}={value:.4f} in {time.perf_counter() - started:.0f}s"
        )
        return value


def _fill_from_metrics_file(reporter: Reporter, path: Path) -> None:
    """A trial resumed after its last epoch trains nothing and prints no epoch line: its metrics.json has them."""
    if reporter.objective in reporter.last or not path.is_file():
        return
    for row in json.loads(path.read_text(encoding="utf-8")).get("history") or []:
        reporter.record(row)


def _suggest(trial: Any, p: search_space.Parameter) -> Any:
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)


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
        given = search_space.given_train_flags(train_args)  # train.py's parser: abbreviations, values checked
    except search_space.SearchSpaceError as exc:
        parser.error(str(exc))
    clash = sorted(set(given) & PER_TRIAL)
    if clash:
        parser.error(f"the tuner sets {', '.join('--' + c.replace('_', '-') for c in clash)} per trial; leave it out")
    if "data" not in given and "train" not in given:
        parser.error("no data: pass --data DIR (an ImageFolder dataset with train/ valid/ test/)")
    args.given = given
    args.fixed = sorted(set(given) & set(space.names))
    space = space.without(args.fixed)
    if not space.parameters:
        parser.error(f"nothing left to tune: every parameter of {args.space} is fixed on the command line")
    if args.mode == "inprocess" and args.jobs != 1:
        parser.error("--jobs > 1 needs --mode subprocess (one training per process)")
    try:
        args.enqueue = [_enqueue_item(item, space, args.fixed) for item in args.enqueue]
    except ValueError as exc:
        parser.error(str(exc))
    args.study = args.study or _default_study_name(given)
    return args, train_args, space


def _enqueue_item(item: str, space: search_space.SearchSpace, fixed: list[str]) -> dict[str, Any]:
    """``--enqueue '{"lr": 0.01}'`` or ``--enqueue FILE``: searched flags with values inside the space."""
    path = Path(item)
    try:
        params = search_space.read_json(path) if path.is_file() else json.loads(item)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--enqueue {item}: neither a JSON file nor JSON ({exc})") from None
    if not isinstance(params, dict):
        raise ValueError(f'--enqueue {item}: expected a JSON object such as {{"lr": 0.01}}')
    by_name = {p.name: p for p in space.parameters}
    out = {}
    for key, value in params.items():
        name = str(key).removeprefix("--").replace("-", "_")
        if name in fixed:
            raise ValueError(f"--enqueue: {name} is fixed on the command line, not searched")
        if name not in by_name:
            raise ValueError(f"--enqueue: {name} is not searched (searched: {', '.join(by_name)})")
        if not by_name[name].contains(value):
            raise ValueError(f"--enqueue: {name}={value!r} is outside the search space {by_name[name].canonical()}")
        out[name] = value
    return out


def _default_study_name(given: dict[str, Any]) -> str:
    data = Path(given.get("data") or given.get("train") or "data").resolve().name
    model = str(given.get("model", "resnet50")).removeprefix("timm/")
    return f"{data}-{model}".replace("/", "-")


def _fingerprint(train_args: list[str], space: search_space.SearchSpace) -> str:
    """What makes trials comparable: the fixed flags as train.py reads them (order, spelling and relative paths
    aside), the space and the objective."""
    flags = {
        name: str(Path(value).resolve()) if isinstance(value, Path) else str(value)
        for name, value in search_space.given_train_flags(train_args).items()
    }
    return json.dumps(
        {"flags": dict(sorted(flags.items())), "space": space.canonical(), "objective": space.objective},
        sort_keys=True,
    )


def open_study(args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> Any:
    """Create the study, or continue it: only with the same train.py flags and space (else trials would not compare)."""
    import optuna

    study_dir = args.out / args.study
    study_dir.mkdir(parents=True, exist_ok=True)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=args.prune_startup_trials, n_warmup_steps=args.prune_warmup_epochs, interval_steps=1
        )
        if args.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=args.study,
        storage=storage(study_dir / "study.db"),
        load_if_exists=True,
        direction=space.direction,
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=pruner,
    )
    fingerprint = _fingerprint(train_args, space)  # as Tuner computes it
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("train_args", train_args)
        study.set_user_attr("objective", space.objective)
    elif stored != fingerprint:
        before, now = json.loads(stored), json.loads(fingerprint)
        differ = sorted(
            {k for k in before["flags"].keys() | now["flags"].keys() if before["flags"].get(k) != now["flags"].get(k)}
        )
        what = [f"--{k.replace('_', '-')} was {before['flags'].get(k, 'unset')}" for k in differ]
        if before["space"] != now["space"] or before["objective"] != now["objective"]:
            what.append("the search space or objective")
        raise SystemExit(
            f"breedfilter tune --local: error: study {args.study} ({study_dir}) was run with other settings "
            f"({', '.join(what)}): its trials would not compare with these. Pass the same flags as "
            f"before ({' '.join(study.user_attrs.get('train_args', []))}), or start another study with --study NAME."
        )
    return study


def queue_trials(study: Any, args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> int:
    """Baseline (new study), --enqueue items, and interrupted trials to resume; returns how many resume."""
    if not study.trials and not args.no_baseline:
        study.enqueue_trial(baseline_params(space, train_args), user_attrs={"baseline": True})
    for params in args.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    resumed = set(study.user_attrs.get("resumed", []))
    again = [
        t
        for t in study.trials
        if t.state.name == "FAIL" and t.user_attrs.get("interrupted") and t.number not in resumed
    ]
    for t in again:
        study.enqueue_trial(
            t.params, user_attrs={"resumes": t.number, **({"baseline": True} if t.user_attrs.get("baseline") else {})}
        )
    if again:
        study.set_user_attr("resumed", sorted(resumed | {t.number for t in again}))
    return len(again)


def tune(args: argparse.Namespace, train_args: list[str], space: search_space.SearchSpace) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported per trial, without tracebacks
    study = open_study(args, train_args, space)
    tuner = Tuner(args, train_args, space)
    resuming = queue_trials(study, args, train_args, space)
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    remaining = max(0, args.trials - len(counted))
    tuner.say(
        f"study {args.study}: {len(counted)} trials complete or pruned so far, running {remaining} more "
        f"({args.mode}, {args.jobs} at a time); searching {', '.join(space.names)}"
        + (f"; fixed on the command line: {', '.join(args.fixed)}" if args.fixed else "")
        + (f"; {resuming} interrupted trial(s) resume first" if resuming and remaining else "")
    )
    if remaining:
        tuner.prepare_tracking()
        try:
            tuner.study = study
            with _signals_stop(tuner):
                study.optimize(
                    tuner.objective, n_trials=remaining, timeout=args.timeout, n_jobs=args.jobs, catch=(TrialError,)
                )
        except (KeyboardInterrupt, Interrupted):
            tuner.stop_all()
            tuner.say("interrupted: the study is saved; run the same command to continue it")
    return tuning_report.write(study, space, tuner.dir, train_args)


@contextlib.contextmanager
def _signals_stop(tuner: Tuner) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) stop the study cleanly: see Tuner.request_stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, tuner.request_stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
