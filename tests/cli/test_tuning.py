"""The tuning search space, train.py's metric lines, --hyperparameters files, and local Optuna studies.

Studies run real train.py trials (a tiny timm network on generated images), in-process and as subprocesses.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

import options
import train
from breedfilter import metrics, search_space, tune_local, tuning_report
from breedfilter.units import REPO_ROOT
from tests.image_datasets import make_dataset

TINY = ["--model", "timm/test_efficientnet", "--weights", "none", "--image-size", "32", "--num-workers", "0"]
GOOD = {"lr": 0.1, "label_smoothing": 0.0}
# Label smoothing 1.0 makes every target uniform: the zero-initialised head never moves, accuracy stays at chance.
HOPELESS = {"lr": 0.01, "label_smoothing": 1.0}
SPACE = {
    "parameters": {
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "label_smoothing": {"type": "float", "low": 0.0, "high": 1.0},
    }
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tune") / "data", {"train": 16, "valid": 6, "test": 6}, size=40)


def run_study(out: Path, data: Path, *extra: str) -> tuple[int, optuna.Study]:
    argv = ["--data", str(data), "--out", str(out), *TINY, *extra]
    code = tune_local.main(argv)
    args, _, _ = tune_local.parse(argv)
    study = optuna.load_study(study_name=args.study, storage=f"sqlite:///{out / args.study / 'study.db'}")
    return code, study


@pytest.fixture(scope="module")
def study(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """Baseline (recipe defaults), a good trial, a hopeless one, then one sampled by TPE; in-process."""
    out = tmp_path_factory.mktemp("studies")
    space = out / "space.json"
    space.write_text(json.dumps(SPACE))
    code, study = run_study(
        out,
        data,
        "--space",
        str(space),
        "--batch-size",
        "16",
        "--epochs",
        "3",
        "--trials",
        "4",
        "--mode",
        "inprocess",
        "--study",
        "tiny",
        "--enqueue",
        json.dumps(GOOD),
        "--enqueue",
        json.dumps(HOPELESS),
    )
    assert code == 0
    return out / "tiny", study


# -- the search space -------------------------------------------------------------------------------------
def test_the_shipped_space_is_what_the_issue_asks_for() -> None:
    space = search_space.load()
    by_name = {c["name"]: c for c in space.canonical()}
    assert by_name["lr"] == {"name": "lr", "type": "float", "low": 1e-3, "high": 1e-1, "log": True}
    assert by_name["batch_size"]["choices"] == [16, 32, 64, 128, 256, 512]
    assert {"weight_decay", "label_smoothing", "unfreeze_epoch"} <= set(by_name)
    assert (space.objective, space.direction) == ("best_valid_accuracy", "maximize")
    assert search_space.from_optuna(search_space.to_optuna(space)) == space.canonical()


@pytest.mark.parametrize(
    ("parameters", "objective", "message"),
    [
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, None, "must be below"),
        ({"lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}, None, "log scale needs low > 0"),
        ({"lr": {"type": "uniform", "low": 0, "high": 1}}, None, "needs a type"),
        ({"learning_rate": {"type": "float", "low": 0.1, "high": 1}}, None, "not a train.py option"),
        ({"batch_size": {"type": "categorical", "choices": []}}, None, "non-empty list"),
        ({"batch_size": {"type": "categorical", "choices": [16, 16]}}, None, "repeat"),
        ({"epochs": {"type": "int", "low": 1.5, "high": 3}}, None, "integers"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1}}, {"metric": "valid_acc"}, "not one train.py prints"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1}}, {"metric": "test_accuracy"}, "leak the test split"),
        ({}, None, "expected"),
    ],
)
def test_a_wrong_space_is_refused_with_the_reason(parameters: dict, objective: dict | None, message: str) -> None:
    raw = {"parameters": parameters, **({"objective": objective} if objective else {})}
    with pytest.raises(search_space.SearchSpaceError, match=message):
        search_space.parse(raw)


def test_dashed_names_are_train_py_flags_too(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"parameters": {"--warmup-epochs": {"type": "float", "low": 0.0, "high": 2.0}}}))
    assert search_space.load(path).names == ["warmup_epochs"]
    with pytest.raises(search_space.SearchSpaceError, match="not JSON"):
        path.write_text("{")
        search_space.load(path)


# -- metric lines -----------------------------------------------------------------------------------------
def test_the_metric_regexes_read_train_py_lines_exactly(data: Path, tmp_path: Path, capsys: Any) -> None:
    """SageMaker's metric definitions, applied to what train.py really prints, give its history's numbers."""
    summary = train.main(["--data", str(data), *TINY, "--epochs", "2", *_outputs(tmp_path), "--lr", "0.01"])
    lines = capsys.readouterr().out.splitlines()
    epochs = [metrics.scrape(line) for line in lines if "train_loss=" in line]
    assert len(epochs) == len(summary["history"]) == 2
    for scraped, row in zip(epochs, summary["history"], strict=True):
        for name in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "best_valid_accuracy"):
            assert scraped[name] == pytest.approx(row[name], abs=5e-5), name
        assert scraped["epoch"] == row["epoch"] and scraped["lr"] == pytest.approx(row["lr"], rel=1e-2)
    test_line = next(metrics.scrape(line) for line in lines if "test_accuracy=" in line)
    assert test_line["test_accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=5e-5)
    # The last best_valid_accuracy a job prints is the saved model's: what a SageMaker tuning job ranks by.
    assert epochs[-1]["best_valid_accuracy"] == pytest.approx(summary["best_valid_accuracy"], abs=5e-5)
    # The same numbers as TensorBoard scalars (what the SageMaker job's TensorBoard output syncs).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "output" / "tensorboard"))
    board.Reload()
    valid = [(e.step, e.value) for e in board.Scalars("accuracy/valid")]
    assert valid == [(row["epoch"], pytest.approx(row["valid_accuracy"])) for row in summary["history"]]
    assert {"loss/train", "loss/valid", "accuracy/train", "accuracy/best_valid", "lr"} <= set(board.Tags()["scalars"])


def test_the_regexes_do_not_confuse_similar_names() -> None:
    line = "epoch=3; valid_accuracy=0.5000; lr=7.42e-05; epoch_seconds=1.5; best_valid_accuracy=0.9000; loss=nan;"
    assert metrics.scrape(line) == {
        "epoch": 3.0,
        "valid_accuracy": 0.5,
        "lr": 7.42e-05,
        "epoch_seconds": 1.5,
        "best_valid_accuracy": 0.9,
    }
    assert metrics.scrape("train_loss=nan; valid_loss=inf;") == {}


# -- train.py --hyperparameters FILE ----------------------------------------------------------------------
def test_a_hyperparameters_file_sets_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    file = tmp_path / "best.json"
    file.write_text(json.dumps({"lr": 0.02, "batch-size": 64, "channels_last": False, "recipe": "naive"}))
    opts = options.parse_options(["--data", "d", "--hyperparameters", str(file), "--lr", "0.5"], env={})
    assert (opts.lr, opts.batch_size, opts.channels_last, opts.recipe) == (0.5, 64, False, "naive")
    assert opts.optimizer == "adam"  # the file's recipe fills what neither set


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"learning_rate": 0.1}', "unknown option 'learning_rate'"),
        ('{"lr": [0.1]}', "must be a number"),
        ('["lr"]', "expected a JSON object"),
        ("{lr: 0.1", "not JSON"),
        ('{"batch_size": "big"}', "invalid positive_int value"),
    ],
)
def test_a_bad_hyperparameters_file_is_a_clear_error(tmp_path: Path, capsys: Any, content: str, message: str) -> None:
    file = tmp_path / "best.json"
    file.write_text(content)
    with pytest.raises(SystemExit):
        options.parse_options(["--data", "d", "--hyperparameters", str(file)], env={})
    assert message in capsys.readouterr().err


def test_on_sagemaker_each_job_checkpoints_in_its_own_directory() -> None:
    env = {"SM_MODEL_DIR": "/opt/ml/model", "SM_CHANNEL_DATA": "/opt/ml/input/data/data"}
    job = options.parse_options([], env={**env, "TRAINING_JOB_NAME": "bf-tune-261122-0100-003-4fa1b2c3"})
    assert str(job.checkpoint_dir) == "/opt/ml/checkpoints/bf-tune-261122-0100-003-4fa1b2c3"


# -- a local study ----------------------------------------------------------------------------------------
def test_a_local_study_completes_prunes_the_hopeless_trial_and_keeps_the_best(study: Any) -> None:
    trials = study[1].trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    baseline, good, hopeless = trials[0], trials[1], trials[2]
    defaults = options.parse_options(["--data", "d", *TINY], env={})
    assert baseline.params == {name: getattr(defaults, name) for name in GOOD}  # the recipe's own values first
    assert good.params == GOOD and good.state.name == "COMPLETE"
    assert hopeless.params == HOPELESS and hopeless.state.name == "PRUNED"
    assert hopeless.intermediate_values == {1: pytest.approx(1 / 3)}  # chance, and stopped after epoch 1 of 3
    # The objective is the last value reported, as SageMaker's tuner takes it.
    for t in trials:
        if t.state.name == "COMPLETE":
            assert t.value == t.intermediate_values[max(t.intermediate_values)]
    # Every trial sampled from the file's space.
    for t in trials:
        assert search_space.from_optuna(t.distributions) == search_space.parse(SPACE).canonical()


def test_the_study_writes_a_leaderboard_a_plot_and_best_flags_train_py_accepts(
    study: Any, data: Path, tmp_path: Path
) -> None:
    study_dir, optuna_study = study
    best = optuna_study.best_trial
    board = list(csv.DictReader((study_dir / "leaderboard.csv").open()))
    assert int(board[0]["trial"]) == best.number and board[0]["rank"] == "1"
    assert all(float(r["valid_loss"]) > 0 for r in board if r["state"] == "COMPLETE")
    assert {r["state"] for r in board} == {t.state.name for t in optuna_study.trials}
    assert (study_dir / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best_file = study_dir / "best_hyperparameters.json"
    assert json.loads(best_file.read_text()) == best.params
    assert (study_dir / f"trial-{best.number:03d}" / "model.tar.gz").is_file()
    assert not list((study_dir / "checkpoints").glob("*/last.pt"))  # finished trials leave no checkpoints
    # train.py takes the file, and trains with its values.
    summary = train.main(
        ["--data", str(data), *TINY, "--epochs", "1", *_outputs(tmp_path), "--hyperparameters", str(best_file)]
    )
    for name, value in best.params.items():
        assert summary["hyperparameters"][name] == value


def test_equal_accuracies_are_ranked_by_the_kept_models_validation_loss(tmp_path: Path) -> None:
    space = search_space.parse(SPACE)
    distributions = search_space.to_optuna(space)
    study = optuna.create_study(direction="maximize", study_name="ties")
    for lr, loss in ((0.01, 0.40), (0.02, 0.15), (0.03, 0.90)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "label_smoothing": 0.1},
                distributions=distributions,
                value=1.0,
                intermediate_values={1: 1.0},
                user_attrs={"valid_loss": loss},
            )
        )
    summary = tuning_report.write(study, space, tmp_path, ["--data", "d"])
    assert [r["trial"] for r in summary["board"]] == [1, 0, 2]
    assert json.loads((tmp_path / "best_hyperparameters.json").read_text()) == {"lr": 0.02, "label_smoothing": 0.1}
    assert "best: trial 1" in summary["text"]


def test_running_the_command_again_continues_the_study(study: Any, data: Path, capsys: Any) -> None:
    study_dir, _ = study
    space = str(study_dir.parent / "space.json")
    more = ["--epochs", "3", "--trials", "5", "--mode", "inprocess", "--study", "tiny", "--batch-size", "16"]
    code, again = run_study(study_dir.parent, data, "--space", space, *more)
    assert code == 0
    assert len(again.trials) == 5  # one more, not five more
    printed = capsys.readouterr().out
    assert (
        "4 trials complete or pruned so far, running 1 more" in printed
        and "rank" in printed
        and "best: trial" in printed
    )


def test_subprocess_trials_are_scraped_like_sagemaker_and_fixed_flags_leave_the_search(
    data: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the study's own store, as a user gets it
    code, study = run_study(
        tmp_path, data, "--epochs", "2", "--trials", "2", "--batch-size", "16", "--jobs", "2", "--no-baseline"
    )
    assert code == 0
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        assert "batch_size" not in t.params  # given on the command line: fixed, not searched
        assert search_space.from_optuna(t.distributions) == search_space.load().without(["batch_size"]).canonical()
        assert sorted(t.intermediate_values) == [1, 2]
        log = Path(t.user_attrs["dir"], "train.log").read_text()
        assert "--batch-size 16" in log.splitlines()[0] or "--batch-size=16" in log.splitlines()[0]
        last_line = [line for line in log.splitlines() if "best_valid_accuracy=" in line][-1]
        assert t.value == metrics.scrape(last_line)["best_valid_accuracy"]
    assert "fixed on the command line: batch_size" in capsys.readouterr().out
    # Both trials, run side by side, in one MLflow experiment named after the study, in a store beside study.db.
    (name,) = {Path(t.user_attrs["dir"]).parent.name for t in study.trials}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / name / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial-000", "trial-001"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        trial = next(t for t in study.trials if Path(t.user_attrs["dir"]).name == run.info.run_name)
        assert run.data.metrics["best_valid_accuracy"] == pytest.approx(trial.value, abs=1e-4)  # printed to 4 places


def test_failing_trials_are_reported_and_the_study_goes_on(data: Path, tmp_path: Path, capsys: Any) -> None:
    argv = ["--data", str(data), "--out", str(tmp_path), *TINY, "--epochs", "1", "--trials", "2"]
    argv[argv.index("timm/test_efficientnet")] = "timm/no_such_model"
    assert tune_local.main([*argv, "--mode", "inprocess", "--no-baseline"]) == 1
    printed = capsys.readouterr().out
    assert printed.count("FAILED") == 2 and "no trial completed" in printed
    board = list(csv.DictReader(next(tmp_path.glob("*/leaderboard.csv")).open()))
    assert [r["state"] for r in board] == ["FAIL", "FAIL"] and "no_such_model" in board[0]["note"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model-dir", "x"], "sets --model-dir per trial"),
        (["--epochs", "zero"], "train.py flags"),
        (["--mode", "inprocess", "--jobs", "2"], "needs --mode subprocess"),
    ],
)
def test_bad_tuner_arguments_are_refused_up_front(data: Path, capsys: Any, extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        tune_local.main(["--data", str(data), *extra])
    assert message in capsys.readouterr().err


def test_no_data_is_refused(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        tune_local.main(["--trials", "1"])
    assert "no data" in capsys.readouterr().err


def test_a_rerun_with_other_flags_is_refused_not_mixed_in(study: Any, data: Path, capsys: Any) -> None:
    study_dir, _ = study
    space = str(study_dir.parent / "space.json")
    with pytest.raises(SystemExit) as refused:
        run_study(study_dir.parent, data, "--space", space, "--study", "tiny", "--batch-size", "16", "--epochs", "4")
    assert "was run with other settings (--epochs was 3)" in str(refused.value) and "--study NAME" in str(refused.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ('{"learning_rate": 0.05}', "learning_rate is not searched"),
        ('{"lr": "fast"}', "outside the search space"),
        ('{"lr": 5.0}', "outside the search space"),
        ('{"batch_size": 16}', "batch_size is fixed on the command line"),
        ("[0.01]", "expected a JSON object"),
        ("{lr", "neither a JSON file nor JSON"),
    ],
)
def test_a_wrong_enqueue_item_is_refused_up_front(data: Path, capsys: Any, item: str, message: str) -> None:
    with pytest.raises(SystemExit):
        tune_local.main(["--data", str(data), "--batch-size", "16", "--enqueue", item])
    assert message in capsys.readouterr().err


def test_an_enqueue_file_may_be_utf16_as_powershell_writes_it(data: Path, tmp_path: Path) -> None:
    file = tmp_path / "best.json"
    file.write_text(json.dumps({"lr": 0.02}), encoding="utf-16")
    args, _, _ = tune_local.parse(["--data", str(data), "--enqueue", str(file)])
    assert args.enqueue == [{"lr": 0.02}]
    opts = options.parse_options(["--data", "d", "--hyperparameters", str(file)], env={})
    assert opts.lr == 0.02


def test_an_abbreviated_flag_is_fixed_like_the_full_one(data: Path) -> None:
    args, _, space = tune_local.parse(["--data", str(data), "--batch", "64"])
    assert args.fixed == ["batch_size"] and "batch_size" not in space.names


def test_a_trial_resumed_after_its_last_epoch_takes_its_metrics_from_metrics_json(study: Any) -> None:
    _, optuna_study = study
    done = next(t for t in optuna_study.trials if t.state.name == "COMPLETE")
    reporter = tune_local.Reporter(trial=None, objective="best_valid_accuracy", log=print)
    tune_local._fill_from_metrics_file(reporter, Path(done.user_attrs["dir"]) / "output" / "metrics.json")
    assert reporter.last["best_valid_accuracy"] == done.value
    assert -reporter.kept[1] == pytest.approx(done.user_attrs["valid_loss"])


def test_ctrl_c_stops_the_trial_process_and_the_same_command_resumes_it(data: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to the tuner's process group): no train.py left running, the trial marked
    interrupted; run again (from another directory, with a relative --data), it resumes from its checkpoint."""
    (tmp_path / "work").mkdir()
    link = tmp_path / "work" / "images"
    link.symlink_to(data)
    command = [
        sys.executable, "-m", "breedfilter.tune_local", "--data", "images", "--out", str(tmp_path / "tune"),
        "--study", "s", "--trials", "1", "--no-baseline", "--enqueue", '{"lr": 0.01}', *TINY, "--epochs", "40",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.Popen(
        command, cwd=link.parent, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert first.stdout is not None
    for line in first.stdout:
        if "epoch 2:" in line:
            break
    os.killpg(first.pid, signal.SIGINT)
    printed = line + first.stdout.read()
    assert first.wait() == 1, printed
    assert "interrupted: the same command resumes it" in printed
    assert not _processes_reading(str(data)), "train.py still running after the tuner stopped"
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune' / 's' / 'study.db'}")
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in stored.trials] == [("FAIL", True)]
    epochs_done = int(max(stored.trials[0].intermediate_values))
    # Again: the checkpoint (same flags, same trial) holds the epochs done before the signal.
    second = subprocess.run(command, cwd=link.parent, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 interrupted trial(s) resume first" in second.stdout
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune' / 's' / 'study.db'}")
    resumed = stored.trials[1]
    assert resumed.state.name == "COMPLETE" and resumed.params == {**stored.trials[0].params}
    assert resumed.user_attrs["resumes"] == 0
    assert 1 < min(resumed.intermediate_values) <= epochs_done + 1  # went on from a saved epoch, not from scratch
    assert "resumes trial 0" in second.stdout


def _processes_reading(path: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "train.py" in cmdline and "images" in cmdline and str(os.getpid()) != proc.name:
            found.append(cmdline)
    return found


def _outputs(tmp_path: Path) -> list[str]:
    return [
        "--model-dir",
        str(tmp_path / "model"),
        "--output-data-dir",
        str(tmp_path / "output"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
