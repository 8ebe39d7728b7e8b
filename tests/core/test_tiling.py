"""Tile grids: cores partition the scene exactly once, windows are clipped, transforms agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as rio_window_transform

from geoportal.errors import InvalidInputError
from geoportal.raster import open_scene
from geoportal.tiling import TileGrid, window_transform


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap"),
    [(489, 443, 128, 16), (967, 973, 256, 0), (37, 23, 10, 3), (5, 5, 64, 8), (1, 1, 1, 0)],
)
def test_cores_partition_the_scene(width: int, height: int, tile_size: int, overlap: int) -> None:
    grid = TileGrid(width, height, tile_size, overlap)
    covered = np.zeros((height, width), dtype=np.int32)
    tiles = list(grid)
    assert len(tiles) == len(grid) == grid.rows * grid.cols
    assert grid.rows == -(-height // tile_size) and grid.cols == -(-width // tile_size)
    for tile in tiles:
        core, win = tile.core, tile.window
        covered[
            core.row_off : core.row_off + core.height, core.col_off : core.col_off + core.width
        ] += 1
        # The outer window lies within the scene and contains the core.
        assert win.col_off >= 0 and win.row_off >= 0
        assert win.col_off + win.width <= width and win.row_off + win.height <= height
        assert win.col_off <= core.col_off and win.row_off <= core.row_off
        assert win.col_off + win.width >= core.col_off + core.width
        # The overlap is there wherever the scene allows it.
        assert core.col_off - win.col_off == min(overlap, core.col_off)
        assert core.row_off - win.row_off == min(overlap, core.row_off)
        right = width - (core.col_off + core.width)
        assert win.col_off + win.width - (core.col_off + core.width) == min(overlap, right)
        assert core.width <= tile_size and core.height <= tile_size
    assert (covered == 1).all()


def test_edge_tiles_are_clipped() -> None:
    grid = TileGrid(width=300, height=260, tile_size=128, overlap=8)
    last = grid.tile(grid.rows - 1, grid.cols - 1)
    assert last.core == Window(256, 256, 44, 4)
    assert last.window == Window(248, 248, 52, 12)
    first = grid.tile(0, 0)
    assert first.window == Window(0, 0, 136, 136)
    with pytest.raises(IndexError):
        grid.tile(grid.rows, 0)


def test_core_in_window_cuts_the_core_out() -> None:
    height, width = 41, 57
    scene = np.arange(height * width).reshape(height, width)
    grid = TileGrid(width, height, tile_size=16, overlap=5)
    for tile in grid:
        w = tile.window
        outer = scene[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
        c = tile.core
        expected = scene[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width]
        assert np.array_equal(outer[tile.core_in_window], expected)


def test_tile_transforms_match_rasterio(nc_scene: Path) -> None:
    with open_scene(nc_scene) as ds:
        grid = TileGrid(ds.width, ds.height, tile_size=100, overlap=12)
        for tile in grid:
            t = window_transform(ds.transform, tile.window)
            assert t.almost_equals(rio_window_transform(tile.window, ds.transform))
            # The tile's top-left pixel corner is where the scene says it is.
            x, y = ds.xy(tile.window.row_off, tile.window.col_off, offset="ul")
            assert (t.c, t.f) == pytest.approx((x, y))
        tile = grid.tile(2, 3)
        data = ds.read(1, window=tile.window)
    # A tile written with its transform lands on the same map coordinates.
    assert data.shape == (tile.window.height, tile.window.width)


def test_tile_written_with_its_transform_round_trips(tmp_path: Path) -> None:
    base = Affine(20.0, 0, 435720.0, 0, -20.0, 4179460.0)
    win = Window(37, 11, 9, 7)
    t = window_transform(base, win)
    with rasterio.open(
        tmp_path / "tile.tif", "w", driver="GTiff", width=9, height=7, count=1, dtype="uint8",
        crs="EPSG:32618", transform=t,
    ) as dst:  # fmt: skip
        dst.write(np.ones((1, 7, 9), np.uint8))
    with rasterio.open(tmp_path / "tile.tif") as src:
        left, top = src.bounds.left, src.bounds.top
    assert (left, top) == (435720.0 + 37 * 20, 4179460.0 - 11 * 20)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 10, 4, 0), "raster"),
        ((10, 10, 0, 0), "tile_size"),
        ((10, 10, 4, -1), "overlap"),
        ((10, 10, 4, 4), "tile_size"),
    ],
)
def test_bad_grids(args: tuple[int, int, int, int], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        TileGrid(*args)
    assert info.value.field == field
