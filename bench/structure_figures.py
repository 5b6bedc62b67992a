"""How the code is laid out, for two commits side by side: files per folder, the largest files and functions,
import arrows between the project's own modules (circles and back doors included), and the test files.

    python bench/structure_figures.py                 # 9420dd2 (before issue 15) against the working tree
    python bench/structure_figures.py REV [REV|.]     # any two commits; "." is the working tree

Modules are named as their deployment unit imports them: ``breedfilter.*`` and ``tests.*`` from the repository,
``train``, ``observability.debugger``… from training/ (the SageMaker source dir), ``app`` and ``routing.*`` from
functions/router/ (the Lambda code). An arrow is one module importing another (at the top or inside a
function); a back door is code outside breedfilter/units.py that edits ``sys.path``/``sys.modules`` or imports
by file or string (``importlib``, ``__import__``); a private reach is ``from mod import _name`` or
``mod._name`` on another project module.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "9420dd2"
UNITS = {"training": "training", "functions/router": "functions/router"}  # folder -> import root
SOURCE_FOLDERS = ("breedfilter", "training", "functions", "tests", "bench")
BACK_DOOR = re.compile(
    r"sys\.path\.(insert|append)|sys\.modules\[|importlib\.(import_module|util)|__import__\(|spec_from_file_location"
)


def checkout(rev: str, into: Path) -> Path:
    if rev == ".":
        return REPO
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def python_files(root: Path) -> list[Path]:
    found = []
    for folder in SOURCE_FOLDERS:
        found += [p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(found)


def module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root)
    for folder in UNITS:
        if relative.is_relative_to(folder):
            relative = relative.relative_to(folder)
            break
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module an import names (``a.b.c`` -> ``a.b.c`` or its package ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def measure(root: Path) -> dict:
    files = python_files(root)
    names = {path: module_name(root, path) for path in files}
    modules = set(names.values())
    arrows: set[tuple[str, str]] = set()
    back_doors: list[str] = []
    private: list[str] = []
    functions: list[tuple[int, str]] = []
    sizes: list[tuple[int, str]] = []
    per_folder: Counter[str] = Counter()
    for path, name in names.items():
        relative = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        sizes.append((text.count("\n"), relative))
        per_folder[path.parent.relative_to(root).as_posix()] += 1
        tree = ast.parse(text)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported_modules: dict[str, str] = {}  # local alias -> project module
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{relative}:{node.name}"))
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = resolve(alias.name, modules)
                    if target:
                        targets.append(target)
                        imported_modules[alias.asname or alias.name] = target
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".") if package else []
                    anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    target = resolve(f"{base}.{alias.name}" if base else alias.name, modules)
                    if target:
                        targets.append(target)
                        imported_modules[alias.asname or alias.name] = target
                        if alias.name.startswith("_") and target != f"{base}.{alias.name}":
                            private.append(f"{relative}: from {base} import {alias.name}")
            arrows.update((name, target) for target in targets if target != name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append(f"{relative}: {node.value.id}.{node.attr}")
        if relative != "breedfilter/units.py" and not relative.startswith(("tests/", "bench/")):
            for number, line in enumerate(text.splitlines(), 1):
                code = line.split("#")[0]
                if BACK_DOOR.search(code):
                    back_doors.append(f"{relative}:{number}: {code.strip()[:70]}")
    return {
        "files": len(files),
        "lines": sum(size for size, _ in sizes),
        "per_folder": per_folder,
        "largest_files": sorted(sizes, reverse=True)[:6],
        "largest_functions": sorted(functions, reverse=True)[:6],
        "arrows": arrows,
        "circles": circles(arrows),
        "back_doors": sorted(set(back_doors)),
        "private": sorted(set(private)),
        "tests": sorted(p.relative_to(root).as_posix() for p in files if p.name.startswith("test_")),
    }


def circles(arrows: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in arrows:
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def side_by_side(before: dict, after: dict, labels: tuple[str, str]) -> list[str]:
    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a else "-"

    lines = [f"{'':34}{labels[0]:>14}{labels[1]:>14}   after/before"]
    for key, text in (("files", "python files"), ("lines", "lines")):
        lines.append(f"{text:34}{before[key]:>14}{after[key]:>14}   {ratio(before[key], after[key])}")
    counts = {
        "import arrows (project modules)": (len(before["arrows"]), len(after["arrows"])),
        "modules in an import circle": (sum(map(len, before["circles"])), sum(map(len, after["circles"]))),
        "back doors (outside units.py)": (len(before["back_doors"]), len(after["back_doors"])),
        "private names reached across": (len(before["private"]), len(after["private"])),
        "test files": (len(before["tests"]), len(after["tests"])),
        "largest file (lines)": (before["largest_files"][0][0], after["largest_files"][0][0]),
        "largest function (lines)": (before["largest_functions"][0][0], after["largest_functions"][0][0]),
    }
    for text, (a, b) in counts.items():
        lines.append(f"{text:34}{a:>14}{b:>14}   {ratio(a, b)}")
    for label, figures in zip(labels, (before, after), strict=True):
        lines.append(f"\n== {label}")
        lines.append("files per folder: " + ", ".join(f"{k} {v}" for k, v in sorted(figures["per_folder"].items())))
        lines.append("largest files:     " + ", ".join(f"{p} {n}" for n, p in figures["largest_files"]))
        lines.append("largest functions: " + ", ".join(f"{p} {n}" for n, p in figures["largest_functions"]))
        lines.append(f"circles: {figures['circles'] or 'none'}")
        lines.append(f"back doors: {figures['back_doors'] or 'none'}")
        lines.append(f"private reaches: {figures['private'] or 'none'}")
    return lines


def main(argv: list[str]) -> int:
    revs = (argv + [BEFORE, "."][len(argv) :])[:2]
    with tempfile.TemporaryDirectory() as tmp:
        figures = [measure(checkout(rev, Path(tmp) / str(i))) for i, rev in enumerate(revs)]
    print("\n".join(side_by_side(*figures, labels=(revs[0], "working tree" if revs[1] == "." else revs[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
