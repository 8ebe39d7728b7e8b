"""Whole-scene inference: seams, nodata, COG layout, resumption, dense patch models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoportal.checkpoint import ModelInfo, save_checkpoint
from geoportal.classes import CLASS_NODATA
from geoportal.errors import InvalidInputError, InvalidRasterError, StorageNotFoundError
from geoportal.inference import InferenceConfig, run_inference
from geoportal.inference.writer import PROB_SCALE
from geoportal.models import ARCHITECTURES, KINDS, build_model, register
from geoportal.raster import valid_mask
from geoportal.synthetic import make_scene

REPO = Path(__file__).resolve().parents[2]


class TinyFCN(nn.Module):
    """Three 3×3 convolutions: receptive radius 3, fully convolutional."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


if "test_tiny_fcn" not in ARCHITECTURES:
    register("test_tiny_fcn", "segmentation")(
        lambda in_channels, num_classes, **kw: TinyFCN(in_channels, num_classes, **kw)
    )
assert KINDS["test_tiny_fcn"] == "segmentation"


def _classes(k: int) -> list[dict[str, object]]:
    return [
        {"code": i + 1, "name": f"class{i + 1}", "color": "#%02x8040" % (40 * i)} for i in range(k)
    ]


def _stats(scene: Path) -> tuple[list[str], list[float], list[float]]:
    with rasterio.open(scene) as ds:
        data = ds.read().astype(np.float32)
        ok = valid_mask(data, ds.nodata)
        names = [d or f"B{i + 1}" for i, d in enumerate(ds.descriptions)]
    return names, [float(b[ok].mean()) for b in data], [float(b[ok].std()) for b in data]


def make_checkpoint(path: Path, scene: Path, arch: str, kind: str, k: int = 4, **args) -> Path:
    torch.manual_seed(7)
    model = build_model(arch, len(_stats(scene)[0]), k, **args).eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics so eval mode matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    names, mean, std = _stats(scene)
    info = ModelInfo(
        architecture=arch,
        arch_args=args,
        kind=kind,
        bands=names,
        normalisation={"mean": mean, "std": std},
        classes=_classes(k),
        patch_size=args.get("patch_size", 64),
    )
    return save_checkpoint(path, model, info)


def normalised(scene: Path, ckpt: Path) -> tuple[torch.Tensor, np.ndarray]:
    raw = torch.load(ckpt, weights_only=False)
    norm = raw["info"]["normalisation"]
    with rasterio.open(scene) as ds:
        data = ds.read().astype(np.float32)
        ok = valid_mask(data, ds.nodata)
    x = (data - np.array(norm["mean"], np.float32)[:, None, None]) / np.array(
        norm["std"], np.float32
    )[:, None, None]
    x[:, ~ok] = 0
    return torch.from_numpy(x)[None], ok


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    return make_scene(folder, width=203, height=171, bands=4, nodata=None, seed=3).raster


@pytest.fixture(scope="module")
def fcn_ckpt(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(
        tmp_path_factory.mktemp("m") / "fcn.pt", synth, "test_tiny_fcn", "segmentation"
    )


@pytest.mark.parametrize("blend", ["cosine", "crop"])
def test_tiles_equal_whole_image_forward(synth, fcn_ckpt, tmp_path, blend):
    """No seams: tiled, blended output equals one forward pass over the whole scene."""
    model = build_model("test_tiny_fcn", 4, 4).eval()
    model.load_state_dict(torch.load(fcn_ckpt, weights_only=False)["state_dict"])
    x, _ = normalised(synth, fcn_ckpt)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0].numpy()
    config = InferenceConfig(
        tile_size=48, overlap=8, blend=blend, block_tiles=2, batch_size=3, probabilities="all"
    )
    result = run_inference(synth, fcn_ckpt, tmp_path / "out.tif", config)
    with rasterio.open(result.classification) as ds:
        classes = ds.read(1)
    with rasterio.open(result.probabilities) as ds:
        stored = ds.read().astype(np.float32) / PROB_SCALE
    # 2x2-tile blocks of 48-px tiles: block borders, tile borders and edge tiles all occur.
    assert result.stats.blocks == 6 and result.stats.tiles == 20
    assert np.abs(stored - probs).max() <= 1.0 / PROB_SCALE
    expected = np.argmax(probs, axis=0) + 1
    margin = np.sort(probs, axis=0)[-1] - np.sort(probs, axis=0)[-2]
    clear = margin > 1e-4  # ignore exact ties, where float order may flip the winner
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(classes[clear], expected[clear])


