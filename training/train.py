"""Fine-tune a pretrained CNN on an ImageFolder dataset and write the model artifact. One script, three places:

    python training/train.py --data DIR                                   # a laptop (CPU or GPU)
    torchrun --nproc_per_node 2 training/train.py --data DIR              # DistributedDataParallel
    SageMaker: entry point train.py, source dir training/ (SM_CHANNEL_*, SM_MODEL_DIR, hyperparameters as flags)

It checks the data before anything else (missing splits, empty or mismatched classes, unreadable images),
builds the model with its weights' own preprocessing, trains with the recipe (``--recipe finetune|naive``),
validates each epoch (exact per-sample averages), checkpoints and resumes, then evaluates the best weights on
the test split and writes: the model dir (model.pth, labels.json, config.json, code/) and, off SageMaker,
``model.tar.gz`` beside it; metrics.json, training_curves.png and confusion_matrix.png in the output dir.
The debugger and profiler watch every run (``--debugger``/``--profiler on|off``; their rules may stop it) and
write debugger.json, profiler.json, a torch.profiler trace and one report.html there too.
Metrics print as ``valid_accuracy=0.8710;`` lines for SageMaker metric definitions. Speed levers for a GPU:
``--num-workers``, ``--amp``, ``--channels-last``, ``--compile on`` and ``--decode device`` (device_decode.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import architectures
import artifact
import checkpoints
import ddp
import decision_fit
import device_decode
import evaluation
import feature_cache
import imagefolder
import imaging
import model_registry
import options as options_module
import trainer as trainer_module
from observability import debugger as debugger_module
from observability import mlflow_tracking, rule_spec, smdebug_adapter, tensorboard_log
from observability import profiler as profiler_module
from report import png_files

log = logging.getLogger("train")


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Parse the options and train; returns the run's summary (also written to metrics.json)."""
    opts = options_module.parse_options(argv)
    world = ddp.setup()
    with _logging_to_stdout(world):
        try:
            return run(opts, world, callbacks)
        finally:
            ddp.teardown()


