"""A tile grid over a scene: fixed-size tiles with overlap, clipped at the edges.

Inference, tile-wise sampling and block-wise statistics walk a scene through a
:class:`TileGrid`. Each :class:`Tile` has an *outer* window (what to read,
core plus overlap, clipped to the scene) and a *core* window (what the tile
owns: the cores of all tiles partition the scene exactly once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window

from geoportal.errors import InvalidInputError


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        row, col: the tile's index in the grid.
        window: the outer window (core + overlap), clipped to the scene.
        core: the part of the scene this tile owns.
    """

    row: int
    col: int
    window: Window
    core: Window

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array read with :attr:`window`."""
        r0 = int(self.core.row_off - self.window.row_off)
        c0 = int(self.core.col_off - self.window.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_size`` (core) with ``overlap`` pixels of context on each side.

    Args:
        width, height: the scene's size in pixels.
        tile_size: the core size of a tile (edge tiles are smaller).
        overlap: pixels of context read around each core (clipped at the scene edge).
    """

    width: int
    height: int
    tile_size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise InvalidInputError("the scene has no pixels", field="raster")
        if self.tile_size < 1:
            raise InvalidInputError("tile_size must be at least 1", field="tile_size")
        if self.overlap < 0:
            raise InvalidInputError("overlap must be 0 or more", field="overlap")
        if self.overlap >= self.tile_size:
            raise InvalidInputError(
                f"tile_size ({self.tile_size}) must be larger than the overlap ({self.overlap})",
                field="tile_size",
            )

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile_size)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile_size)

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> Tile:
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"tile ({row}, {col}) outside a {self.rows}x{self.cols} grid")
        r0, c0 = row * self.tile_size, col * self.tile_size
        r1, c1 = min(r0 + self.tile_size, self.height), min(c0 + self.tile_size, self.width)
        or0, oc0 = max(r0 - self.overlap, 0), max(c0 - self.overlap, 0)
        or1, oc1 = min(r1 + self.overlap, self.height), min(c1 + self.overlap, self.width)
        return Tile(
            row=row,
            col=col,
            window=Window(oc0, or0, oc1 - oc0, or1 - or0),
            core=Window(c0, r0, c1 - c0, r1 - r0),
        )

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(row, col)


def window_transform(transform: Affine, window: Window) -> Affine:
    """The geotransform of ``window`` cut from a raster with ``transform``."""
    return transform @ Affine.translation(window.col_off, window.row_off)
