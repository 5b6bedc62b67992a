"""The demo's model: the artifact given, else one trained with training/train.py and cached.

- ``--model model.tar.gz`` (or its unpacked dir, or ``s3://bucket/key/model.tar.gz``): used as is.
- else ``train.py`` runs on ``--data DIR`` (ImageFolder: train/ valid/ test/), or on a small labelled set of
  shapes the demo generates itself (``breedfilter.demo_dataset``), with quick CPU flags (any train.py flag
  given after them wins). It writes ``model.tar.gz`` exactly as a SageMaker job packs it. The result is
  cached under ``out/demo/models/<key>/``, keyed by the flags, the dataset's files and the training code,
  so a second ``make demo`` starts at once; ``--retrain`` trains anyway.

    python -m breedfilter.demo_model [--data DIR] [TRAIN.PY FLAGS...]     # prints the artifact's path
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breedfilter import demo_dataset
from breedfilter import metrics as metric_lines
from breedfilter.processes import exit_text, spawn_group, stop_group
from breedfilter.search_space import SearchSpaceError, given_train_flags
from breedfilter.units import REPO_ROOT, TRAINING_DIR

CACHE_DIR = REPO_ROOT / "out" / "demo" / "models"
GENERATED_DIR = REPO_ROOT / "out" / "demo" / "shapes"
GENERATED_COUNTS = {"train": 1000, "valid": 100, "test": 100}  # images per class: 3,600 JPEGs, ~4 s

# From scratch (no download offline): a tiny EfficientNet (timm's test_efficientnet) at 64 px, the whole
# network training from the first step, learns the generated shapes in 3 epochs, about 40 s on two CPU
# cores (99.3-100% test accuracy over 4 dataset seeds). Random crops would cut the shape out of the
# picture, so no augmentation. Flags given by the user come after these and win (argparse: the last counts).
SHAPES_FLAGS = (
    *("--model", "timm/test_efficientnet", "--weights", "none", "--image-size", "64"),
    *("--recipe", "finetune", "--unfreeze-epoch", "0", "--backbone-lr-ratio", "1", "--lr", "3e-3"),
    *("--augment", "none", "--epochs", "3", "--early-stopping-patience", "0"),
    *("--num-workers", "0", "--tensorboard-dir", "none"),
)
# Your --data: a small ImageNet-pretrained network fine-tuned briefly (offline, add --weights FILE or none).
DATA_FLAGS = ("--model", "resnet18", "--epochs", "3", "--num-workers", "1", "--tensorboard-dir", "none")
OWN_FLAGS = frozenset({"data", "train", "valid", "test", "model_dir", "output_data_dir", "checkpoint_dir", "package"})


class ModelError(RuntimeError):
    """No model could be had; the message says why and what to do."""


@dataclass(frozen=True)
class DemoModel:
    path: Path  # model.tar.gz (or an unpacked model dir)
    origin: str  # one line for the summary: where it came from
    data: Path | None  # the labelled dataset it was trained on (its test split has known labels), if any
    metrics: dict[str, Any] | None  # train.py's metrics.json, when trained here
    trained_now: bool = False  # trained by this call (not from the cache)


def obtain(
    model: str | None = None,
    data: Path | None = None,
    train_flags: Sequence[str] = (),
    *,
    retrain: bool = False,
    echo: Any = print,
) -> DemoModel:
    """The artifact to serve: ``model`` if given (a path or an S3 URI), else trained (or cached) on ``data``."""
    if model:
        return DemoModel(_given(model, echo), f"given: {model}", data, None)
    base = DATA_FLAGS if data else SHAPES_FLAGS
    if data is None:
        data = generated_dataset()
        where = (
            f"{len(demo_dataset.CLASSES)} generated shapes ({', '.join(demo_dataset.CLASSES)}) in {short_path(data)}"
        )
    else:
        data = data.resolve()
        if not data.is_dir():
            raise ModelError(f"--data {data}: no such directory (an ImageFolder dataset: train/ valid/ test/)")
        where = short_path(data)
    flags = check_train_flags(train_flags, base)
    key = cache_key(flags, data)
    cached = CACHE_DIR / key
    if retrain and cached.exists():
        shutil.rmtree(cached)
    trained_now = not (cached / "model.tar.gz").is_file()
    if trained_now:
        expected = "about a minute on CPU" if base is SHAPES_FLAGS else "its time depends on your data and flags"
        echo(f"training a model on {where} with training/train.py ({expected}; cached afterwards)")
        train(flags, data, cached, echo)
        status = "trained just now"
    else:
        status = "cached (--retrain trains again)"
    metrics = json.loads((cached / "output" / "metrics.json").read_text(encoding="utf-8"))
    test = metrics.get("test") or {}
    accuracy = f", test accuracy {test['accuracy']:.1%} on {test['count']} images" if test else ""
    origin = (
        f"{metrics['model']} trained on {where} in {metrics['wall_seconds']:.0f} s{accuracy}; {status}: "
        f"{short_path(cached / 'model.tar.gz')}"
    )
    return DemoModel(cached / "model.tar.gz", origin, data, metrics, trained_now)


def generated_dataset() -> Path:
    """The demo's own labelled set, generated once (deterministic) and reused while its recipe is unchanged."""
    recipe = json.dumps({"counts": GENERATED_COUNTS, "classes": demo_dataset.CLASSES}, sort_keys=True)
    marker = GENERATED_DIR / ".generated.json"
    if marker.is_file() and marker.read_text(encoding="utf-8") == recipe:
        return GENERATED_DIR
    shutil.rmtree(GENERATED_DIR, ignore_errors=True)
    demo_dataset.generate(GENERATED_DIR, **GENERATED_COUNTS)
    marker.write_text(recipe, encoding="utf-8")
    return GENERATED_DIR


