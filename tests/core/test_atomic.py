"""Atomic outputs: a failure leaves nothing under the final name, success replaces it whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoportal.atomic import (
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    is_temporary,
    temporary_sibling,
)


class Boom(Exception):
    pass


def test_temporary_sibling_keeps_folder_and_suffix(tmp_path: Path) -> None:
    final = tmp_path / "out" / "scene.tif"
    tmp = temporary_sibling(final)
    assert tmp.parent == final.parent
    assert tmp.suffix == ".tif"  # GDAL picks its driver from the suffix
    assert tmp.name.startswith(".") and is_temporary(tmp)
    assert not is_temporary(final)
    assert temporary_sibling(final) != tmp


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "report.txt"
    with pytest.raises(Boom), atomic_open(final) as handle:
        handle.write("half")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_version(tmp_path: Path) -> None:
    final = atomic_write_text(tmp_path / "a.json", '{"v": 1}')
    with pytest.raises(Boom), atomic_path(final) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise Boom
    assert final.read_text() == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_success_renames_and_replaces(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "data.bin"
    atomic_write_bytes(final, b"one")
    inode = final.stat().st_ino
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"two")
        assert final.read_bytes() == b"one"  # readers still see the old file meanwhile
    assert final.read_bytes() == b"two"
    assert final.stat().st_ino != inode  # a new file took the name: a rename, not a rewrite
    assert [p.name for p in final.parent.iterdir()] == ["data.bin"]


def test_no_overwrite_refuses_existing(tmp_path: Path) -> None:
    final = atomic_write_text(tmp_path / "x.txt", "keep")
    with pytest.raises(FileExistsError), atomic_path(final, overwrite=False):
        pass
    assert final.read_text() == "keep"


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "a"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_directories_are_swapped_whole(tmp_path: Path) -> None:
    final = tmp_path / "sampleset"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part-0.npy").write_bytes(b"old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part-1.npy").write_bytes(b"new")
    assert sorted(p.name for p in final.iterdir()) == ["part-1.npy"]
    with pytest.raises(Boom), atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part-2.npy").write_bytes(b"partial")
        raise Boom
    assert sorted(p.name for p in final.iterdir()) == ["part-1.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["sampleset"]


def test_rasterio_writes_through_the_temporary_name(tmp_path: Path) -> None:
    final = tmp_path / "class.tif"
    profile = dict(
        driver="GTiff", width=5, height=3, count=1, dtype="uint8", crs="EPSG:32618",
        transform=Affine(10, 0, 0, 0, -10, 0),
    )  # fmt: skip
    with atomic_path(final) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.arange(15, dtype=np.uint8).reshape(1, 3, 5))
    with rasterio.open(final) as src:
        assert src.read(1)[2, 4] == 14
    with pytest.raises(Boom), atomic_path(final) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.zeros((1, 3, 5), np.uint8))
        raise Boom
    with rasterio.open(final) as src:
        assert src.read(1)[2, 4] == 14
    assert [p.name for p in tmp_path.iterdir()] == ["class.tif"]


def test_atomic_open_is_for_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_open(tmp_path / "x", "r"):
        pass
