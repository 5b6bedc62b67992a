"""How far the filter's decisions can be trusted: calibration and unknown-image detection, method by method.

Protocol (issue 13): train on 7 of the 10 ``dogs-imagewoof10`` breeds with train.py (Lite0 from the shared
ImageNet weights). Unknowns are the 3 held-out breeds (their test photos), the ``dogs-stanford3`` breeds the
model was not trained on, and ``pets-mixed``: its non-dogs, and its dogs of breeds the model does not know.
Every method is fitted by ``training/open_set.py`` exactly as train.py fits the one it ships (statistics
from the train split, temperature and thresholds from the valid split, ``--target-precision`` 0.99,
``--known-keep`` 0.95), then measured on the known breeds' *test* photos and on the unknowns. Today's rule
(uncalibrated max probability >= 0.6, no unknown check) is the baseline.

Printed per method: AUROC (known test vs unknowns), the share of unknowns SORTED (per group and all), the
share of known test photos SORTED and the precision of what is SORTED (known photos only, and with the
SORTED unknowns counted as wrong), and ECE on the known test photos before and after calibration.

    .venv/bin/python bench/open_set.py             # trains once (cached in out/bench/open_set/), ~5 min on 2 cores
    .venv/bin/python bench/open_set.py --known-keep 0.97 --target-precision 0.99 --epochs 3
    .venv/bin/python bench/open_set.py --out out/bench/open_set_ft -- --unfreeze-epoch 0   # backbone fine-tuned too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "training"))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import architectures  # noqa: E402
import imagefolder  # noqa: E402
import imaging  # noqa: E402
import inference  # noqa: E402
import open_set  # noqa: E402

HELD_OUT = ("English_foxhound", "Border_terrier", "Samoyed")


def _view(source: Path, known: list[str], out: Path) -> Path:
    """An ImageFolder of the known breeds only (symlinks), so train.py sees 7 classes."""
    for split in ("train", "valid", "test"):
        for class_dir in sorted((source / split).iterdir()):
            if imagefolder.label_of(class_dir.name) in known:
                link = out / split / class_dir.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(class_dir.resolve(), target_is_directory=True)
    return out


def _train(args: argparse.Namespace, data: Path, out: Path) -> Path:
    model_dir = out / "model"
    if (model_dir / "config.json").is_file() and not args.retrain:
        print(f"using the model trained before: {model_dir} (--retrain to train again)")
        return model_dir
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        *("--data", str(data), "--model", args.model, "--weights", str(args.weights)),
        *("--epochs", str(args.epochs), "--num-workers", str(args.num_workers), "--seed", str(args.seed)),
        *("--resume", "false", "--early-stopping-patience", "0", "--package", "false", "--report", "false"),
        *("--model-dir", str(model_dir), "--output-data-dir", str(out / "output")),
        *("--checkpoint-dir", str(out / "checkpoints")),
        *args.train_flags,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(f"trained in {time.perf_counter() - started:.0f} s")
    return model_dir


def _files(paths: list[Path], target: int = -1) -> imagefolder.SplitIndex:
    split = imagefolder.SplitIndex("unknown", Path())
    split.samples = [(p, target) for p in paths]
    return split


def _groups(known: list[str], held_out: tuple[str, ...]) -> dict[str, list[Path]]:
    woof = SHARED / "data" / "dogs-imagewoof10" / "test"
    stanford = SHARED / "data" / "dogs-stanford3"
    pets = SHARED / "data" / "pets-mixed"
    dogs = {"Basenji", "Basset_hound", "Beagle", "Boston_terrier", "Boxer", "Cocker_spaniel", "Collie", "Dalmatian"}
    dogs |= {"German_shepherd_dog", "German_shorthaired_pointer", "Golden_retriever", "Great_dane", "Great_pyrenees"}
    dogs |= {"Miniature_schnauzer", "Poodle", "Saint_bernard"}
    known_lower = {k.lower() for k in known}
    groups: dict[str, list[Path]] = {
        "held-out breeds": sorted(
            p for d in woof.iterdir() if imagefolder.label_of(d.name) in held_out for p in d.iterdir()
        ),
        "stanford3 other breeds": sorted(
            p
            for split in ("train", "valid", "test")
            for d in (stanford / split).iterdir()
            if imagefolder.label_of(d.name) not in known
            for p in d.iterdir()
        ),
        "pets-mixed other dogs": [],
        "pets-mixed non-dogs": [],
    }
    for path in sorted(pets.glob("*.jpg")):
        label = path.stem.rsplit("_", 1)[0]
        if label in dogs:
            if label.lower() not in known_lower:
                groups["pets-mixed other dogs"].append(path)
        else:
            groups["pets-mixed non-dogs"].append(path)
    return groups


def _outputs(model, head, pretrained, split: imagefolder.SplitIndex, pre, args) -> open_set.Outputs:
    dataset = imagefolder.ImageFolderDataset(split, imaging.eval_transform(pre), pre.draft_size())
    loader = DataLoader(dataset, batch_size=32, num_workers=args.num_workers)
    return open_set.collect(model, head, loader, torch.device("cpu"), pretrained)


def _cat(parts: list[open_set.Outputs]) -> open_set.Outputs:
    return open_set.Outputs(
        torch.cat([p.logits for p in parts]),
        torch.cat([p.features for p in parts]),
        torch.cat([p.targets for p in parts]),
        torch.cat([p.imagenet_logits for p in parts]) if parts[0].imagenet_logits is not None else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "dogs-imagewoof10")
    parser.add_argument("--held-out", default=",".join(HELD_OUT), help="breeds left out of training (unknowns)")
    parser.add_argument("--model", default="timm/tf_efficientnet_lite0")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "tf_efficientnet_lite0_in1k.pth")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target-precision", type=float, default=0.99)
    parser.add_argument("--known-keep", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "open_set")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("train_flags", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    held_out = tuple(b.strip() for b in args.held_out.split(",") if b.strip())
    all_breeds = [imagefolder.label_of(d.name) for d in sorted((args.data / "train").iterdir())]
    known = [b for b in all_breeds if b not in held_out]
    data = _view(args.data, known, args.out / "data")
    model_dir = _train(args, data, args.out)

    cache = args.out / "outputs.pt"
    if cache.is_file() and cache.stat().st_mtime > (model_dir / "config.json").stat().st_mtime:
        saved = torch.load(cache, weights_only=True)
        pretrained = saved.pop("pretrained_head")
        outputs = {k: open_set.Outputs(**v) for k, v in saved.items()}
    else:
        loaded = inference.model_fn(str(model_dir))
        donor = architectures.build_model(args.model, len(known), str(args.weights))
        pretrained = architectures.pretrained_head(donor)
        head = architectures.head_module(loaded.model)
        index = imagefolder.index_dataset(imagefolder.split_dirs_from_root(data), required=("train", "valid", "test"))
        outputs = {
            split: _outputs(loaded.model, head, pretrained, index.splits[split], loaded.preprocessing, args)
            for split in ("train", "valid", "test")
        }
        for name, paths in _groups(known, held_out).items():
            if paths:
                outputs[name] = _outputs(loaded.model, head, pretrained, _files(paths), loaded.preprocessing, args)
        torch.save({"pretrained_head": pretrained, **{k: vars(v) for k, v in outputs.items()}}, cache)

    groups = [k for k in outputs if k not in ("train", "valid", "test")]
    unknowns = _cat([outputs[g] for g in groups])
    test = outputs["test"]
    print(f"known breeds ({len(known)}): {', '.join(known)}")
    print("unknowns: " + ", ".join(f"{g} {len(outputs[g])}" for g in groups) + f"; known test photos {len(test)}")
    print(f"target: precision {args.target_precision:.0%} on validation, {args.known_keep:.0%} of known kept\n")

    rows = [_baseline(test, unknowns, outputs, groups)]
    for method in open_set.METHODS:
        fitted = open_set.fit(
            outputs["train"],
            outputs["valid"],
            method=method,
            target_precision=args.target_precision,
            known_keep=args.known_keep,
            pretrained_head=pretrained,
        )
        rows.append(_measure(method, fitted.detector, fitted.summary, test, unknowns, outputs, groups))
    _print(rows, groups)
    best = "imagenet_prior" if outputs["train"].imagenet_logits is not None else "knn"
    print(f"\n{best}: the share of known photos kept by the unknown gate against what gets through")
    for keep in (0.90, 0.93, 0.95, 0.97, 0.99):
        fitted = open_set.fit(
            outputs["train"],
            outputs["valid"],
            method=best,
            target_precision=args.target_precision,
            known_keep=keep,
            pretrained_head=pretrained,
        )
        r = _measure(best, fitted.detector, fitted.summary, test, unknowns, outputs, groups)
        print(
            f"  --known-keep {keep:.2f}: known SORTED {r['known_sorted']:.1%} at precision {r['precision']:.2%}, "
            f"unknowns SORTED {r['unknown_sorted']:.2%} ("
            + ", ".join(f"{g} {r['groups'][g]:.2%}" for g in groups)
            + ")"
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


def _baseline(test, unknowns, outputs, groups) -> dict:
    def sorted_mask(o: open_set.Outputs) -> torch.Tensor:
        return torch.softmax(o.logits.double(), dim=1).max(dim=1).values >= 0.6

    known_sorted = sorted_mask(test)
    right = torch.softmax(test.logits, 1).argmax(1) == test.targets
    msp = open_set.scores("msp", test.logits, test.features, {})
    return {
        "method": "today: max prob >= 0.6",
        "auroc": open_set.auroc(msp, open_set.scores("msp", unknowns.logits, unknowns.features, {})),
        "threshold": 0.6,
        "unknown_threshold": None,
        "known_sorted": float(known_sorted.double().mean()),
        "precision": float(right[known_sorted].double().mean()),
        "unknown_sorted": float(sorted_mask(unknowns).double().mean()),
        "groups": {g: float(sorted_mask(outputs[g]).double().mean()) for g in groups},
        "precision_with_unknowns": _with_unknowns(right, known_sorted, sorted_mask(unknowns)),
        "ece_before": open_set.ece(open_set.reliability(torch.softmax(test.logits.double(), 1), test.targets)),
        "ece_after": None,
    }


def _with_unknowns(right: torch.Tensor, known_sorted: torch.Tensor, unknown_sorted: torch.Tensor) -> float:
    n = int(known_sorted.sum()) + int(unknown_sorted.sum())
    return float(right[known_sorted].sum()) / n if n else float("nan")


def _measure(method, detector, summary, test, unknowns, outputs, groups) -> dict:
    def decide(o: open_set.Outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        extra = o.imagenet_logits
        probs = torch.softmax(o.logits.double() / detector.temperature, dim=1)
        score = open_set.scores(method, o.logits, o.features, detector.stats, detector.temperature, extra)
        known = score <= detector.unknown_threshold
        return probs, score, known & (probs.max(1).values >= detector.probability_threshold)

    probs, test_scores, known_sorted = decide(test)
    _, unknown_scores, unknown_sorted = decide(unknowns)
    right = probs.argmax(1) == test.targets
    return {
        "method": method,
        "auroc": open_set.auroc(test_scores, unknown_scores),
        "threshold": detector.probability_threshold,
        "unknown_threshold": detector.unknown_threshold,
        "known_sorted": float(known_sorted.double().mean()),
        "precision": float(right[known_sorted].double().mean()),
        "unknown_sorted": float(unknown_sorted.double().mean()),
        "groups": {g: float(decide(outputs[g])[2].double().mean()) for g in groups},
        "precision_with_unknowns": _with_unknowns(right, known_sorted, unknown_sorted),
        "ece_before": open_set.ece(open_set.reliability(torch.softmax(test.logits.double(), 1), test.targets)),
        "ece_after": open_set.ece(open_set.reliability(probs, test.targets)),
        "temperature": detector.temperature,
    }


def _print(rows: list[dict], groups: list[str]) -> None:
    head = (
        f"{'method':<24}{'AUROC':>7}{'thresh':>8}{'known SORTED':>14}{'precision':>11}{'+unknowns':>11}"
        f"{'unknown SORTED':>16}{'ECE before':>12}{'ECE after':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        after = "" if r["ece_after"] is None else f"{r['ece_after']:.4f}"
        print(
            f"{r['method']:<24}{r['auroc']:>7.4f}{r['threshold']:>8.3f}{r['known_sorted']:>14.1%}"
            f"{r['precision']:>11.2%}{r['precision_with_unknowns']:>11.2%}{r['unknown_sorted']:>16.2%}"
            f"{r['ece_before']:>12.4f}{after:>11}"
        )
    print("\nunknowns SORTED by group (ratio to today's rule in brackets):")
    base = rows[0]["groups"]
    print(f"{'method':<24}" + "".join(f"{g:>26}" for g in groups))
    for r in rows:
        cells = []
        for g in groups:
            ratio = r["groups"][g] / base[g] if base[g] else float("nan")
            cells.append(f"{r['groups'][g]:>15.2%} ({ratio:>5.2f}x)")
        print(f"{r['method']:<24}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
