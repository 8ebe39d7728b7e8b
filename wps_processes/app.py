"""The WPS service: PyWPS inside a WSGI app that knows who is calling.

Routes (below an optional prefix, ``/services/wps/`` behind the hub):

``wps``
    The OGC WPS endpoint (GetCapabilities, DescribeProcess, Execute, sync and async).
``outputs/users/<name>/…``
    Output files and status documents, served over HTTP because async execution
    needs them (PyWPS's ``Service`` serves neither). A caller may fetch only
    files under its own ``users/<name>/``; a folder answers with a JSON listing.
``oauth_callback``
    The end of the hub OAuth login of browsers (hub mode only).
``healthz``
    Liveness, without authentication.

Who is calling is decided here, once, by an :class:`Auth`: :class:`HubTokenAuth`
for the hub-managed service (``Authorization: token …`` for API clients, hub
OAuth and a cookie for browsers) or :class:`LocalAuth` for ``geoportal wps``
(one local user, loopback only unless a token is configured). Requests without
a known caller get 401/403. The caller then travels with the job: its workdir
is ``users/<user>/runs/<job>/.work``, which PyWPS stores with queued jobs, so
the identity survives async execution, queueing and restarts.

PyWPS's configuration is generated from :class:`geoportal.settings.Settings`
(no hand-edited cfg): the output URL the app serves itself, a durable job log
(SQLite file under ``state_dir`` or a PostgreSQL URL; never in-memory),
``parallelprocesses``/``maxprocesses``.
"""

from __future__ import annotations

import copy
import hmac
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from pywps import Service
from pywps import configuration as pywps_config
from pywps.exceptions import InvalidParameterValue
from werkzeug.exceptions import Forbidden, HTTPException, NotFound, Unauthorized
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from geoportal.errors import AccessDeniedError, ConfigError, GeoportalError
from geoportal.settings import Settings, load_settings
from geoportal.storage import USERS, Storage, check_username
from wps_processes.base import (
    STATUS_FILE,
    WORK_DIR_NAME,
    configure_runtime,
    run_dir_for,
    write_job_record,
)

LOGGER = logging.getLogger("geoportal.wps")
USER_KEY = "geoportal.user"
TOKEN_COOKIE = "geoportal-wps-token"
STATE_COOKIE = "geoportal-wps-oauth-state"


# -- configuration ------------------------------------------------------------------------------


def job_database(settings: Settings) -> str:
    """The SQLAlchemy URL of PyWPS's job log.

    Raises:
        ConfigError: an in-memory SQLite database was configured (it breaks async jobs:
            the forked job processes would each see an empty database).
    """
    url = settings.wps.database.strip()
    if not url:
        path = Path(settings.state_dir) / "wps" / "jobs.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if url.startswith("sqlite") and (
        ":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:")
    ):
        raise ConfigError(
            "wps.database: in-memory SQLite breaks async jobs; give a sqlite file URL "
            "(sqlite:////path/jobs.sqlite), a postgresql:// URL, or leave it empty",
            field="wps.database",
        )
    return url


_SQLITE_HARDENED = False
_DBLOG_LOCK = threading.RLock()


def _retrying(function: Callable[..., Any]) -> Callable[..., Any]:
    import functools
    import time

    from sqlalchemy.exc import OperationalError

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(20):
            try:
                with _DBLOG_LOCK:
                    return function(*args, **kwargs)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    wrapper.__wrapped_by_geoportal__ = True  # type: ignore[attr-defined]
    return wrapper


def harden_sqlite() -> None:
    """Make PyWPS's SQLite job log safe under concurrent requests and job processes.

    PyWPS opens plain pysqlite sessions, sometimes nested, with deferred
    transactions: with overlapping requests a read that turns into a write fails
    at once with "database is locked" (seen with 20 concurrent GetCapabilities).
    Here the database runs in WAL mode (readers never block the writer) with a
    30 s busy timeout, the job-log calls are serialised within this process, and
    a call that still meets a lock (another process's job) is retried.
    """
    global _SQLITE_HARDENED
    if _SQLITE_HARDENED:
        return
    import sqlite3

    import pywps.app.Service as pywps_service  # noqa: N813 - the module, not the class
    import pywps.response.basic as pywps_basic
    from pywps import dblog
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA busy_timeout = 30000")
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

    for name in (
        "log_request",
        "store_status",
        "update_pid",
        "get_process_counts",
        "pop_first_stored",
        "store_process",
        "cleanup_crashed_process",
    ):
        wrapped = _retrying(getattr(dblog, name))
        setattr(dblog, name, wrapped)
        for module in (pywps_service, pywps_basic):
            if hasattr(module, name):
                setattr(module, name, wrapped)
    _SQLITE_HARDENED = True


