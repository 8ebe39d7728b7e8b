"""Accuracy assessment: PyCM statistics from the windowed matrix, on real NC labels.

The NC classification is built from the real scene: a nearest-centroid
classifier on its six bands (centroids from the labelled pixels), then the
labelled pixels get their label back except a known set of deliberate errors,
so the expected matrix is known exactly. Scene nodata stays nodata (255).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from geoportal.accuracy import AccuracyOptions, assess_accuracy, write_assessment
from geoportal.accuracy.confusion import accumulate
from geoportal.accuracy.report import sanitize
from geoportal.atomic import is_temporary
from geoportal.classes import ClassInfo, classes_to_json, make_classes
from geoportal.errors import GeoportalError, InvalidInputError, LabelsNotFoundError

NC_NAMES = {
    1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland",
    5: "forest", 6: "water", 7: "sediment",
}  # fmt: skip
NC_CLASSES = make_classes(NC_NAMES)


def write_classification(
    path: Path,
    codes: np.ndarray,
    *,
    crs: object,
    transform: Affine,
    classes: list[ClassInfo] | None,
    nodata: int = 255,
) -> Path:
    """A classification raster as the contract has it: uint8, nodata 255, GEOPORTAL_CLASSES.

    (``geoportal.inference``'s writer can replace this once it exists.)
    """
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "nodata": nodata,
        "width": codes.shape[1], "height": codes.shape[0], "crs": crs, "transform": transform,
        "tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "deflate",
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(codes.astype(np.uint8), 1)
        if classes:
            ds.update_tags(GEOPORTAL_CLASSES=json.dumps(classes_to_json(classes)))
            ds.write_colormap(1, {c.code: (*c.rgb, 255) for c in classes})
    return path


class NC:
    """The NC scene's grid, label codes and a classification built from them."""

    def __init__(self, nc_scene: Path, nc_labels: Path) -> None:
        with rasterio.open(nc_scene) as ds:
            bands = ds.read().astype(np.float64)
            self.valid = (ds.read(1) != ds.nodata) & np.all(bands != -99999, axis=0)
            self.crs, self.transform = ds.crs, ds.transform
        with rasterio.open(nc_labels / "landsat96_labelled_pixels.tif") as ds:
            raw = ds.read(1)
        self.labels = np.where(raw == ds.nodata, 0, raw).astype(np.uint8)
        labelled = self.labels > 0
        x = bands.reshape(6, -1).T
        centroids = np.stack([x[(self.labels.ravel() == c)].mean(0) for c in range(1, 8)])
        dist = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
        nearest = (dist.argmin(1) + 1).astype(np.uint8).reshape(self.labels.shape)
        self.truthy = np.where(labelled, self.labels, nearest)
        self.truthy[~self.valid] = 255

    def with_errors(self, fraction: float, seed: int) -> np.ndarray:
        """The label-faithful classification with ``fraction`` of labelled pixels wrong."""
        rng = np.random.default_rng(seed)
        out = self.truthy.copy()
        idx = np.flatnonzero((self.labels > 0) & self.valid)
        wrong = rng.choice(idx, size=int(fraction * idx.size), replace=False)
        flat = out.reshape(-1)
        flat[wrong] = (flat[wrong] % 7) + 1  # always another class
        return out

    def write(
        self, path: Path, codes: np.ndarray, classes: list[ClassInfo] | None = NC_CLASSES
    ) -> Path:
        return write_classification(
            path, codes, crs=self.crs, transform=self.transform, classes=classes
        )

    def label_raster_on_grid(self, path: Path) -> Path:
        """The NC label pixels as uint8 on the scene's own grid and CRS (0 = no label)."""
        return write_classification(
            path, self.labels, crs=self.crs, transform=self.transform, classes=None, nodata=0
        )


@pytest.fixture(scope="module")
def nc(nc_scene: Path, nc_labels: Path) -> NC:
    return NC(nc_scene, nc_labels)


def pycm_from_vectors(actual: np.ndarray, predicted: np.ndarray, names: Mapping[int, str]):
    from pycm import ConfusionMatrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ConfusionMatrix(
            actual_vector=[names[int(v)] for v in actual],
            predict_vector=[names[int(v)] for v in predicted],
        )


def _approx(value):
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    return value


def assert_same_stats(report, cm) -> None:
    """Same statistics as PyCM's own (up to summation order in the last bits)."""
    expected_overall = sanitize(cm.overall_stat)
    expected_class = sanitize(cm.class_stat)
    assert set(report.overall) == set(expected_overall)
    assert report.overall == _approx(expected_overall)
    assert report.per_class == _approx(expected_class)


def assert_nothing_written(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*")] if folder.exists() else []
    assert left == [], f"left behind: {left}"


# -- statistics equal PyCM's own ------------------------------------------------------


def test_statistics_equal_pycm_from_vectors_small_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    shape = (37, 53)
    transform = Affine(10, 0, 500000, 0, -10, 4000000)
    truth = rng.integers(1, 5, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.3, rng.integers(1, 6, size=shape), truth).astype(np.uint8)
    pred[rng.random(shape) < 0.05] = 255
    ref = np.where(rng.random(shape) < 0.4, truth, 0).astype(np.uint8)
    names = {1: "water", 2: "forest", 3: "crop", 4: "urban", 5: "bare"}
    classes = make_classes(names)
    cls = write_classification(
        tmp_path / "c.tif", pred, crs="EPSG:32618", transform=transform, classes=classes
    )
    lab = write_classification(
        tmp_path / "r.tif", ref, crs="EPSG:32618", transform=transform, classes=classes, nodata=0
    )
    # Tiny windows: the matrix is summed over many strips and both threads.
    report = assess_accuracy(cls, lab, window_pixels=65_536, workers=2).report
    keep = (ref > 0) & (pred != 255)
    cm = pycm_from_vectors(ref[keep], pred[keep], names)
    assert report.classes == [names[c] for c in sorted(set(ref[keep]) | set(pred[keep]))]
    assert_same_stats(report, cm)
    assert report.pixels["labelled"] == int((ref > 0).sum())
    assert report.pixels["excluded_nodata"] == int(((ref > 0) & (pred == 255)).sum())
    assert report.pixels["assessed"] == int(keep.sum())


def test_accumulate_dense_and_sparse_paths_agree() -> None:
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 256, size=(64, 64)).astype(np.uint8)
    for density in (0.9, 0.05):
        ref = np.where(rng.random((64, 64)) < density, rng.integers(1, 255, (64, 64)), 0)
        ref = ref.astype(np.uint8)
        hist = np.zeros(65536, dtype=np.int64)
        accumulate(hist, ref, pred)
        expected = np.zeros((256, 256), dtype=np.int64)
        np.add.at(expected, (ref[ref > 0], pred[ref > 0]), 1)
        assert np.array_equal(hist.reshape(256, 256)[1:], expected[1:])


# -- the NC scene ---------------------------------------------------------------------


def test_nc_against_label_raster_is_exact(nc: NC, tmp_path: Path) -> None:
    codes = nc.with_errors(0.1, seed=1)
    cls = nc.write(tmp_path / "cls.tif", codes)
    ref = nc.label_raster_on_grid(tmp_path / "labels.tif")
    report = assess_accuracy(cls, ref).report
    keep = (nc.labels > 0) & (codes != 255)
    assert_same_stats(report, pycm_from_vectors(nc.labels[keep], codes[keep], NC_NAMES))
    # The bare label raster knows codes only; names and colours come from the classification.
    assert set(report.classes) == set(NC_NAMES.values())
    assert report.pixels["labelled"] == 2872
    assert report.pixels["excluded_nodata"] == int(((nc.labels > 0) & ~nc.valid).sum())
    assert 0.85 < report.accuracy < 0.95


def test_nc_polygons_in_another_crs_and_points(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    codes = nc.with_errors(0.1, seed=2)
    cls = nc.write(tmp_path / "cls.tif", codes)
    polygons = nc_labels / "landsat96_polygons.shp"
    assert gpd.read_file(polygons).crs.to_epsg() == 3358  # the scene is EPSG:32119
    poly = assess_accuracy(cls, polygons, class_field="id").report
    assert poly.matching["by"] == "code" and poly.matching["warnings"] == []
    assert poly.inputs["features"] == 34 and poly.inputs["features_outside"] < 34
    assert 1500 < poly.pixels["labelled"] < 3500
    assert poly.accuracy > 0.8
    # The same polygons in lon/lat: reprojected on the fly, (nearly) the same pixels.
    lonlat = tmp_path / "polygons_4326.geojson"
    gpd.read_file(polygons).to_crs("EPSG:4326").to_file(lonlat)
    geo = assess_accuracy(cls, lonlat, class_field="id").report
    assert geo.inputs["crs"] == poly.inputs["crs"]
    assert abs(geo.pixels["labelled"] - poly.pixels["labelled"]) < 0.01 * poly.pixels["labelled"]
    assert geo.accuracy == pytest.approx(poly.accuracy, abs=0.01)

    points = nc_labels / "landsat96_points.shp"
    by_code = assess_accuracy(cls, points, class_field="id").report
    by_name = assess_accuracy(cls, points, class_field="label").report
    assert by_code.matching["by"] == "code" and by_name.matching["by"] == "name"
    assert by_code.pixels == by_name.pixels
    inside = 1000 - by_code.inputs["features_outside"]  # some points lie beyond the scene
    assert 0.9 * inside < by_code.pixels["labelled"] <= inside  # a few share a pixel
    assert sorted(by_code.classes) == sorted(by_name.classes)
    order = [by_name.classes.index(c) for c in by_code.classes]
    assert np.array_equal(by_code.matrix, by_name.matrix[np.ix_(order, order)])
    assert by_code.accuracy == pytest.approx(by_name.accuracy)


def test_nc_float_label_raster_and_other_grid(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    codes = nc.with_errors(0.1, seed=3)
    cls = nc.write(tmp_path / "cls.tif", codes)
    # EPSG:3358 on the scene's EPSG:32119 pixel grid: the same projection, the datums differ
    # by under a metre, so it counts as the same grid. float32 codes, nodata -99999.
    original = nc_labels / "landsat96_labelled_pixels.tif"
    report = assess_accuracy(cls, original).report
    assert report.pixels["labelled"] == 2872
    assert report.pixels["reference_nodata"] == 489 * 443 - 2872
    keep = (nc.labels > 0) & (codes != 255)
    assert_same_stats(report, pycm_from_vectors(nc.labels[keep], codes[keep], NC_NAMES))

    coarse = tmp_path / "coarse_labels.tif"
    half = nc.transform @ Affine.scale(2)
    write_classification(coarse, nc.labels[::2, ::2], crs="EPSG:3358", transform=half,
                         classes=None, nodata=0)  # fmt: skip
    with pytest.raises(InvalidInputError, match="resample") as info:
        assess_accuracy(cls, coarse)
    assert info.value.field == "reference"
    resampled = assess_accuracy(cls, coarse, resample=True).report
    assert resampled.pixels["labelled"] == pytest.approx(4 * int((nc.labels[::2, ::2] > 0).sum()),
                                                         rel=0.02)  # fmt: skip
    assert resampled.accuracy > 0.6


def test_codes_permuted_match_by_name_warn_by_code_and_mapping(
    nc: NC, nc_labels: Path, tmp_path: Path
) -> None:
    codes = nc.with_errors(0.05, seed=4)
    permuted = np.where(codes == 255, 255, 8 - codes).astype(np.uint8)  # 1<->7, 2<->6, ...
    renamed = [ClassInfo(8 - c.code, c.name, c.color) for c in NC_CLASSES]
    cls = nc.write(tmp_path / "perm.tif", permuted, classes=renamed)
    points = nc_labels / "landsat96_polygons.shp"  # fields id (codes) and label (names)
    good = assess_accuracy(cls, points, class_field="label").report
    reference = assess_accuracy(nc.write(tmp_path / "c.tif", codes), points, class_field="label")
    assert good.accuracy == pytest.approx(reference.report.accuracy)
    assert good.accuracy > 0.85
    wrong = assess_accuracy(cls, points, class_field="id").report
    assert wrong.accuracy < good.accuracy - 0.3
    assert any("matched by code" in w for w in wrong.matching["warnings"])
    forced = assess_accuracy(cls, points, class_field="id", match_by="name").report
    assert forced.accuracy == pytest.approx(good.accuracy)

    # No names in the raster: the mapping says which code is which reference class.
    bare = nc.write(tmp_path / "bare.tif", permuted, classes=None)
    with pytest.raises(InvalidInputError, match="mapping") as info:
        assess_accuracy(bare, points, class_field="label")
    assert info.value.field == "mapping"
    mapping = {str(8 - code): name for code, name in NC_NAMES.items()}
    mapped = assess_accuracy(bare, points, class_field="label", mapping=json.dumps(mapping))
    assert mapped.report.accuracy == pytest.approx(good.accuracy)
    assert mapped.report.matching["by"] == "name"


def test_mapping_merges_classes(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    cls = nc.write(tmp_path / "cls.tif", nc.with_errors(0.1, seed=5))
    ref = nc.label_raster_on_grid(tmp_path / "labels.tif")
    # Herbaceous and shrubland predictions both count as "shrubland" (code 4).
    merged = assess_accuracy(cls, ref, mapping={"herbaceous": 4}).report
    assert merged.matching["pairs"]["3"] == "shrubland"
    assert merged.matrix[:, merged.classes.index("herbaceous")].sum() == 0
    plain = assess_accuracy(cls, ref).report
    assert merged.matrix.sum() == plain.matrix.sum()


def test_disjoint_classes_need_a_mapping(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    other = make_classes({c: f"type {c}" for c in range(1, 8)})
    cls = nc.write(tmp_path / "cls.tif", nc.with_errors(0.1, seed=6), classes=other)
    points = nc_labels / "landsat96_polygons.shp"
    with pytest.raises(InvalidInputError, match="nothing in common|no names in common") as info:
        assess_accuracy(cls, points, class_field="label")
    assert info.value.field == "mapping"
    mapping = {f"type {c}": n for c, n in NC_NAMES.items()}
    report = assess_accuracy(cls, points, class_field="label", mapping=mapping).report
    assert report.accuracy > 0.85
    with pytest.raises(InvalidInputError, match="no class of the reference"):
        assess_accuracy(cls, points, class_field="label", mapping={"type 1": "urban"})


def test_baseline_comparison_picks_the_better(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    good = nc.write(tmp_path / "good.tif", nc.with_errors(0.05, seed=7))
    worse_codes = nc.with_errors(0.3, seed=8)
    worse_codes[200:230, :] = 255  # more nodata: the comparison must use common pixels
    worse = nc.write(tmp_path / "worse.tif", worse_codes)
    polygons = nc_labels / "landsat96_polygons.shp"

    a = assess_accuracy(good, polygons, class_field="id", baseline=worse)
    assert a.comparison is not None and a.baseline is not None
    assert a.comparison.better == "new version"
    assert a.comparison.points > 10
    assert a.comparison.pixels < a.report.assessed  # the baseline's extra nodata is left out
    assert "the new version is better by" in a.summary()
    assert a.summary().startswith("Overall ACC ")

    b = assess_accuracy(worse, polygons, class_field="id", baseline=good)
    assert b.comparison is not None and b.comparison.better == "baseline"
    assert b.comparison.points == pytest.approx(a.comparison.points)


def test_outputs_report_html_plot(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    good = nc.write(tmp_path / "good.tif", nc.with_errors(0.05, seed=9))
    worse = nc.write(tmp_path / "worse.tif", nc.with_errors(0.2, seed=10))
    a = assess_accuracy(good, nc_labels / "landsat96_points.shp", class_field="label",
                        baseline=worse)  # fmt: skip
    out = write_assessment(a, tmp_path / "out")
    data = json.loads(out.report.read_text())  # strict JSON: NaN would not parse back as null
    assert {"overall", "class", "pixels", "matrix", "comparison", "summary"} <= set(data)
    assert data["overall"]["Overall ACC"] == pytest.approx(a.report.accuracy)
    assert set(data["class"]["PPV"]) == set(a.report.classes)
    assert "Kappa" in data["overall"] and "F1" in data["class"] and "TPR" in data["class"]
    assert data["pixels"]["labelled"] >= data["pixels"]["assessed"] > 0
    assert data["comparison"]["better"] == "new version"
    html = out.html.read_text()
    assert "Overall ACC" in html and "forest" in html
    assert out.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.report.parent.iterdir() if is_temporary(p)]


def test_undefined_statistics_become_null(tmp_path: Path) -> None:
    transform = Affine(10, 0, 0, 0, -10, 1000)
    ref = np.zeros((20, 20), np.uint8)
    ref[:10] = 1
    ref[10:] = 2
    pred = np.full((20, 20), 1, np.uint8)  # class 2 is never predicted: its PPV is undefined
    classes = make_classes({1: "a", 2: "b"})
    cls = write_classification(tmp_path / "c.tif", pred, crs="EPSG:32618", transform=transform,
                               classes=classes)  # fmt: skip
    lab = write_classification(tmp_path / "r.tif", ref, crs="EPSG:32618", transform=transform,
                               classes=None, nodata=0)  # fmt: skip
    a = assess_accuracy(cls, lab)
    assert a.report.per_class["PPV"]["b"] is None
    out = write_assessment(a, tmp_path / "out")
    assert "NaN" not in out.report.read_text() and '"None"' not in out.report.read_text()


# -- bad input leaves nothing -----------------------------------------------------------


def _check(out: Path, *args, **kwargs) -> None:
    write_assessment(assess_accuracy(*args, **kwargs), out)


def test_error_cases_leave_nothing(nc: NC, nc_labels: Path, tmp_path: Path) -> None:
    cls = nc.write(tmp_path / "cls.tif", nc.with_errors(0.1, seed=11))
    out = tmp_path / "out"
    polygons = nc_labels / "landsat96_polygons.shp"

    far = write_classification(
        tmp_path / "far.tif", nc.truthy, crs=nc.crs,
        transform=nc.transform @ Affine.translation(0, -100_000), classes=NC_CLASSES,
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="does not overlap") as info:
        _check(out, far, polygons, class_field="id")
    assert info.value.field == "reference"

    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"id": []}, geometry=[], crs="EPSG:3358").to_file(empty)
    with pytest.raises(LabelsNotFoundError) as info:
        _check(out, cls, empty, class_field="id")
    assert info.value.field == "reference"
    zeros = write_classification(tmp_path / "zeros.tif", np.zeros_like(nc.labels), crs=nc.crs,
                                 transform=nc.transform, classes=None, nodata=0)  # fmt: skip
    with pytest.raises(InvalidInputError, match="no labelled pixel"):
        _check(out, cls, zeros)

    other = make_classes({c: f"type {c}" for c in range(1, 8)})
    renamed = nc.write(tmp_path / "renamed.tif", nc.truthy, classes=other)
    with pytest.raises(InvalidInputError, match="mapping"):
        _check(out, renamed, nc_labels / "landsat96_points.shp", class_field="label")

    coarse_labels = write_classification(
        tmp_path / "coarse_labels.tif", nc.labels[::2, ::2], crs=nc.crs,
        transform=nc.transform @ Affine.scale(2), classes=None, nodata=0,
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="resample"):
        _check(out, cls, coarse_labels)
    coarse = write_classification(
        tmp_path / "coarse.tif", nc.truthy[::2, ::2], crs=nc.crs,
        transform=nc.transform @ Affine.scale(2), classes=NC_CLASSES,
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="another grid") as info:
        _check(out, cls, polygons, class_field="id", baseline=coarse)
    assert info.value.field == "baseline"

    with pytest.raises(GeoportalError, match="class_field"):
        _check(out, cls, polygons)
    with pytest.raises(InvalidInputError, match="mapping"):
        _check(out, cls, polygons, class_field="id", mapping="{not json")
    assert_nothing_written(out)


def test_a_failing_output_leaves_none_of_the_three(
    nc: NC, nc_labels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = nc.write(tmp_path / "cls.tif", nc.with_errors(0.1, seed=12))
    a = assess_accuracy(cls, nc_labels / "landsat96_polygons.shp", class_field="id")
    import geoportal.accuracy.assess as assess_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(assess_module, "save_plot", broken)
    with pytest.raises(OSError, match="disk full"):
        write_assessment(a, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_options_are_typed() -> None:
    with pytest.raises(Exception, match="extra"):
        AccuracyOptions(colour="red")  # type: ignore[call-arg]
    assert AccuracyOptions(mapping='{"1": "forest"}').mapping == {"1": "forest"}


def test_cli_assess_prints_the_summary(nc: NC, nc_labels: Path, tmp_path: Path, settings) -> None:
    from typer.testing import CliRunner

    from geoportal.cli import app

    good = nc.write(tmp_path / "good.tif", nc.with_errors(0.05, seed=13))
    worse = nc.write(tmp_path / "worse.tif", nc.with_errors(0.2, seed=14))
    env = {"GEOPORTAL_STORAGE": str(settings.storage_root), "GEOPORTAL_USER": "alice"}
    args = ["assess", str(good), str(nc_labels / "landsat96_polygons.shp"), "--class-field",
            "label", "--baseline", str(worse), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("Overall ACC ") and "the new version is better by" in first
    assert (tmp_path / "out" / "report.json").is_file()
    bad = CliRunner().invoke(
        app, ["assess", str(good), str(nc_labels / "landsat96_polygons.shp"), "--out",
              str(tmp_path / "bad")], env=env,
    )  # fmt: skip
    assert bad.exit_code == 2 and "class_field" in bad.output
    assert not (tmp_path / "bad").exists()
