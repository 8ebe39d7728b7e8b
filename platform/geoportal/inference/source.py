"""What a ``model`` input names: a checkpoint, a training run folder, or a gallery.

* a ``.pt`` checkpoint (:mod:`geoportal.checkpoint`);
* a training run folder (has ``best.pt``, else ``last.pt``);
* a gallery folder (has ``gallery.json``, see :mod:`geoportal.inference.gallery`):
  one model per bucket of tiles, chosen per tile by the nearest centroid.

:func:`load_predictor` turns any of them into a :class:`Predictor`; workers call
it once per process (cached), so the scheduler carries a path, never weights.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.checkpoint import ModelInfo, load_model
from geoportal.errors import InvalidInputError, StorageNotFoundError

GALLERY_FILE = "gallery.json"


@dataclass
class LoadedModel:
    """One network in eval mode on its device, with its checkpoint's facts."""

    module: Any
    info: ModelInfo
    path: Path


@dataclass
class Predictor:
    """The model(s) of a run and how tiles are routed to them.

    Attributes:
        models: one model, or one per gallery bucket.
        router: for galleries, maps a tile's pixels to a bucket index.
        source: the path the user named.
        device: the torch device string the models live on.
    """

    models: list[LoadedModel]
    source: Path
    device: str
    router: Any = None
    files: list[Path] = field(default_factory=list)

    @property
    def info(self) -> ModelInfo:
        return self.models[0].info

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def is_gallery(self) -> bool:
        return self.router is not None

    def bucket_for(self, data: np.ndarray, valid: np.ndarray) -> int:
        """The bucket (model index) of a tile's raw pixels; 0 for a single model."""
        if self.router is None:
            return 0
        return int(self.router.route(data, valid))


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; explicit names are checked."""
    import torch

    from geoportal.errors import ResourceUnavailableError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceUnavailableError(
            "device 'cuda' was requested but torch sees no GPU here; use device=cpu or auto",
            field="device",
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"device {device!r} is not auto, cpu or cuda[:N]", field="device")
    return device


def resolve_model_path(location: str | os.PathLike[str]) -> tuple[str, Path]:
    """Classify a model location as ``("checkpoint", file)`` or ``("gallery", folder)``.

    Raises:
        StorageNotFoundError: nothing is there, or a folder without a model in it.
    """
    path = Path(location)
    if not path.exists():
        raise StorageNotFoundError(f"model {path} does not exist", field="model")
    if path.is_dir():
        if (path / GALLERY_FILE).exists():
            return "gallery", path
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return "checkpoint", path / name
        raise StorageNotFoundError(
            f"{path} holds no best.pt, last.pt or gallery.json: give a checkpoint (.pt), "
            "a training run folder or a gallery folder",
            field="model",
        )
    return "checkpoint", path


def model_files(location: str | os.PathLike[str]) -> list[Path]:
    """Every file whose contents determine the predictions (for fingerprints)."""
    kind, path = resolve_model_path(location)
    if kind == "checkpoint":
        return [path]
    from geoportal.inference.gallery import GalleryManifest

    manifest = GalleryManifest.read(path)
    return [path / GALLERY_FILE, *(path / m for m in manifest.models)]


@functools.lru_cache(maxsize=4)
def _cached(location: str, device: str, stamp: tuple[int, ...]) -> Predictor:
    del stamp  # part of the cache key only: a rewritten model is reloaded
    kind, path = resolve_model_path(location)
    if kind == "checkpoint":
        module, info = load_model(path, device=device)
        return Predictor([LoadedModel(module, info, path)], Path(location), device, files=[path])
    from geoportal.inference.gallery import load_gallery

    models, router = load_gallery(path, device)
    return Predictor(models, path, device, router=router, files=model_files(path))


def load_predictor(location: str | os.PathLike[str], device: str = "auto") -> Predictor:
    """Load a checkpoint, run folder or gallery onto ``device`` (cached per process)."""
    device = resolve_device(device)
    files = model_files(location)
    stamp = tuple(f.stat().st_mtime_ns for f in files)
    return _cached(os.fspath(Path(location).resolve()), device, stamp)
