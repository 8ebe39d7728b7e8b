"""Web-map tiles of storage scenes: content, stretch, class colours, access control."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import threading
import urllib.error
import urllib.request

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image

from geoportal.errors import AccessDeniedError, InvalidInputError, StorageNotFoundError
from geoportal.tiles import TileRenderer, TileStyle, tile_url_template

NC = "datasets/lsat7_2000_6band.tif"
TMS = morecantile.tms.get("WebMercatorQuad")


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


@pytest.fixture
def nc_storage(storage, nc_scene):
    shutil.copy(nc_scene, storage.root / NC)
    return storage


def _centre_tile(z: int = 13):
    return TMS.tile(-78.69, 35.75, z)


def test_nc_tile_shows_the_scene(nc_storage) -> None:
    renderer = TileRenderer(nc_storage)
    t = _centre_tile()
    img = _png(renderer.tile("alice", NC, t.z, t.x, t.y))
    assert img.shape == (256, 256, 4)
    opaque = img[..., 3] > 0
    assert opaque.mean() > 0.9  # the tile lies inside the scene
    rgb = img[..., :3][opaque].astype(float)
    assert rgb.std(axis=0).min() > 10  # real texture, not a flat fill
    assert 20 < rgb.mean() < 235
    # A tile far away is fully transparent.
    far = _png(renderer.tile("alice", NC, 13, 0, 0))
    assert far[..., 3].max() == 0


def test_nodata_is_transparent(nc_storage) -> None:
    # The scene's lower-left corner has a nodata collar (15 % of pixels).
    renderer = TileRenderer(nc_storage)
    with rasterio.open(nc_storage.root / NC) as ds:
        from rasterio.warp import transform

        xs, ys = transform(ds.crs, "EPSG:4326", [ds.bounds.left + 50], [ds.bounds.bottom + 50])
    t = TMS.tile(xs[0], ys[0], 12)
    img = _png(renderer.tile("alice", NC, t.z, t.x, t.y))
    assert (img[..., 3] == 0).any() and (img[..., 3] == 255).any()


def test_band_combination_and_stretch(nc_storage) -> None:
    renderer = TileRenderer(nc_storage)
    t = _centre_tile()
    natural = _png(renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(bands=(3, 2, 1))))
    false = _png(renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(bands=(4, 3, 2))))
    mask = natural[..., 3] > 0
    # Vegetation is bright in NIR: the false-colour composite is redder than the natural one.
    red_share_nat = natural[..., 0][mask].mean() / natural[..., :3][mask].mean()
    red_share_false = false[..., 0][mask].mean() / false[..., :3][mask].mean()
    assert red_share_false > red_share_nat + 0.1
    # A wider stretch gives a less contrasted image; explicit ranges are honoured.
    wide = _png(renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(stretch=(0, 100))))
    narrow = _png(renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(stretch=(10, 90))))
    assert narrow[..., :3][mask].std() > wide[..., :3][mask].std()
    grey = _png(
        renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(bands=(4,), ranges=((0, 255),)))
    )
    with rasterio.open(nc_storage.root / NC) as ds:
        nir = ds.read(4, masked=True)
    # With range 0..255 the grey level is the DN itself (8-bit data): means agree roughly.
    assert abs(grey[..., 0][grey[..., 3] > 0].mean() - float(nir.mean())) < 25
    assert (grey[..., 0] == grey[..., 1]).all()


def test_stats_are_cached_per_scene(nc_storage) -> None:
    renderer = TileRenderer(nc_storage)
    path = nc_storage.root / NC
    first = renderer.stats(path)
    assert renderer.stats(path) is first
    lo, hi = first.percentile_range(1, 2, 98)
    with rasterio.open(path) as ds:
        band = ds.read(1, masked=True).compressed()
    assert lo == pytest.approx(np.percentile(band, 2), abs=2)
    assert hi == pytest.approx(np.percentile(band, 98), abs=2)


def test_class_raster_uses_its_colours(storage) -> None:
    from rasterio.transform import from_origin

    path = storage.root / "users/alice/runs/classes.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((200, 200), 255, dtype=np.uint8)
    data[:, :100] = 1
    data[:, 100:] = 2
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="uint8",
        nodata=255,
        crs="EPSG:32119",
        transform=from_origin(635000, 222000, 30, 30),
    ) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, {1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
    renderer = TileRenderer(storage)
    info = renderer.summary("alice", "users/alice/runs/classes.tif")
    assert [c.code for c in info.classes] == [1, 2]
    lon, lat = rasterio.warp.transform("EPSG:32119", "EPSG:4326", [638000], [219000])
    t = TMS.tile(lon[0], lat[0], 11)
    img = _png(renderer.tile("alice", "users/alice/runs/classes.tif", t.z, t.x, t.y))
    colours = {tuple(c) for c in img[img[..., 3] > 0][:, :3]}
    assert colours <= {(255, 0, 0), (0, 0, 255)} and len(colours) == 2


def test_access_denied_to_bobs_raster(nc_storage, nc_scene) -> None:
    bob = nc_storage.root / "users/bob/runs/private.tif"
    bob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(nc_scene, bob)
    renderer = TileRenderer(nc_storage)
    t = _centre_tile()
    with pytest.raises(AccessDeniedError, match="another user"):
        renderer.tile("alice", "users/bob/runs/private.tif", t.z, t.x, t.y)
    with pytest.raises(AccessDeniedError):
        renderer.tile("alice", str(bob), t.z, t.x, t.y)
    assert _png(renderer.tile("bob", "users/bob/runs/private.tif", t.z, t.x, t.y))[..., 3].any()
    with pytest.raises(StorageNotFoundError):
        renderer.tile("alice", "datasets/nothing.tif", t.z, t.x, t.y)
    with pytest.raises(InvalidInputError, match="bands"):
        renderer.tile("alice", NC, t.z, t.x, t.y, TileStyle(bands=(7, 1, 1)))
    with pytest.raises(InvalidInputError, match="stretch"):
        TileStyle.from_query(stretch="90,10")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app):
    """Serve a Tornado app on a free loopback port from a thread; returns (port, stop)."""
    from tornado.httpserver import HTTPServer

    port = _free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            holder["server"] = HTTPServer(app)
            holder["server"].listen(port, "127.0.0.1")
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(holder["server"].stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return port, stop


@pytest.fixture
def tile_server(nc_storage):
    """The standalone tile service for alice on a loopback port, in a thread."""
    from geoportal_hub.tileservice import make_app

    port, stop = _serve(make_app(nc_storage, user="alice", prefix="/services/tiles/"))
    yield f"http://127.0.0.1:{port}/services/tiles"
    stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_endpoint_serves_tiles_and_refuses_bob(tile_server, nc_storage, nc_scene) -> None:
    t = _centre_tile()
    url = tile_url_template(tile_server, NC, TileStyle(bands=(4, 3, 2)))
    status, body = _get(url.format(z=t.z, x=t.x, y=t.y))
    assert status == 200 and _png(body)[..., 3].mean() > 200
    bob = nc_storage.root / "users/bob/private.tif"
    shutil.copy(nc_scene, bob)
    status, body = _get(f"{tile_server}/tiles/{t.z}/{t.x}/{t.y}.png?scene=users/bob/private.tif")
    assert status == 403 and b"another user" in body
    status, body = _get(f"{tile_server}/tiles/{t.z}/{t.x}/{t.y}.png?scene={NC}&bands=1,2")
    assert status == 400
    status, body = _get(f"{tile_server}/info?scene={NC}")
    assert status == 200 and b'"count": 6' in body


def test_hub_mode_requires_hub_login(nc_storage, monkeypatch) -> None:
    """Behind the hub an anonymous tile request is sent to the hub's OAuth login."""
    from geoportal_hub.tileservice import make_app

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "service-token")
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:9/hub/api")
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "service-tiles")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/tiles/")
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/")
    port, stop = _serve(make_app(nc_storage, prefix="/services/tiles/", hub=True))
    try:
        import http.client

        t = _centre_tile()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/services/tiles/tiles/{t.z}/{t.x}/{t.y}.png?scene={NC}")
        response = conn.getresponse()
        assert response.status == 302
        assert "/hub/api/oauth2/authorize" in response.getheader("Location", "")
        assert response.getheader("Content-Type", "") != "image/png"
        conn.close()
    finally:
        stop()
