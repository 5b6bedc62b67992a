"""The Decisions section, from open_set.json: calibration, thresholds and unknown images; and its summary line.

training/decision_fit.py writes open_set.json in the output dir after training (training/open_set.py's summary):
the temperature and the reliability of the top probability before and after it, the probability threshold chosen
for a target precision and the precision/coverage curve it was chosen on, and the unknown-image detector's scores
on the validation images (and on held-out unknown images, with ``--unknowns``). This draws them for the report
page: a table, a reliability diagram, precision and coverage against the threshold, and histograms of
``unknown_score``. A run without open_set.json (older runs) has no such section; page.py leaves it out.
Any value may be null (not computable): it shows as "–" and the rest is still drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .charts import figure, img, legend, legend_label, plot
from .markup import esc, fmt_number, fmt_share, kv_table, note
from .run import DECISIONS, Run
from .values import float_or_nan, get, is_finite

BEFORE = "#e69f00"
AFTER = "#0072b2"
PRECISION = "#0072b2"
COVERAGE = "#009e73"
TARGET = "#c62828"
KNOWN = "#0072b2"
UNKNOWN = "#d55e00"
HISTOGRAM_BINS = 50


def fmt_target(share: Any) -> str:
    """0.99 -> 99%, 0.995 -> 99.5%: a target as the user typed it, not rounded to one decimal."""
    return f"{share * 100:.4g}%" if is_finite(share) else "–"


def fmt_threshold(probability: Any) -> str:
    """0.83 -> 0.83, but 0.999997 -> 0.999997: near 1, four digits would round a real threshold to "1"."""
    if is_finite(probability) and 0.999 < probability < 1:
        return f"{probability:.6g}"
    return fmt_number(probability)


def fmt_precision(share: Any) -> str:
    return f"{share * 100:.2f}%" if is_finite(share) else "–"


def _unknowns(document: dict[str, Any]) -> dict[str, Any] | None:
    held_out = document.get("unknowns")
    return held_out if isinstance(held_out, dict) else None


def _scores(values: Any) -> list[float]:
    return [float(v) for v in values or [] if is_finite(v)] if isinstance(values, list) else []


# --- the terminal summary -----------------------------------------------------------------------------------------


def summary_line(document: dict[str, Any]) -> str:
    """One line for ``breedfilter report``: the threshold, what it is expected to do, calibration, the detector."""
    thresholds = document.get("thresholds") if isinstance(document.get("thresholds"), dict) else {}
    expected = thresholds.get("expected") if isinstance(thresholds.get("expected"), dict) else {}
    target = fmt_target(thresholds.get("target_precision"))
    threshold = fmt_threshold(thresholds.get("probability"))
    coverage = fmt_share(expected.get("coverage"))
    if thresholds.get("met") is False:
        decision = (
            f"threshold {threshold} does NOT reach {target} precision on validation (at precision "
            f"{fmt_precision(expected.get('precision'))}, coverage {coverage})"
        )
    else:
        decision = f"threshold {threshold} for {target} precision (expected coverage {coverage})"
    ece = (
        f"ECE {fmt_number(get(document, 'calibration', 'ece_before'))} -> "
        f"{fmt_number(get(document, 'calibration', 'ece_after'))}"
    )
    method = document.get("method")
    detector = f"unknown detector {method}" if method else "no unknown-image detector"
    line = f"decisions: {decision}, {ece}, {detector}"
    held_out = _unknowns(document)
    if held_out:
        line += (
            f"; held-out unknowns: {fmt_number(held_out.get('count'))} images, "
            f"{fmt_precision(held_out.get('sorted_share'))} SORTED, AUROC {fmt_number(held_out.get('auroc'))}"
        )
    return line


# --- the section --------------------------------------------------------------------------------------------------


def has_decisions(run: Run) -> bool:
    """open_set.json is there (readable or not): a run from before it existed gets no section and no note."""
    return run.open_set is not None or DECISIONS in run.notes


def decisions_section(run: Run) -> str:
    """The section, or a note when open_set.json could not be read."""
    if run.open_set is None:
        return note(run.notes.get(DECISIONS, f"no {DECISIONS}"))
    return _section(run.open_set)


def _section(document: dict[str, Any]) -> str:
    """The section's HTML: what was decided (a table), then the three plots, each with its caption."""
    calibration = document.get("calibration") if isinstance(document.get("calibration"), dict) else {}
    thresholds = document.get("thresholds") if isinstance(document.get("thresholds"), dict) else {}
    curve = [row for row in document.get("curve") or [] if isinstance(row, dict)]
    parts = [
        "<p>What the endpoint does with each image, fitted on the validation split after training: the "
        "probabilities are calibrated with one temperature; an image is SORTED when its calibrated top probability "
        "reaches the probability threshold and, with an unknown-image detector, its <code>unknown_score</code> is "
        "at most the unknown threshold. Every other image is left for a person.</p>",
        _table(document, calibration, thresholds),
    ]
    if thresholds.get("met") is False:
        parts.append(
            f'<div class="error"><b>Target precision {fmt_target(thresholds.get("target_precision"))} not met:</b> '
            "no threshold reaches the target precision on validation. The threshold is the one with the best "
            "precision seen; use more validation images, or a lower <code>--target-precision</code>.</div>"
        )
    parts.append("<h3>Calibration: reliability before and after</h3>")
    parts.append(plot(lambda: _reliability_figure(calibration), "the reliability diagram"))
    parts.append("<h3>Precision and coverage against the probability threshold</h3>")
    if curve:
        parts.append(plot(lambda: _threshold_figure(thresholds, curve), "precision and coverage"))
    else:
        parts.append(note("no precision/coverage curve in open_set.json (no validation image passed the gate)"))
    parts.append("<h3>Unknown images: unknown_score</h3>")
    parts.append(_unknown_part(document, thresholds))
    return "".join(parts)


