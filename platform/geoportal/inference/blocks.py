"""Blocks: rectangles of tiles, the unit of work, of resumption and of distribution.

A block owns the cores of its tiles; its output is exactly that rectangle of
the scene, so blocks partition the output and can be computed in any order, on
any worker, and skipped when a part file says they are done. Tiles are blended
with their neighbours inside a block and centre-cropped at block borders (see
:mod:`geoportal.inference.blend`), so a block needs nothing from another block.
Pick blocks large enough that one takes well over 100 ms (scheduler overhead
per Dask task is about 1 ms), small enough that their number keeps every
worker busy: :func:`block_tiles_for` aims at about four megapixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.windows import Window

from geoportal.tiling import Tile, TileGrid


@dataclass(frozen=True)
class Block:
    """Tiles ``[row0, row1) × [col0, col1)`` of a grid, and the output window they own."""

    index: int
    row0: int
    row1: int
    col0: int
    col1: int
    window: Window

    @property
    def name(self) -> str:
        return f"block-{self.index:06d}"

    def tiles(self, grid: TileGrid) -> list[Tile]:
        return [
            grid.tile(r, c)
            for r in range(self.row0, self.row1)
            for c in range(self.col0, self.col1)
        ]

    def has_tile(self, row: int, col: int) -> bool:
        return self.row0 <= row < self.row1 and self.col0 <= col < self.col1

    @property
    def n_tiles(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)


def block_tiles_for(tile_size: int, target_pixels: int = 4_000_000) -> int:
    """Tiles per block side so that a block covers about ``target_pixels``."""
    return max(1, round((target_pixels**0.5) / tile_size))


def plan_blocks(grid: TileGrid, block_tiles: int) -> list[Block]:
    """Cut ``grid`` into blocks of ``block_tiles × block_tiles`` tiles (edges smaller)."""
    blocks: list[Block] = []
    for r0 in range(0, grid.rows, block_tiles):
        for c0 in range(0, grid.cols, block_tiles):
            r1, c1 = min(r0 + block_tiles, grid.rows), min(c0 + block_tiles, grid.cols)
            first, last = grid.tile(r0, c0).core, grid.tile(r1 - 1, c1 - 1).core
            window = Window(
                first.col_off,
                first.row_off,
                last.col_off + last.width - first.col_off,
                last.row_off + last.height - first.row_off,
            )
            blocks.append(Block(len(blocks), r0, r1, c0, c1, window))
    return blocks
