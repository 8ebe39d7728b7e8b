"""Blending weights: how overlapping tile predictions become one seamless map.

Every tile is predicted on its outer window (core + overlap). Two neighbours
share a strip of ``2 × overlap`` pixels centred on the border of their cores.
In ``cosine`` mode the left tile's weight falls as cos² and the right one's
rises as sin² over the middle ``2 × (overlap // 2)`` pixels of that strip;
cos² + sin² = 1, so the weights of all tiles covering a pixel sum to one
(separably in rows and columns, hence also at corners) and no seam remains.
Each tile's prediction is used at most ``overlap // 2`` pixels past its core,
i.e. at least ``overlap - overlap // 2`` pixels from its own window edge: for a
model whose receptive radius is within that, every used value equals the
whole-image forward pass, and the blend is exact. ``crop`` mode keeps each
tile's core only (exact for a receptive radius up to ``overlap``).

Blending happens between tiles of the same block; at block borders the cores
are cropped, so blocks stay independent units of work.
"""

from __future__ import annotations

import numpy as np


def ramp_weights(
    start: int,
    stop: int,
    core_start: int,
    core_stop: int,
    *,
    half: int,
    blend_before: bool,
    blend_after: bool,
) -> np.ndarray:
    """Weights along one axis of a tile's window ``[start, stop)`` (scene coordinates).

    Args:
        start, stop: the window the tile was predicted on.
        core_start, core_stop: the tile's core.
        half: half-width of the cos² ramp (0 = hard crop at the core).
        blend_before, blend_after: whether a neighbour in the same block shares
            the border at ``core_start`` / ``core_stop`` (else crop there).
    """
    x = np.arange(start, stop, dtype=np.float64)
    w = ((x >= core_start) & (x < core_stop)).astype(np.float64)
    if half > 0 and blend_before:
        lo = core_start - half
        sel = (x >= lo) & (x < core_start + half)
        w[sel] = np.sin(0.5 * np.pi * (x[sel] - lo + 0.5) / (2 * half)) ** 2
    if half > 0 and blend_after:
        lo = core_stop - half
        sel = (x >= lo) & (x < core_stop + half)
        w[sel] = np.cos(0.5 * np.pi * (x[sel] - lo + 0.5) / (2 * half)) ** 2
    return w.astype(np.float32)


def blend_half_width(mode: str, overlap: int) -> int:
    """Half-width of the ramp for a blend mode and overlap."""
    return overlap // 2 if mode == "cosine" else 0
