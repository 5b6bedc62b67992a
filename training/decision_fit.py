"""After training: fit the decisions the endpoint will make (train.py calls ``fit_decisions`` on rank 0).

One job: run the trained model once over the train split (un-augmented, for the unknown-image statistics),
the valid split (calibration and thresholds) and, when given, a folder of unknown images (``--unknowns``,
measured for the report), then fit ``open_set`` and write ``open_set.json`` in the output dir. The model
artifact gets the fitted state as ``open_set.pt`` (artifact.py) and its summary in ``config.json``.

    python training/train.py --data DIR --target-precision 0.99 --known-keep 0.95 --unknowns DIR_OF_OTHER_IMAGES
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import architectures
import imagefolder
import imaging
import open_set

log = logging.getLogger("train")
OPEN_SET_FILE = "open_set.json"


def unknown_images(folder: Path) -> imagefolder.SplitIndex:
    """Every image file under ``folder`` (any depth), as a split whose targets are -1."""
    if not folder.is_dir():
        raise imagefolder.DatasetError([f"--unknowns {folder}: not a directory"])
    split = imagefolder.SplitIndex("unknowns", folder)
    split.samples = [
        (path, -1)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix.lower() in imagefolder.IMAGE_EXTENSIONS and not path.name.startswith(".")
    ]
    if not split.samples:
        raise imagefolder.DatasetError([f"--unknowns {folder}: no image files"])
    return split


def fit_decisions(
    opts: argparse.Namespace,
    model: nn.Module,
    index: imagefolder.DatasetIndex,
    pre: imaging.Preprocessing,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> open_set.Fitted:
    """Collect outputs, fit calibration, the unknown-image detector and thresholds; write open_set.json."""
    transform = imaging.eval_transform(pre)
    pretrained = architectures.pretrained_head(model)
    head = architectures.head_module(model)

    def outputs(split: imagefolder.SplitIndex) -> open_set.Outputs:
        dataset = imagefolder.ImageFolderDataset(split, transform, pre.draft_size())
        loader = DataLoader(
            dataset,
            batch_size=opts.batch_size,
            num_workers=max(0, opts.num_workers),
            pin_memory=device.type == "cuda",
        )
        return open_set.collect(model, head, loader, device, pretrained, autocast_dtype, opts.channels_last)

    train, valid = outputs(index.splits["train"]), outputs(index.splits["valid"])
    unknowns = outputs(unknown_images(opts.unknowns)) if opts.unknowns else None
    fitted = open_set.fit(
        train,
        valid,
        method=opts.unknown_method,
        target_precision=opts.target_precision,
        known_keep=opts.known_keep,
        pretrained_head=pretrained,
        unknowns=unknowns,
    )
    if unknowns is not None and fitted.summary.get("unknowns"):
        fitted.summary["unknowns"]["source"] = str(opts.unknowns)
    for line in open_set.describe(fitted.summary).splitlines():
        log.info(line)
    log.info(metric_line(fitted.summary))
    out = Path(opts.output_data_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / OPEN_SET_FILE).write_text(json.dumps(_json_safe(fitted.summary), indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", out / OPEN_SET_FILE)
    return fitted


def metric_line(summary: dict[str, Any]) -> str:
    """``probability_threshold=0.829; expected_coverage=0.911; ece_after=0.0136;`` for SageMaker's metric regexes."""
    thresholds = summary["thresholds"]
    values = {
        "probability_threshold": thresholds["probability"],
        "expected_coverage": thresholds["expected"]["coverage"],
        "ece_after": summary["calibration"]["ece_after"],
    }
    return " ".join(f"{name}={value:.6g};" for name, value in values.items())


def config_entry(fitted: open_set.Fitted) -> dict[str, Any]:
    """What config.json says about the decisions (the endpoint reads the state from open_set.pt)."""
    summary = fitted.summary
    cal, thr = summary["calibration"], summary["thresholds"]
    return _json_safe(
        {
            "method": summary["method"],
            "temperature": cal["temperature"],
            "ece_before": cal["ece_before"],
            "ece_after": cal["ece_after"],
            "probability_threshold": thr["probability"],
            "unknown_threshold": thr["unknown"],
            "target_precision": thr["target_precision"],
            "known_keep": thr["known_keep"],
            "target_met": thr["met"],
            "expected": thr["expected"],
            "measured_on": "valid split",
        }
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: config.json and open_set.json stay strict JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