def check_train_flags(tokens: Sequence[str], base: Sequence[str] = SHAPES_FLAGS) -> list[str]:
    """``base`` followed by the user's flags, checked by train.py's own parser; the demo's own paths refused."""
    try:
        given = given_train_flags(tokens)
    except SearchSpaceError as exc:
        raise ModelError(str(exc)) from None
    refused = sorted(OWN_FLAGS & set(given))
    if refused:
        names = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ModelError(f"{names}: the demo sets this itself (the dataset is --data DIR)")
    return [*base, *tokens]


def cache_key(flags: Sequence[str], data: Path) -> str:
    """Changes when the flags, the dataset's files (names, sizes, times) or the training code change."""
    digest = hashlib.sha256(json.dumps(list(flags)).encode())
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(data)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for path in sorted(TRAINING_DIR.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train(flags: Sequence[str], data: Path, target: Path, echo: Any = print) -> None:
    """Run train.py into ``target.partial`` and rename it into place only when it succeeded."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log_path = partial / "train.log"
    command = [
        sys.executable,
        str(TRAINING_DIR / "train.py"),
        *flags,
        "--data",
        str(data),
        "--model-dir",
        str(partial / "model"),
        "--output-data-dir",
        str(partial / "output"),
        "--checkpoint-dir",
        str(partial / "checkpoints"),
    ]
    with log_path.open("w", encoding="utf-8") as log:
        process = spawn_group(command, {**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                shown = progress_line(line)
                if shown:
                    echo("  " + shown)
            code = process.wait()
        except BaseException:
            stop_group(process)
            raise
    if code != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-15:])
        raise ModelError(
            f"training failed: train.py {exit_text(code)}; the last lines of {short_path(log_path)}:\n{tail}"
        )
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def progress_line(line: str) -> str | None:
    """A train.py log line worth showing while the demo waits: one per epoch, and the final one."""
    text = _TIMESTAMP.sub("", line.rstrip())
    metrics = metric_lines.scrape(text)
    if "epoch" in metrics and "valid_accuracy" in metrics:
        return (
            f"epoch {metrics['epoch']:.0f}: train accuracy {float(metrics['train_accuracy']):.3f}, "
            f"valid accuracy {float(metrics['valid_accuracy']):.3f} ({float(metrics['epoch_seconds']):.1f} s)"
        )
    if text.startswith(("training: ", "done in ")):
        return text[:160]
    return None


def _given(model: str, echo: Any) -> Path:
    if model.startswith("s3://"):
        return _download(model, echo)
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(f"--model {model}: no such file (a model.tar.gz, its unpacked dir, or s3://bucket/key)")
    return path


def _download(uri: str, echo: Any) -> Path:
    """An S3 artifact, fetched once with your AWS credentials (before the twin's fake ones are set)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from breedfilter.aws_hints import CREDENTIALS_HINT

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ModelError(f"--model {uri}: expected s3://bucket/key/model.tar.gz")
    target = CACHE_DIR / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(key).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    echo(f"downloading {uri}")
    try:
        boto3.client("s3").download_file(bucket, key, str(target.with_suffix(".part")))
    except NoCredentialsError:
        raise ModelError(f"--model {uri}: {CREDENTIALS_HINT}") from None
    except (ClientError, BotoCoreError) as exc:
        raise ModelError(f"--model {uri}: {exc}") from None
    target.with_suffix(".part").rename(target)
    return target


def short_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="ImageFolder dataset (default: generated shapes)")
    parser.add_argument("--retrain", action="store_true")
    args, flags = parser.parse_known_args(argv)
    try:
        model = obtain(None, args.data, flags, retrain=args.retrain)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(model.origin)
    print(model.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
