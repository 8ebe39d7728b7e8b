"""Sample containers: streamed writes, memory-mapped reads, nothing left behind on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from geoportal.containers import (
    FORMAT_VERSION,
    Container,
    ContainerWriter,
    SampleRef,
    container_paths,
    is_container_file,
    iter_container_files,
)
from geoportal.errors import InvalidContainerError

BANDS = ["B1", "B2", "B3"]


def writer(path: Path, **kwargs) -> ContainerWriter:
    options = dict(
        bands=BANDS, patch_size=7, dtype="float32", crs="EPSG:32119",
        source="datasets/lsat7_2000_6band.tif", transform=(28.5, 0, 630534.0, 0, -28.5, 228114.0),
    )  # fmt: skip
    options.update(kwargs)
    return ContainerWriter(path, **options)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(23, 3, 7, 7)).astype("float32")
    path = tmp_path / "forest" / "part-00000.npy"
    with writer(path, extra={"class": "forest"}) as w:
        for i in range(10):
            assert w.append(patches[i], Window(i, 2 * i, 7, 7), label=5) == i
        w.extend(patches[10:], np.array([[i, 2 * i, 7, 7] for i in range(10, 23)]), np.full(13, 5))
        assert w.count == 23
    c = Container(path)
    assert len(c) == 23
    assert isinstance(c.patches, np.memmap)  # reading a sample touches only its bytes
    assert np.array_equal(np.asarray(c.patches), patches)
    assert np.array_equal(c[17], patches[17])
    assert c.window(4) == Window(4, 8, 7, 7)
    assert c.labels is not None and c.labels.tolist() == [5] * 23
    assert c.masks is None
    assert c.bands == BANDS and c.patch_size == 7
    meta = json.loads(container_paths(path)["meta"].read_text())
    assert meta["format"] == "geoportal-container" and meta["version"] == FORMAT_VERSION
    assert meta["crs"] == "EPSG:32119" and meta["source"] == "datasets/lsat7_2000_6band.tif"
    assert meta["transform"] == [28.5, 0, 630534.0, 0, -28.5, 228114.0]
    assert meta["count"] == 23 and meta["has_labels"] and not meta["has_masks"]
    assert meta["class"] == "forest" and meta["dtype"] == "<f4"
    # The patch file is a plain .npy any numpy reads.
    assert np.load(path).shape == (23, 3, 7, 7)
    assert SampleRef(str(path), 3) == SampleRef(str(path), 3)


def test_segmentation_masks(tmp_path: Path) -> None:
    path = tmp_path / "tiles" / "part-00001.npy"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 4000, size=(4, 3, 7, 7), dtype=np.uint16)
    masks = rng.integers(0, 8, size=(4, 7, 7), dtype=np.uint8)
    with writer(path, dtype="uint16", with_masks=True) as w:
        w.append(images[0], (0, 0, 7, 7), mask=masks[0])
        w.extend(images[1:], np.zeros((3, 4)), masks=masks[1:])
    c = Container(path)
    assert c.patches.dtype == np.uint16
    assert c.masks is not None and np.array_equal(np.asarray(c.masks), masks)
    assert c.labels is None  # no labels were given
    assert json.loads(c.paths["meta"].read_text())["has_masks"] is True


def test_empty_container_reads(tmp_path: Path) -> None:
    path = writer(tmp_path / "part-00000.npy").close()
    c = Container(path)
    assert len(c) == 0 and c.patches.shape == (0, 3, 7, 7) and c.windows.shape == (0, 4)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "water" / "part-00000.npy"
    with pytest.raises(RuntimeError), writer(path, with_masks=True) as w:
        w.append(np.zeros((3, 7, 7)), (0, 0, 7, 7), label=1, mask=np.zeros((7, 7)))
        raise RuntimeError("extraction failed")
    assert list(path.parent.iterdir()) == []
    w = writer(path)
    w.append(np.zeros((3, 7, 7)), (0, 0, 7, 7))
    w.abort()
    assert list(path.parent.iterdir()) == []


def test_temporary_names_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.npy"
    w = writer(path)
    w.append(np.ones((3, 7, 7)), (0, 0, 7, 7))
    assert not path.exists()  # readers never see a container being written
    assert list(iter_container_files(tmp_path)) == []
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-00000.json", "part-00000.npy", "part-00000.windows.npy",
    ]  # fmt: skip
    assert w.close() == path  # closing twice is harmless


def test_bad_shapes(tmp_path: Path) -> None:
    w = writer(tmp_path / "part-00000.npy")
    with pytest.raises(InvalidContainerError, match=r"does not fit container shape \(3, 7, 7\)"):
        w.append(np.zeros((3, 8, 8)), (0, 0, 8, 8))
    with pytest.raises(InvalidContainerError, match="do not fit"):
        w.extend(np.zeros((2, 4, 7, 7)), np.zeros((2, 4)))
    w.abort()
    seg = writer(tmp_path / "part-00001.npy", with_masks=True)
    with pytest.raises(InvalidContainerError, match="needs a mask"):
        seg.append(np.zeros((3, 7, 7)), (0, 0, 7, 7))
    with pytest.raises(InvalidContainerError, match="needs a mask"):
        seg.append(np.zeros((3, 7, 7)), (0, 0, 7, 7), mask=np.zeros((6, 6)))
    with pytest.raises(InvalidContainerError, match="needs a mask"):
        seg.extend(np.zeros((1, 3, 7, 7)), np.zeros((1, 4)))
    seg.abort()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_containers(tmp_path: Path) -> None:
    path = writer(tmp_path / "part-00000.npy").close()
    meta = container_paths(path)["meta"]
    with pytest.raises(InvalidContainerError, match="metadata file part-00002.json is missing"):
        Container(tmp_path / "part-00002.npy")
    meta.write_text("{broken")
    with pytest.raises(InvalidContainerError, match="unreadable metadata"):
        Container(path)
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InvalidContainerError, match="not a geoportal sample container"):
        Container(path)
    # A patch file that disagrees with its metadata is refused, not misread.
    good = writer(tmp_path / "part-00003.npy")
    good.extend(np.zeros((5, 3, 7, 7)), np.zeros((5, 4)))
    good.close()
    meta3 = container_paths(tmp_path / "part-00003.npy")["meta"]
    data = json.loads(meta3.read_text())
    meta3.write_text(json.dumps({**data, "count": 6}))
    with pytest.raises(InvalidContainerError, match="holds shape"):
        _ = Container(tmp_path / "part-00003.npy").patches
    (tmp_path / "part-00003.npy").write_bytes(b"\x93NUMPY garbage")
    meta3.write_text(json.dumps(data))
    with pytest.raises(InvalidContainerError, match="unreadable"):
        _ = Container(tmp_path / "part-00003.npy").patches


def test_container_file_names(tmp_path: Path) -> None:
    for name in ("part-00001.npy", "part-00000.npy"):
        writer(tmp_path / name, with_masks=True).close()
    (tmp_path / ".part-00002.tmp-abc.npy").write_bytes(b"")
    assert [p.name for p in iter_container_files(tmp_path)] == ["part-00000.npy", "part-00001.npy"]
    assert not is_container_file(tmp_path / "part-00000.masks.npy")
    assert not is_container_file(tmp_path / "part-00000.windows.npy")
    assert not is_container_file(tmp_path / "part-00000.labels.npy")
    assert is_container_file(tmp_path / "part-00000.npy")