def _table(document: dict[str, Any], calibration: dict[str, Any], thresholds: dict[str, Any]) -> str:
    method = document.get("method")
    expected = thresholds.get("expected") if isinstance(thresholds.get("expected"), dict) else {}
    reached = {True: "reached on validation", False: "<b>NOT reached on validation</b>"}.get(thresholds.get("met"), "")
    rows = [
        (
            "unknown-image detector",
            f"<b>{esc(method)}</b>" if method else "none: no unknown-image detector in this model",
        ),
        (
            "calibration",
            f"temperature <b>{fmt_number(calibration.get('temperature'))}</b>; ECE "
            f"{fmt_number(calibration.get('ece_before'))} → <b>{fmt_number(calibration.get('ece_after'))}</b>; "
            f"NLL {fmt_number(calibration.get('nll_before'))} → {fmt_number(calibration.get('nll_after'))}",
        ),
        (
            "probability threshold",
            f"<b>{fmt_threshold(thresholds.get('probability'))}</b> for target precision "
            f"{fmt_target(thresholds.get('target_precision'))}" + (f": {reached}" if reached else ""),
        ),
        (
            "expected on validation",
            f"coverage <b>{fmt_share(expected.get('coverage'))}</b> SORTED at precision "
            f"<b>{fmt_precision(expected.get('precision'))}</b>; known images kept by the unknown gate "
            f"{fmt_share(expected.get('known_kept'))}",
        ),
    ]
    if method:
        rows.append(
            (
                "unknown threshold",
                f"<code>unknown_score</code> above <b>{fmt_number(thresholds.get('unknown'))}</b>: not one of the "
                f"labels (chosen to keep {fmt_target(thresholds.get('known_keep'))} of the validation images)",
            )
        )
    held_out = _unknowns(document)
    if held_out:
        source = f" from <code>{esc(held_out['source'])}</code>" if held_out.get("source") else ""
        rows.append(
            (
                "held-out unknowns",
                f"{fmt_number(held_out.get('count'))} images{source}: <b>{fmt_precision(held_out.get('sorted_share'))}"
                f"</b> would be SORTED; AUROC <b>{fmt_number(held_out.get('auroc'))}</b>",
            )
        )
    elif method:
        rows.append(("held-out unknowns", "none measured (train.py --unknowns DIR measures a folder of them)"))
    return kv_table(rows)


def _bins(rows: Any) -> list[dict[str, Any]]:
    return [
        row
        for row in rows or []
        if isinstance(row, dict) and is_finite(row.get("lo")) and is_finite(row.get("hi")) and row["hi"] >= row["lo"]
    ]