@contextmanager
def _logging_to_stdout(world: ddp.World) -> Iterator[None]:
    """The run's log lines on stdout (where SageMaker's metric definitions read them), for this call only: the
    root logger gets one handler and a level, and gets its own back on return, so a caller that trains
    in-process (a notebook, the tests, local tuning) keeps its logging as it was."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s [rank {world.rank}] %(message)s" if world.distributed else "%(asctime)s %(message)s"
        )
    )
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if world.is_main else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@dataclass
class Data:
    """The splits train.py reads, their loaders and the steps an epoch takes."""

    index: imagefolder.DatasetIndex
    preprocessing: imaging.Preprocessing
    train_set: imagefolder.ImageFolderDataset
    valid_set: imagefolder.ImageFolderDataset
    train_loader: Any  # a DataLoader, or device_decode.DeviceDecodedLoader around one
    valid_loader: Any
    steps: int


def run(opts: argparse.Namespace, world: ddp.World, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    started = time.perf_counter()
    _seed_everything(opts.seed, opts.deterministic)
    data = _data(opts, world)
    labels = data.index.labels
    torch.manual_seed(opts.seed)  # the new head's initialisation depends on the seed alone
    model = architectures.build_model(opts.model, len(labels), opts.weights)
    architectures.init_head(model, opts.head_init)
    identity = {
        **{key: getattr(opts, key) for key in options_module.RESUME_KEYS},
        "labels": labels,
        "counts": data.index.counts(),
        "crop": data.preprocessing.crop,
        "world_size": world.size,
    }
    if world.is_main and not opts.resume:
        (opts.checkpoint_dir / checkpoints.LAST).unlink(missing_ok=True)
        (opts.checkpoint_dir / checkpoints.BEST).unlink(missing_ok=True)
    ddp.barrier()
    tracker = _tracker(opts, world, data)
    try:
        fit = _fit(opts, world, data, model, identity, [*callbacks, *([tracker] if tracker else [])], started)
        if fit.best_state is not None:
            model.load_state_dict(fit.best_state)
        test = _test(opts, world, data, model, fit.autocast_dtype)
        decisions = (
            decision_fit.fit_decisions(opts, model, data.index, data.preprocessing, world.device, fit.autocast_dtype)
            if world.is_main
            else None
        )
        elapsed = time.perf_counter() - started
        summary = _summary(opts, data, fit.history, fit, test, elapsed, world)
        if world.is_main:
            _write_outputs(opts, model, labels, data.preprocessing, summary, test, decisions)
            if opts.report:
                _write_report(opts.output_data_dir)
            if tracker is not None:
                _track_outputs(tracker, opts, summary)
    except trainer_module.TrainingDiverged:
        if tracker is not None:  # what the failed run left: metrics.json ("diverged"), the report, the verdicts
            tracker.log_outputs({}, None, opts.name)
            tracker.finish("FAILED")
        raise
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    ddp.barrier()
    return summary


def _data(opts: argparse.Namespace, world: ddp.World) -> Data:
    """The checked dataset index, preprocessing, datasets and loaders."""
    index = _index(opts, world)
    pre = _preprocessing(opts)
    log.info("model %s, weights %s, preprocessing %s", opts.model, opts.weights, pre.to_dict())
    # RandomResizedCrop may take 8% of the area: decode JPEGs large enough that even that crop is not upscaled.
    train_draft = max(pre.resize, math.ceil(pre.crop / math.sqrt(0.08)))
    # --decode device: workers read the files; JPEGs are decoded and transformed on the training device.
    folder = device_decode.EncodedImageFolder if opts.decode == "device" else imagefolder.ImageFolderDataset
    train_set = folder(
        index.splits["train"], imaging.train_transform(pre, augment=opts.augment), (train_draft, train_draft)
    )
    valid_set = folder(index.splits["valid"], imaging.eval_transform(pre), pre.draft_size())
    train_sampler = ddp.EpochShuffleSampler(len(train_set), world, opts.seed, opts.batch_size)
    train_loader = _loader(train_set, opts, world, train_sampler)
    valid_loader = _loader(valid_set, opts, world, ddp.ShardSampler(len(valid_set), world))
    steps = len(train_loader) if opts.max_steps_per_epoch <= 0 else min(len(train_loader), opts.max_steps_per_epoch)
    if steps == 0:
        raise imagefolder.DatasetError(
            [f"the train split has {len(train_set)} images: fewer than one per process ({world.size})"]
        )
    return Data(index, pre, train_set, valid_set, train_loader, valid_loader, steps)


def _fit(
    opts: argparse.Namespace,
    world: ddp.World,
    data: Data,
    model: torch.nn.Module,
    identity: dict[str, Any],
    callbacks: Sequence[Any],
    started: float,
) -> trainer_module.Trainer:
    """Train with the watchers attached; a diverged run writes metrics.json (and the report) and raises."""
    board = (
        tensorboard_log.TensorBoardCallback(opts.tensorboard_dir) if world.is_main and opts.tensorboard_dir else None
    )
    debugger, profiler, smdebug = _watchers(opts, world, data.index.labels, model)
    watchers = [w for w in (debugger, profiler, smdebug) if w is not None]
    fit = trainer_module.Trainer(
        model=model,
        train_loader=data.train_loader,
        valid_loader=data.valid_loader,
        num_classes=len(data.index.labels),
        plan=trainer_module.Plan.from_options(opts, data.steps),
        world=world,
        checkpoint_dir=opts.checkpoint_dir,
        identity=identity,
        callbacks=[*callbacks, *watchers, *([board] if board else [])],
        sync_timing=profiler is not None,
        compile=opts.compile,
        log=log.info,
    )
    if opts.resume:
        fit.resume()
    if opts.feature_cache and fit.frozen_epochs_left():
        if world.distributed:
            log.info("feature cache: not used under DistributedDataParallel (frozen epochs run the backbone)")
        else:
            fit.frozen_features = _frozen_features(opts, world, data, model, fit)
    if debugger is not None:
        debugger.attach(model, next_step=fit.global_step + 1)
    if opts.compile:
        log.info("compile: the training steps run torch.compile'd (the first step of each trainable set compiles)")
    log.info(
        "training: %d train / %d valid images, %d classes, %d epochs × %d steps, batch %d × %d process(es), %s",
        len(data.train_set),
        len(data.valid_set),
        len(data.index.labels),
        opts.epochs,
        data.steps,
        opts.batch_size,
        world.size,
        world.device,
    )
    if profiler is not None:
        profiler.start()
    try:
        fit.fit()
    except trainer_module.TrainingDiverged:  # never deployable: no model artifact, metrics.json says why
        _close_watchers(debugger, profiler, opts, world, report=False)
        try:
            if world.is_main:
                elapsed = time.perf_counter() - started
                summary = _summary(opts, data, fit.history, fit, None, elapsed, world)
                opts.output_data_dir.mkdir(parents=True, exist_ok=True)
                text = json.dumps({**summary, "diverged": True}, indent=1) + "\n"
                (opts.output_data_dir / "metrics.json").write_text(text, encoding="utf-8")
                if opts.report:
                    _write_report(opts.output_data_dir)
        finally:
            ddp.barrier()  # torchrun ends every rank when one exits: the others wait for rank 0's files
        raise
    except BaseException:
        _close_watchers(debugger, profiler, opts, world, report=True)  # what was seen until the failure
        raise
    finally:
        if board:
            board.close()
    _close_watchers(debugger, profiler, opts, world, report=False)
    if fit.stop_reason:
        log.info(fit.stop_reason)
    return fit


def _frozen_features(
    opts: argparse.Namespace, world: ddp.World, data: Data, model: torch.nn.Module, fit: trainer_module.Trainer
) -> feature_cache.FrozenFeatures:
    """The head's inputs for every train and valid image (un-augmented), from the cache or computed once."""
    pre = data.preprocessing
    splits = {name: data.index.splits[name].samples for name in ("train", "valid")}
    key = feature_cache.cache_key(model, opts.model, pre.to_dict(), splits, fit.autocast_dtype, opts.channels_last)

    def build(name: str) -> Any:
        dataset = imagefolder.ImageFolderDataset(data.index.splits[name], imaging.eval_transform(pre), pre.draft_size())
        loader = _loader(dataset, opts, world, None)  # in index order: row i is sample i
        return lambda: feature_cache.compute(model, loader, world.device, fit.autocast_dtype, opts.channels_last)

    describe = {"architecture": opts.model, "weights": opts.weights, "preprocessing": pre.to_dict()}
    return feature_cache.load_or_compute(
        opts.feature_cache_dir, key, {"train": build("train"), "valid": build("valid")}, describe
    )


