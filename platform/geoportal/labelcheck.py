"""Suspect labels: features whose pixels the other labels call another class.

Labels copied from an older map, or drawn in a hurry, contain features whose
class the image contradicts: in the NC data a 1996 "water" polygon whose 2000
pixels read like the forest next to it. A model trained on such a feature
learns the contradiction and repeats it elsewhere (there: a forest stand
mapped as water). This module finds such features before training, with the
classification filter of Brodley & Friedl (1999, "Identifying mislabeled
training data", developed for land-cover maps), applied per feature:

* every valid pixel of every feature (band values standardised over all
  labelled pixels; at most ``max_pixels`` per feature, drawn with a fixed seed)
  is classified by a vote of its ``k`` nearest pixels among the *other*
  features, so a feature can never vouch for itself (its own pixels are
  excluded, not just the pixel itself);
* a feature is **suspect** when at most ``max_own_share`` of its pixels' votes
  name its own class and a single other class gets at least
  ``min_other_share``.

It is a check, not a verdict: the researcher looks at the suspects (the map can
show them), fixes or drops them. ``drop_suspects`` writes the labels without
them. Classes that are spectrally close (shrubland and forest) produce low own
shares without a clear other class, which is why both thresholds exist.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import WindowError
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds

from geoportal.errors import InvalidInputError
from geoportal.labels import CLASS_CODE, read_labels
from geoportal.raster import open_scene, valid_mask


@dataclass(frozen=True)
class LabelCheckConfig:
    """Thresholds of the check (defaults: flag only clear contradictions)."""

    k: int = 7
    max_own_share: float = 0.2
    min_other_share: float = 0.6
    max_pixels: int = 200
    all_touched: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidInputError("k must be at least 1", field="k")
        if not 0 <= self.max_own_share < self.min_other_share <= 1:
            raise InvalidInputError(
                "need 0 <= max_own_share < min_other_share <= 1", field="max_own_share"
            )
        if self.max_pixels < 1:
            raise InvalidInputError("max_pixels must be at least 1", field="max_pixels")


@dataclass(frozen=True)
class FeatureCheck:
    """The verdict on one feature (``index``: its row in the labels file, from 0)."""

    index: int
    label: str
    kind: str
    pixels: int
    own_share: float | None
    other_class: str | None
    other_share: float | None
    suspect: bool


def _feature_pixels(
    scene: str, labels: str, class_field: str, config: LabelCheckConfig
) -> list[tuple[int, str, str, np.ndarray]]:
    """(index, class name, kind, valid pixels (n, bands)) per feature."""
    rng = np.random.default_rng(config.seed)
    with open_scene(scene) as ds:
        labelset = read_labels(labels, class_field, target_crs=ds.crs)
        names = {c.code: c.name for c in labelset.classes}
        out: list[tuple[int, str, str, np.ndarray]] = []
        frame = labelset.features
        full = Window(0, 0, ds.width, ds.height)
        rows = zip(frame.index, frame.geometry, frame[CLASS_CODE], strict=True)
        for position, geom, code in rows:
            kind = "polygon" if geom.geom_type in ("Polygon", "MultiPolygon") else "point"
            empty = np.empty((0, ds.count), np.float64)
            fw = from_bounds(*geom.bounds, transform=ds.transform)
            c0, r0 = math.floor(fw.col_off) - 1, math.floor(fw.row_off) - 1
            c1 = math.ceil(fw.col_off + fw.width) + 1
            r1 = math.ceil(fw.row_off + fw.height) + 1
            window = Window(c0, r0, c1 - c0, r1 - r0)
            try:
                window = window.intersection(full)
            except WindowError:  # the feature lies outside the scene
                out.append((int(position), names[int(code)], kind, empty))
                continue
            data = ds.read(window=window)
            inside = ~geometry_mask(
                [geom],
                out_shape=data.shape[1:],
                transform=ds.window_transform(window),
                all_touched=config.all_touched or kind == "point",
            )
            pixels = data[:, inside & valid_mask(data, ds.nodata)].T.astype(np.float64)
            if len(pixels) > config.max_pixels:
                pixels = pixels[np.sort(rng.choice(len(pixels), config.max_pixels, replace=False))]
            out.append((int(position), names[int(code)], kind, pixels))
    return out


def check_labels(
    scene: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    class_field: str,
    config: LabelCheckConfig | None = None,
) -> list[FeatureCheck]:
    """Check every feature of ``labels`` against the others on ``scene``.

    Returns:
        One :class:`FeatureCheck` per feature, in the file's order (features
        without valid pixels get ``own_share=None`` and are never suspect).

    Raises:
        StorageNotFoundError, InvalidRasterError, LabelsNotFoundError, InvalidInputError:
            as reading the scene and the labels does.
    """
    config = config or LabelCheckConfig()
    features = _feature_pixels(os.fspath(scene), os.fspath(labels), class_field, config)
    counted = [f for f in features if len(f[3])]
    if not counted:
        return [FeatureCheck(i, c, k, 0, None, None, None, False) for i, c, k, _ in features]
    x = np.concatenate([f[3] for f in counted])
    owner = np.concatenate([np.full(len(f[3]), n) for n, f in enumerate(counted)])
    class_names = sorted({f[1] for f in counted})
    cls = np.concatenate([np.full(len(f[3]), class_names.index(f[1])) for f in counted])
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    votes = _neighbour_votes(x, owner, cls, len(class_names), config.k)
    results = {}
    for n, (index, name, kind, pixels) in enumerate(counted):
        tally = votes[owner == n].sum(axis=0)
        total = tally.sum()
        if total == 0:  # no other feature has pixels
            results[index] = FeatureCheck(index, name, kind, len(pixels), None, None, None, False)
            continue
        own = tally[class_names.index(name)] / total
        others = tally.copy()
        others[class_names.index(name)] = -1
        best = int(np.argmax(others))
        other_share = float(others[best] / total)
        suspect = own <= config.max_own_share and other_share >= config.min_other_share
        results[index] = FeatureCheck(
            index, name, kind, len(pixels), round(float(own), 4), class_names[best],
            round(other_share, 4), bool(suspect),
        )  # fmt: skip
    return [
        results.get(i, FeatureCheck(i, c, k, 0, None, None, None, False)) for i, c, k, _ in features
    ]


def _neighbour_votes(
    x: np.ndarray, owner: np.ndarray, cls: np.ndarray, n_classes: int, k: int
) -> np.ndarray:
    """(n, n_classes) votes of each pixel's k nearest pixels of other features.

    Brute force in row chunks of about 2**22 distances (32 MiB): the work grows
    with the square of the sampled pixels (``max_pixels`` per feature caps it; 30,000
    pixels take a few seconds).
    """
    votes = np.zeros((len(x), n_classes), np.int64)
    k = min(k, len(x) - 1)
    if k < 1:
        return votes
    sq = (x**2).sum(axis=1)
    rows_per_chunk = max(1, (1 << 22) // len(x))
    for start in range(0, len(x), rows_per_chunk):
        stop = min(start + rows_per_chunk, len(x))
        d = sq[start:stop, None] + sq[None, :] - 2.0 * x[start:stop] @ x.T
        d[owner[start:stop, None] == owner[None, :]] = np.inf  # never its own feature
        near = np.argpartition(d, k - 1, axis=1)[:, :k]
        usable = np.isfinite(np.take_along_axis(d, near, axis=1))
        rows = np.broadcast_to(np.arange(start, stop)[:, None], near.shape)
        np.add.at(votes, (rows[usable], cls[near[usable]]), 1)
    return votes


def drop_suspects(
    labels: str | os.PathLike[str],
    checks: list[FeatureCheck],
    out: str | os.PathLike[str],
    *,
    kinds: tuple[str, ...] = ("polygon", "point"),
) -> Path:
    """Write ``labels`` without the suspect features of the given kinds (a GeoPackage)."""
    import geopandas as gpd

    from geoportal.atomic import atomic_path

    frame = gpd.read_file(labels)
    drop = [c.index for c in checks if c.suspect and c.kind in kinds]
    if not set(drop) <= set(frame.index):
        raise InvalidInputError(
            "the checks name features these labels do not have: check these labels first",
            field="labels",
        )
    kept = frame.drop(index=drop)
    out = Path(out)
    with atomic_path(out) as tmp:
        kept.to_file(tmp, driver="GPKG", layer="labels")
    return out


def checks_table(checks: list[FeatureCheck]) -> list[dict[str, object]]:
    """Rows for a CSV or a DataFrame."""
    return [asdict(c) for c in checks]
