"""What a local tuning study found: leaderboard (printed and CSV), a plot, and best_hyperparameters.json.

Called by the local tuner after its trials; on its own it reports on a stored study:

    python -m breedfilter.tuning_report out/tune/STUDY          # reads out/tune/STUDY/study.db
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from pathlib import Path
from typing import Any

ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}


def rows(study: Any, names: list[str]) -> list[dict[str, Any]]:
    """One row per trial, best first: complete trials by objective, then pruned by their last value, then the rest.

    Equal objectives are ranked by the validation loss of the model each trial kept (lower first): on an easy
    dataset many trials reach 100% validation accuracy, and the loss still tells them apart.
    """
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    out = []
    for t in study.trials:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        value = t.value if t.value is not None else last
        note = t.user_attrs.get("error", "")
        if t.state.name == "PRUNED" and t.intermediate_values:
            note = f"pruned at epoch {max(t.intermediate_values)}"
        retry_of = t.system_attrs.get("failed_trial", t.user_attrs.get("resumes"))
        if retry_of is not None:
            note = (note + "; " if note else "") + f"resumes trial {retry_of}"
        if t.user_attrs.get("interrupted"):
            note = (note + "; " if note else "") + "interrupted"
        if t.user_attrs.get("baseline"):
            note = (note + "; " if note else "") + "the recipe's defaults"
        loss = t.user_attrs.get("valid_loss")
        out.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": value,
                "valid_loss": loss,
                "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
                "seconds": t.user_attrs.get("seconds"),
                **{name: t.params.get(name) for name in names},
                "note": note,
                "_key": (
                    ORDER.get(t.state.name, 9),
                    sign * value if value is not None else float("inf"),
                    loss if loss is not None else float("inf"),
                    t.number,
                ),
            }
        )
    out.sort(key=lambda r: r["_key"])
    for rank, row in enumerate(out, 1):
        row["rank"] = rank
        del row["_key"]
    return out


def table(board: list[dict[str, Any]], objective: str, names: list[str]) -> str:
    headers = ["rank", "trial", "state", objective, "valid_loss", "epochs", "time", *names, "note"]
    lines = [headers]
    for r in board:
        lines.append(
            [
                str(r["rank"]),
                str(r["trial"]),
                r["state"],
                "-" if r["value"] is None else f"{r['value']:.4f}",
                "-" if r["valid_loss"] is None else f"{r['valid_loss']:.4f}",
                str(r["epochs"]),
                "-" if r["seconds"] is None else f"{r['seconds']:.0f}s",
                *(_short(r[n]) for n in names),
                r["note"],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def plot(study: Any, objective: str, path: Path, best_number: int | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (curves, history) = plt.subplots(1, 2, figsize=(12, 4.5))
    for t in study.trials:
        if not t.intermediate_values:
            continue
        epochs = sorted(t.intermediate_values)
        values = [t.intermediate_values[e] for e in epochs]
        if t.number == best_number:
            curves.plot(
                epochs, values, "-o", color="tab:green", linewidth=2.5, label=f"best (trial {t.number})", zorder=3
            )
        elif t.state.name == "PRUNED":
            curves.plot(epochs, values, "--x", color="tab:red", alpha=0.6, label="pruned")
        else:
            curves.plot(epochs, values, "-", color="tab:blue", alpha=0.5, label=t.state.name.lower())
    handles, labels = curves.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    curves.legend(unique.values(), unique.keys(), loc="best")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set(xlabel="epoch", ylabel=objective, title="each trial, epoch by epoch (what the pruner saw)")
    curves.grid(alpha=0.3)

    maximize = study.direction.name == "MAXIMIZE"
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.intermediate_values]
    history.scatter([t.number for t in done], [t.value for t in done], color="tab:blue", label="complete", zorder=3)
    history.scatter(
        [t.number for t in pruned],
        [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        color="tab:red",
        marker="x",
        label="pruned (last value)",
    )
    if done:
        xs, ys, running = [], [], None
        for t in sorted(done, key=lambda t: t.number):
            running = t.value if running is None else (max if maximize else min)(running, t.value)
            xs.append(t.number)
            ys.append(running)
        history.step(xs, ys, where="post", color="tab:green", label="best so far")
    history.set(xlabel="trial", ylabel=objective, title="objective per trial")
    history.grid(alpha=0.3)
    history.legend(loc="best")
    history.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"study {study.study_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(study: Any, space: Any, out_dir: Path, train_args: list[str]) -> dict[str, Any]:
    """Leaderboard CSV, plot and best flags into out_dir; returns {"text", "best", "board"}."""
    names = space.names
    extra = sorted({n for t in study.trials for n in t.params} - set(names))
    names = [*names, *extra]
    board = rows(study, names)
    with (out_dir / "leaderboard.csv").open("w", newline="", encoding="utf-8") as f:
        fields = ["rank", "trial", "state", "value", "valid_loss", "epochs", "seconds", *names, "note"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(board)
    counts = {s: sum(1 for r in board if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    lines = [
        f"study {study.study_name}: {len(board)} trials ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
        f"{counts['FAIL']} failed); objective {space.objective} ({space.direction})",
        table(board, space.objective, names),
    ]
    # The leaderboard's first complete trial (Optuna's best_trial would take the first of equal values).
    first = next((r for r in board if r["state"] == "COMPLETE"), None)
    best = study.trials[first["trial"]] if first else None
    plot_path = plot(study, space.objective, out_dir / "tuning.png", best.number if best else None)
    best_file = out_dir / "best_hyperparameters.json"
    if best is None:
        lines.append("no trial completed: nothing to recommend (each trial's train.log says why)")
        best_file.unlink(missing_ok=True)
    else:
        best_file.write_text(json.dumps(best.params, indent=1) + "\n", encoding="utf-8")
        baseline = next((t for t in study.trials if t.user_attrs.get("baseline") and t.value is not None), None)
        versus = (
            f" (the recipe's defaults, trial {baseline.number}: {baseline.value:.4f})"
            if baseline and best.number != baseline.number
            else ""
        )
        artifact = best.user_attrs.get("artifact", "")
        fixed = " ".join(shlex.quote(a) for a in train_args)
        lines += [
            f"best: trial {best.number}, {space.objective}={best.value:.4f}{versus}: {json.dumps(best.params)}",
            f"wrote {out_dir}/: leaderboard.csv, {plot_path.name}, {best_file.name}"
            + (f"; the best trial's model: {artifact}" if artifact else ""),
            "train with them:",
            f"  python training/train.py {fixed} --hyperparameters {best_file}",
            f"  breedfilter train --data s3://BUCKET/PREFIX --role ROLE_ARN {sagemaker_flags(train_args)}"
            f"--hyperparameters {best_file}   # on SageMaker",
        ]
    return {"text": "\n".join(lines), "best": best.params if best else None, "board": board}


# Set by SageMaker (channels, /opt/ml paths) or meaningless there (loader workers are sized per instance).
_NOT_FOR_SAGEMAKER = {"data", "train", "valid", "test", "model_dir", "output_data_dir", "checkpoint_dir", "num_workers"}


def sagemaker_flags(train_args: list[str]) -> str:
    """The study's fixed train.py flags for a SageMaker job: without data and output paths, nor local files
    (``--weights FILE`` must be uploaded or become ``--weights imagenet`` there)."""
    from breedfilter import search_space

    out = []
    for name, value in search_space.given_train_flags(train_args).items():
        if name in _NOT_FOR_SAGEMAKER or (isinstance(value, str | Path) and Path(value).exists()):
            continue
        out += [f"--{name.replace('_', '-')}", shlex.quote(search_space.flag_text(value))]
    return " ".join(out) + (" " if out else "")


def main(argv: list[str] | None = None) -> int:
    import optuna

    from breedfilter import search_space

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m breedfilter.tuning_report out/tune/STUDY", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    db = out_dir / "study.db"
    if not db.is_file():
        print(f"error: no study at {db}", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{db}")
    space = search_space.load()
    space = space.without([n for n in space.names if not any(n in t.params for t in study.trials)])
    print(write(study, space, out_dir, study.user_attrs.get("train_args", []))["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
