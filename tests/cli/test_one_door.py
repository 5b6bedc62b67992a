"""One door into the deployment units: only breedfilter/units.py touches sys.path or importlib, and the CLI uses
no private name of training/ or functions/router/.

A lint check in test form: it reads the source, so a new back door fails here with the line that opened it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOOR = ROOT / "breedfilter" / "units.py"
BACK_DOORS = re.compile(r"sys\.path\.(insert|append)|\bimportlib\b|__import__\(|sys\.modules\[")
# private names of the far side the CLI once reached for: options._dashed, routing.endpoint._reason_from, ...
PRIVATE_REACH = re.compile(
    r"\b(options|endpoint|search_space\.train_options_module\(\))\._[a-z]\w*|\bparser\._actions\b"
)


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines outside docstrings and comments (a docstring may name sys.path to say what a module does)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'"""[\s\S]*?"""', lambda m: "\n" * m[0].count("\n"), text)
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(text.splitlines(), 1)]


def test_only_the_door_touches_sys_path_or_importlib():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "breedfilter").glob("*.py"))
        if path != DOOR
        for n, line in code_lines(path)
        if BACK_DOORS.search(line)
    ]
    assert found == []


def test_the_cli_uses_no_private_name_of_the_units():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "breedfilter").glob("*.py"))
        for n, line in code_lines(path)
        if PRIVATE_REACH.search(line)
    ]
    assert found == []


def test_the_door_opens_both_units():
    from breedfilter import units

    assert units.router_module("routing.endpoint").reason_from('{"error": "bad image", "status": 400}') == "bad image"
    assert units.training_module("imaging").Preprocessing
    assert "lr" in units.train_options().option_names()
    assert units.train_options().explicit_flags(["--batch", "64"]) == {"batch_size": 64}
