"""The balanced-sampling figure: samples in 2-D (PCA), coloured by cluster.

Like the seed paper's Figure 2: each clustering group (a class, or all classes)
gets a panel with its samples projected on the first two principal components
of the standardised features, coloured by cluster; selected samples are drawn
opaque with a dark edge, the ones left out faint. Uses matplotlib's object API
(no pyplot), so it neither changes a notebook's backend nor needs a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoportal.atomic import atomic_path

if TYPE_CHECKING:
    from geoportal.sampling.balanced import GroupResult


def pca_2d(features: np.ndarray) -> np.ndarray:
    """Project (N, F) features on their first two principal components.

    Uses the eigenvectors of the F×F covariance matrix rather than an SVD of the
    data: with F ≈ 26 features that is microseconds instead of a BLAS call on the
    whole (N, F) matrix, which multi-threaded BLAS makes slow on busy machines.
    """
    centred = features - features.mean(axis=0)
    if centred.shape[1] < 2 or len(centred) < 2:
        first = centred[:, 0] if centred.shape[1] else np.zeros(len(centred))
        return np.column_stack([first, np.zeros(len(centred))])
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return centred @ vectors[:, ::-1][:, :2]


def plot_clusters(
    groups: Sequence[GroupResult],
    path: str | os.PathLike[str],
    *,
    max_points: int = 20000,
    seed: int = 0,
) -> Path:
    """Draw one PCA panel per group into a PNG at ``path`` (written atomically)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(groups)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows), dpi=100)
    FigureCanvasAgg(fig)
    total = sum(len(g.labels) for g in groups)
    rng = np.random.default_rng(seed)
    cmap = colormaps["tab20"]
    for i, g in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        quota = max(200, int(max_points * len(g.labels) / max(total, 1)))
        pick = np.arange(len(g.labels))
        if len(pick) > quota:
            pick = np.sort(rng.choice(len(pick), quota, replace=False))
        xy = pca_2d(g.features[pick].astype(np.float64))
        colours = cmap(g.labels[pick] % 20)
        sel = g.selected[pick]
        ax.scatter(xy[~sel, 0], xy[~sel, 1], s=6, c=colours[~sel], alpha=0.25, linewidths=0)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, c=colours[sel], edgecolors="black", linewidths=0.4)
        ax.set_title(
            f"{g.name}: {int(g.selected.sum()):,}/{len(g.labels):,} kept, k={len(g.sizes)}",
            fontsize=9,
        )
        ax.set_xlabel("PC 1", fontsize=8)
        ax.set_ylabel("PC 2", fontsize=8)
        # Principal-component values mean nothing to a reader; ticks would cost time only.
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Balanced sampling: samples by cluster (PCA); outlined = selected", fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.06, top=0.9, wspace=0.15, hspace=0.3)
    final = Path(path)
    with atomic_path(final) as tmp:
        fig.savefig(tmp, format="png")
    return final
