"""Sample sets: folders of containers with one ``dataset.json`` that describes them.

Layout (patch classification; one folder per class, named by class)::

    samples/<set>/dataset.json
    samples/<set>/<class name>/part-00000.npy (+ companions, see geoportal.containers)

Layout (segmentation; image patches with masks)::

    samples/<set>/dataset.json
    samples/<set>/tiles/part-00000.npy (+ .masks.npy)

``dataset.json`` holds the bands, patch size, dtype, CRS, classes (code, name,
colour), the per-band normalisation statistics computed at extraction, and
where the samples came from. Training reads the bands, classes and statistics
from here, so a configuration never has to repeat them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from geoportal.atomic import atomic_write_text
from geoportal.classes import ClassInfo
from geoportal.containers import Container, SampleRef, iter_container_files
from geoportal.errors import InvalidContainerError, StorageNotFoundError

DATASET_FILE = "dataset.json"
SEGMENTATION_DIR = "tiles"


class ClassModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: int
    name: str
    color: str

    def info(self) -> ClassInfo:
        return ClassInfo(self.code, self.name, self.color)


class Normalisation(BaseModel):
    """Per-band statistics over valid pixels: x' = (x - mean) / std."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    std: list[float]


class SampleSetMeta(BaseModel):
    """The contents of ``dataset.json``."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    mode: Literal["patch", "segmentation"]
    bands: list[str]
    patch_size: int
    dtype: str
    crs: str
    classes: list[ClassModel]
    normalisation: Normalisation
    source: dict[str, str] = Field(default_factory=dict, description="raster, labels, class_field")
    counts: dict[str, int] = Field(default_factory=dict, description="samples per class name")
    options: dict[str, object] = Field(default_factory=dict, description="extraction options")

    @property
    def class_infos(self) -> list[ClassInfo]:
        return [c.info() for c in self.classes]


class SampleSet:
    """A sample set opened for reading."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / DATASET_FILE
        if not meta_path.exists():
            raise StorageNotFoundError(
                f"{self.folder} is not a sample set: {DATASET_FILE} is missing", field="samples"
            )
        try:
            self.meta = SampleSetMeta.model_validate_json(meta_path.read_text())
        except ValueError as exc:
            raise InvalidContainerError(f"{meta_path} is invalid: {exc}") from None

    @property
    def mode(self) -> str:
        return self.meta.mode

    def class_dirs(self) -> dict[str, Path]:
        """Class name → folder (patch mode)."""
        return {c.name: self.folder / c.name for c in self.meta.classes}

    def container_files(self) -> Iterator[tuple[str | None, Path]]:
        """(class name or None for segmentation, container patch file)."""
        if self.meta.mode == "segmentation":
            for path in iter_container_files(self.folder / SEGMENTATION_DIR):
                yield None, path
            return
        for name, folder in self.class_dirs().items():
            if folder.is_dir():
                for path in iter_container_files(folder):
                    yield name, path

    def refs(self) -> Iterator[tuple[SampleRef, str | None]]:
        """Every sample's address with its class name."""
        for name, path in self.container_files():
            for index in range(len(Container(path))):
                yield SampleRef(str(path), index), name

    def __len__(self) -> int:
        return sum(len(Container(p)) for _, p in self.container_files())


def write_sample_set_meta(folder: str | os.PathLike[str], meta: SampleSetMeta) -> Path:
    """Write ``dataset.json`` atomically."""
    return atomic_write_text(Path(folder) / DATASET_FILE, json.dumps(meta.model_dump(), indent=1))
