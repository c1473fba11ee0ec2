"""Das–Dennis simplex lattice: evenly spread weight vectors on the probability simplex.

Used for the DTLZ2 front (lattice points pushed onto the unit sphere, as pymoo does) and for
spreading preference vectors over the objectives in the synthetic benchmark.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def simplex_lattice(n_obj: int, min_points: int) -> np.ndarray:
    """All weight vectors ``[n, n_obj]`` with entries in ``{0, 1/p, ..., 1}`` summing to 1.

    ``p`` (the number of partitions) is the smallest that gives at least ``min_points``
    vectors: ``n = C(p + n_obj - 1, n_obj - 1)``; with two objectives ``n == min_points``.
    """
    if n_obj < 2 or min_points < 1:  # one objective has a one-point simplex
        raise ValueError(f"need n_obj >= 2 and min_points >= 1, got {n_obj}, {min_points}")
    p = 0
    while math.comb(p + n_obj - 1, n_obj - 1) < min_points:
        p += 1
    rows = []
    # stars and bars: choose where the n_obj - 1 bars go among p + n_obj - 1 slots
    for bars in itertools.combinations(range(p + n_obj - 1), n_obj - 1):
        edges = (-1, *bars, p + n_obj - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_obj)])
    return np.array(rows, dtype=np.float64) / max(p, 1)
