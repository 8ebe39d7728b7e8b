"""The tile service: web-map tiles of storage scenes over HTTP.

Two ways to run the same Tornado app:

* **hub service** at ``/services/tiles/`` (JupyterHub starts it; see
  :func:`hub_service`): every request is authenticated with the hub, by an
  ``Authorization: token …`` header (scripts, OWSLib-like clients) or the
  service's OAuth cookie (browsers: Leaflet ``<img>`` tile requests follow the
  hub's no-confirm OAuth redirect once and carry the cookie afterwards). The
  caller's hub name is the storage user.
* **standalone** (``geoportal tiles --port``, tests, notebooks without a hub):
  one fixed user, bound to loopback by default, optionally with a shared token.

Either way each request goes through :meth:`geoportal.storage.Storage.resolve`
for the caller, so alice cannot tile ``users/bob/…``. Rendering is blocking GDAL
work, so it runs in a thread pool (GDAL releases the GIL) and the event loop
stays free. Tornado is already a dependency of JupyterHub and Jupyter, so the
service adds no web framework; the core (``geoportal.tiles``) knows no HTTP.

Routes (under the prefix):
    ``GET tiles/{z}/{x}/{y}.png?scene=…&bands=4,3,2&stretch=2,98`` a PNG tile;
    ``GET info?scene=…`` JSON bounds, bands, classes, zoom range;
    ``GET health`` "ok".
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer

from geoportal.errors import (
    AccessDeniedError,
    GeoportalError,
    InvalidInputError,
    StorageNotFoundError,
)
from geoportal.storage import Storage
from geoportal.tiles import TileRenderer, TileStyle

log = logging.getLogger("geoportal.tiles")
SERVICE_NAME = "tiles"


def _status_for(exc: GeoportalError) -> int:
    if isinstance(exc, AccessDeniedError):
        return 403
    if isinstance(exc, StorageNotFoundError):
        return 404
    if isinstance(exc, InvalidInputError):
        return 400
    return 422


class _Base(web.RequestHandler):
    """Shared plumbing: the caller's name, error replies, the renderer."""

    @property
    def renderer(self) -> TileRenderer:
        return self.settings["renderer"]  # type: ignore[no-any-return]

    def user_name(self) -> str:
        user = self.current_user
        if isinstance(user, dict):
            return str(user["name"])
        return str(user)

    def scene(self) -> str:
        scene = self.get_query_argument("scene", "")
        if not scene:
            raise InvalidInputError("scene is missing: add ?scene=<storage path>", field="scene")
        return scene

    async def in_thread(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.settings["executor"], func, *args)

    def fail(self, exc: GeoportalError) -> None:
        self.set_status(_status_for(exc))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": exc.message, "field": exc.field}))


class _StandaloneAuth(web.RequestHandler):
    """One fixed user; an optional shared token (header or ``?token=``)."""

    def get_current_user(self) -> str | None:
        token = self.settings.get("shared_token")
        if token:
            given = self.get_query_argument("token", "")
            header = self.request.headers.get("Authorization", "")
            if header.lower().startswith(("token ", "bearer ")):
                given = header.split(None, 1)[1]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return None
        return str(self.settings["fixed_user"])

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "a valid token is required")


class _TileMixin:
    @web.authenticated
    async def get(self, z: str, x: str, y: str) -> None:
        handler: Any = self
        try:
            style = TileStyle.from_query(
                handler.get_query_argument("bands", None),
                handler.get_query_argument("stretch", None),
                handler.get_query_argument("ranges", None),
            )
            png = await handler.in_thread(
                handler.renderer.tile,
                handler.user_name(),
                handler.scene(),
                int(z),
                int(x),
                int(y),
                style,
            )
        except GeoportalError as exc:
            handler.fail(exc)
            return
        handler.set_header("Content-Type", "image/png")
        handler.set_header("Cache-Control", "private, max-age=300")
        handler.finish(png)


class _InfoMixin:
    @web.authenticated
    async def get(self) -> None:
        handler: Any = self
        try:
            summary = await handler.in_thread(
                handler.renderer.summary, handler.user_name(), handler.scene()
            )
        except GeoportalError as exc:
            handler.fail(exc)
            return
        handler.set_header("Content-Type", "application/json")
        handler.finish(json.dumps(summary.to_dict()))


