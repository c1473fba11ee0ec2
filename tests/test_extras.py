"""The optional dependencies in ``pyproject.toml``: ``dev`` takes the other extras by reference
instead of repeating their pins, and ``mogradient.pareto``'s imports have their own extra."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
SELF = re.compile(r"^mogradient\[([a-z,]+)\]$")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _expanded(extra: str) -> set[str]:
    """The package names an extra installs, following ``mogradient[...]`` references."""
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        match = SELF.match(requirement)
        if match:
            for other in match.group(1).split(","):
                names |= _expanded(other)
        else:
            names.add(_name(requirement))
    return names


def test_dev_repeats_no_pin_of_another_extra() -> None:
    """``dev`` adds only the development tools; what the other extras install it takes by
    reference (``mogradient[...]``), so that a pin is changed in one place."""
    own = {_name(r) for r in EXTRAS["dev"] if not SELF.match(r)}
    others = {_name(r) for extra, rs in EXTRAS.items() if extra != "dev" for r in rs}
    assert own & others == set()


def test_dev_installs_every_other_extra() -> None:
    for extra in EXTRAS:
        assert _expanded(extra) <= _expanded("dev"), extra


def test_the_pareto_extra_holds_what_mogradient_pareto_imports() -> None:
    """Every third-party module that ``mogradient/pareto/`` imports (beyond the core's own
    dependencies) is in the ``pareto`` extra."""
    core = {"numpy", "numba", "torch"}
    imported: set[str] = set()
    for path in (ROOT / "mogradient" / "pareto").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {
        name for name in imported if name not in sys.stdlib_module_names and name != "mogradient"
    }
    assert third_party - core <= _expanded("pareto")
    assert {"pymoo", "moocore"} <= _expanded("pareto")