def base_url(settings: Settings) -> str:
    """The public base URL of the service (``…/services/wps`` behind the hub)."""
    if settings.wps.public_url:
        return settings.wps.public_url.rstrip("/")
    return f"http://{settings.wps.host}:{settings.wps.port}"


def pywps_options(settings: Settings, public_base: str) -> dict[str, dict[str, str]]:
    """PyWPS configuration sections generated from the settings."""
    state = Path(settings.state_dir) / "wps"
    (state / "tmp").mkdir(parents=True, exist_ok=True)
    (state / "outputs").mkdir(parents=True, exist_ok=True)
    level = settings.wps.log_level.upper()
    return {
        "server": {
            "url": f"{public_base}/wps",
            "outputurl": f"{public_base}/outputs",
            "outputpath": str(state / "outputs"),
            "workdir": str(state / "tmp"),
            "parallelprocesses": str(settings.wps.parallelprocesses),
            "maxprocesses": str(settings.wps.maxprocesses),
            "cleantempdir": "true",
            "allowedinputpaths": "",
            "storagetype": "file",
            "sethomedir": "false",
        },
        "processing": {"mode": "default"},
        "logging": {
            "level": level,
            "database": job_database(settings),
            "file": "",
        },
        "metadata:main": {
            "identification_title": "Geoportal WPS",
            "identification_abstract": "Remote-sensing machine learning on the geoportal.",
            "provider_name": "Geoportal",
        },
    }


def apply_pywps_config(settings: Settings, public_base: str) -> dict[str, dict[str, str]]:
    """Load PyWPS's defaults, then set the generated options (process-wide, like PyWPS)."""
    options = pywps_options(settings, public_base)
    if options["logging"]["database"].startswith("sqlite"):
        harden_sqlite()
    pywps_config.load_configuration([])
    for section, values in options.items():
        if not pywps_config.CONFIG.has_section(section):
            pywps_config.CONFIG.add_section(section)
        for key, value in values.items():
            pywps_config.CONFIG.set(section, key, value)
    logging.getLogger("PYWPS").setLevel(getattr(logging, options["logging"]["level"], logging.INFO))
    return options


# -- authentication -----------------------------------------------------------------------------


class Auth:
    """Decides who is calling. Subclasses implement :meth:`user`."""

    #: whether browsers can be sent through a login flow
    interactive = False

    def user(self, request: Request) -> str | None:
        """The caller's name, or ``None`` when the request is not authenticated."""
        raise NotImplementedError

    def login(self, request: Request) -> Response | None:
        """A response that starts a browser login, or ``None`` (then 401)."""
        return None

    def callback(self, request: Request) -> Response:
        raise NotFound()


