"""train.py's options: command-line hyperparameters, with defaults read from SageMaker's environment.

The same flags work everywhere: SageMaker passes hyperparameters as ``--name value`` (booleans as ``True``/
``False``) and the data and output paths as ``SM_*`` variables; locally they are flags with sensible defaults.
Two recipes set the defaults: ``finetune`` (what strong references do) and ``naive`` (what most published
solutions do: frozen backbone, one fixed learning rate, no schedule); any flag given overrides its recipe.
``--hyperparameters FILE`` (a JSON object of flag names to values, such as the tuner's best_hyperparameters.json)
sets flags from a file; flags on the command line win over it, and it wins over the recipe.

    python training/train.py --help
    python training/train.py --data DIR --hyperparameters out/tune/STUDY/best_hyperparameters.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {
        "optimizer": "adamw",
        "lr": 1e-3,
        "backbone_lr_ratio": 0.1,
        "unfreeze_epoch": 1,
        "weight_decay": 0.05,
        "scheduler": "cosine",
        "warmup_epochs": 0.5,
        "label_smoothing": 0.1,
        "augment": "standard",
        "grad_clip": 1.0,
        "head_init": "zero",
        "freeze_bn": "auto",
    },
    "naive": {
        "optimizer": "adam",
        "lr": 1e-3,
        "backbone_lr_ratio": 0.0,
        "unfreeze_epoch": -1,
        "weight_decay": 0.0,
        "scheduler": "constant",
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "augment": "standard",
        "grad_clip": 0.0,
        "head_init": "default",
        "freeze_bn": "auto",
    },
}


# --data's split folders: train/, valid/ (also val/ or validation/, any case) and an optional test/. The image
# reader (imagefolder.py) and the SageMaker launcher's check of an S3 prefix both read the names through this.
SPLIT_ALIASES = {"val": "valid", "validation": "valid"}

# The options a checkpoint must share with the run that resumes it (everything that changes the training).
RESUME_KEYS = (
    "model",
    "weights",
    "image_size",
    "recipe",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "backbone_lr_ratio",
    "unfreeze_epoch",
    "momentum",
    "weight_decay",
    "scheduler",
    "warmup_epochs",
    "label_smoothing",
    "augment",
    "grad_clip",
    "amp",
    "early_stopping_patience",
    "max_steps_per_epoch",
    "seed",
    "deterministic",
    "freeze_bn",
    "head_init",
    "channels_last",
)


def str2bool(value: str | bool) -> bool:
    """SageMaker sends booleans as strings: True/False, true/false, 1/0, yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {value}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {value}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, not {value}")
    return number


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    on_sagemaker = "SM_MODEL_DIR" in env
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Fine-tune a pretrained CNN on an ImageFolder dataset (train/ valid/ test/); write model.tar.gz.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data (SageMaker channels: train, valid, test; or one channel holding all three)")
    data.add_argument("--data", type=Path, default=_channel_root(env), help="dataset root with train/ valid/ test/")
    for split in ("train", "valid", "test"):
        data.add_argument(f"--{split}", type=Path, default=_path(env.get(f"SM_CHANNEL_{split.upper()}")))
    data.add_argument("--verify-images", type=str2bool, default=True, help="decode every image before training")
    data.add_argument("--skip-bad-images", type=str2bool, default=False, help="skip unreadable images (counted)")
    data.add_argument("--num-workers", type=int, default=min(os.cpu_count() or 1, 8), help="data loader workers")
    data.add_argument(
        "--decode",
        choices=["cpu", "device"],
        default="cpu",
        help="where train/valid JPEGs are decoded and augmented: in the loader workers (Pillow), or on the training "
        "device (nvJPEG on a GPU; training/device_decode.py). Test and decision metrics always use the endpoint's",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="resnet50", help="torchvision name (resnet50, efficientnet_b0…) or timm/NAME")
    model.add_argument("--weights", default="imagenet", help="imagenet, none, or a local state dict file")
    model.add_argument("--image-size", type=int, default=0, help="crop size (0: the weights' own)")
    model.add_argument("--channels-last", type=str2bool, default=True)
    model.add_argument(
        "--compile",
        type=str2bool,
        default=False,
        help="torch.compile the training step's network (compiles once per trainable set; evaluation stays eager)",
    )

    recipe = parser.add_argument_group("recipe (defaults from --recipe; any flag overrides)")
    recipe.add_argument("--recipe", choices=sorted(RECIPES), default="finetune")
    recipe.add_argument(
        "--hyperparameters",
        type=Path,
        metavar="FILE",
        help="JSON {flag: value} (e.g. the tuner's best_hyperparameters.json); command-line flags win over it",
    )
    recipe.add_argument("--epochs", type=positive_int, default=10)
    recipe.add_argument("--batch-size", type=positive_int, default=32, help="per process")
    recipe.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    recipe.add_argument("--lr", type=positive_float, help="learning rate of the new head")
    recipe.add_argument("--backbone-lr-ratio", type=non_negative_float, help="backbone lr = lr × this")
    recipe.add_argument(
        "--unfreeze-epoch", type=int, help="train the head alone for this many epochs, then all (-1: never)"
    )
    recipe.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD only")
    recipe.add_argument("--weight-decay", type=non_negative_float)
    recipe.add_argument("--scheduler", choices=["cosine", "constant"])
    recipe.add_argument("--warmup-epochs", type=non_negative_float)
    recipe.add_argument("--label-smoothing", type=non_negative_float)
    recipe.add_argument("--augment", choices=["standard", "trivialaugment", "none"])
    recipe.add_argument(
        "--freeze-bn",
        type=str2bool,
        help="keep the backbone's BatchNorm statistics fixed when it trains (default: with pretrained weights)",
    )
    recipe.add_argument("--head-init", choices=["zero", "default"], help="new head: zeros, or nn.Linear's own")
    recipe.add_argument("--grad-clip", type=non_negative_float, help="max gradient norm (0: off)")
    recipe.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="mixed precision (auto: on GPU)")
    recipe.add_argument("--early-stopping-patience", type=int, default=3, help="epochs without improvement (0: off)")
    recipe.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap for quick runs (0: all)")
    recipe.add_argument("--seed", type=int, default=42)
    recipe.add_argument("--deterministic", type=str2bool, default=False, help="deterministic algorithms (slower)")

    look = parser.add_argument_group(
        "debugger and profiler (training/observability/; one report.html in the output dir)"
    )
    look.add_argument("--debugger", type=str2bool, default=True, help="per-layer statistics and rules (on/off)")
    look.add_argument("--debugger-interval", type=positive_int, default=20, help="record tensors every N steps")
    look.add_argument(
        "--debugger-collections",
        default="all",
        help="all, or some of losses, gradients, weights, biases, activations, inputs; each may take its own "
        "interval, e.g. gradients:10,weights:50,activations:100",
    )
    look.add_argument(
        "--debugger-rules",
        default="default",
        help="e.g. default; none,exploding_tensor=stop; overfit=stop,overfit.ratio_threshold=0.5; dead_relu=off",
    )
    look.add_argument("--profiler", type=str2bool, default=True, help="system sampler, step timing, rules (on/off)")
    look.add_argument("--profiler-interval", type=positive_float, default=1.0, help="system sample every N seconds")
    look.add_argument(
        "--profiler-steps", default="6:3", help="torch.profiler window FIRST:COUNT (a Chrome/Perfetto trace), or off"
    )
    look.add_argument("--profiler-rules", default="default", help="e.g. 'Dataloader.threshold=0.3,StepOutlier=off'")
    look.add_argument(
        "--smdebug",
        choices=["auto", "off"],
        default="auto",
        help="auto: also register SageMaker Debugger's hook when smdebug imports and the job has a hook config",
    )
    look.add_argument("--report", type=str2bool, default=True, help="write report.html in the output dir")

    out = parser.add_argument_group("outputs")
    out.add_argument("--model-dir", type=Path, default=Path(env.get("SM_MODEL_DIR", "out/train/model")))
    out.add_argument("--output-data-dir", type=Path, default=Path(env.get("SM_OUTPUT_DATA_DIR", "out/train/output")))
    out.add_argument(
        "--tensorboard-dir",
        type=_optional_path,
        default=_tensorboard_default(env),
        help="TensorBoard event files (default: OUTPUT_DATA_DIR/tensorboard; on SageMaker /opt/ml/output/tensorboard); "
        "'none' for none",
    )
    out.add_argument("--checkpoint-dir", type=Path, default=_checkpoint_default(env))
    out.add_argument("--resume", type=str2bool, default=True, help="continue from the checkpoint dir's last epoch")
    out.add_argument(
        "--package", type=str2bool, default=not on_sagemaker, help="write model.tar.gz (SageMaker tars model-dir)"
    )
    out.add_argument("--top-k", type=positive_int, default=3, help="predictions the endpoint returns")

    trust = parser.add_argument_group(
        "decisions (training/open_set.py): calibration, unknown images, thresholds chosen on the valid split"
    )
    trust.add_argument(
        "--target-precision",
        type=_fraction,
        default=0.99,
        help="precision of SORTED images the probability threshold is chosen for",
    )
    trust.add_argument(
        "--known-keep",
        type=_fraction,
        default=0.95,
        help="share of images of the labels the unknown-image threshold keeps",
    )
    trust.add_argument(
        "--unknown-method",
        choices=["auto", "none", "msp", "energy", "knn", "mahalanobis", "imagenet_prior"],
        default="auto",
        help="how the endpoint recognises images of none of the labels (auto: imagenet_prior with the pretrained "
        "network's ImageNet head, else knn; measured by bench/open_set.py)",
    )
    trust.add_argument(
        "--unknowns",
        type=Path,
        help="optional folder of images of none of the labels (any depth): measured and shown in the report",
    )
    out.add_argument("--name", default="", help="model name in the endpoint's answers (default breedfilter-MODEL)")

    track = parser.add_argument_group(
        "MLflow tracking and the model registry (training/observability/mlflow_tracking.py, training/model_registry.py)"
    )
    track.add_argument("--mlflow", type=str2bool, default=True, help="record the run in MLflow (on/off)")
    track.add_argument(
        "--mlflow-uri",
        default="",
        help="tracking URI or SageMaker managed MLflow ARN (default: MLFLOW_TRACKING_URI, else an embedded "
        "sqlite:///OUTPUT_DATA_DIR/mlflow.db)",
    )
    track.add_argument(
        "--mlflow-experiment",
        default=env.get("MLFLOW_EXPERIMENT_NAME") or "breedfilter",
        help="experiment name (default: MLFLOW_EXPERIMENT_NAME, else breedfilter)",
    )
    track.add_argument("--mlflow-run-name", default="", help="run name (default: MLFLOW_RUN_NAME or the job's name)")
    track.add_argument(
        "--register-model",
        default="",
        help="register the artifact as a new version of this registered model when it passes the gate",
    )
    track.add_argument("--gate-min-test-accuracy", type=_unit_interval, default=0.8, help="the gate: test accuracy")
    track.add_argument(
        "--gate-max-unknown-sorted",
        type=_unit_interval,
        default=0.05,
        help="the gate: share of --unknowns images the model would sort (checked when measured)",
    )
    track.add_argument(
        "--model-data-url",
        default="",
        help="where this run's model.tar.gz will lie, for the registry's deploy line; {job_name} is replaced "
        "(default: the local model.tar.gz)",
    )

    cache = parser.add_argument_group("cached backbone features for frozen-backbone epochs (training/feature_cache.py)")
    cache.add_argument(
        "--feature-cache",
        type=str2bool,
        default=True,
        help="frozen-backbone epochs train the head on cached features of un-augmented images (on/off)",
    )
    cache.add_argument(
        "--feature-cache-dir",
        type=Path,
        default=Path(env.get("BREEDFILTER_FEATURE_CACHE", "~/.cache/breedfilter/features")).expanduser(),
        help="where cached features are kept (shared by runs and tuning trials on the same data and weights)",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse, fill recipe defaults for flags left unset, and check the combination."""
    parser = build_parser(env)
    argv = _dashed(argv)
    options = parser.parse_args(argv)
    if options.hyperparameters is not None:  # the file's flags first, so the command line's own flags win
        options = parser.parse_args([*hyperparameter_file_flags(options.hyperparameters, parser), *argv])
    for key, value in RECIPES[options.recipe].items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if options.freeze_bn == "auto":  # pretrained statistics are worth keeping; a network from scratch needs its own
        options.freeze_bn = options.weights != "none"
    if not (options.data or options.train):
        parser.error("no data: pass --data DIR (with train/ valid/ test/) or --train/--valid/--test DIRS")
    if options.tensorboard_dir == "auto":
        options.tensorboard_dir = options.output_data_dir / "tensorboard"
    if options.image_size < 0:
        parser.error("--image-size must be >= 0")
    if options.unknown_method == "imagenet_prior" and options.weights == "none":
        parser.error(
            f"--unknown-method {options.unknown_method} needs the pretrained network's ImageNet head: "
            "not with --weights none (use knn, mahalanobis, energy or msp)"
        )
    if options.register_model and not options.mlflow:
        parser.error("--register-model registers the model MLflow logged: not with --mlflow off")
    _check_debugging(options, parser)
    options.name = options.name or f"breedfilter-{options.model.removeprefix('timm/')}"
    return options


def _check_debugging(options: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Rule specs, collections and the profiler window are checked now, not after the dataset has loaded."""
    from observability import debug_rules, profile_rules, rule_spec

    try:
        rule_spec.parse_collections(options.debugger_collections)
        rule_spec.parse_rule_spec(options.debugger_rules, debug_rules.CATALOGUE)
        rule_spec.parse_rule_spec(options.profiler_rules, profile_rules.CATALOGUE)
        rule_spec.parse_window(options.profiler_steps)
    except rule_spec.RuleSpecError as exc:
        parser.error(str(exc))


def explicit_flags(tokens: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options these tokens set, read by train.py's own parser (abbreviations such as ``--batch 64``
    resolved, ``--batch_size`` accepted, values typed and checked), keyed by option name; nothing else. A bad
    flag raises ValueError with argparse's message. The tuner checks its fixed flags with it."""
    parser = build_parser({} if env is None else env)
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # leaves only what the tokens set
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace = parser.parse_args(_dashed(list(tokens)))
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        raise ValueError(lines[-1].partition("error: ")[2] if lines else " ".join(tokens)) from None
    return vars(namespace)


def option_names() -> frozenset[str]:
    """train.py's option names (argparse dests)."""
    parser = build_parser({})
    return frozenset(a.dest for a in parser._actions if a.option_strings and a.dest != "help")


def _dashed(argv: Sequence[str] | None) -> list[str] | None:
    """``--batch_size 32`` -> ``--batch-size 32``: SageMaker hyperparameter names are often written with ``_``."""
    if argv is None:
        argv = sys.argv[1:]
    out = []
    for token in argv:
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            token = name.replace("_", "-") + sep + value
        out.append(token)
    return out


class HyperparameterFileError(ValueError):
    """A --hyperparameters file that cannot be read, is not JSON, or holds something other than flags."""


def flag_text(value: bool | int | float | str) -> str:
    """A flag's value as train.py reads it back: ``true``/``false`` for booleans, else ``str``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_hyperparameter_file(path: Path) -> dict[str, bool | int | float | str]:
    """``{"lr": 0.01, "batch_size": 64}`` from a file in UTF-8, -16 or -32, BOM or not (PowerShell's ``>`` writes
    UTF-16); each value a number, string or boolean. train.py and ``breedfilter train --sagemaker`` both read
    the tuner's best_hyperparameters.json through this; the names are checked by whoever parses the flags."""
    try:
        values = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise HyperparameterFileError(f"--hyperparameters {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HyperparameterFileError(f"--hyperparameters {path}: not JSON ({exc})") from None
    if not isinstance(values, dict):
        raise HyperparameterFileError(f"--hyperparameters {path}: expected a JSON object of flag names to values")
    for name, value in values.items():
        if isinstance(value, dict | list) or value is None:
            raise HyperparameterFileError(
                f"--hyperparameters {path}: {name} must be a number, string or boolean, not {value!r}"
            )
    return values


def hyperparameter_file_flags(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """``{"lr": 0.01, "batch_size": 64}`` -> ``["--lr", "0.01", "--batch-size", "64"]``, checked against the parser."""
    try:
        values = read_hyperparameter_file(path)
    except HyperparameterFileError as exc:
        parser.error(str(exc))
    known = {
        action.dest: action.option_strings[-1]
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "hyperparameters")
    }
    flags: list[str] = []
    for name, value in values.items():
        dest = str(name).removeprefix("--").replace("-", "_")
        if dest not in known:
            parser.error(f"--hyperparameters {path}: unknown option {name!r} (train.py --help lists them)")
        flags += [known[dest], flag_text(value)]
    return flags


def hyperparameters(options: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON-safe values, stored in config.json and metrics.json."""
    return json.loads(json.dumps(vars(options), default=str))


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, not {value}")
    return number


def _unit_interval(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {value}")
    return number


def _optional_path(value: str) -> Path | str | None:
    if value == "auto":  # the default: beside the other outputs
        return value
    return None if value.lower() in ("", "none", "off") else Path(value)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _channel_root(env: Mapping[str, str]) -> Path | None:
    # One channel holding train/ valid/ test/ (the usual single S3 prefix upload).
    for name in ("SM_CHANNEL_DATA", "SM_CHANNEL_TRAINING"):
        if env.get(name):
            return Path(env[name])
    return None


def _sagemaker_root(env: Mapping[str, str]) -> Path:
    """``/opt/ml`` in a SageMaker job: the parent of SM_MODEL_DIR (``/opt/ml/model``). Derived, not hard-coded,
    so that train.py run with SageMaker's variables pointing elsewhere (a test, a laptop) never writes into a
    real ``/opt/ml``."""
    return Path(env["SM_MODEL_DIR"]).parent


def _tensorboard_default(env: Mapping[str, str]) -> str:
    """SageMaker collects ``/opt/ml/output/tensorboard`` (TensorBoardOutputConfig's LocalPath)."""
    if "SM_MODEL_DIR" not in env:
        return "auto"
    output = Path(env["SM_OUTPUT_DIR"]) if env.get("SM_OUTPUT_DIR") else _sagemaker_root(env) / "output"
    return str(output / "tensorboard")


def _checkpoint_default(env: Mapping[str, str]) -> Path:
    # SageMaker syncs /opt/ml/checkpoints to S3 when the job sets checkpoint_s3_uri (spot training).
    # One subdirectory per job: the trials of a tuning job may share one checkpoint prefix.
    if "SM_MODEL_DIR" in env:
        return _sagemaker_root(env) / "checkpoints" / env.get("TRAINING_JOB_NAME", "")
    return Path("out/train/checkpoints")
