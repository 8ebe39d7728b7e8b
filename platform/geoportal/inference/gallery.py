"""A model gallery (RESFlow): one model per bucket of similar tiles, routed by centroid.

RESFlow (the seed paper) splits a scene's tiles into buckets by simple image
statistics, trains one model per bucket, and at inference sends each tile to
its bucket's model: each model faces a narrower distribution than a single
global one. Here:

* **Build** (:func:`build_gallery`): cut the scene into tiles, describe each by
  the per-band mean and standard deviation of its valid pixels (the features of
  balanced sampling), standardise, and cluster with k-means into ``k`` buckets.
  Every training sample falls into the tile that holds its centre, hence into
  a bucket; each bucket gets a ``selection.csv`` (the balanced-selection
  format) and one model trained by :func:`geoportal.training.train`. A global
  model trained on all samples is the fallback of buckets with too few samples
  (and the single model to compare the gallery with).
* **Artefact**: one folder with ``gallery.json`` (feature scaling, centroids,
  model paths, counts) and the run folders of the models.
* **Infer** (:class:`CentroidRouter`): each tile's core pixels give the same
  features; the nearest centroid picks the model. ``bucket_raster`` records the
  bucket per tile, like RESFlow's Figure 11.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geoportal.atomic import atomic_path, atomic_write_text
from geoportal.errors import InvalidInputError
from geoportal.raster import open_scene, valid_mask
from geoportal.tiling import TileGrid

GALLERY_FILE = "gallery.json"
Progress = Callable[[float, str], None]


class GalleryManifest(BaseModel):
    """The contents of ``gallery.json``."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    features: str = Field("band_mean_std", description="per-band mean then std of valid pixels")
    tile_size: int = Field(description="tile size the buckets were built with")
    feature_mean: list[float] = Field(description="feature standardisation: mean")
    feature_std: list[float] = Field(description="feature standardisation: std")
    centroids: list[list[float]] = Field(description="k centroids in standardised feature space")
    models: list[str] = Field(description="checkpoint of bucket i, relative to the gallery")
    fallback: str | None = Field(None, description="the global model (all samples)")
    counts: dict[str, list[int]] = Field(
        default_factory=dict, description="tiles/samples per bucket"
    )
    source: dict[str, str] = Field(default_factory=dict, description="scene and samples used")

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> GalleryManifest:
        path = Path(folder) / GALLERY_FILE
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"{path} is not a valid gallery manifest ({exc})", field="model"
            ) from None