class _HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish("ok")


def make_app(
    storage: Storage,
    *,
    prefix: str = "/",
    user: str | None = None,
    token: str | None = None,
    hub: bool = False,
    threads: int = 4,
) -> web.Application:
    """Build the Tornado application.

    Args:
        storage: where scenes are resolved.
        prefix: URL prefix (``/services/tiles/`` behind the hub).
        user: the fixed caller in standalone mode.
        token: a shared token required in standalone mode (None = none, loopback use).
        hub: authenticate against JupyterHub (environment set by the hub).
        threads: rendering threads.
    """
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    settings: dict[str, Any] = {
        "renderer": TileRenderer(storage),
        "executor": ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tiles"),
    }
    routes: list[Any] = [(prefix + "health", _HealthHandler)]
    if hub:
        from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated

        auth = HubOAuth(api_token=os.environ["JUPYTERHUB_API_TOKEN"], cache_max_age=60)
        base: tuple[type, ...] = (HubOAuthenticated, _Base)
        settings.update(
            hub_auth=auth,
            cookie_secret=os.environ.get("GEOPORTAL_TILES_COOKIE_SECRET")
            or secrets.token_bytes(32),
        )
        routes.append((prefix + "oauth_callback", HubOAuthCallbackHandler))
    else:
        if not user:
            raise InvalidInputError("standalone tile service needs a user", field="user")
        base = (_StandaloneAuth, _Base)
        settings.update(fixed_user=user, shared_token=token)
    tile_handler = type("TileHandler", (_TileMixin, *base), {})
    info_handler = type("InfoHandler", (_InfoMixin, *base), {})
    routes += [
        (prefix + r"tiles/(\d+)/(\d+)/(\d+)\.png", tile_handler),
        (prefix + "info", info_handler),
    ]
    return web.Application(routes, **settings)


def hub_service(
    *, port: int = 8091, python: str = sys.executable, environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs this service behind the hub.

    The hub proxies ``/services/tiles/`` to it and hands it an API token;
    ``oauth_no_confirm`` lets tile ``<img>`` requests finish the OAuth login
    without a click. Users reach it through the default ``access:services`` scope.
    """
    return {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "geoportal_hub.tileservice", "--hub", "--port", str(port)],
        "oauth_no_confirm": True,
        "environment": dict(environment or {}),
    }


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (handled explicitly: the hub stops services with SIGINT)."""
    server = HTTPServer(app, xheaders=True)
    server.listen(port, address=host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("tile service on http://%s:%s", host, port)
    print(f"tile service listening on http://{host}:{port}", flush=True)
    await stop.wait()
    server.stop()
    app.settings["executor"].shutdown(wait=False, cancel_futures=True)


def start_in_thread(
    storage: Storage, user: str, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve tiles for ``user`` from a background thread (a notebook without a hub).

    Returns the base URL (for ``LabelingMap(tile_url=…)``) and a function that stops it.
    """
    import socket
    import threading

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            holder["app"] = app = make_app(storage, user=user)
            holder["server"] = server = HTTPServer(app)
            server.listen(port, address=host)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="geoportal-tiles", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the tile service did not start")

    def stop() -> None:
        loop.call_soon_threadsafe(holder["server"].stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        holder["app"].settings["executor"].shutdown(wait=False)

    return f"http://{host}:{port}", stop


def main(argv: list[str] | None = None) -> None:
    """Run the service: ``python -m geoportal_hub.tileservice [--hub] --port N``."""
    from geoportal.settings import load_settings
    from geoportal.storage import storage_from_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hub", action="store_true", help="authenticate with JupyterHub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--user", default=os.environ.get("GEOPORTAL_USER"))
    parser.add_argument("--token", default=os.environ.get("GEOPORTAL_TILES_TOKEN"))
    parser.add_argument("--prefix", default=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    storage = storage_from_settings(load_settings())
    app = make_app(storage, prefix=args.prefix, user=args.user, token=args.token, hub=args.hub)
    asyncio.run(serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