def test_edge_tiles_share_the_interior_shape(synth, fcn_ckpt):
    """Edge windows are shifted inwards, not clipped: every tile batches with the others."""
    from geoportal.inference.engine import EDGE_ALIGN, SceneTileReader, make_geometry
    from geoportal.inference.source import load_predictor

    predictor = load_predictor(fcn_ckpt, "cpu")
    geometry = make_geometry(203, 171, predictor, InferenceConfig(tile_size=48, overlap=8))
    reader = SceneTileReader(str(synth), predictor, geometry)
    try:
        shapes: set[tuple[int, int, int]] = set()
        starts: set[int] = set()
        for tile in geometry.grid:
            ext = reader.extent(tile)
            shapes.add(reader.shape(tile))
            core = tile.core
            # The core lies inside the window, with the nominal context wherever the
            # scene has it.
            assert ext.col_off <= max(core.col_off - 8, 0)
            assert ext.col_off + ext.width >= min(core.col_off + core.width + 8, 203)
            assert ext.row_off <= max(core.row_off - 8, 0)
            assert ext.row_off + ext.height >= min(core.row_off + core.height + 8, 171)
            if ext.width != 64:
                starts.add(int(ext.col_off))
            if ext.height != 64:
                starts.add(int(ext.row_off))
    finally:
        reader.close()
    # Nominal windows are 48 + 2 × 8 = 64 px. The far-edge windows end at the scene's
    # edge and start on a multiple of EDGE_ALIGN: (203 - 64) // 32 × 32 = 128 → 75 px
    # wide, (171 - 64) // 32 × 32 = 96 → 75 px high. Clipped windows would come in
    # six sizes (56, 64, 59 wide; 56, 64, 35 high).
    assert shapes == {(4, 64, 64), (4, 64, 75), (4, 75, 64), (4, 75, 75)}
    assert starts == {128, 96} and all(s % EDGE_ALIGN == 0 for s in starts)


def test_blend_hides_receptive_field_overrun(synth, tmp_path):
    """With overlap below the receptive radius, cosine blending still beats a hard crop."""
    ckpt = make_checkpoint(tmp_path / "w.pt", synth, "test_tiny_fcn", "segmentation", width=8)
    model = build_model("test_tiny_fcn", 4, 4, width=8).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    x, _ = normalised(synth, ckpt)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0].numpy()
    errors = {}
    for blend in ("cosine", "crop"):
        config = InferenceConfig(
            tile_size=32, overlap=4, blend=blend, block_tiles=8, probabilities="all"
        )
        out = run_inference(synth, ckpt, tmp_path / f"{blend}.tif", config)
        with rasterio.open(out.probabilities) as ds:
            errors[blend] = np.abs(ds.read().astype(np.float32) / PROB_SCALE - probs).mean()
    assert errors["cosine"] <= errors["crop"] * 1.05