def _tracker(opts: argparse.Namespace, world: ddp.World, data: Data) -> mlflow_tracking.MlflowRun | None:
    """The MLflow run (rank 0 only; None with --mlflow off). Its parameters: the options and the data's size."""
    if not (opts.mlflow and world.is_main):
        return None
    tracker = mlflow_tracking.MlflowRun(
        mlflow_tracking.tracking_uri(opts.mlflow_uri, opts.output_data_dir),
        opts.mlflow_experiment,
        mlflow_tracking.run_name(opts.mlflow_run_name, _environment_job_name()),
        opts.output_data_dir,
    )
    sizes = {f"{split}_images": len(s.samples) for split, s in data.index.splits.items()}
    tracker.log_params({**options_module.hyperparameters(opts), **sizes, "classes": len(data.index.labels)})
    return tracker


def _track_outputs(tracker: mlflow_tracking.MlflowRun, opts: argparse.Namespace, summary: dict[str, Any]) -> None:
    """The finished run's numbers, files and model in MLflow; then the registry gate, when asked for."""
    final = tracker.log_outputs(summary, opts.model_dir, opts.name)
    if opts.register_model:
        if tracker.model_id is None:
            log.error("registry: %s not registered: the model could not be logged to MLflow", opts.register_model)
        else:
            gate = model_registry.Gate(opts.gate_min_test_accuracy, opts.gate_max_unknown_sorted)
            verdict = model_registry.judge(gate, final)  # test_accuracy, unknown_sorted_share (when measured)
            tracker.safely(
                "the registry",
                lambda: model_registry.register(
                    tracker.client,
                    opts.register_model,
                    model_id=tracker.model_id,
                    run_id=tracker.run_id,
                    gate=gate,
                    verdict=verdict,
                    model_data_url=_model_data_url(opts),
                    description=f"{opts.name} version {summary.get('model_version')}",
                ),
            )
    tracker.finish("FINISHED")