def tile_features(data: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Per-band mean and std of the valid pixels of (C, H, W) ``data``; None if none valid."""
    if not valid.any():
        return None
    pix = data[:, valid].astype(np.float64)
    return np.concatenate([pix.mean(axis=1), pix.std(axis=1)])


class CentroidRouter:
    """Routes a tile to the bucket whose centroid is nearest to its features."""

    def __init__(self, manifest: GalleryManifest) -> None:
        self.mean = np.asarray(manifest.feature_mean)
        self.std = np.where(np.asarray(manifest.feature_std) > 0, manifest.feature_std, 1.0)
        self.centroids = np.asarray(manifest.centroids)

    def route(self, data: np.ndarray, valid: np.ndarray) -> int:
        feats = tile_features(data, valid)
        if feats is None:
            return 0
        z = (feats - self.mean) / self.std
        return int(np.argmin(((self.centroids - z) ** 2).sum(axis=1)))


def load_gallery(folder: str | os.PathLike[str], device: str) -> tuple[list[Any], CentroidRouter]:
    """Load every bucket's model and the router; check the models agree.

    Raises:
        InvalidInputError: models with different bands, classes or kinds.
    """
    from geoportal.checkpoint import load_model
    from geoportal.inference.source import LoadedModel

    folder = Path(folder)
    manifest = GalleryManifest.read(folder)
    cache: dict[str, LoadedModel] = {}
    models = []
    for rel in manifest.models:
        if rel not in cache:
            module, info = load_model(folder / rel, device=device)
            cache[rel] = LoadedModel(module, info, folder / rel)
        models.append(cache[rel])
    first = models[0].info
    for m in models[1:]:
        if (m.info.bands, [c.code for c in m.info.classes], m.info.kind) != (
            first.bands,
            [c.code for c in first.classes],
            first.kind,
        ):
            raise InvalidInputError(
                f"gallery {folder.name}: {m.path.name} differs from {models[0].path.name} in "
                "bands, classes or kind; rebuild the gallery from one sample set",
                field="model",
            )
    if len(manifest.centroids) != len(models):
        raise InvalidInputError(
            f"gallery {folder.name}: {len(manifest.centroids)} centroids for {len(models)} models",
            field="model",
        )
    return models, CentroidRouter(manifest)


def scene_tile_features(
    scene: str | os.PathLike[str], tile_size: int, min_valid: float = 0.1
) -> tuple[TileGrid, dict[tuple[int, int], np.ndarray]]:
    """Features of every tile of the scene with at least ``min_valid`` valid pixels."""
    feats: dict[tuple[int, int], np.ndarray] = {}
    with open_scene(scene) as ds:
        grid = TileGrid(ds.width, ds.height, tile_size, 0)
        for tile in grid:
            data = ds.read(window=tile.core)
            ok = valid_mask(data, ds.nodata)
            if ok.mean() >= min_valid:
                f = tile_features(data, ok)
                if f is not None:
                    feats[(tile.row, tile.col)] = f
    return grid, feats


def cluster_tiles(
    features: np.ndarray, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(feature mean, feature std, centroids, labels) of k-means on standardised features."""
    from sklearn.cluster import KMeans

    if len(features) < k:
        raise InvalidInputError(
            f"the scene has {len(features)} usable tiles, fewer than k={k}; use a smaller "
            "tile_size or fewer buckets",
            field="k",
        )
    mean, std = features.mean(axis=0), features.std(axis=0)
    z = (features - mean) / np.where(std > 0, std, 1.0)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    return mean, std, km.cluster_centers_, km.labels_


def build_gallery(
    scene: str | os.PathLike[str],
    samples: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    training_config: Any,
    *,
    k: int = 4,
    tile_size: int = 256,
    min_samples: int = 50,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Build a gallery: bucket the scene's tiles, train a model per bucket, save it all.

    Args:
        scene: the scene the samples were cut from (tiles are clustered on it).
        samples: the sample-set folder (its ``windows`` place samples on the scene).
        out_folder: the gallery folder to create (written atomically).
        training_config: a :class:`geoportal.training.TrainingConfig` or mapping.
        k: number of buckets.
        tile_size: tile size for the features (use about the inference tile size).
        min_samples: buckets with fewer samples use the global model.
        seed: k-means seed.
        progress: ``progress(fraction, message)``.

    Returns:
        The gallery folder.
    """
    from geoportal.containers import Container
    from geoportal.samples import SampleSet
    from geoportal.training import train

    if k < 1:
        raise InvalidInputError("k must be at least 1", field="k")
    report = progress or (lambda f, m: None)
    report(0.0, "tile features")
    grid, feats = scene_tile_features(scene, tile_size)
    keys = sorted(feats)
    mean, std, centroids, labels = cluster_tiles(np.stack([feats[key] for key in keys]), k, seed)
    tile_bucket = dict(zip(keys, labels.tolist(), strict=True))
    sample_set = SampleSet(samples)
    rows_by_bucket: list[list[tuple[str, int, str]]] = [[] for _ in range(k)]
    all_rows: list[tuple[str, int, str]] = []
    z_std = np.where(std > 0, std, 1.0)
    containers: dict[str, Container] = {}
    for ref, cls in sample_set.refs():
        container = containers.get(ref.file) or containers.setdefault(ref.file, Container(ref.file))
        window = container.windows[ref.index]
        col = int(window[0] + window[2] // 2)
        row = int(window[1] + window[3] // 2)
        key = (min(row // tile_size, grid.rows - 1), min(col // tile_size, grid.cols - 1))
        bucket = tile_bucket.get(key)
        if bucket is None:  # a mostly-nodata tile: nearest centroid of its own features
            bucket = _nearest_bucket(scene, grid, key, mean, z_std, centroids)
        rel = os.path.relpath(ref.file, sample_set.folder)
        item = (rel, int(ref.index), cls or "")
        rows_by_bucket[bucket].append(item)
        all_rows.append(item)
    out_folder = Path(out_folder)
    with atomic_path(out_folder) as tmp:
        tmp.mkdir(parents=True)
        n_models = k + 1
        report(0.05, "training the global model")
        _write_selection(tmp / "global", all_rows, sample_set.folder, -1)
        train(
            training_config,
            tmp / "global" / "run",
            samples=tmp / "global" / "selection.csv",
            progress=_sub(report, 0.05, 0.95 / n_models),
        )
        models = []
        for b in range(k):
            if len(rows_by_bucket[b]) < min_samples:
                models.append("global/run/best.pt")
                continue
            name = f"bucket-{b:02d}"
            _write_selection(tmp / name, rows_by_bucket[b], sample_set.folder, b)
            start = 0.05 + 0.95 * (b + 1) / n_models
            report(start, f"training bucket {b + 1}/{k}")
            train(
                training_config,
                tmp / name / "run",
                samples=tmp / name / "selection.csv",
                progress=_sub(report, start, 0.95 / n_models),
            )
            models.append(f"{name}/run/best.pt")
        manifest = GalleryManifest(
            tile_size=tile_size,
            feature_mean=mean.tolist(),
            feature_std=std.tolist(),
            centroids=centroids.tolist(),
            models=models,
            fallback="global/run/best.pt",
            counts={
                "tiles": np.bincount(labels, minlength=k).tolist(),
                "samples": [len(r) for r in rows_by_bucket],
            },
            source={"scene": os.fspath(scene), "samples": os.fspath(samples)},
        )
        atomic_write_text(tmp / GALLERY_FILE, manifest.model_dump_json(indent=2))
    report(1.0, f"gallery of {k} buckets")
    return out_folder


def _nearest_bucket(
    scene: Any,
    grid: TileGrid,
    key: tuple[int, int],
    mean: np.ndarray,
    std: np.ndarray,
    centroids: np.ndarray,
) -> int:
    with open_scene(scene) as ds:
        data = ds.read(window=grid.tile(*key).core)
        feats = tile_features(data, valid_mask(data, ds.nodata))
    if feats is None:
        return 0
    return int(np.argmin((((feats - mean) / std - centroids) ** 2).sum(axis=1)))


def _write_selection(
    folder: Path, rows: list[tuple[str, int, str]], samples: Path, bucket: int
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "index", "class", "cluster"])
    for rel, index, cls in rows:
        writer.writerow([rel, index, cls, bucket])
    atomic_write_text(folder / "selection.csv", buffer.getvalue())
    atomic_write_text(
        folder / "selection.json",
        json.dumps({"samples": os.fspath(Path(samples).resolve()), "count": len(rows)}),
    )


def _sub(report: Progress, start: float, span: float) -> Progress:
    def inner(fraction: float, message: str) -> None:
        f = fraction / 100 if fraction > 1 else fraction
        report(min(start + span * f, 0.999), message)

    return inner
