"""Sample containers: many training patches in one memory-mappable file.

A container is a group of files sharing a stem (``part-00000``)::

    part-00000.npy          patches, shape (N, C, H, W), any numeric dtype
    part-00000.json         metadata: bands, patch size, CRS, source, dtype, count
    part-00000.windows.npy  (N, 4) int32: col_off, row_off, width, height in the source
    part-00000.labels.npy   (N,) int16: class code per patch (patch classification)
    part-00000.masks.npy    (N, H, W) uint8: class mask per patch (segmentation)

A sample is addressed as (container file, index). Patches are written by
streaming (:class:`ContainerWriter` never holds them all in memory) and read
through ``numpy.load(mmap_mode="r")``, so reading one sample touches only its
bytes. The ``.npy`` header is reserved up front and rewritten at close, which
is why the count need not be known in advance. Every file is written under a
temporary name and renamed at :meth:`ContainerWriter.close`.

A *sample set* is a folder of containers with a ``dataset.json`` (see
:mod:`geoportal.samples`).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoportal.atomic import atomic_write_text, temporary_sibling
from geoportal.errors import InvalidContainerError

FORMAT_VERSION = 1
_HEADER_BYTES = 128  # room for the .npy v1 header of any (N, C, H, W) shape
_MAGIC = b"\x93NUMPY\x01\x00"


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    descr = np.lib.format.dtype_to_descr(dtype)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    room = _HEADER_BYTES - len(_MAGIC) - 2 - 1
    if len(text) > room:
        raise InvalidContainerError(f"shape {shape} too large for a container header")
    text = text.ljust(room) + "\n"
    return _MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


def container_paths(npy: str | os.PathLike[str]) -> dict[str, Path]:
    """The files of the container whose patch file is ``npy``."""
    npy = Path(npy)
    stem = npy.with_suffix("")
    return {
        "patches": npy,
        "meta": stem.with_suffix(".json"),
        "windows": Path(f"{stem}.windows.npy"),
        "labels": Path(f"{stem}.labels.npy"),
        "masks": Path(f"{stem}.masks.npy"),
    }


def is_container_file(path: Path) -> bool:
    """Whether ``path`` is the patch file of a container (not a companion)."""
    name = path.name
    return (
        name.endswith(".npy")
        and not name.startswith(".")
        and not any(name.endswith(s) for s in (".windows.npy", ".labels.npy", ".masks.npy"))
    )


class ContainerWriter:
    """Stream patches into a new container.

    Args:
        path: the final ``.npy`` patch file.
        bands: band names, one per channel.
        patch_size: the patches' height and width.
        dtype: the patches' dtype.
        crs: the source scene's CRS (WKT or authority string).
        source: where the patches come from (a storage path).
        transform: the source scene's geotransform (6 numbers, GDAL order of Affine).
        with_masks: write a segmentation mask per patch.
        extra: more metadata to keep.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: Sequence[str],
        patch_size: int,
        dtype: str | np.dtype,
        crs: str,
        source: str,
        transform: Sequence[float] | None = None,
        with_masks: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.paths = container_paths(path)
        self.paths["patches"].parent.mkdir(parents=True, exist_ok=True)
        self.bands = list(bands)
        self.patch_size = int(patch_size)
        self.dtype = np.dtype(dtype)
        self.shape = (len(self.bands), self.patch_size, self.patch_size)
        self.meta: dict[str, Any] = {
            "format": "geoportal-container",
            "version": FORMAT_VERSION,
            "bands": self.bands,
            "patch_size": self.patch_size,
            "dtype": self.dtype.str,
            "crs": crs,
            "source": source,
            "transform": list(transform) if transform is not None else None,
            **(extra or {}),
        }
        self._tmp = {k: temporary_sibling(p) for k, p in self.paths.items()}
        # The handles live until close()/abort(), which close them.
        self._patches = open(self._tmp["patches"], "wb")  # noqa: SIM115
        self._patches.write(b"\0" * _HEADER_BYTES)
        self._masks = None
        if with_masks:
            self._masks = open(self._tmp["masks"], "wb")  # noqa: SIM115
            self._masks.write(b"\0" * _HEADER_BYTES)
        self._windows = array("i")
        self._labels = array("h")
        self.count = 0
        self._closed = False

    def append(
        self,
        patch: np.ndarray,
        window: Window | Sequence[int],
        label: int | None = None,
        mask: np.ndarray | None = None,
    ) -> int:
        """Add one patch (C, H, W); return its index in the container."""
        if patch.shape != self.shape:
            raise InvalidContainerError(
                f"patch of shape {patch.shape} does not fit container shape {self.shape}"
            )
        self._patches.write(np.ascontiguousarray(patch, dtype=self.dtype).tobytes())
        if isinstance(window, Window):
            window = (
                int(window.col_off),
                int(window.row_off),
                int(window.width),
                int(window.height),
            )
        self._windows.extend(int(v) for v in window)
        self._labels.append(-1 if label is None else int(label))
        if self._masks is not None:
            if mask is None or mask.shape != self.shape[1:]:
                raise InvalidContainerError("a segmentation container needs a mask per patch")
            self._masks.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self.count += 1
        return self.count - 1

    def extend(
        self,
        patches: np.ndarray,
        windows: np.ndarray,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> None:
        """Add a batch of patches (N, C, H, W) at once (fast path for bulk writers)."""
        if patches.shape[1:] != self.shape:
            raise InvalidContainerError(f"patches {patches.shape[1:]} do not fit {self.shape}")
        n = len(patches)
        self._patches.write(np.ascontiguousarray(patches, dtype=self.dtype).tobytes())
        self._windows.frombytes(np.asarray(windows, dtype=np.int32).reshape(n, 4).tobytes())
        lab = np.full(n, -1, np.int16) if labels is None else np.asarray(labels, np.int16)
        self._labels.frombytes(lab.tobytes())
        if self._masks is not None:
            if masks is None:
                raise InvalidContainerError("a segmentation container needs a mask per patch")
            self._masks.write(np.ascontiguousarray(masks, dtype=np.uint8).tobytes())
        self.count += n

    def close(self) -> Path:
        """Finish the files and move them to their final names; return the patch path."""
        if self._closed:
            return self.paths["patches"]
        self._closed = True
        try:
            for handle, shape in (
                (self._patches, (self.count, *self.shape)),
                (self._masks, (self.count, *self.shape[1:])),
            ):
                if handle is None:
                    continue
                dtype = self.dtype if handle is self._patches else np.dtype(np.uint8)
                handle.seek(0)
                handle.write(_npy_header(dtype, shape))
                handle.close()
            np.save(self._tmp["windows"], np.frombuffer(self._windows, np.int32).reshape(-1, 4))
            labels = np.frombuffer(self._labels, np.int16)
            if (labels >= 0).any():
                np.save(self._tmp["labels"], labels)
            self.meta["count"] = self.count
            self.meta["has_labels"] = bool((labels >= 0).any())
            self.meta["has_masks"] = self._masks is not None
            for key in ("windows", "labels", "masks", "patches"):
                tmp = self._tmp[key]
                if tmp.exists():
                    os.replace(tmp, self.paths[key])
            atomic_write_text(self.paths["meta"], json.dumps(self.meta, indent=1))
        except BaseException:
            self.abort()
            raise
        return self.paths["patches"]

    def abort(self) -> None:
        """Drop everything written so far."""
        self._closed = True
        for handle in (self._patches, self._masks):
            if handle is not None and not handle.closed:
                handle.close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class SampleRef:
    """A sample's address: the container's patch file and the index in it."""

    file: str
    index: int


class Container:
    """A container opened for reading; arrays are memory-mapped lazily."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.paths = container_paths(path)
        self.path = self.paths["patches"]
        try:
            self.meta: dict[str, Any] = json.loads(self.paths["meta"].read_text())
        except FileNotFoundError:
            raise InvalidContainerError(
                f"container {self.path}: its metadata file {self.paths['meta'].name} is missing"
            ) from None
        except (OSError, ValueError) as exc:
            raise InvalidContainerError(
                f"container {self.path}: unreadable metadata ({exc})"
            ) from None
        if self.meta.get("format") != "geoportal-container":
            raise InvalidContainerError(f"{self.path} is not a geoportal sample container")

    @cached_property
    def patches(self) -> np.ndarray:
        try:
            arr = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InvalidContainerError(f"container {self.path} is unreadable ({exc})") from None
        if arr.ndim != 4 or arr.shape[0] != self.meta.get("count", arr.shape[0]):
            raise InvalidContainerError(
                f"container {self.path} holds shape {arr.shape}, expected "
                f"({self.meta.get('count')}, C, H, W)"
            )
        return arr

    @cached_property
    def windows(self) -> np.ndarray:
        return np.load(self.paths["windows"], mmap_mode="r")

    @cached_property
    def labels(self) -> np.ndarray | None:
        p = self.paths["labels"]
        return np.load(p, mmap_mode="r") if p.exists() else None

    @cached_property
    def masks(self) -> np.ndarray | None:
        p = self.paths["masks"]
        return np.load(p, mmap_mode="r") if p.exists() else None

    @property
    def bands(self) -> list[str]:
        return list(self.meta["bands"])

    @property
    def patch_size(self) -> int:
        return int(self.meta["patch_size"])

    def __len__(self) -> int:
        return int(self.meta.get("count", len(self.patches)))

    def window(self, index: int) -> Window:
        c, r, w, h = (int(v) for v in self.windows[index])
        return Window(c, r, w, h)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.patches[index])


def iter_container_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Patch files of the containers directly inside ``folder``, sorted by name."""
    for path in sorted(Path(folder).glob("*.npy")):
        if is_container_file(path):
            yield path
