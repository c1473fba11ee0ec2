"""verl is optional: without it, the integration says how to install it (verl's own tests are
in ``tests/verl/``, run in their own environment)."""

from __future__ import annotations

import importlib
import importlib.util

import pytest


@pytest.mark.skipif(importlib.util.find_spec("verl") is not None, reason="verl is installed")
def test_the_verl_integration_names_what_to_install() -> None:
    with pytest.raises(ImportError, match=r"pip install verl==0\.9\.1"):
        importlib.import_module("mogradient_llm.integrations.verl")
