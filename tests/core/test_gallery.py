"""RESFlow-style gallery: bucket tiles by statistics, one model per bucket, routed by centroid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoportal.classes import CLASS_NODATA
from geoportal.errors import InvalidInputError
from geoportal.inference import InferenceConfig, run_inference
from geoportal.inference.gallery import (
    CentroidRouter,
    GalleryManifest,
    build_gallery,
    cluster_tiles,
    tile_features,
)
from geoportal.training.synthetic import make_sample_set

TRAIN = {
    "model": {"architecture": "patch_cnn", "args": {"width": 8, "depth": 2}},
    "epochs": 1,
    "batch_size": 32,
    "device": "cpu",
    "data": {"augment": False, "val_fraction": 0.25},
}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gallery")
    samples = make_sample_set(
        root / "samples",
        bands=4,
        n_classes=3,
        patch_size=9,
        per_class=60,
        scene_size=160,
        scene_dir=root / "scene",
    )
    scene = root / "scene" / "scene0.tif"
    messages = []
    folder = build_gallery(
        scene,
        samples,
        root / "gallery",
        TRAIN,
        k=2,
        tile_size=40,
        min_samples=10,
        progress=lambda f, m: messages.append((f, m)),
    )
    return scene, folder, messages


def test_build_writes_one_artefact(gallery):
    scene, folder, messages = gallery
    manifest = GalleryManifest.read(folder)
    assert len(manifest.centroids) == 2 == len(manifest.models)
    assert len(manifest.feature_mean) == 8  # 4 bands × (mean, std)
    assert sum(manifest.counts["tiles"]) == 16  # 4×4 tiles of 40 px
    assert sum(manifest.counts["samples"]) == 180
    for rel in {*manifest.models, manifest.fallback}:
        assert (folder / rel).exists()
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    rows = (folder / "bucket-00" / "selection.csv").read_text().splitlines()
    assert rows[0] == "file,index,class,cluster"
    assert not list(folder.parent.glob(".gallery*"))  # atomic: no temporary left


def test_router_picks_nearest_centroid():
    rng = np.random.default_rng(0)
    dark = [rng.normal(100, 5, (2, 8, 8)) for _ in range(10)]
    bright = [rng.normal(900, 50, (2, 8, 8)) for _ in range(10)]
    ok = np.ones((8, 8), bool)
    feats = np.stack([tile_features(t, ok) for t in dark + bright])
    mean, std, centroids, labels = cluster_tiles(feats, 2)
    assert len(set(labels[:10])) == 1 and len(set(labels[10:])) == 1
    manifest = GalleryManifest(
        tile_size=8,
        feature_mean=mean.tolist(),
        feature_std=std.tolist(),
        centroids=centroids.tolist(),
        models=["a.pt", "b.pt"],
    )
    router = CentroidRouter(manifest)
    assert router.route(rng.normal(95, 5, (2, 8, 8)), ok) == labels[0]
    assert router.route(rng.normal(950, 50, (2, 8, 8)), ok) == labels[10]
    with pytest.raises(InvalidInputError, match="fewer than k"):
        cluster_tiles(feats[:1], 2)


def test_gallery_inference_and_bucket_raster(gallery, tmp_path):
    scene, folder, _ = gallery
    config = InferenceConfig(tile_size=40, bucket_raster=True)
    result = run_inference(scene, folder, tmp_path / "g.tif", config)
    assert result.stats.kind == "gallery of patch"
    manifest = json.loads((folder / "gallery.json").read_text())
    with rasterio.open(result.buckets) as ds:
        buckets = ds.read(1)
    with rasterio.open(result.classification) as ds:
        classes = ds.read(1)
    assert set(np.unique(classes)) <= {1, 2, 3}
    # each tile is one bucket, and the buckets match the routing of the build
    tiles = buckets.reshape(4, 40, 4, 40).transpose(0, 2, 1, 3).reshape(16, -1)
    assert all(len(np.unique(t)) == 1 for t in tiles)
    assert set(np.unique(buckets)) - {CLASS_NODATA} == set(range(2))
    counts = np.bincount(tiles[:, 0], minlength=2).tolist()
    assert counts == manifest["counts"]["tiles"]