def test_nodata_cog_and_metadata(nc_scene, tmp_path):
    """Nodata wherever any band is nodata; a valid COG with the model's classes."""
    from rio_cogeo.cogeo import cog_validate

    ckpt = make_checkpoint(
        tmp_path / "u.pt", nc_scene, "unet", "segmentation", k=7, base_channels=4, depth=2
    )
    config = InferenceConfig(tile_size=128, overlap=16, block_tiles=2, probabilities="confidence")
    result = run_inference(nc_scene, ckpt, tmp_path / "nc.tif", config)
    with rasterio.open(nc_scene) as src:
        ok = valid_mask(src.read(), src.nodata)
        crs, transform = src.crs, src.transform
    with rasterio.open(result.classification) as ds:
        classes = ds.read(1)
        assert ds.crs == crs and ds.transform == transform
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == CLASS_NODATA
        tagged = json.loads(ds.tags()["GEOPORTAL_CLASSES"])
        assert [c["name"] for c in tagged] == [f"class{i}" for i in range(1, 8)]
        cmap = ds.colormap(1)
        assert cmap[3][:3] == tuple(int(tagged[2]["color"][i : i + 2], 16) for i in (1, 3, 5))
        assert ds.descriptions == ("class",)
    np.testing.assert_array_equal(classes == CLASS_NODATA, ~ok)
    assert set(np.unique(classes[ok])) <= set(range(1, 8))
    assert "class7" in Path(f"{result.classification}.aux.xml").read_text()
    valid, errors, _ = cog_validate(str(result.classification))
    assert valid, errors
    assert cog_validate(str(result.probabilities))[0]
    with rasterio.open(result.probabilities) as ds:
        conf = ds.read(1)
    assert (conf[~ok] == CLASS_NODATA).all() and (conf[ok] >= PROB_SCALE // 7).all()
    stats = json.loads(result.stats_path.read_text())
    assert stats["valid_pixels"] == int(ok.sum())
    assert stats["pixels"] == 489 * 443
    assert stats["area_km2"] == pytest.approx(489 * 443 * 28.5 * 28.5 / 1e6, rel=1e-6)
    assert set(stats["stages"]) >= {"read", "forward", "blend", "write", "assemble"}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.suffix != ".pt")


