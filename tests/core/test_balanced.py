"""Balanced sampling: the algorithm on hand-checkable cases, determinism, errors, real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from geoportal.containers import ContainerWriter
from geoportal.errors import InvalidContainerError, InvalidInputError
from geoportal.sampling.balanced import (
    BalancedConfig,
    BalancedSampler,
    balanced_sampling,
    read_selection,
    select_from_clusters,
)
from geoportal.sampling.extract import ExtractConfig, extract_samples
from geoportal.sampling.features import open_containers, sample_features


def write_container(path: Path, patches: np.ndarray, label: int = 1) -> Path:
    n, c, p, _ = patches.shape
    with ContainerWriter(
        path, bands=[f"b{i}" for i in range(c)], patch_size=p, dtype=patches.dtype,
        crs="EPSG:32618", source="generated",
    ) as w:  # fmt: skip
        w.extend(patches, np.zeros((n, 4), np.int32), np.full(n, label))
    return path


def grouped(values_sizes, bands=2, p=4, seed=0) -> np.ndarray:
    """Patches in groups (value, size), in that order; texture grows with the value, so
    both features (mean and std) separate the groups."""
    rng = np.random.default_rng(seed)
    out = [
        value + rng.normal(0, value / 20, size=(n, bands, p, p)).astype(np.float32)
        for value, n in values_sizes
    ]
    return np.concatenate(out).astype(np.float32)


def test_select_from_clusters_by_hand():
    labels = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 2])  # sizes: 0→3, 1→7, 2→1
    order, sizes, taken, selected = select_from_clusters(labels, threshold=3, step=2)
    assert order == [2, 0, 1]
    assert sizes.tolist() == [3, 7, 1]
    # cluster 2 (size 1 < 3): all; cluster 0 (size 3, not < 3): members 1,4,8 → 1,8;
    # cluster 1 (size 7): members 0,2,3,5,6,7,9 → 0,3,6,9
    assert taken.tolist() == [2, 4, 1]
    assert np.flatnonzero(selected).tolist() == [0, 1, 3, 6, 8, 9, 10]
    _, _, taken, selected = select_from_clusters(labels, threshold=100, step=5)
    assert selected.all() and taken.sum() == 11


@pytest.fixture
def hand_set(tmp_path) -> Path:
    """Class 'a': 30 samples near 100 (split over two files), 5 near 1000, 2 near 5000;
    class 'b': 12 near 50 and 3 near 900."""
    root = tmp_path / "set"
    a = grouped([(100, 20), (1000, 5), (5000, 2), (100, 10)])
    write_container(root / "a" / "part-00000.npy", a[:25])
    write_container(root / "a" / "part-00001.npy", a[25:])
    write_container(root / "b" / "part-00000.npy", grouped([(50, 12), (900, 3)], seed=1), 2)
    return root


def test_hand_checkable_run(hand_set, tmp_path):
    cfg = BalancedConfig(n_clusters=3, threshold=10, step=4, seed=0)
    with pytest.raises(InvalidInputError, match="class 'b'"):
        BalancedSampler(BalancedConfig(n_clusters=16, threshold=10, step=4)).run(
            hand_set, tmp_path / "o"
        )
    res = BalancedSampler(cfg).run(hand_set, tmp_path / "out")
    a = res.report_data["classes"]["a"]
    assert [(c["size"], c["taken"]) for c in a["clusters"]] == [(2, 2), (5, 5), (30, 8)]
    # b: 3 clusters from two groups of 12 and 3 → the 12 split; all < 10 except possibly none
    b = res.report_data["classes"]["b"]
    assert sum(c["size"] for c in b["clusters"]) == 15
    assert [c["size"] for c in b["clusters"]] == sorted(c["size"] for c in b["clusters"])
    assert res.report_data["threshold"] == 10 and res.report_data["step"] == 4
    rows = read_selection(res.selection)
    big = a["clusters"][2]["cluster"]
    big_rows = [(f, i) for f, i, k, c in rows if k == "a" and c == big]
    # members of the 100-cluster in (file, index) order: part 0 idx 0..19, part 1 idx 2..11
    members = [("a/part-00000.npy", i) for i in range(20)] + [
        ("a/part-00001.npy", i) for i in range(2, 12)
    ]
    assert big_rows == members[::4]
    rare = {(f, i) for f, i, k, c in rows if k == "a" and c == a["clusters"][0]["cluster"]}
    assert rare == {("a/part-00001.npy", 0), ("a/part-00001.npy", 1)}
    sel = json.loads(res.selection_json.read_text())
    assert sel["count"] == len(rows) == res.count
    assert res.plot is not None and res.plot.read_bytes()[:4] == b"\x89PNG"
    with open(res.selection, newline="") as f:
        assert next(csv.reader(f)) == ["file", "index", "class", "cluster"]


def test_deterministic_and_global(hand_set, tmp_path):
    cfg = BalancedConfig(n_clusters=3, threshold=4, step=3, seed=5)
    one = balanced_sampling(hand_set, tmp_path / "1", cfg, plot=False)
    two = balanced_sampling(hand_set, tmp_path / "2", cfg, plot=False)
    assert one.selection.read_bytes() == two.selection.read_bytes()
    assert one.report.read_bytes() == two.report.read_bytes()
    glob = balanced_sampling(
        hand_set, tmp_path / "g", BalancedConfig(n_clusters=4, threshold=4, step=3, per_class=False)
    )
    rep = glob.report_data
    assert list(rep["classes"]) == ["all"] and rep["per_class"] is False
    clusters = rep["classes"]["all"]["clusters"]
    assert sum(c["size"] for c in clusters) == 52
    assert all(sum(c["classes"].values()) == c["size"] for c in clusters)
    assert {k for f, i, k, c in read_selection(glob.selection)} == {"a", "b"}


def test_automatic_k_finds_the_groups(tmp_path):
    root = tmp_path / "set"
    write_container(root / "only" / "part-00000.npy", grouped([(10, 40), (300, 25), (2000, 15)]))
    res = balanced_sampling(root, tmp_path / "o", BalancedConfig(threshold=20, step=2), plot=False)
    only = res.report_data["classes"]["only"]
    assert only["k_rule"] == "silhouette" and only["n_clusters"] == 3
    assert [(c["size"], c["taken"]) for c in only["clusters"]] == [(15, 15), (25, 13), (40, 20)]
    assert res.report_data["n_clusters"] == "auto"


def test_features_exact_and_skip_nodata(tmp_path):
    rng = np.random.default_rng(0)
    x = (10000 + rng.normal(0, 3, size=(700, 13, 16, 16))).astype(np.uint16)
    x[5, 2, :4, :] = 0  # nodata pixels
    path = write_container(tmp_path / "f" / "part-00000.npy", x)
    feats = sample_features(open_containers([path], "test"), nodata=0)
    ref = x.reshape(700, 13, -1).astype(np.float64)
    ref_mean, ref_std = ref.mean(-1), ref.std(-1)
    valid = ref[5, 2][ref[5, 2] != 0]
    ref_mean[5, 2], ref_std[5, 2] = valid.mean(), valid.std()
    np.testing.assert_allclose(feats[:, :13], ref_mean, rtol=1e-6)
    np.testing.assert_allclose(feats[:, 13:], ref_std, rtol=2e-3, atol=1e-3)


def test_errors_name_the_item(hand_set, tmp_path):
    for kwargs, field in (({"threshold": 0}, "threshold"), ({"step": 0}, "step")):
        with pytest.raises(InvalidInputError) as err:
            BalancedSampler(BalancedConfig(**kwargs))
        assert err.value.field == field and field in str(err.value)
    with pytest.raises(InvalidInputError, match=r"n_clusters \(40\).*class 'a' \(37\)"):
        balanced_sampling(hand_set, tmp_path / "o", BalancedConfig(n_clusters=40))
    (hand_set / "c").mkdir()
    with pytest.raises(InvalidInputError, match="class folder 'c'"):
        balanced_sampling(hand_set, tmp_path / "o", BalancedConfig(n_clusters=2))
    (hand_set / "c").rmdir()
    other = write_container(hand_set / "b" / "part-00001.npy", grouped([(1, 3)], bands=3))
    with pytest.raises(InvalidContainerError, match="part-00001.npy"):
        balanced_sampling(hand_set, tmp_path / "o", BalancedConfig(n_clusters=2))
    other.write_bytes(b"not a numpy file")
    with pytest.raises(InvalidContainerError, match="part-00001.npy.*unreadable"):
        balanced_sampling(hand_set, tmp_path / "o", BalancedConfig(n_clusters=2))
    assert not (tmp_path / "o" / "selection.csv").exists()


def test_nc_landsat_extract_then_balance(nc_scene, nc_labels, tmp_path):
    extract_samples(
        nc_scene, nc_labels / "landsat96_polygons.shp", tmp_path / "nc",
        ExtractConfig(patch_size=5, class_field="label"),
    )  # fmt: skip
    res = balanced_sampling(
        tmp_path / "nc",
        tmp_path / "sel",
        BalancedConfig(n_clusters=3, threshold=30, step=3),
        samples_ref="x/nc",
    )
    rep = res.report_data
    assert set(rep["classes"]) >= {"forest", "water", "developed", "sediment"}
    for name, cls in rep["classes"].items():
        sizes = [c["size"] for c in cls["clusters"]]
        assert sizes == sorted(sizes), name
        for c in cls["clusters"]:
            want = c["size"] if c["size"] < 30 else -(-c["size"] // 3)
            assert c["taken"] == want
    assert rep["selected"] < rep["samples"]
    assert json.loads(res.selection_json.read_text()) == {
        "samples": "x/nc",
        "count": rep["selected"],
    }
    from geoportal.containers import Container

    rows = read_selection(res.selection)
    f, i, k, _ = rows[-1]
    assert Container(tmp_path / "nc" / f).labels is not None and Path(f).parts[0] == k


def test_cli_extract_and_balance(nc_scene, nc_labels, tmp_path, settings):
    from typer.testing import CliRunner

    from geoportal.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app,
        ["samples", "extract", str(nc_scene), str(nc_labels / "landsat96_points.shp"),
         str(tmp_path / "s"), "--class-field", "id", "--patch-size", "3", "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["counts"]["forest"] > 100
    args = ["samples", "balance", str(tmp_path / "s"), str(tmp_path / "o"), "--n-clusters", "2"]
    res = runner.invoke(app, [*args, "--threshold", "20", "--step", "3", "-q", "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "forest:" in res.output and (tmp_path / "o" / "selection.csv").is_file()
    res = runner.invoke(app, [*args, "--step", "0", "-q"])
    assert res.exit_code == 2 and "step" in res.output