def _model_data_url(opts: argparse.Namespace) -> str:
    """Where model.tar.gz lies: --model-data-url ({job_name} filled in on SageMaker), else the local package."""
    if opts.model_data_url:
        return opts.model_data_url.replace("{job_name}", _environment_job_name())
    return str((opts.model_dir.parent / "model.tar.gz").resolve()) if opts.package else ""


def _environment_job_name() -> str:
    return json.loads(os.environ.get("SM_TRAINING_ENV", "{}") or "{}").get("job_name", "")


def _test(
    opts: argparse.Namespace, world: ddp.World, data: Data, model: torch.nn.Module, autocast_dtype: Any
) -> evaluation.Evaluation | None:
    """The test split's loss and accuracy (None without a test split)."""
    if "test" not in data.index.splits:
        return None
    pre = data.preprocessing
    test_set = imagefolder.ImageFolderDataset(data.index.splits["test"], imaging.eval_transform(pre), pre.draft_size())
    test = evaluation.evaluate(
        model,
        _loader(test_set, opts, world, ddp.ShardSampler(len(test_set), world)),
        len(data.index.labels),
        world.device,
        autocast_dtype,
        opts.channels_last,
    )
    if world.is_main:
        log.info(trainer_module.metric_line({"test_loss": test.loss, "test_accuracy": test.accuracy}))
    return test


def _index(opts: argparse.Namespace, world: ddp.World) -> imagefolder.DatasetIndex:
    """Rank 0 checks the dataset (every image decoded); the others receive its index."""
    split_dirs = imagefolder.split_dirs_from_root(opts.data) if opts.data else {}
    split_dirs.update({s: getattr(opts, s) for s in ("train", "valid", "test") if getattr(opts, s)})
    holder: list[Any] = [None]
    if world.is_main:
        checked = time.perf_counter()
        try:
            holder[0] = imagefolder.index_dataset(
                split_dirs,
                required=("train", "valid"),
                verify_images=opts.verify_images,
                skip_bad_images=opts.skip_bad_images,
                workers=max(2, opts.num_workers),
            )
        except imagefolder.DatasetError as exc:
            holder[0] = exc
        if not isinstance(holder[0], Exception):
            log.info("%s\n(checked in %.1f s)", holder[0].report(), time.perf_counter() - checked)
    if dist.is_initialized():
        dist.broadcast_object_list(holder, src=0)
    if isinstance(holder[0], Exception):
        raise holder[0]
    return holder[0]


def _preprocessing(opts: argparse.Namespace) -> imaging.Preprocessing:
    pre = architectures.default_preprocessing(opts.model)
    if opts.image_size and opts.image_size != pre.crop:
        resize = round(opts.image_size * pre.resize / pre.crop)
        pre = imaging.Preprocessing(resize, opts.image_size, pre.interpolation, pre.mean, pre.std)
    return pre


