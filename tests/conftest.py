"""Hypothesis profiles.

* ``dev`` (the default): 100 examples per test, random exploration, no deadline.
* ``ci`` (when the ``CI`` environment variable is set): 1,000 examples per test that does not
  set its own ``max_examples`` (the contract test, ``tests/test_contract.py``, runs 1,000 per
  method), derandomised so CI is reproducible, no deadline. Tests that set ``max_examples``
  keep their own count under both profiles.

Select one explicitly with ``pytest --hypothesis-profile=dev``.
"""

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=1000, deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
