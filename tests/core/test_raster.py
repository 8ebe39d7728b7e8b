"""Open and describe scenes: the three real ones, generated odd ones, and one over HTTP."""

from __future__ import annotations

import http.server
import math
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from shapely.geometry import Point, shape

from geoportal.errors import InvalidRasterError, StorageNotFoundError
from geoportal.raster import (
    describe_scene,
    gdal_path,
    open_scene,
    read_window,
    valid_mask,
    validate_scene,
)

# Facts from ../shared/data/README.md, checked independently of our code.
REAL = {
    "nc": dict(
        epsg=32119, size=(489, 443), count=6, dtype="float32", nodata=-99999.0,
        bounds=(630534.0, 215488.5, 644470.5, 228114.0),
        lonlat=(-78.769, 35.692, -78.614, 35.806),
        area=489 * 443 * 28.5**2 / 1e6,
    ),
    "s2": dict(
        epsg=32618, size=(967, 973), count=6, dtype="uint16", nodata=None,
        bounds=(435720.0, 4160000.0, 455060.0, 4179460.0),
        lonlat=(-75.730, 37.585, -75.509, 37.761),
        area=967 * 973 * 20.0**2 / 1e6,
    ),
    "rgb": dict(
        epsg=32618, size=(791, 718), count=3, dtype="uint8", nodata=0.0,
        bounds=(101985.0, 2611485.0, 339315.0, 2826915.0),
        lonlat=(-78.959, 23.565, -76.575, 25.551),
        area=(339315.0 - 101985.0) * (2826915.0 - 2611485.0) / 1e6,
    ),
}  # fmt: skip


@pytest.fixture
def scenes(nc_scene: Path, s2_scene: Path, rgb_scene: Path) -> dict[str, Path]:
    return {"nc": nc_scene, "s2": s2_scene, "rgb": rgb_scene}


@pytest.mark.parametrize("name", sorted(REAL))
def test_describe_real_scenes(scenes: dict[str, Path], name: str) -> None:
    facts = REAL[name]
    info = describe_scene(scenes[name])
    assert info.epsg == facts["epsg"]
    assert info.crs == f"EPSG:{facts['epsg']}"
    assert (info.width, info.height) == facts["size"]
    assert info.count == facts["count"] == len(info.band_names)
    assert info.dtype == facts["dtype"]
    assert info.nodata == facts["nodata"]
    assert info.bounds == pytest.approx(facts["bounds"])
    assert info.area_km2 == pytest.approx(facts["area"], rel=1e-3)
    assert info.bounds_wgs84 == pytest.approx(facts["lonlat"], abs=2e-3)
    assert info.driver == "GTiff"
    # The footprint is a closed WGS84 ring around the scene's centre.
    ring = info.footprint["coordinates"][0]
    assert info.footprint["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) > 5
    lon0, lat0, lon1, lat1 = facts["lonlat"]
    assert shape(info.footprint).contains(Point((lon0 + lon1) / 2, (lat0 + lat1) / 2))
    assert info.to_dict()["width"] == info.width
    assert info.pixels == info.width * info.height


def test_band_names_from_descriptions(nc_scene: Path, rgb_scene: Path) -> None:
    assert describe_scene(nc_scene).band_names[3].startswith("ETM+ B4 (nir)")
    assert describe_scene(rgb_scene).band_names == ("B1", "B2", "B3")


def test_rgb_nodata_collar(rgb_scene: Path) -> None:
    with open_scene(rgb_scene) as ds:
        data = ds.read()
        mask = valid_mask(data, ds.nodata)
    assert 0.60 < mask.mean() < 0.72  # about a third is the nodata collar
    assert not mask[0, 0] and not mask[-1, -1]  # corners are collar
    assert mask[data.shape[1] // 2, data.shape[2] // 2]


def test_validate_real_scenes(scenes: dict[str, Path]) -> None:
    for path in scenes.values():
        assert validate_scene(path).width > 0


def _write(path: Path, data: np.ndarray, *, crs: str | None, nodata=None, **extra) -> Path:
    count, height, width = data.shape
    profile = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
        transform=Affine(30.0, 0, 500000.0, 0, -30.0, 4200000.0), nodata=nodata, **extra,
    )  # fmt: skip
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_generated_odd_size_with_nan_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 23, 37)).astype("float32")
    data[:, :3, :] = np.nan
    data[1, 10, 10] = np.inf
    path = _write(tmp_path / "odd.tif", data, crs="EPSG:32633", nodata=float("nan"))
    info = validate_scene(path)
    assert (info.width, info.height, info.count) == (37, 23, 2)
    assert math.isnan(info.nodata)
    assert info.area_km2 == pytest.approx(37 * 23 * 900 / 1e6)
    with open_scene(path) as ds:
        mask = valid_mask(ds.read(), ds.nodata)
    assert mask.shape == (23, 37)
    assert mask.sum() == 20 * 37 - 1  # the NaN rows and the one infinite pixel are invalid


