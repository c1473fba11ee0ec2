"""The core's layout: small modules, and the distributed world size read in one place."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "mogradient"
MAX_LINES = 500


def test_no_module_of_the_core_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted(CORE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by role (at most {MAX_LINES} lines each): {long}"


def test_the_world_size_is_defined_once() -> None:
    """One function reads ``torch.distributed``'s world size; everything else calls it."""
    defined: list[str] = []
    calls: list[str] = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        name = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") == "world_size":
                defined.append(f"{name}:{node.name}")
            if isinstance(node, ast.Attribute) and node.attr == "get_world_size":
                calls.append(name)
    assert defined == ["mogradient/gramian/distributed.py:world_size"]
    assert calls == ["mogradient/gramian/distributed.py"]
