"""One PNG per problem: the true front and each method's final points (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from mpl_toolkits.mplot3d import Axes3D  # noqa: E402


def plot_final_points(
    title: str, front: np.ndarray, points: dict[str, np.ndarray], path: Path
) -> None:
    """Small multiples, one panel per method: its final points over the front (grey)."""
    n_obj = front.shape[1]
    n_cols = min(4, len(points))
    n_rows = math.ceil(len(points) / n_cols)
    fig = plt.figure(figsize=(2.6 * n_cols, 2.5 * n_rows), dpi=80)
    for k, (method, F) in enumerate(points.items()):
        projection = "3d" if n_obj == 3 else None
        ax = fig.add_subplot(n_rows, n_cols, k + 1, projection=projection)
        if n_obj == 3:
            assert isinstance(ax, Axes3D)  # what projection="3d" makes
            shown = front[:: max(1, len(front) // 150)]  # keeps PNGs small
            ax.scatter(shown[:, 0], shown[:, 1], shown[:, 2], s=1, c="0.75")
            ax.scatter(F[:, 0], F[:, 1], F[:, 2], s=10, c="C3")
            ax.view_init(elev=30, azim=45)
            ax.tick_params(labelsize=6)
        else:
            order = np.argsort(front[:, 0])
            ax.plot(*front[order].T, ".", ms=1.5, c="0.6")
            ax.scatter(F[:, 0], F[:, 1], s=12, c="C3", zorder=3)
            ax.tick_params(labelsize=7)
            low = front.min(axis=0) - 0.1 * (front.max(axis=0) - front.min(axis=0))
            high = front.max(axis=0) + 0.4 * (front.max(axis=0) - front.min(axis=0))
            ax.set_xlim(low[0], high[0])
            ax.set_ylim(low[1], high[1])
            outside = int((~((F >= low) & (F <= high)).all(axis=1)).sum())
            if outside:
                ax.text(
                    0.97,
                    0.95,
                    f"{outside} outside",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=7,
                )
        ax.set_title(method, fontsize=9)
    fig.suptitle(f"{title}: final points of seed 0 (grey: true front)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