def _reliability_figure(calibration: dict[str, Any]) -> str:
    before = _bins(get(calibration, "reliability", "before"))
    after = _bins(get(calibration, "reliability", "after"))
    if not before and not after:
        return note("no reliability bins in open_set.json")
    fig, (acc_ax, count_ax) = figure(2, height=3.4)
    for offset, rows, colour, name in ((-0.25, before, BEFORE, "before"), (0.25, after, AFTER, "after")):
        shown = [r for r in rows if is_finite(r.get("accuracy")) and r.get("count")]
        width = [(r["hi"] - r["lo"]) * 0.45 for r in shown]
        centres = [(r["lo"] + r["hi"]) / 2 + offset * (r["hi"] - r["lo"]) for r in shown]
        acc_ax.bar(centres, [r["accuracy"] for r in shown], width, color=colour, alpha=0.85, label=f" {name}")
        counted = [r for r in rows if is_finite(r.get("count")) and r["count"] > 0]
        count_ax.bar(
            [(r["lo"] + r["hi"]) / 2 + offset * (r["hi"] - r["lo"]) for r in counted],
            [r["count"] for r in counted],
            [(r["hi"] - r["lo"]) * 0.45 for r in counted],
            color=colour,
            alpha=0.85,
            label=f" {name}",
        )
    acc_ax.axline((0, 0), (1, 1), color="grey", linestyle="--", linewidth=1, label=" perfectly calibrated")
    acc_ax.set(xlim=(0, 1), ylim=(0, 1.02))
    acc_ax.set_title("accuracy per confidence bin", fontsize=10)
    acc_ax.set_xlabel("top probability (confidence)", fontsize=9)
    acc_ax.set_ylabel("accuracy", fontsize=9)
    legend(acc_ax, loc="upper left")
    count_ax.set_xlim(0, 1)
    if any(p.get_height() > 0 for p in count_ax.patches):
        count_ax.set_yscale("log")
    count_ax.set_title("validation images per bin (log)", fontsize=10)
    count_ax.set_xlabel("top probability (confidence)", fontsize=9)
    legend(count_ax, loc="upper left")
    images = sum(r["count"] for r in before or after if is_finite(r.get("count")))
    caption = (
        f"Reliability of the top probability on {images:,} validation images in {len(before or after)} "
        "equal-width confidence bins, before and after calibration: a calibrated model's bars meet the diagonal. "
        f"Temperature <b>{fmt_number(calibration.get('temperature'))}</b>; expected calibration error (ECE) "
        f"<b>{fmt_number(calibration.get('ece_before'))}</b> before → <b>{fmt_number(calibration.get('ece_after'))}"
        f"</b> after; NLL {fmt_number(calibration.get('nll_before'))} → {fmt_number(calibration.get('nll_after'))}."
    )
    return img(fig, "reliability diagram before and after calibration", caption)


def _threshold_figure(thresholds: dict[str, Any], curve: list[dict[str, Any]]) -> str:
    rows = sorted((r for r in curve if is_finite(r.get("threshold"))), key=lambda r: r["threshold"])
    if not rows:
        return note("no usable point in the precision/coverage curve of open_set.json")
    target, chosen = thresholds.get("target_precision"), thresholds.get("probability")
    expected = thresholds.get("expected") if isinstance(thresholds.get("expected"), dict) else {}
    xs = [r["threshold"] for r in rows]
    fig, (by_threshold, trade_off) = figure(2, height=3.4)
    by_threshold.plot(
        xs, [float_or_nan(r.get("precision")) for r in rows], color=PRECISION, linewidth=1.4, label=" precision"
    )
    if any(is_finite(r.get("calibrated_precision")) for r in rows):
        by_threshold.plot(
            xs,
            [float_or_nan(r.get("calibrated_precision")) for r in rows],
            color=PRECISION,
            linestyle="--",
            linewidth=1,
            label=" precision expected by calibration",
        )
    by_threshold.plot(
        xs, [float_or_nan(r.get("coverage")) for r in rows], color=COVERAGE, linewidth=1.4, label=" coverage"
    )
    trade_off.plot(
        [float_or_nan(r.get("coverage")) for r in rows],
        [float_or_nan(r.get("precision")) for r in rows],
        color=PRECISION,
    )
    if is_finite(target):
        for ax in (by_threshold, trade_off):
            label = f" target precision {fmt_target(target)}"
            ax.axhline(target, color=TARGET, linestyle=":", linewidth=1.2, label=label)
    if is_finite(chosen):
        label = f" threshold {fmt_threshold(chosen)}"
        by_threshold.axvline(chosen, color="black", linestyle="--", linewidth=1, label=label)
    if is_finite(expected.get("coverage")) and is_finite(expected.get("precision")):
        trade_off.plot(
            [expected["coverage"]], [expected["precision"]], "o", color="black", markersize=6, label=" chosen threshold"
        )
    by_threshold.set(xlim=(min(xs[0], chosen if is_finite(chosen) else 1.0) - 0.01, 1.0), ylim=(0, 1.02))
    by_threshold.set_title("precision and coverage against the threshold", fontsize=10)
    by_threshold.set_xlabel("calibrated top-probability threshold", fontsize=9)
    legend(by_threshold, loc="lower left")
    reference = target if is_finite(target) else 0.9
    low = min(reference - 4 * (1 - reference), (expected.get("precision") or reference) - 0.05)
    trade_off.set(xlim=(0, 1.02), ylim=(max(0.0, low), 1.005))
    trade_off.set_title("precision against coverage (zoomed to the target)", fontsize=10)
    trade_off.set_xlabel("coverage (share of validation images SORTED)", fontsize=9)
    trade_off.set_ylabel("precision", fontsize=9)
    legend(trade_off, loc="lower left")
    caption = (
        "On the validation images that pass the unknown gate: the share of all validation images SORTED "
        "(coverage) and the share of those that are right (precision) for each threshold on the calibrated top "
        f"probability. Chosen threshold <b>{fmt_threshold(chosen)}</b>: expected coverage "
        f"<b>{fmt_share(expected.get('coverage'))}</b> at precision <b>{fmt_precision(expected.get('precision'))}"
        f"</b>; "
    )
    if thresholds.get("met") is False:
        caption += (
            f"<b>the target precision {fmt_target(target)} was not met: no threshold reaches it on validation</b> "
            "(the threshold is the one with the best precision seen)."
        )
    elif thresholds.get("met") is True:
        caption += f"the target precision {fmt_target(target)} was met on validation."
    else:
        caption += f"target precision {fmt_target(target)}."
    return img(fig, "precision and coverage against the probability threshold", caption)