def header_token(request: Request) -> str | None:
    """The token of an ``Authorization: token …`` or ``Bearer …`` header."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip()
    return None


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


class LocalAuth(Auth):
    """One local user, for ``geoportal wps`` on a workstation.

    Without a token only loopback clients are served (the server also binds to
    loopback); with a token every request must carry it.
    """

    def __init__(self, user: str, token: str | None = None) -> None:
        self._user = check_username(user)
        self._token = token or None

    def user(self, request: Request) -> str | None:
        if self._token is not None:
            given = header_token(request) or ""
            return self._user if hmac.compare_digest(given, self._token) else None
        return self._user if is_loopback(request.remote_addr) else None


class HubTokenAuth(Auth):
    """Callers identified by JupyterHub (the service runs as a hub-managed service).

    API clients send ``Authorization: token <hub token>``; browsers go through hub
    OAuth and then carry the token in an HttpOnly cookie. Each token is checked
    against the hub (cached briefly) and must hold the scope that grants access
    to this service.
    """

    interactive = True

    def __init__(self, prefix: str, hub_auth: Any = None) -> None:
        if hub_auth is None:
            from jupyterhub.services.auth import HubOAuth

            hub_auth = HubOAuth(cache_max_age=60)
        self.hub = hub_auth
        self.prefix = prefix

    def user(self, request: Request) -> str | None:
        token = header_token(request) or request.cookies.get(TOKEN_COOKIE)
        if not token:
            return None
        try:
            model = self.hub.user_for_token(token, sync=True)
        except Exception:  # noqa: BLE001 - the hub refusing a token is not our error
            LOGGER.warning("token check against the hub failed", exc_info=True)
            return None
        if not model or model.get("kind", "user") != "user":
            return None
        scopes = self.hub.access_scopes
        if scopes and not self.hub.check_scopes(scopes, model):
            raise Forbidden("this token may not use the WPS service (missing access:services)")
        return str(model["name"])

    def login(self, request: Request) -> Response | None:
        if request.method != "GET" or "text/html" not in request.headers.get("Accept", ""):
            return None
        state = secrets.token_urlsafe(16)
        query = urlencode(
            {
                "client_id": self.hub.oauth_client_id,
                "redirect_uri": self.hub.oauth_redirect_uri,
                "response_type": "code",
                "state": state,
            }
        )
        response = Response(
            status=302, headers={"Location": f"{self.hub.oauth_authorization_url}?{query}"}
        )
        response.set_cookie(
            STATE_COOKIE,
            json.dumps({"state": state, "next": request.full_path}),
            max_age=600,
            httponly=True,
            samesite="Lax",
            path=self.prefix,
        )
        return response

    def callback(self, request: Request) -> Response:
        try:
            saved = json.loads(request.cookies.get(STATE_COOKIE, "{}"))
        except ValueError:
            saved = {}
        state = request.args.get("state", "")
        if not state or not hmac.compare_digest(state, str(saved.get("state", ""))):
            raise Forbidden("OAuth state does not match; open the WPS link again to log in")
        code = request.args.get("code")
        if not code:
            raise Forbidden("OAuth callback without a code")
        token = self.hub.token_for_code(code, sync=True)
        next_url = str(saved.get("next") or self.prefix)
        if not next_url.startswith(self.prefix):
            next_url = self.prefix
        response = Response(status=302, headers={"Location": next_url})
        response.delete_cookie(STATE_COOKIE, path=self.prefix)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Lax", path=self.prefix)
        return response


# -- the PyWPS service --------------------------------------------------------------------------


class GeoportalService(Service):
    """PyWPS's Service with the caller's run folder as each job's workdir."""

    def __init__(self, processes: Sequence[Any], storage: Storage) -> None:
        super().__init__(processes=list(processes))
        self.storage = storage

    def prepare_process_for_execution(self, identifier: str) -> Any:
        # PyWPS would create a temporary workdir here; ours is set by the caller.
        try:
            process = self.processes[identifier]
        except KeyError:
            raise InvalidParameterValue(f"Unknown process '{identifier}'", "Identifier") from None
        process = copy.deepcopy(process)
        process.service = self
        return process

    def execute(self, identifier: str, wps_request: Any, uuid: Any) -> Any:
        environ = getattr(wps_request.http_request, "environ", {}) or {}
        user = environ.get(USER_KEY)
        if not user:
            raise AccessDeniedError("unauthenticated Execute", field="user")
        process = self.prepare_process_for_execution(identifier)
        self.storage.ensure_layout(user)
        run_dir = run_dir_for(self.storage, user, str(uuid))
        write_job_record(run_dir, user, identifier, str(uuid))
        process.set_workdir(str(run_dir / WORK_DIR_NAME))
        try:
            return self._parse_and_execute(process, wps_request, uuid)
        except Exception:
            # rejected before it ran (missing input, busy server): leave no empty run folder
            if not (run_dir / STATUS_FILE).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


# -- the WSGI app -------------------------------------------------------------------------------


