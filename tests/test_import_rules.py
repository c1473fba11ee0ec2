"""Import rules of the code base, read with ``ast`` (nothing is imported, so it is fast).

The rules: no import cycle anywhere in ``mogradient``, ``mogradient_llm`` or ``benchmarks``;
the core never imports the RL wing or Hugging Face packages; only the CLI imports the CLI;
estimators never import the training loop (trainer, update); benchmarks never import the CLI or
the demo.

An edge ``a → b`` means module ``a`` imports module ``b`` somewhere in its source: at module
level, inside a function, or under ``if TYPE_CHECKING:`` (all count: a circle through a lazy
import is still a circle in the design). ``from p import x`` is an edge to ``p.x`` when that is
a module of the project, else to ``p``. Parent packages are not edges of their own (importing
``p.q`` runs ``p/__init__``, but a module importing a sibling is no cycle through ``p``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mogradient", "mogradient_llm", "benchmarks")


def module_files(packages: tuple[str, ...] = PACKAGES, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` file under ``packages``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module name ``module`` imports (external ones included, as written)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                full = f"{prefix}.{alias.name}"
                out.add(full if full in known else prefix)
    return out


def import_graph(packages: tuple[str, ...] = PACKAGES, root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the modules it imports (project modules and external top-level names alike;
    ``x.y`` outside the project is kept whole, so ``transformers.models`` stays visible)."""
    files = module_files(packages, root)
    known = set(files)
    return {name: _imported(name, path, known) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative): each is a set of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root] & graph.keys())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & graph.keys()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


GRAPH = import_graph()


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_cli(name: str) -> bool:
    prefixes = ("mogradient_llm.cli.", "mogradient_llm.cli_")
    return name == "mogradient_llm.cli" or name.startswith(prefixes)


def _is_loop(name: str) -> bool:
    return name in ("mogradient_llm.loop.trainer", "mogradient_llm.loop.update") or name.startswith(
        ("mogradient_llm.loop", "mogradient_llm.loop.trainer.", "mogradient_llm.loop.update.")
    )


def _importers(source: str, flagged: Callable[[str], bool]) -> dict[str, list[str]]:
    """Modules under ``source`` (a dotted prefix) → what they import that ``flagged``."""
    out: dict[str, list[str]] = {}
    for module, imported in GRAPH.items():
        if module == source or module.startswith(source + "."):
            bad = sorted(name for name in imported if flagged(name))
            if bad:
                out[module] = bad
    return out


# -- the reader itself ---------------------------------------------------------------------


def test_cycles_finds_every_circle_and_only_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n    import os.path\n",
        "pkg/sub/__init__.py": "from . import b\n",
        "pkg/sub/b.py": "from ..a import f\nfrom .. import c\nimport numpy as np\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(("pkg",), tmp_path)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b", "os.path"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a", "pkg.c", "numpy"},
        "pkg.c": {"typing", "pkg.a"},
    }
    assert sorted(map(sorted, cycles(graph))) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


# -- the rules -----------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_the_core_never_imports_the_rl_wing_or_the_benchmarks() -> None:
    found = _importers("mogradient", lambda n: _top(n) in ("mogradient_llm", "benchmarks"))
    assert found == {}


#: Hugging Face packages the core must run without.
HF = ("transformers", "trl", "peft", "accelerate", "datasets")


def test_the_core_never_imports_hugging_face_packages() -> None:
    assert _importers("mogradient", lambda n: _top(n) in HF) == {}


def test_the_gramian_engine_loads_without_transformers() -> None:
    """It recognises transformers' Conv1D where transformers is already loaded, without
    importing it (it did at import time before)."""
    code = (
        "import sys, mogradient.gramian.recorder, mogradient.autograd; "
        "assert 'transformers' not in sys.modules, 'transformers was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


#: Modules outside the CLI that may import it: the ``python -m mogradient_llm`` entry point.
CLI_ENTRY_POINTS = {"mogradient_llm.__main__"}


def _cli_importers() -> set[str]:
    found = {m for p in PACKAGES for m in _importers(p, _is_cli)}
    return {m for m in found if not _is_cli(m)} - CLI_ENTRY_POINTS


def test_only_the_cli_imports_the_cli() -> None:
    assert _cli_importers() == set()


def test_estimators_never_import_the_loop() -> None:
    assert _importers("mogradient_llm.estimators", _is_loop) == {}


def _bench_offenders() -> set[str]:
    return set(_importers("benchmarks", lambda n: _is_cli(n) or n == "mogradient_llm.demo"))


def test_benchmarks_never_import_the_cli_or_the_demo() -> None:
    assert _bench_offenders() == set()


def test_the_aggregation_framework_never_imports_the_methods() -> None:
    """``mogradient.aggregation`` is below ``mogradient.aggregators`` (the registry finds the
    methods with importlib on ``discover()``)."""
    found = _importers("mogradient.aggregation", lambda n: n.startswith("mogradient.aggregators"))
    assert found == {}


def test_a_method_never_imports_another_method() -> None:
    """What several methods share lives in a private module (``_dual_cone``, ...)."""
    shims = {"base", "registry", "dispatch", "preference"}

    def method(name: str) -> bool:
        parts = name.split(".")
        return (
            len(parts) == 3
            and name.startswith("mogradient.aggregators.")
            and not parts[2].startswith("_")
            and parts[2] not in shims
        )

    found = {m: bad for m, bad in _importers("mogradient.aggregators", method).items() if method(m)}
    assert found == {}


#: The engines only their integration may import (verl is optional, tested in its own venv).
VERL = ("verl", "transfer_queue")
VERL_INTEGRATION = {"mogradient_llm.integrations.verl", "mogradient_llm.integrations.verl_trainers"}


def test_only_the_verl_integration_imports_verl() -> None:
    """``import mogradient_llm`` never needs verl: only the integration's own modules import it,
    and no other module imports them."""
    found = {m for p in PACKAGES for m in _importers(p, lambda n: _top(n) in VERL)}
    assert found == VERL_INTEGRATION
    importers = {m for p in PACKAGES for m in _importers(p, VERL_INTEGRATION.__contains__)}
    assert importers <= VERL_INTEGRATION


#: ``mogradient_llm``'s packages and top modules from the bottom up: each imports only those
#: before it (CONTRIBUTING.md, "The RL wing's layers").
LAYERS = (
    "objectives",
    "config",
    "specs",
    "estimators",
    "inputs",
    "policy",
    "loop",
    "run",
    "pareto",
    "demo",
    "integrations",
    "cli",
    "__main__",
)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mogradient_llm" or len(parts) == 1:
        return None
    return parts[1]


def test_every_part_of_the_rl_wing_has_a_layer() -> None:
    assert {_layer(m) for m in GRAPH} - {None} == set(LAYERS)


def test_the_rl_wing_imports_one_way_down_its_layers() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(
        (module, name)
        for module, imported in GRAPH.items()
        for name in imported
        if (a := _layer(module)) in rank and (b := _layer(name)) in rank and rank[b] > rank[a]
    )
    assert upward == []
