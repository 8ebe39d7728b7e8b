"""Sample sets cut from :func:`geoportal.synthetic.make_scene`, for tests, benchmarks and demos.

They have the exact layout extraction writes (``dataset.json`` plus class
folders of containers, or ``tiles/`` with masks), with seeded content whose
classes a model can learn, so training is exercised end to end without
real data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio

from geoportal.containers import ContainerWriter
from geoportal.samples import (
    SEGMENTATION_DIR,
    ClassModel,
    Normalisation,
    SampleSetMeta,
    write_sample_set_meta,
)
from geoportal.synthetic import make_scene, synthetic_classes


def make_sample_set(
    folder: str | os.PathLike[str],
    *,
    mode: Literal["patch", "segmentation"] = "patch",
    bands: int = 4,
    n_classes: int = 3,
    patch_size: int = 9,
    per_class: int = 40,
    tiles: int = 24,
    seed: int = 0,
    scene_size: int = 160,
    scene_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a sample set into ``folder`` and return it.

    Args:
        mode: ``patch`` (``per_class`` patches per class) or ``segmentation``
            (``tiles`` random tiles of ``patch_size`` with masks).
        bands, n_classes, seed, scene_size: passed to the generated scene.
        scene_dir: where the scene is written (default: beside ``folder``).
    """
    folder = Path(folder)
    scene = make_scene(
        scene_dir or folder.parent / f".{folder.name}-scene",
        width=scene_size,
        height=scene_size,
        bands=bands,
        n_classes=n_classes,
        seed=seed,
        nodata=None,
        name=f"scene{seed}",
    )
    with rasterio.open(scene.raster) as src:
        data = src.read()
        crs = src.crs.to_string()
        transform = list(src.transform)[:6]
    truth = scene.truth
    classes = synthetic_classes(n_classes)
    band_names = [f"band {i + 1}" for i in range(bands)]
    rng = np.random.default_rng(seed)
    p = patch_size
    h, w = truth.shape
    flat = data.reshape(bands, -1).astype(np.float64)
    norm = Normalisation(mean=flat.mean(axis=1).tolist(), std=flat.std(axis=1).tolist())
    counts: dict[str, int] = {}
    common = dict(bands=band_names, patch_size=p, dtype=data.dtype, crs=crs,
                  source=str(scene.raster), transform=transform)  # fmt: skip
    if mode == "patch":
        for info in classes:
            rows, cols = np.nonzero(truth[p // 2 : h - p, p // 2 : w - p] == info.code)
            pick = rng.choice(len(rows), size=min(per_class, len(rows)), replace=False)
            with ContainerWriter(folder / info.name / "part-00000.npy", **common) as writer:
                for i in pick:
                    r0, c0 = int(rows[i]), int(cols[i])
                    writer.append(data[:, r0 : r0 + p, c0 : c0 + p], (c0, r0, p, p), info.code)
            counts[info.name] = len(pick)
    else:
        with ContainerWriter(
            folder / SEGMENTATION_DIR / "part-00000.npy", with_masks=True, **common
        ) as writer:
            for _ in range(tiles):
                r0, c0 = int(rng.integers(0, h - p)), int(rng.integers(0, w - p))
                mask = truth[r0 : r0 + p, c0 : c0 + p]
                writer.append(data[:, r0 : r0 + p, c0 : c0 + p], (c0, r0, p, p), mask=mask)
        counts = {"tiles": tiles}
    meta = SampleSetMeta(
        mode=mode,
        bands=band_names,
        patch_size=p,
        dtype=str(data.dtype),
        crs=crs,
        classes=[ClassModel(code=c.code, name=c.name, color=c.color) for c in classes],
        normalisation=norm,
        source={"raster": str(scene.raster), "labels": str(scene.labels), "class_field": "label"},
        counts=counts,
    )
    write_sample_set_meta(folder, meta)
    return folder