class WpsApp:
    """The WSGI application: authentication, the WPS endpoint and the file server."""

    def __init__(self, service: GeoportalService, storage: Storage, auth: Auth, prefix: str = "/"):
        self.service = service
        self.storage = storage
        self.auth = auth
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except GeoportalError as exc:
            response = Response(str(exc), status=403 if isinstance(exc, PermissionError) else 400)
        except Exception:  # noqa: BLE001 - never leak a traceback to a client
            LOGGER.exception("request %s failed", request.path)
            response = Response("internal error; see the WPS log", status=500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Any:
        path = request.path
        if not path.startswith(self.prefix) and path + "/" != self.prefix:
            raise NotFound()
        route = path[len(self.prefix) :] if path.startswith(self.prefix) else ""
        if route == "healthz":
            return Response("ok", mimetype="text/plain")
        if route == "oauth_callback":
            return self.auth.callback(request)
        user = self.auth.user(request)
        if user is None:
            login = self.auth.login(request)
            if login is not None:
                return login
            raise Unauthorized("authentication required: send 'Authorization: token <token>'")
        if route in ("", "wps"):
            if route == "" and not request.args:
                return Response(
                    f"Geoportal WPS. OGC endpoint: {self.prefix}wps"
                    "?service=WPS&request=GetCapabilities",
                    mimetype="text/plain",
                )
            request.environ[USER_KEY] = user
            return self.service.call(request)
        if route == "outputs" or route.startswith("outputs/"):
            return self.serve_file(request, user, route[len("outputs") :].lstrip("/"))
        raise NotFound()

    def serve_file(self, request: Request, user: str, rel: str) -> Response:
        parts = [p for p in rel.split("/") if p]
        if len(parts) < 2 or parts[0] != USERS or any(p in (".", "..") for p in parts):
            raise NotFound()
        if parts[1] != user:
            raise Forbidden("this file belongs to another user")
        home = self.storage.user_dir(user).resolve()
        path = (self.storage.root / Path(*parts)).resolve()
        if path != home and home not in path.parents:
            raise Forbidden("this file is outside your area")
        if path.is_dir():
            entries = [
                {"name": p.name + ("/" if p.is_dir() else ""), "size": p.stat().st_size}
                for p in sorted(path.iterdir())
                if p.name != WORK_DIR_NAME
            ]
            return Response(
                json.dumps({"folder": "/".join(parts), "entries": entries}),
                mimetype="application/json",
            )
        if not path.is_file():
            raise NotFound()
        mimetype = "text/xml" if path.name == STATUS_FILE else None
        return send_file(str(path), request.environ, mimetype=mimetype, conditional=True, max_age=0)


def build_service(
    settings: Settings, processes: Sequence[Any], public_base: str
) -> GeoportalService:
    """Configure PyWPS and the job runtime, and build the service (app and job runner)."""
    apply_pywps_config(settings, public_base)
    storage = Storage(
        root=settings.storage_root,
        url_prefixes=(f"{public_base}/outputs",),
        admins=frozenset(settings.hub.admin_users),
    )
    configure_runtime(settings, storage, public_base)
    return GeoportalService(processes, storage)


def create_app(
    settings: Settings | None = None,
    *,
    auth: Auth | None = None,
    processes: Sequence[Any] | None = None,
    prefix: str = "/",
    public_base: str | None = None,
    recover: bool = True,
) -> WpsApp:
    """Build the WSGI app (and configure PyWPS process-wide).

    Args:
        settings: platform settings (loaded from the environment when omitted).
        auth: who may call; defaults to :class:`LocalAuth` for the OS user.
        processes: the processes to offer; defaults to every discovered one.
        prefix: URL path prefix the app lives under (``/services/wps/`` behind the hub).
        public_base: the URL clients use for the prefix; defaults from the settings.
        recover: give jobs left unfinished by a previous server a definite state and
            restart the queue (see :mod:`wps_processes.jobs`).
    """
    from wps_processes import processes as discovered
    from wps_processes.jobs import recover as recover_jobs

    settings = settings or load_settings()
    public_base = (public_base or base_url(settings)).rstrip("/")
    procs = list(processes) if processes is not None else discovered()
    service = build_service(settings, procs, public_base)
    storage = service.storage
    storage.ensure_layout()
    app = WpsApp(service, storage, auth or LocalAuth(local_user()), prefix=prefix)
    if recover:
        recover_jobs(service)
    return app


def local_user() -> str:
    """The single user of a standalone server: ``$GEOPORTAL_USER`` or the OS user."""
    import getpass

    name = os.environ.get("GEOPORTAL_USER") or getpass.getuser() or "local"
    return check_username(name)


# -- serving ------------------------------------------------------------------------------------


def serve(app: WpsApp, host: str, port: int, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` with a threaded HTTP server until SIGINT or SIGTERM.

    The handlers are installed explicitly: a service started from a
    non-interactive shell (the hub starts services that way) inherits SIGINT as
    ignored, and would otherwise need the hub's 30-second kill. Job processes
    forked by PyWPS close the listening socket, so a restart can bind the port
    while old jobs finish.
    """
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            LOGGER.debug("%s %s %s", self.command, self.path, code)

    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    os.register_at_fork(after_in_child=server.socket.close)

    def stop(signum: int, _frame: Any) -> None:
        LOGGER.info("signal %s: stopping the WPS server", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    url = f"http://{host}:{server.server_port}{app.prefix}wps"
    LOGGER.info("WPS listening on %s", url)
    if ready:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wps_processes.app [--hub] [--host H] [--port P]``: run the server."""
    import argparse

    parser = argparse.ArgumentParser(prog="wps_processes.app")
    parser.add_argument("--hub", action="store_true", help="run as a JupyterHub-managed service")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--token", default=os.environ.get("GEOPORTAL_WPS_TOKEN"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        settings = load_settings()
        if args.hub:
            service_url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
            prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/wps/")
            host, port = service_url.hostname or "127.0.0.1", service_url.port or 80
            app = create_app(settings, auth=HubTokenAuth(prefix), prefix=prefix)
        else:
            host = args.host or settings.wps.host
            port = args.port or settings.wps.port
            check_standalone_bind(host, args.token)
            settings = settings.model_copy(
                update={"wps": settings.wps.model_copy(update={"host": host, "port": port})}
            )
            app = create_app(settings, auth=LocalAuth(local_user(), args.token))
    except GeoportalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(app, host, port)
    return 0


def check_standalone_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (the standalone server has no login)."""
    if token:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"refusing to serve the WPS on {host} without authentication: bind to 127.0.0.1 "
            "or set a token (--token or GEOPORTAL_WPS_TOKEN)",
            field="wps.host",
        )


if __name__ == "__main__":
    sys.exit(main())
