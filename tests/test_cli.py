"""The ``geoportal`` command: help for every command, and datasets add/list end to end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import typer.main
from affine import Affine
from typer.testing import CliRunner

from geoportal.cli import app


def command_paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the CLI, as argument paths."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


ALL_COMMANDS = list(command_paths(typer.main.get_command(app)))


@pytest.fixture
def env(tmp_path: Path, settings) -> dict[str, str]:  # noqa: ARG001 - settings clears GEOPORTAL_*
    return {"GEOPORTAL_STORAGE": str(tmp_path / "storage"), "GEOPORTAL_USER": "alice"}


def run(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(app, args, env=env)


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "geoportal"
    assert script.exists(), "the console script is missing: pip install -e ."
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("datasets", "settings"):
        assert name in result.stdout


def test_top_level_help_lists_every_command(env: dict[str, str]) -> None:
    result = run(["--help"], env)
    assert result.exit_code == 0
    top = {path[0] for path in ALL_COMMANDS if len(path) == 1}
    assert {"datasets", "settings"} <= top
    for name in top:
        assert name in result.output


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "geoportal")
def test_every_command_has_help(env: dict[str, str], path: tuple[str, ...]) -> None:
    result = run([*path, "--help"], env)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_datasets_subcommands() -> None:
    assert {("datasets", c) for c in ("add", "add-labels", "list", "catalog")} <= set(ALL_COMMANDS)


def write_raster(path: Path, crs: str | None) -> Path:
    profile = dict(
        driver="GTiff", width=13, height=9, count=1, dtype="uint8",
        transform=Affine(30.0, 0, 630534.0, 0, -30.0, 228114.0),
    )  # fmt: skip
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 9, 13), np.uint8))
    return path


def test_datasets_add_list_and_refusals(
    env: dict[str, str], tmp_path: Path, rgb_scene: Path, nc_scene: Path, nc_labels: Path
) -> None:
    datasets = Path(env["GEOPORTAL_STORAGE"]) / "datasets"
    result = run(["datasets", "list"], env)
    assert result.exit_code == 0 and "datasets/ is empty" in result.output

    result = run(["datasets", "add", str(rgb_scene), str(nc_scene)], env)
    assert result.exit_code == 0, result.output
    assert "added datasets/RGB.byte.tif: 791x718 px, 3 bands (B1, B2, B3), uint8, EPSG:32618" in (
        result.output
    )
    assert "added datasets/lsat7_2000_6band.tif: 489x443 px, 6 bands" in result.output

    # Refusals: one line, exit code 2, naming the file; nothing new in datasets/.
    before = sorted(p.name for p in datasets.iterdir())
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(rgb_scene.read_bytes()[:500_000])
    cases = {
        text: "notes.tif is not a raster",
        write_raster(tmp_path / "nocrs.tif", None): "nocrs.tif has no CRS",
        cut: "cut.tif is a TIFF file but damaged or truncated",
        rgb_scene: "datasets/RGB.byte.tif exists already: pass --replace",
    }
    for path, message in cases.items():
        result = run(["datasets", "add", str(path)], env)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error [") and message in lines[0]
    assert sorted(p.name for p in datasets.iterdir()) == before

    result = run(["datasets", "add", "--replace", str(rgb_scene)], env)
    assert result.exit_code == 0, result.output

    result = run(
        [
            "datasets",
            "add-labels",
            str(nc_labels / "landsat96_polygons.shp"),
            "--class-field",
            "id",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert (
        "added datasets/labels/landsat96_polygons.gpkg: 34 features in EPSG:3358" in result.output
    )
    assert "1:developed (3)" in result.output
    result = run(
        ["datasets", "add-labels", str(nc_labels / "landsat96_polygons.shp"), "--class-field", "x"],
        env,
    )
    assert result.exit_code == 2 and "its fields are: label, id" in result.output

    result = run(["datasets", "list"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split()
    assert header[:2] == ["name", "CRS"] and "bounds" in header
    rgb = next(line for line in lines if line.startswith("RGB.byte.tif"))
    assert "EPSG:32618" in rgb and "791x718" in rgb and "uint8" in rgb
    assert "(101985, 2611485, 339315, 2826915)" in rgb
    nc = next(line for line in lines if line.startswith("lsat7_2000_6band.tif"))
    assert "EPSG:32119" in nc and "489x443" in nc and "float32" in nc and " 6 " in nc
    assert any(line.startswith("landsat96_polygons.gpkg") and "EPSG:3358" in line for line in lines)

    result = run(["datasets", "catalog"], env)
    assert result.exit_code == 0, result.output
    assert "catalogued 2 scenes and 1 labelsets" in result.output
    assert (datasets / "catalog" / "catalog.json").exists()


def test_bad_settings_fail_at_start(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("storage_rot: /x\n")
    result = run(["--config", str(config), "datasets", "list"], env)
    assert result.exit_code == 2
    assert "unknown setting 'storage_rot'" in result.output


def test_only_administrators_write_datasets(
    tmp_path: Path, env: dict[str, str], rgb_scene: Path
) -> None:
    config = tmp_path / "admins.yaml"
    config.write_text("hub:\n  admin_users: [root-admin]\n")
    args = ["--config", str(config), "datasets", "add", str(rgb_scene)]
    result = run(args, env)
    assert result.exit_code == 2
    assert "error [user]: datasets/ is written by administrators only (root-admin)" in result.output
    assert not (Path(env["GEOPORTAL_STORAGE"]) / "datasets" / "RGB.byte.tif").exists()
    result = run(args, {**env, "GEOPORTAL_USER": "root-admin"})
    assert result.exit_code == 0, result.output
    assert run(["--config", str(config), "datasets", "list"], env).exit_code == 0