def test_generated_geographic_scene_area(tmp_path: Path) -> None:
    # One degree by one degree at the equator: about 12,364 km² on the WGS84 ellipsoid.
    data = np.ones((1, 11, 9), dtype="int16")
    profile = dict(
        driver="GTiff", width=9, height=11, count=1, dtype="int16", crs="EPSG:4326",
        transform=Affine(1 / 9, 0, 10.0, 0, -1 / 11, 0.5), nodata=-1,
    )  # fmt: skip
    with rasterio.open(tmp_path / "geo.tif", "w", **profile) as dst:
        dst.write(data)
    info = describe_scene(tmp_path / "geo.tif")
    assert info.epsg == 4326
    assert info.area_km2 == pytest.approx(12364, rel=0.01)
    assert info.bounds_wgs84 == pytest.approx((10.0, -0.5, 11.0, 0.5))


def test_boundless_read_fills_with_nodata(tmp_path: Path) -> None:
    data = np.arange(5 * 7, dtype="uint16").reshape(1, 5, 7) + 1
    path = _write(tmp_path / "small.tif", data, crs="EPSG:32618", nodata=0)
    with open_scene(path) as ds:
        out = read_window(ds, rasterio.windows.Window(-2, -1, 5, 4), boundless=True)
        inner = read_window(ds, rasterio.windows.Window(1, 1, 2, 2))
    assert out.shape == (1, 4, 5)
    assert (out[0, 0] == 0).all() and (out[0, :, :2] == 0).all()
    assert out[0, 1, 2] == data[0, 0, 0]
    assert inner[0].tolist() == data[0, 1:3, 1:3].tolist()


def test_refusals(tmp_path: Path, nc_scene: Path) -> None:
    with pytest.raises(StorageNotFoundError, match="does not exist"):
        open_scene(tmp_path / "missing.tif")
    (tmp_path / "notes.txt").write_text("not a raster\n")
    with pytest.raises(InvalidRasterError, match="notes.txt is not a raster"):
        open_scene(tmp_path / "notes.txt")
    nocrs = _write(tmp_path / "nocrs.tif", np.zeros((1, 4, 4), "uint8"), crs=None)
    with pytest.raises(InvalidRasterError, match="nocrs.tif has no CRS"):
        validate_scene(nocrs)
    cut = tmp_path / "cut.tif"
    data = nc_scene.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidRasterError, match="cut.tif is a TIFF file but damaged or truncated"):
        validate_scene(cut)


def test_truncated_cog_opens_but_fails_validation(tmp_path: Path, s2_scene: Path) -> None:
    # A COG keeps its directory at the start: it still opens when cut, so only decoding
    # every block (validate_scene) finds the damage.
    cog = tmp_path / "s2_cog.tif"
    rasterio.shutil.copy(s2_scene, cog, driver="COG", compress="deflate", overviews="none")
    data = cog.read_bytes()
    cut = tmp_path / "s2_cut.tif"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert describe_scene(cut).width == 967
    with pytest.raises(InvalidRasterError, match="damaged or truncated"):
        validate_scene(cut)


# -- http(s) through /vsicurl/ ------------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support, which GDAL's /vsicurl/ needs."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        match = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        handle = open(path, "rb")  # noqa: SIM115 - the base class closes what send_head returns
        if not match:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            return handle
        start = int(match.group(1) or 0)
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            super().copyfile(source, outputfile)
            return
        while remaining > 0:
            chunk = source.read(min(65536, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)


@pytest.fixture
def range_server(shared_data: Path) -> Iterator[str]:
    """An HTTP server with Range support on 127.0.0.1, serving ../shared/data."""

    def handler(*args, **kwargs):  # type: ignore[no-untyped-def]
        return RangeHandler(*args, directory=str(shared_data), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_describe_over_http(range_server: str, rgb_scene: Path, monkeypatch) -> None:
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    url = f"{range_server}/landsat7_rgb/RGB.byte.tif"
    assert gdal_path(url) == "/vsicurl/" + url
    assert gdal_path(rgb_scene) == str(rgb_scene)
    remote = describe_scene(url)
    local = describe_scene(rgb_scene)
    assert remote.path.startswith("/vsicurl/")
    assert {**remote.to_dict(), "path": ""} == {**local.to_dict(), "path": ""}
    with open_scene(url) as ds:
        window = rasterio.windows.Window(300, 300, 16, 16)
        assert np.array_equal(ds.read(window=window), rasterio.open(rgb_scene).read(window=window))
    with pytest.raises(InvalidRasterError):
        open_scene(f"{range_server}/nc_landsat7/README-missing.tif")


def test_gdal_path_is_untouched_for_local_files(tmp_path: Path) -> None:
    assert gdal_path(os.fspath(tmp_path / "a.tif")) == os.fspath(tmp_path / "a.tif")
