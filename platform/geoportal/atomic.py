"""Atomic outputs: write under a temporary name in the target folder, then rename.

A crash, a kill or a bad input never leaves a half-written file under a final
name, and readers never see a partial file. Every output of the platform goes
through these helpers. The temporary name keeps the final suffix because GDAL
and OGR choose their driver from it (``.tif``, ``.gpkg``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def temporary_sibling(final: str | os.PathLike[str]) -> Path:
    """A unique hidden name beside ``final`` that keeps its suffix."""
    final = Path(final)
    return final.with_name(f".{final.stem}{TMP_MARK}{uuid.uuid4().hex[:12]}{final.suffix}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a leftover temporary name made by this module."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARK in name


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``final``.

    For libraries that write by path (rasterio, geopandas, matplotlib). If the
    block raises, the temporary file (or folder) is removed and ``final`` is
    untouched.

    Raises:
        FileExistsError: ``final`` exists and ``overwrite`` is false.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.exists():
        raise FileExistsError(f"{final} exists already")
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        if tmp.is_dir() and final.is_dir():
            # A folder cannot replace a non-empty folder in one rename: swap it aside first.
            old = temporary_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it becomes ``final`` when the block ends cleanly."""
    if not any(m in mode for m in "wax"):
        raise ValueError("atomic_open is for writing")
    with atomic_path(final) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``final`` atomically and return the path."""
    with atomic_open(final, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(final)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically and return the path."""
    with atomic_open(final, "wb") as handle:
        handle.write(data)
    return Path(final)