def _loader(
    dataset: imagefolder.ImageFolderDataset,
    opts: argparse.Namespace,
    world: ddp.World,
    sampler: Any,
) -> Any:
    workers = max(0, opts.num_workers)
    encoded = isinstance(dataset, device_decode.EncodedImageFolder)
    loader = DataLoader(
        dataset,
        batch_size=opts.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=world.device.type == "cuda",
        generator=torch.Generator(),
        prefetch_factor=4 if workers else None,
        collate_fn=device_decode.collate if encoded else None,
    )
    if not encoded:
        return loader
    decoder = device_decode.DeviceDecoder(dataset.device_transform, world.device)
    log.info(
        "decode: %s split JPEGs decoded by %s and transformed on %s%s; test and decision metrics use Pillow",
        dataset.split.split,
        decoder.backend,
        world.device,
        " (nvJPEG)" if world.device.type == "cuda" else ", in the main process",
    )
    # On a GPU the next batch decodes in a background thread while the step runs (see DeviceDecodedLoader).
    return device_decode.DeviceDecodedLoader(loader, decoder, prefetch=world.device.type == "cuda")


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _summary(
    opts: argparse.Namespace,
    data: Data,
    history: list[dict[str, Any]],
    fit: trainer_module.Trainer,
    test: evaluation.Evaluation | None,
    seconds: float,
    world: ddp.World,
) -> dict[str, Any]:
    index, pre = data.index, data.preprocessing
    best_row = next((row for row in history if row["epoch"] == fit.best["epoch"]), {})
    return {
        "model": opts.model,
        "labels": index.labels,
        "counts": index.counts(),
        "skipped": {split: len(s.skipped) for split, s in index.splits.items()},
        "preprocessing": pre.to_dict(),
        "history": history,
        "best_epoch": fit.best["epoch"],
        "best_valid_accuracy": best_row.get("valid_accuracy"),
        "best_valid_loss": best_row.get("valid_loss"),
        "stop_reason": fit.stop_reason,
        "test": None
        if test is None
        else {
            "loss": test.loss,
            "accuracy": test.accuracy,
            "count": test.count,
            "per_class_accuracy": test.per_class_accuracy(index.labels),
            "confusion": test.confusion.tolist(),
        },
        "wall_seconds": round(seconds, 2),
        "feature_cache": None
        if fit.frozen_features is None
        else {
            "path": str(fit.frozen_features.path),
            "computed_seconds": round(fit.frozen_features.computed_seconds, 2),
            "read_seconds": round(fit.frozen_features.read_seconds, 2),
        },
        "decode": _decode_summary(opts, data),
        "compiled": opts.compile,
        "hyperparameters": options_module.hyperparameters(opts),
        "environment": _environment(world),
    }


def _decode_summary(opts: argparse.Namespace, data: Data) -> dict[str, Any]:
    """Where train/valid images were decoded; on the device, by which decoder and how many Pillow took over."""
    decoders = [
        loader.decoder
        for loader in (data.train_loader, data.valid_loader)
        if isinstance(loader, device_decode.DeviceDecodedLoader)
    ]
    if not decoders:
        return {"where": opts.decode}
    return {
        "where": opts.decode,
        "backend": decoders[0].backend,
        "fallbacks": sum(decoder.fallbacks for decoder in decoders),
    }


