"""HTML building blocks for the report page: escaping, number formatting, notes, tables, and the page's CSS."""

from __future__ import annotations

import html  # the standard library's (absolute import), not this module
import math
from collections.abc import Sequence
from typing import Any

from .values import is_finite

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2733;margin:0;
 background:#f4f6f8}
main{max-width:1180px;margin:0 auto;padding:18px 28px 40px;background:#fff}
h1{font-size:24px;margin:6px 0 2px}
h2{font-size:19px;margin:30px 0 8px;padding-bottom:4px;border-bottom:2px solid #dde3ea}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6b7b;margin:0 0 10px}
nav{font-size:13px;margin:6px 0 12px}nav a{color:#1f5fa8;margin-right:12px;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:190px}
table.rules{width:100%}table.rules td.tensor{word-break:break-all;max-width:200px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;
 white-space:nowrap}
.fired{background:#c62828}.ok{background:#2e7d32}.not_applicable{background:#78848f}
tr.row-fired td{background:#fff3f3}
.small{font-size:12px;color:#5b6b7b}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-size:14px}
.banner.bad{background:#fdecea;border:1px solid #e57373}
.banner.good{background:#e8f5e9;border:1px solid #81c784}
.note{padding:8px 12px;border-left:4px solid #f0ad4e;background:#fff8e6;margin:8px 0}
.error{padding:8px 12px;border-left:4px solid #c62828;background:#fdecea;margin:8px 0}
figure{margin:8px 0 14px}figure img{width:100%;max-width:900px;height:auto;display:block}
figcaption{font-size:12px;color:#5b6b7b;max-width:900px}
.sharebar{display:flex;width:100%;max-width:900px;height:26px;border-radius:4px;overflow:hidden;margin:6px 0}
.sharebar div{color:#fff;font-size:12px;line-height:26px;padding-left:6px;white-space:nowrap;overflow:hidden}
details summary{cursor:pointer;color:#1f5fa8}
code{background:#eef2f6;padding:0 4px;border-radius:3px}
"""


def esc(value: Any) -> str:
    """Text (None: empty) escaped for HTML, quotes included."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_seconds(seconds: Any) -> str:
    if not is_finite(seconds):
        return "–"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def fmt_share(share: Any) -> str:
    return f"{share * 100:.1f}%" if is_finite(share) else "–"


def fmt_accuracy(accuracy: Any) -> str:
    return f"{accuracy * 100:.2f}%" if is_finite(accuracy) else "–"


def fmt_bytes(count: Any) -> str:
    if not is_finite(count):
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def fmt_number(value: Any) -> str:
    """HTML-safe: ints with separators, floats to 4 significant digits, anything else (e.g. "nan") escaped."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return esc(value)


def note(text: str) -> str:
    """A highlighted note (the text is escaped)."""
    return f'<div class="note">{esc(text)}</div>'


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """Rows of (escaped header, already escaped/formatted html value)."""
    return '<table class="kv">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; ``headers`` and ``rows`` are HTML, already escaped; columns in ``numeric`` align right."""
    head = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
