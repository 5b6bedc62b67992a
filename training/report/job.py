"""The Job summary section: model, epochs, best epoch and test accuracy, wall time, the debugger's and profiler's
overhead, where it ran, images per class and split, and the hyperparameters (from metrics.json)."""

from __future__ import annotations

from .markup import esc, fmt_accuracy, fmt_number, fmt_seconds, fmt_share, kv_table, note, table
from .run import Run
from .values import is_finite


def job_summary_section(run: Run) -> str:
    if run.metrics is None:
        parts = [note(run.why_missing("metrics.json"))]
        if run.history:
            parts.append(f"<p>The debugger saw {len(run.history)} epochs before the run ended.</p>")
        return "".join(parts)
    metrics = run.metrics
    environment = metrics.get("environment") or {}
    hyper = metrics.get("hyperparameters") or {}
    test = metrics.get("test")
    planned = hyper.get("epochs")
    rows = [
        (
            "model",
            esc(metrics.get("model"))
            + (f" (version {esc(metrics['model_version'])})" if metrics.get("model_version") else ""),
        ),
        ("labels", f"{len(run.labels)} classes"),
        ("epochs run / planned", f"{len(run.history)} / {esc(planned if planned is not None else '?')}"),
        (
            "best epoch",
            f"{esc(metrics.get('best_epoch'))}: valid accuracy "
            f"<b>{fmt_accuracy(metrics.get('best_valid_accuracy'))}</b>, valid loss "
            f"{fmt_number(metrics.get('best_valid_loss'))}",
        ),
        (
            "test",
            "no test split"
            if not test
            else f"accuracy <b>{fmt_accuracy(test.get('accuracy'))}</b> on "
            f"{esc(test.get('count'))} images, loss {fmt_number(test.get('loss'))}",
        ),
        ("wall time", fmt_seconds(metrics.get("wall_seconds"))),
        ("stop reason", esc(metrics.get("stop_reason") or "ran all planned epochs")),
    ]
    for document, name in ((run.debugger, "debugger"), (run.profiler, "profiler")):
        if document and is_finite(document.get("seconds")):
            share = document["seconds"] / metrics["wall_seconds"] if is_finite(metrics.get("wall_seconds")) else None
            rows.append(
                (
                    f"{name} overhead",
                    f"{fmt_seconds(document['seconds'])}" + (f" ({fmt_share(share)} of wall time)" if share else ""),
                )
            )
    env_text = ", ".join(
        f"{esc(key.replace('_', ' '))} <b>{esc(environment[key])}</b>"
        for key in ("host", "job_name", "instance_type", "device", "torch", "python", "world_size")
        if environment.get(key) not in (None, "")
    )
    rows.append(("environment", env_text or "not recorded"))
    parts = [kv_table(rows), _counts_table(run)]
    if hyper:
        shown = {k: v for k, v in hyper.items() if not k.endswith(("_dir", "_path")) and k not in ("data",)}
        items = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in shown.items())
        parts.append(
            f'<details><summary>hyperparameters ({len(shown)})</summary><table class="kv">{items}</table></details>'
        )
    return "".join(parts)


def _counts_table(run: Run) -> str:
    counts = (run.metrics or {}).get("counts") or {}
    if not counts:
        return ""
    splits = list(counts)
    labels = run.labels or sorted({label for split in counts.values() for label in split})
    totals = [sum((counts[s] or {}).values()) for s in splits]
    header = ["split"] + [esc(s) for s in splits]
    total_row = [["<b>images</b>"] + [f"<b>{t:,}</b>" for t in totals]]
    per_class = [[esc(label)] + [f"{(counts[s] or {}).get(label, 0):,}" for s in splits] for label in labels]
    numeric = range(1, len(splits) + 1)
    if len(labels) <= 12:
        return "<h3>Images per class and split</h3>" + table(header, total_row + per_class, numeric)
    least = [min((counts[s] or {}).values() or [0]) for s in splits]
    most = [max((counts[s] or {}).values() or [0]) for s in splits]
    spread = [["fewest per class"] + [f"{n:,}" for n in least], ["most per class"] + [f"{n:,}" for n in most]]
    return (
        "<h3>Images per split</h3>"
        + table(header, total_row + spread, numeric)
        + f"<details><summary>per class ({len(labels)} classes)</summary>{table(header, per_class, numeric)}"
        "</details>"
    )