def _environment(world: ddp.World) -> dict[str, Any]:
    """Where the run ran, for the report's job summary (SageMaker sets the job name and instance type)."""
    return {
        "host": os.environ.get("SM_CURRENT_HOST") or platform.node(),
        "job_name": _environment_job_name(),
        "instance_type": os.environ.get("SM_CURRENT_INSTANCE_TYPE", ""),
        "device": str(world.device)
        + (f" ({torch.cuda.get_device_name(world.device)})" if world.device.type == "cuda" else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "world_size": world.size,
    }


def _watchers(
    opts: argparse.Namespace, world: ddp.World, labels: list[str], model: torch.nn.Module
) -> tuple[debugger_module.Debugger | None, profiler_module.Profiler | None, Any]:
    """The debugger, the profiler and smdebug's hook, as the flags ask (None where off)."""
    collections = rule_spec.parse_collections(opts.debugger_collections)  # {name: interval, 0: the default}
    if opts.debugger and opts.compile and collections.pop("activations", None) is not None:
        # Forward hooks inside a compiled network split its graph on every recorded step (and Inductor's backward
        # then trips over in-place activations); weights, gradients, losses and inputs are read outside it.
        log.info("compile: the debugger records no activations (its forward hooks would run inside the graph)")
    debugger = (
        debugger_module.Debugger(
            opts.output_data_dir,
            labels,
            world,
            interval=opts.debugger_interval,
            collections=collections,
            rules=opts.debugger_rules,
            tensorboard_dir=opts.tensorboard_dir,
        )
        if opts.debugger
        else None
    )
    profiler = (
        profiler_module.Profiler(
            opts.output_data_dir,
            world,
            num_workers=max(0, opts.num_workers),
            batch_size=opts.batch_size,
            rules=opts.profiler_rules,
            interval=opts.profiler_interval,
            window=rule_spec.parse_window(opts.profiler_steps),
        )
        if opts.profiler
        else None
    )
    smdebug = smdebug_adapter.SmdebugAdapter.create(model) if opts.smdebug == "auto" else None
    return debugger, profiler, smdebug


def _close_watchers(
    debugger: debugger_module.Debugger | None,
    profiler: profiler_module.Profiler | None,
    opts: argparse.Namespace,
    world: ddp.World,
    report: bool,
) -> None:
    """Write debugger.json and profiler.json; after a failed run also the report, from what there is."""
    for watcher in (debugger, profiler):
        if watcher is None:
            continue
        try:
            path = watcher.close()
        except Exception:  # the run's own outcome matters more than its diagnostics
            log.exception("could not write %s's results", type(watcher).__name__)
            continue
        if path is not None:
            log.info("wrote %s", path)
    if report and world.is_main and opts.report:
        _write_report(opts.output_data_dir)


def _write_report(output_dir: Any) -> None:
    try:
        import report

        path = report.write_report(output_dir)
    except Exception:  # a report that cannot be drawn must not fail a finished training run
        log.exception("could not write the report in %s", output_dir)
        return
    log.info("wrote %s (breedfilter report %s prints its summary)", path, output_dir)


def _write_outputs(
    opts: argparse.Namespace,
    model: torch.nn.Module,
    labels: list[str],
    pre: imaging.Preprocessing,
    summary: dict[str, Any],
    test: evaluation.Evaluation | None,
    decisions: Any = None,
) -> None:
    out = opts.output_data_dir
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "valid_accuracy": summary["best_valid_accuracy"],
        "valid_loss": summary["best_valid_loss"],
        "test_accuracy": None if test is None else test.accuracy,
        "test_loss": None if test is None else test.loss,
        "best_epoch": summary["best_epoch"],
    }
    config = artifact.write_model_dir(
        opts.model_dir,
        model.state_dict(),
        labels,
        {
            "name": opts.name,
            "architecture": opts.model,
            "num_classes": len(labels),
            "preprocessing": pre.to_dict(),
            "top_k": min(opts.top_k, len(labels)),
            "metrics": metrics,
            "hyperparameters": summary["hyperparameters"],
            **({"open_set": decision_fit.config_entry(decisions)} if decisions is not None else {}),
        },
        open_set_state=None if decisions is None else decisions.detector.state(),
    )
    if decisions is not None:
        summary["decisions"] = config["open_set"]
    summary["model_version"] = config["version"]
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    written = [opts.model_dir, out / "metrics.json"]
    if summary["history"]:
        written.append(png_files.training_curves(summary["history"], out / "training_curves.png"))
    if test is not None:
        written.append(png_files.confusion_matrix(test.confusion.tolist(), labels, out / "confusion_matrix.png"))
    if opts.package:
        written.append(artifact.package(opts.model_dir, opts.model_dir.parent / "model.tar.gz"))
    for path in written:
        log.info("wrote %s", path)
    test_text = "no test split" if test is None else f"test accuracy {test.accuracy:.4f} ({test.count} images)"
    log.info(
        "done in %.0f s: best epoch %s (valid accuracy %.4f), %s; model %s version %s",
        summary["wall_seconds"],
        summary["best_epoch"],
        summary["best_valid_accuracy"] or 0.0,
        test_text,
        config["name"],
        config["version"],
    )
    log.info("classify files with it: python %s IMAGE...", opts.model_dir / "code" / "inference.py")


if __name__ == "__main__":
    try:
        main()
    except (
        imagefolder.DatasetError,
        architectures.WeightsUnavailable,
        architectures.UnknownArchitecture,
        mlflow_tracking.TrackingUnavailable,
    ) as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        sys.exit(2)
    except checkpoints.CheckpointMismatch as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        sys.exit(2)
    except trainer_module.TrainingDiverged as exc:  # no model was written (metrics.json says "diverged": true)
        print(f"train.py: {exc}", file=sys.stderr)
        sys.exit(3)
