"""Every package pinned in more than one place is pinned to the same version everywhere.

The deployment units carry their own pins (the router's requirements.txt, training/requirements.txt for the
SageMaker training container; a model artifact pins nothing: it carries the timm it was trained with) and
pyproject.toml pins what the tests and the CLI run with. A version bumped in one place only would test one
thing and ship another.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENT_FILES = (
    ROOT / "functions" / "router" / "requirements.txt",
    ROOT / "training" / "requirements.txt",
)
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def pins(lines: list[str], where: str) -> dict[str, tuple[str, str]]:
    """``{normalised name: (version, where)}`` for every ``name==version`` line."""
    found = {}
    for line in lines:
        match = PIN.match(line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = (match[3], where)
    return found


def all_pins() -> list[dict[str, tuple[str, str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = [pins(project["dependencies"], "pyproject.toml [project] dependencies")]
    for extra, requirements in project["optional-dependencies"].items():
        groups.append(pins(requirements, f"pyproject.toml [{extra}]"))
    for path in REQUIREMENT_FILES:
        groups.append(pins(path.read_text(encoding="utf-8").splitlines(), str(path.relative_to(ROOT))))
    return groups


def test_each_package_has_one_version_wherever_it_is_pinned():
    seen: dict[str, tuple[str, str]] = {}
    conflicts = []
    for group in all_pins():
        for name, (version, where) in group.items():
            if name in seen and seen[name][0] != version:
                conflicts.append(f"{name}: {seen[name][0]} in {seen[name][1]}, {version} in {where}")
            seen.setdefault(name, (version, where))
    assert conflicts == []


def test_the_units_pins_are_read():
    """The check above is only as good as its parser: the pins we know of must be found."""
    groups = all_pins()
    names = {name for group in groups for name in group}
    assert {"boto3", "aws-lambda-powertools", "torch", "torchvision", "timm", "moto"} <= names
    router = groups[-len(REQUIREMENT_FILES)]
    assert router["aws-lambda-powertools"][1].endswith("requirements.txt")
