"""The run report: one self-contained HTML page, and a terminal summary, from a training run's OUTPUT_DIR.

The page has these sections: job summary, every rule verdict (fired first, a banner when one fired or stopped
training), the decisions the model makes (calibration, thresholds, unknown images: from open_set.json; left out
for a run without that file), training curves, debugger statistics (gradient norms, update/weight ratios,
activations, classes), system usage, step time breakdown, data loading, top operators. Plots are matplotlib PNGs
inlined as base64 data URIs and the CSS is inline: no script, nothing fetched, so the file opens anywhere (a laptop,
an S3 download, an attachment). Any of metrics.json, debugger.json and profiler.json may be missing; the page says
which and how to get it. Needs only the standard library and matplotlib, so it runs in the SageMaker training
container too; ``summary_lines`` (the terminal summary) needs no matplotlib.

    cd training && python -m report OUTPUT_DIR    # writes OUTPUT_DIR/report.html and prints its path
    breedfilter report RUN_DIR|s3://...           # the summary and the page, for a local run or a SageMaker job

    run.py                  reading the run's files: Run, load, NoRunFiles, what to say when one is missing
    values.py               reading values out of them: finite numbers, NaN, nested keys
    markup.py                 escaping, number formatting, notes, tables, the CSS
    charts.py               matplotlib helpers: figures, inlined PNGs, thinning, legends, epoch marks
    page.py                 the page: the sections in order, the banner, write_report, main (python -m report)
    summary.py              the terminal summary (summary_lines)
    job.py, rules.py        the sections: job summary; rule verdicts
    decisions.py              decisions: calibration, thresholds, unknown images (and its summary line)
    curves.py, debugger.py    training curves; the debugger's statistics
    system.py, steps.py       system usage; step time, data loading, top operators (the profiler)
    png_files.py            training_curves.png and confusion_matrix.png, written by train.py (not the page)
"""

from .markup import esc, fmt_accuracy, fmt_bytes, fmt_number, fmt_seconds, fmt_share
from .page import REPORT_NAME, main, render, write_report
from .run import SOURCES, STATUS_ORDER, NoRunFiles, Run, load
from .summary import summary_lines

__all__ = [
    "REPORT_NAME",
    "SOURCES",
    "STATUS_ORDER",
    "NoRunFiles",
    "Run",
    "esc",
    "fmt_accuracy",
    "fmt_bytes",
    "fmt_number",
    "fmt_seconds",
    "fmt_share",
    "load",
    "main",
    "render",
    "summary_lines",
    "write_report",
]