def test_patch_model_dense_equals_per_patch(nc_scene, tmp_path):
    """Every pixel gets the class of the patch centred on it (reflected at the edges)."""
    p = 9
    ckpt = make_checkpoint(
        tmp_path / "p.pt", nc_scene, "patch_cnn", "patch", k=7, patch_size=p, width=8, depth=3
    )
    config = InferenceConfig(tile_size=100, block_tiles=2, batch_size=4)
    result = run_inference(nc_scene, ckpt, tmp_path / "dense.tif", config)
    with rasterio.open(result.classification) as ds:
        dense = ds.read(1)
    model = build_model("patch_cnn", 6, 7, patch_size=p, width=8, depth=3).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    x, ok = normalised(nc_scene, ckpt)
    padded = torch.nn.functional.pad(x, (p // 2, p - 1 - p // 2) * 2, mode="reflect")
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(ok)
    pick = rng.choice(len(rows), 300, replace=False)
    samples = [(int(rows[i]), int(cols[i])) for i in pick]
    samples += [(r, c) for r, c in [(0, 0), (442, 488), (0, 488), (99, 100), (100, 99)] if ok[r, c]]
    patches = torch.cat([padded[:, :, r : r + p, c : c + p] for r, c in samples])
    with torch.no_grad():
        expected = model(patches).argmax(1).numpy() + 1
    got = np.array([dense[r, c] for r, c in samples])
    assert (got == expected).mean() >= 0.99  # float ties aside, identical
    assert result.stats.kind == "patch"

    strided = run_inference(
        nc_scene, ckpt, tmp_path / "s.tif", InferenceConfig(tile_size=100, patch_stride=4)
    )
    with rasterio.open(strided.classification) as ds:
        coarse = ds.read(1)
    centres = coarse[2:400:4, 2:400:4]
    assert (centres == dense[2:400:4, 2:400:4])[ok[2:400:4, 2:400:4]].mean() >= 0.99


def test_bad_inputs_fail_before_work(nc_scene, synth, fcn_ckpt, tmp_path):
    out = tmp_path / "out.tif"
    with pytest.raises(InvalidInputError, match="bands") as info:
        run_inference(nc_scene, fcn_ckpt, out)  # 4-band model, 6-band scene
    assert info.value.field == "model"
    with pytest.raises(InvalidInputError, match="larger than the overlap"):
        run_inference(synth, fcn_ckpt, out, InferenceConfig(tile_size=16, overlap=16))
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InvalidRasterError, match="not a raster"):
        run_inference(junk, fcn_ckpt, out)
    with pytest.raises(StorageNotFoundError):
        run_inference(tmp_path / "missing.tif", fcn_ckpt, out)
    no_crs = tmp_path / "nocrs.tif"
    with rasterio.open(synth) as src:
        profile = src.profile | {"crs": None}
        data = src.read()
    with rasterio.open(no_crs, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(InvalidRasterError, match="no CRS"):
        run_inference(no_crs, fcn_ckpt, out)
    with pytest.raises(InvalidInputError, match="fp16 needs a GPU"):
        run_inference(synth, fcn_ckpt, out, InferenceConfig(precision="fp16", device="cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.tif", "nocrs.tif"]


def test_bf16_reports_agreement(synth, fcn_ckpt, tmp_path):
    config = InferenceConfig(tile_size=64, overlap=8, precision="bf16", device="cpu")
    result = run_inference(synth, fcn_ckpt, tmp_path / "bf16.tif", config)
    assert result.stats.precision == "bf16"
    assert 0.9 <= result.stats.agreement_vs_fp32 <= 1.0


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from geoportal.inference import InferenceConfig, run_inference
    parts = Path(sys.argv[3]).parent / ".out.parts"
    def progress(fraction, message):
        if len(list(parts.glob("block-*.npz"))) >= 2:
            os.kill(os.getpid(), signal.SIGKILL)
    config = InferenceConfig(tile_size=48, overlap=8, block_tiles=1, probabilities="all")
    run_inference(sys.argv[1], sys.argv[2], sys.argv[3], config, progress=progress)
    """
)


def test_killed_run_resumes_byte_identical(synth, tmp_path):
    """SIGKILL mid-run, rerun: finished blocks are skipped and the bytes are the same."""
    ckpt = make_checkpoint(
        tmp_path / "u.pt", synth, "unet", "segmentation", base_channels=4, depth=2
    )
    config = InferenceConfig(tile_size=48, overlap=8, block_tiles=1, probabilities="all")
    whole = run_inference(synth, ckpt, tmp_path / "whole.tif", config)
    out = tmp_path / "resumed" / "out.tif"
    out.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(synth), str(ckpt), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    parts = list((out.parent / ".out.parts").glob("block-*.npz"))
    assert 2 <= len(parts) < whole.stats.blocks
    resumed = run_inference(synth, ckpt, out, config)
    assert resumed.stats.blocks_resumed == len(parts)
    assert out.read_bytes() == whole.classification.read_bytes()
    assert resumed.probabilities.read_bytes() == whole.probabilities.read_bytes()
    assert not (out.parent / ".out.parts").exists()


def test_cli_infer(synth, fcn_ckpt, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from geoportal.cli import app

    monkeypatch.setenv("GEOPORTAL_STORAGE", str(tmp_path / "storage"))
    out = tmp_path / "cli.tif"
    args = ["infer", str(synth), str(fcn_ckpt), "--out", str(out), "--tile-size", "64"]
    result = CliRunner().invoke(app, [*args, "--probabilities", "confidence"])
    assert result.exit_code == 0, result.output
    assert "/12 tiles" in result.output and f"classification: {out}" in result.output
    assert out.exists() and (tmp_path / "cli_confidence.tif").exists()
    bad = CliRunner().invoke(app, [*args, "--overlap", "64"])
    assert bad.exit_code == 2 and "error [tile_size]" in bad.output
