"""Sample extraction on real scenes (NC Landsat 7, Sentinel-2) and generated rasters."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from geoportal.containers import Container
from geoportal.errors import InvalidInputError, LabelsNotFoundError
from geoportal.labels import rasterize_labels, read_labels
from geoportal.raster import valid_mask
from geoportal.samples import SampleSet
from geoportal.sampling.extract import ExtractConfig, extract_samples
from geoportal.synthetic import make_scene


def _all_samples(folder: Path):
    """(class name, patch, window, label) for every sample of a set."""
    out = []
    for name, path in SampleSet(folder).container_files():
        c = Container(path)
        for i in range(len(c)):
            lab = None if c.labels is None else int(c.labels[i])
            out.append((name, c[i], tuple(int(v) for v in c.windows[i]), lab))
    return out


def test_nc_polygons_names_other_crs(nc_scene, nc_labels, tmp_path):
    """Polygons in EPSG:3358 on an EPSG:32119 scene, class field with names."""
    cfg = ExtractConfig(patch_size=7, class_field="label", stride=2)
    res = extract_samples(nc_scene, nc_labels / "landsat96_polygons.shp", tmp_path / "set", cfg)
    meta = SampleSet(tmp_path / "set").meta
    assert meta.mode == "patch" and meta.dtype == "float32" and len(meta.bands) == 6
    assert {c.name for c in meta.classes} == {
        "developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"
    }  # fmt: skip
    with rasterio.open(nc_scene) as src:
        scene = src.read()
        labelset = read_labels(nc_labels / "landsat96_polygons.shp", "label")
        burnt = rasterize_labels(labelset, src.transform, src.shape, src.crs)
    codes = {c.name: c.code for c in meta.classes}
    samples = _all_samples(tmp_path / "set")
    assert len(samples) == res.summary["samples"] == sum(res.summary["counts"].values()) > 300
    for name, patch, (col, row, w, h), lab in samples:
        assert (w, h) == (7, 7) and lab == codes[name]
        r, c = row + 3, col + 3
        assert r % 2 == 0 and c % 2 == 0  # the stride grid
        assert burnt[r, c] == lab  # the class of the label at the patch centre
        np.testing.assert_array_equal(patch, scene[:, row : row + 7, col : col + 7])
        assert (patch != -99999).all()  # min_valid=1 by default
    # normalisation = statistics over all patch pixels
    stack = np.stack([s[1] for s in samples]).astype(np.float64)
    np.testing.assert_allclose(meta.normalisation.mean, stack.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(meta.normalisation.std, stack.std(axis=(0, 2, 3)), rtol=1e-5)
    summary = json.loads((tmp_path / "set" / "summary.json").read_text())
    assert summary["counts"] == meta.counts and len(summary["bands"]) == 6


def test_nc_points_codes_with_companion_names(nc_scene, nc_labels, tmp_path):
    points = nc_labels / "landsat96_points.shp"
    res = extract_samples(
        nc_scene, points, tmp_path / "pts", ExtractConfig(patch_size=5, class_field="id")
    )
    with rasterio.open(nc_scene) as src:
        burnt = rasterize_labels(read_labels(points, "id"), src.transform, src.shape, src.crs)
        scene = src.read()
    samples = _all_samples(tmp_path / "pts")
    assert res.summary["counts"]["forest"] > res.summary["counts"]["water"] > 0
    for _, _, (col, row, _, _), lab in samples:
        assert burnt[row + 2, col + 2] == lab
    # every labelled point pixel whose window is inside and valid became a sample
    valid = valid_mask(scene, -99999)
    expected = 0
    for r, c in zip(*np.nonzero(burnt), strict=True):
        if 2 <= r < burnt.shape[0] - 2 and 2 <= c < burnt.shape[1] - 2:
            expected += bool(valid[r - 2 : r + 3, c - 2 : c + 3].all())
    assert len(samples) == expected


def test_label_raster_matches_independent_count(nc_scene, nc_labels, tmp_path):
    """The labelled-pixels raster: counts equal a direct numpy computation."""
    raster = nc_labels / "landsat96_labelled_pixels.tif"
    cfg = ExtractConfig(patch_size=5, class_names={1: "developed", 5: "forest"}, tile_size=64)
    res = extract_samples(nc_scene, raster, tmp_path / "px", cfg)
    with rasterio.open(raster) as lab, rasterio.open(nc_scene) as src:
        codes = lab.read(1)
        valid = valid_mask(src.read(), src.nodata)
    want: dict[int, int] = {}
    for r, c in zip(*np.nonzero((codes >= 1) & (codes <= 7)), strict=True):
        inside = 2 <= r < codes.shape[0] - 2 and 2 <= c < codes.shape[1] - 2
        if inside and valid[r - 2 : r + 3, c - 2 : c + 3].all():
            want[int(codes[r, c])] = want.get(int(codes[r, c]), 0) + 1
    got = {c.code: res.meta.counts[c.name] for c in res.meta.classes}
    assert {k: v for k, v in got.items() if v} == want
    assert res.meta.counts["developed"] == want[1] and "class 3" in res.meta.counts


def test_sentinel2_uint16_synthetic_labels(s2_scene, tmp_path):
    with rasterio.open(s2_scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    w = (right - left) / 10
    frame = gpd.GeoDataFrame(
        {"cover": ["marsh", "field", "marsh", "ocean"]},
        geometry=[
            box(left + w, bottom + w, left + 2 * w, bottom + 2 * w),
            box(left + 4 * w, bottom + 4 * w, left + 5 * w, bottom + 5 * w),
            box(left + 7 * w, bottom + 1 * w, left + 8 * w, bottom + 2 * w),
            box(right - w / 2, top - w / 2, right + w, top + w),  # reaches past the scene
        ],
        crs=crs,
    ).to_crs("EPSG:4326")
    labels = tmp_path / "s2.gpkg"
    frame.to_file(labels)
    skip = extract_samples(
        s2_scene,
        labels,
        tmp_path / "skip",
        ExtractConfig(patch_size=8, class_field="cover", stride=4),
    )
    shift = extract_samples(
        s2_scene, labels, tmp_path / "shift",
        ExtractConfig(patch_size=8, class_field="cover", stride=4, edge="shift"),
    )  # fmt: skip
    assert skip.meta.dtype == "uint16"
    assert skip.summary["skipped"]["edge"] > 0
    assert shift.summary["counts"]["ocean"] > skip.summary["counts"]["ocean"]
    for _, patch, (col, row, _, _), _ in _all_samples(tmp_path / "shift"):
        assert patch.dtype == np.uint16 and 0 <= col <= 967 - 8 and 0 <= row <= 973 - 8
    assert skip.summary["counts"]["marsh"] > skip.summary["counts"]["field"] > 0
    assert 500 < skip.summary["bands"][0]["mean"] < 2000


@pytest.fixture
def int16_scene(tmp_path):
    return make_scene(
        tmp_path / "gen", width=120, height=100, bands=3, dtype="int16", nodata=-32768,
        nodata_margin=10, seed=3, labels_per_class=8,
    )  # fmt: skip


def test_int16_nodata_min_valid_and_pad(int16_scene, tmp_path):
    full = extract_samples(
        int16_scene.raster, int16_scene.labels, tmp_path / "full",
        ExtractConfig(patch_size=9, class_field="label"),
    )  # fmt: skip
    for _, patch, _, _ in _all_samples(tmp_path / "full"):
        assert (patch != -32768).all()
    pad = extract_samples(
        int16_scene.raster, int16_scene.labels, tmp_path / "pad",
        ExtractConfig(patch_size=31, class_field="label", edge="pad", min_valid=0.5),
    )  # fmt: skip
    samples = _all_samples(tmp_path / "pad")
    assert any((s[1] == -32768).any() for s in samples)
    for _, patch, _, _ in samples:
        assert (patch != -32768).mean() >= 0.5
    assert pad.meta.dtype == "int16" and full.summary["samples"] > 0
    # the statistics ignore nodata, and so do the balanced-sampling features
    assert all(b["min"] > -32768 for b in pad.summary["bands"])
    from geoportal.sampling.features import open_containers, sample_features

    files = [p for _, p in SampleSet(tmp_path / "pad").container_files()]
    feats = sample_features(open_containers(files, "pad"))
    patches = np.concatenate([np.asarray(Container(p).patches, np.float64) for p in files])
    flat = patches.reshape(len(patches), 3, -1)
    flat[flat == -32768] = np.nan
    np.testing.assert_allclose(feats[:, :3], np.nanmean(flat, axis=2), rtol=1e-5)
    np.testing.assert_allclose(feats[:, 3:], np.nanstd(flat, axis=2), rtol=1e-3, atol=1e-2)


def test_segmentation_grid(int16_scene, tmp_path):
    res = extract_samples(
        int16_scene.raster, int16_scene.labels, tmp_path / "seg",
        ExtractConfig(patch_size=16, mode="segmentation", class_field="label", min_valid=0.9),
    )  # fmt: skip
    sset = SampleSet(tmp_path / "seg")
    assert sset.mode == "segmentation"
    files = [p for _, p in sset.container_files()]
    assert files and all(p.parent.name == "tiles" for p in files)
    codes = {c.code for c in sset.meta.classes}
    with rasterio.open(int16_scene.raster) as src:
        burnt = rasterize_labels(
            read_labels(int16_scene.labels, "label"), src.transform, src.shape, src.crs
        )
    total = 0
    for path in files:
        c = Container(path)
        for i in range(len(c)):
            col, row, w, h = (int(v) for v in c.windows[i])
            assert col % 16 == 0 and row % 16 == 0 and (w, h) == (16, 16)
            mask = np.asarray(c.masks[i])
            assert mask.any() and set(np.unique(mask)) <= codes | {0}
            window_labels = burnt[row : row + 16, col : col + 16]
            np.testing.assert_array_equal(mask[mask > 0], window_labels[mask > 0])
            total += 1
    assert total == res.summary["tiles"]
    assert sum(res.meta.counts.values()) == sum(
        int((np.asarray(Container(p).masks) > 0).sum()) for p in files
    )


def test_samples_per_polygon_deterministic(nc_scene, nc_labels, tmp_path):
    cfg = ExtractConfig(patch_size=3, class_field="id", samples_per_polygon=4, seed=7)
    polys = nc_labels / "landsat96_polygons.shp"
    a = extract_samples(nc_scene, polys, tmp_path / "a", cfg)
    b = extract_samples(nc_scene, polys, tmp_path / "b", cfg)
    assert a.summary["counts"] == b.summary["counts"]
    wa = sorted(s[2] for s in _all_samples(tmp_path / "a"))
    wb = sorted(s[2] for s in _all_samples(tmp_path / "b"))
    assert wa == wb
    per_class_polygons = {"developed": 3, "herbaceous": 4, "shrubland": 7, "forest": 7,
                          "water": 7, "sediment": 5}  # fmt: skip
    for name, n in per_class_polygons.items():
        assert 0 < a.summary["counts"][name] <= 4 * n


def test_uint8_and_errors(rgb_scene, tmp_path):
    with rasterio.open(rgb_scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    cx, cy = (left + right) / 2, (bottom + top) / 2
    labels = tmp_path / "rgb.geojson"
    gpd.GeoDataFrame({"code": [3]}, geometry=[box(cx, cy, cx + 6000, cy + 6000)], crs=crs).to_file(
        labels
    )
    res = extract_samples(
        rgb_scene, labels, tmp_path / "rgb", ExtractConfig(patch_size=4, class_field="code")
    )
    assert res.meta.dtype == "uint8" and res.meta.counts == {"class 3": res.summary["samples"]}
    assert res.summary["samples"] > 0
    with pytest.raises(InvalidInputError, match="class_field"):
        extract_samples(rgb_scene, labels, tmp_path / "x", ExtractConfig(patch_size=4))
    with pytest.raises(InvalidInputError, match="patch_size"):
        extract_samples(
            rgb_scene, labels, tmp_path / "x", ExtractConfig(patch_size=0, class_field="code")
        )
    with pytest.raises(LabelsNotFoundError):
        extract_samples(
            rgb_scene, tmp_path / "none.gpkg", tmp_path / "x", ExtractConfig(class_field="c")
        )
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"code": [1]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:4326").to_file(far)
    with pytest.raises(InvalidInputError, match="no sample could be cut"):
        extract_samples(
            rgb_scene, far, tmp_path / "x", ExtractConfig(patch_size=4, class_field="code")
        )
    # nothing under the final name, no temporary leftovers
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
