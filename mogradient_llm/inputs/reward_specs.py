"""Rewards named on the command line: ``[NAME=]SPEC``.

``SPEC`` is a built-in (``length[:chars|words|tokens]``, ``vader``, ``distinct[:N]``,
``classifier:PATH[@LABEL]``) or, as TRL's ``--reward_funcs`` takes it, the dotted import path
of a Python reward function (``my_module.my_reward``, imported with the working directory on
``sys.path``). ``NAME=`` renames the objective, so that two rewards of one kind can be combined
(``--reward short=length:words --reward long=length``) and a function gets a readable name.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, cast

from mogradient_llm.inputs.builtin_rewards import LengthUnit, classifier, distinct, length, vader
from mogradient_llm.inputs.rewards import Reward, as_reward, callable_name

BUILT_INS = ("length", "vader", "distinct", "classifier")
#: The kind of a spec naming a Python function by its import path.
PYTHON = "python"
#: ``NAME=`` before a spec: a name made of letters, digits, ``_``, ``-`` and ``.``.
_NAMED = re.compile(r"([A-Za-z_][\w.\-]*)=(.*)", re.DOTALL)
_VALID = (
    "valid: [NAME=]SPEC with SPEC one of length[:chars|words|tokens], vader, distinct[:N], "
    "classifier:PATH[@LABEL], or a Python function's import path module.function"
)


@dataclass(frozen=True)
class RewardSpec:
    """A parsed spec: the objective's name (``None``: the reward's own), its kind (a built-in
    or ``"python"``) and the argument after ``:`` (the import path for ``"python"``)."""

    name: str | None
    kind: str
    arg: str


def parse_reward_spec(spec: str) -> RewardSpec:
    """Parse ``[NAME=]SPEC``; raises ``ValueError`` on a malformed spec, loading no model."""
    name: str | None = None
    body = spec
    if "=" in spec:
        match = _NAMED.fullmatch(spec)
        if match is None:
            raise ValueError(
                f"bad reward {spec!r}: the name before '=' must start with a letter or '_' and "
                f"hold only letters, digits, '_', '-' and '.'; {_VALID}"
            )
        name, body = match.group(1), match.group(2)
        if not body:
            raise ValueError(f"bad reward {spec!r}: nothing after '{name}='; {_VALID}")
    kind, _, arg = body.partition(":")
    if kind in BUILT_INS:
        return RewardSpec(name, kind, arg)
    if ":" not in body and "." in body:
        parts = body.split(".")
        if all(part.isidentifier() for part in parts):
            return RewardSpec(name, PYTHON, body)
    raise ValueError(f"unknown reward {spec!r}; {_VALID}")


def load_function(path: str) -> Any:
    """The callable at the import path ``module.function`` (TRL's way: the working directory
    goes first on ``sys.path``); raises ``ImportError``/``ValueError``/``TypeError`` saying why."""
    module_name, _, attribute = path.rpartition(".")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"reward {path!r}: cannot import module {module_name!r} ({exc}); run from the "
            "directory that holds it or add that directory to PYTHONPATH"
        ) from exc
    if not hasattr(module, attribute):
        raise ValueError(f"reward {path!r}: module {module_name!r} has no {attribute!r}")
    fn = getattr(module, attribute)
    if not callable(fn):
        raise TypeError(
            f"reward {path!r} is a {type(fn).__name__}, not a function; name the reward "
            "function itself"
        )
    return fn


def reward_name(spec: str) -> str:
    """The objective name ``spec`` gives (its ``NAME=``, the built-in's name, or the
    function's), importing a Python reward but loading no model."""
    parsed = parse_reward_spec(spec)
    if parsed.name is not None:
        return parsed.name
    if parsed.kind == PYTHON:
        fn = load_function(parsed.arg)
        return str(getattr(fn, "name", None) or callable_name(fn))
    return {"distinct": "diversity"}.get(parsed.kind, parsed.kind)


def default_reference_known(spec: str) -> bool:
    """Whether the reward of ``spec`` has a default hypervolume reference (its worst value):
    not a classifier, nor a Python function without an ``hv_reference`` attribute."""
    parsed = parse_reward_spec(spec)
    if parsed.kind == PYTHON:
        return getattr(load_function(parsed.arg), "hv_reference", None) is not None
    return parsed.kind != "classifier"


def check_reward_specs(specs: list[str]) -> list[str]:
    """The objective names of ``specs``; raises ``ValueError`` on a bad spec or two specs with
    one name (before any model is built)."""
    names = [reward_name(spec) for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"two rewards are named {repeated[0]!r} (rewards {specs}); give each its own name "
            f"with NAME=SPEC, e.g. --reward {repeated[0]}_2={specs[names.index(repeated[0])]}"
        )
    return names


def build_reward(spec: str, tokenizer: object | None = None) -> Reward:
    """The reward of a CLI spec ``[NAME=]SPEC`` (see the module docstring)."""
    parsed = parse_reward_spec(spec)
    kind, arg = parsed.kind, parsed.arg
    if kind == PYTHON:
        reward = as_reward(load_function(arg), parsed.name)
    elif kind == "length":
        # LengthReward refuses any other unit.
        reward = length(unit=cast(LengthUnit, arg or "chars"), tokenizer=tokenizer)
    elif kind == "vader":
        if arg:
            raise ValueError(f"the vader reward takes no argument, got {spec!r}")
        reward = vader()
    elif kind == "distinct":
        if arg and not (arg.isdigit() and int(arg) >= 1):
            raise ValueError(f"distinct:N needs a positive integer N, got {spec!r}")
        reward = distinct(int(arg or 1))
    else:  # classifier: parse_reward_spec accepts only the kinds above
        if not arg:
            raise ValueError("use classifier:PATH or classifier:PATH@LABEL")
        path, _, label = arg.partition("@")
        reward = classifier(path, label=label or None)
    return as_reward(reward, parsed.name) if parsed.name is not None else reward