def _unknown_part(document: dict[str, Any], thresholds: dict[str, Any]) -> str:
    method = document.get("method")
    if not method:
        return note(
            "no unknown-image detector in this model (--unknown-method none): every image counts as one of the "
            "labels, and only the probability threshold decides"
        )
    valid = _scores(get(document, "unknown_scores", "valid"))
    if not valid:
        return note("open_set.json has no unknown_score of the validation images")
    unknowns = _scores(get(document, "unknown_scores", "unknowns"))
    return plot(lambda: _scores_figure(method, thresholds, valid, unknowns, _unknowns(document)), "the scores")


def _scores_figure(
    method: Any,
    thresholds: dict[str, Any],
    valid: Sequence[float],
    unknowns: Sequence[float],
    held_out: dict[str, Any] | None,
) -> str:
    fig, (ax,) = figure(1, height=3.4)
    limit = thresholds.get("unknown")
    values = [*valid, *unknowns] + ([limit] if is_finite(limit) else [])
    low, high = min(values), max(values)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    for scores, colour, name in (
        (valid, KNOWN, f"validation images of the labels ({len(valid):,})"),
        (unknowns, UNKNOWN, f"held-out unknown images ({len(unknowns):,})"),
    ):
        if scores:
            ax.hist(
                scores,
                bins=HISTOGRAM_BINS,
                range=(low, high),
                weights=[1 / len(scores)] * len(scores),
                color=colour,
                alpha=0.55,
                histtype="stepfilled",
                edgecolor=colour,
                label=legend_label(name),
            )
    if is_finite(limit):
        ax.axvline(limit, color="black", linestyle="--", linewidth=1.2, label=f" unknown threshold {fmt_number(limit)}")
    name = legend_label(method).strip()
    ax.set_xlabel(f"unknown_score ({name}; higher = less like the training images)", fontsize=9)
    ax.set_ylabel("share of images per bin", fontsize=9)
    legend(ax)
    kept = sum(v <= limit for v in valid) / len(valid) if is_finite(limit) else math.nan
    caption = (
        f"unknown_score of the detector <b>{esc(method)}</b> for the validation images"
        + (" and the held-out unknown images" if unknowns else "")
        + f", each as a share of its images. Images with a score above the threshold "
        f"<b>{fmt_number(limit)}</b> count as not one of the labels: it keeps <b>{fmt_share(kept)}</b> of the "
        f"known validation images (asked for {fmt_target(thresholds.get('known_keep'))})"
    )
    if unknowns and is_finite(limit):
        caught = sum(v > limit for v in unknowns) / len(unknowns)
        caption += f" and flags {fmt_share(caught)} of the held-out unknowns"
    caption += "."
    if held_out:
        caption += (
            f" Held-out unknowns ({fmt_number(held_out.get('count'))} images): AUROC "
            f"<b>{fmt_number(held_out.get('auroc'))}</b>; <b>{fmt_precision(held_out.get('sorted_share'))}</b> of "
            "them would be SORTED (they pass the gate and reach the probability threshold)."
        )
    else:
        caption += " No held-out unknown images were measured (train.py --unknowns DIR measures a folder of them)."
    return img(fig, "unknown_score histograms", caption)
