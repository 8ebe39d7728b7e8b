"""The base class of every geoportal WPS process and the job context its handler gets.

A process is an adapter of about twenty lines: parse the inputs, build a typed
config, call :mod:`geoportal`, set the outputs and report progress. Everything
else (who the caller is, where the job's files live, confinement, URLs of the
outputs, mapping errors to OGC exception codes, surviving queueing and
restarts) lives here and in :mod:`wps_processes.app`, so that the five public
processes cannot differ in those respects.

Writing a process (``wps_processes/wps_<name>.py``; modules are discovered
automatically, the list ``PROCESSES`` names the classes to publish)::

    import rasterio

    from geoportal.atomic import atomic_path   # or whatever the core offers
    from wps_processes.base import (
        GeoportalProcess, JobContext, literal_input, path_input, reference_output,
    )
    from pywps import FORMATS


    class FirstBand(GeoportalProcess):
        identifier = "first-band"
        title = "Copy the first band of a raster"
        abstract = "Writes band 1 of `raster` as a GeoTIFF under the caller's run folder."

        def make_inputs(self):
            return [
                path_input("raster", "Raster", "Storage path or http(s) URL of a GeoTIFF."),
                literal_input("scale", "Scale", "Multiply the values.", data_type="float",
                              default=1.0),
            ]

        def make_outputs(self):
            return [reference_output("band", "First band", [FORMATS.GEOTIFF])]

        def run(self, ctx: JobContext, request, response) -> None:
            src = ctx.input_path(request, "raster", raster=True)
            scale = ctx.literal(request, "scale", 1.0)
            out = ctx.output_path("band1.tif")
            ctx.progress(response, 10, "reading")
            ...  # call the core: geoportal.<module>.<function>(src, out, progress=...)
            ctx.set_output(response, "band", out)

        # inputs the test suite uses to Execute this process end to end (OWSLib, sync
        # and async) against its standard test storage; see GeoportalProcess.example_inputs
        example_inputs = {"raster": "datasets/RGB.byte.tif", "scale": "2"}


    PROCESSES = [FirstBand]

Rules the base class enforces or relies on:

* Data inputs are ``LiteralInput`` strings (:func:`path_input`): a storage path
  relative to the root (``datasets/…`` or ``users/<me>/…``), or a URL this
  server issued (an output reference of an earlier job), so clients chain jobs
  by passing references on. :meth:`JobContext.input_path` resolves them through
  :meth:`geoportal.storage.Storage.resolve` (``raster=True`` also lets foreign
  http(s) URLs through, read with /vsicurl/).
* Data outputs are ``ComplexOutput`` returned by reference
  (:func:`reference_output`). Write them where :meth:`JobContext.output_path`
  says (``users/<caller>/runs/<job>/``) or anywhere else in the caller's own
  area (a training run folder under ``models/``), then call
  :meth:`JobContext.set_output`; the file is published in place, not copied.
  A folder may be an output too (its reference lists its files).
* Raise :class:`geoportal.errors.GeoportalError` subclasses for bad input. They
  reach the client as an OGC ExceptionReport: ``MissingInputError`` →
  ``MissingParameterValue``, other input/storage/access errors →
  ``InvalidParameterValue`` (locator = the error's ``field``), the rest →
  ``NoApplicableCode``, always with the user-safe message. Any other exception
  is a bug: it is logged with its traceback and reported generically.
* Every process supports sync and async execution; report progress with
  :meth:`JobContext.progress` or hand :meth:`JobContext.progress_callback` to
  the core.
* The constructor takes no arguments: PyWPS re-creates processes from JSON.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pywps import ComplexOutput, Format, LiteralInput, Process, dblog
from pywps.exceptions import InvalidParameterValue, MissingParameterValue, NoApplicableCode
from pywps.inout.storage import STORE_TYPE, StorageAbstract
from pywps.response.status import WPS_STATUS

from geoportal.errors import (
    AccessDeniedError,
    ConfigError,
    GeoportalError,
    InvalidInputError,
    MissingInputError,
    StorageNotFoundError,
)
from geoportal.settings import Settings
from geoportal.storage import USERS, Storage

LOGGER = logging.getLogger("geoportal.wps")

#: Folder of a job's PyWPS working files inside its run folder.
WORK_DIR_NAME = ".work"
#: Name of the status document inside a run folder.
STATUS_FILE = "status.xml"
#: Small JSON record of who owns a job, written into the run folder at submission.
JOB_FILE = "job.json"
#: MIME type used for outputs that are folders (the app serves them as a JSON listing).
FOLDER_FORMAT = Format("application/vnd.geoportal.folder+json", extension="")

GENERIC_FAILURE = (
    "internal error while running the process; the administrator finds the details in the WPS log"
)


# -- runtime: what the running app knows (set by wps_processes.app, inherited by forks) --------


@dataclass(frozen=True)
class Runtime:
    """The settings and storage of the running WPS app.

    Attributes:
        settings: the platform settings.
        storage: the storage, with the app's output URL as its first URL prefix.
    """

    settings: Settings
    storage: Storage
    public_base: str = ""


_RUNTIME: Runtime | None = None


def configure_runtime(settings: Settings, storage: Storage, public_base: str = "") -> Runtime:
    """Install the runtime used by every job of this server (called by the app)."""
    global _RUNTIME
    _RUNTIME = Runtime(settings=settings, storage=storage, public_base=public_base)
    return _RUNTIME


def runtime() -> Runtime:
    """The installed runtime; raises if no app configured one."""
    if _RUNTIME is None:
        raise ConfigError(
            "the WPS runtime is not configured: build the app with wps_processes.app.create_app",
            field="wps",
        )
    return _RUNTIME


# -- run folders -------------------------------------------------------------------------------


def run_dir_for(storage: Storage, user: str, job_id: str) -> Path:
    """``users/<user>/runs/<job_id>/`` (not created)."""
    return storage.user_dir(user) / "runs" / str(job_id)


def owner_from_workdir(storage: Storage, workdir: str | os.PathLike[str]) -> tuple[str, Path]:
    """Recover ``(user, run_dir)`` from a job's PyWPS workdir.

    The workdir is the one piece of per-job state PyWPS serialises with a job, so
    the caller's identity is encoded in it: ``<root>/users/<user>/runs/<job>/.work``.

    Raises:
        AccessDeniedError: the workdir is not a run folder of the storage.
    """
    work = Path(workdir).resolve()
    run_dir = work.parent
    try:
        parts = run_dir.relative_to(storage.root).parts
    except ValueError:
        parts = ()
    if work.name != WORK_DIR_NAME or len(parts) != 4 or parts[0] != USERS or parts[2] != "runs":
        raise AccessDeniedError(f"{workdir} is not a job folder of this storage", field="workdir")
    return parts[1], run_dir


def find_job(storage: Storage, job_id: str) -> tuple[str, Path] | None:
    """Find the owner and run folder of ``job_id`` (``None`` if unknown)."""
    job_id = str(job_id)
    if not job_id or "/" in job_id or job_id.startswith("."):
        return None
    users = storage.root / USERS
    if not users.is_dir():
        return None
    for home in users.iterdir():
        candidate = home / "runs" / job_id
        if (candidate / JOB_FILE).is_file():
            return home.name, candidate
    return None


def write_job_record(run_dir: Path, user: str, identifier: str, job_id: str) -> None:
    """Record the owner of a job in its run folder (read by recovery and access control)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"job": str(job_id), "user": user, "process": identifier}
    tmp = run_dir / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, run_dir / JOB_FILE)


# -- output storage that publishes files in place ---------------------------------------------


class InPlaceStorage(StorageAbstract):
    """A PyWPS output storage that publishes a file where it already is.

    PyWPS's FileStorage copies every output into ``outputpath/<uuid>/``; ours
    are already in the caller's run folder, and the app serves the storage
    root with access control, so storing is only computing the URL.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def store(self, output: Any) -> tuple[int, str, str]:
        path = Path(output.file)
        return STORE_TYPE.PATH, str(path), self._storage.url_for(path)

    def write(self, data: Any, destination: str, data_format: Any = None) -> str:
        raise NotImplementedError("outputs are written by the process, then published")

    def url(self, destination: Any) -> str:
        return self._storage.url_for(destination)

    def location(self, destination: Any) -> str:
        return str(destination)


class RunFolderStatusStorage(InPlaceStorage):
    """Status storage: the status document lives in the job's run folder."""

    def __init__(self, storage: Storage, run_dir: Path) -> None:
        super().__init__(storage)
        self._run_dir = run_dir

    def write(self, data: Any, destination: str, data_format: Any = None) -> str:
        # atomic, so a client polling the status never reads half a document
        path = self._run_dir / str(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(data if isinstance(data, str) else data.decode("utf-8"), encoding="utf-8")
        os.replace(tmp, path)
        return self.url(destination)

    def url(self, destination: Any) -> str:
        return self._storage.url_for(self._run_dir / str(destination))

    def location(self, destination: Any) -> str:
        return str(self._run_dir / str(destination))


# -- the job context ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobContext:
    """Everything a process handler needs to know about the job it runs.

    Attributes:
        user: the caller (authenticated by the app; survives queueing and restarts).
        storage: the shared storage (its first URL prefix is this server's output URL).
        settings: the platform settings.
        job_id: the PyWPS job uuid.
        run_dir: ``users/<user>/runs/<job_id>/``, where outputs go.
    """

    user: str
    storage: Storage
    settings: Settings
    job_id: str
    run_dir: Path

    # inputs

    @staticmethod
    def _value(request: Any, name: str) -> Any:
        values = request.inputs.get(name) if request is not None else None
        if not values:
            return None
        data = values[0].data
        if isinstance(data, str) and not data.strip():
            return None
        return data

    def input_path(
        self, request: Any, name: str, raster: bool = False, required: bool = True
    ) -> Any:
        """Resolve a data input (storage path or issued URL) to something the core can open.

        Args:
            request: the WPS request the handler got.
            name: the input identifier (quoted in errors).
            raster: the input is a raster: a foreign http(s) URL is then accepted and
                returned as is (open it with :func:`geoportal.raster.open_scene`).
            required: raise :class:`MissingInputError` when the input is absent;
                otherwise return ``None``.

        Returns:
            A :class:`~pathlib.Path` that exists and the caller may read, or for
            ``raster=True`` a ``str`` (a local path or a foreign URL).

        Raises:
            MissingInputError: required and absent.
            AccessDeniedError: the location is outside what the caller may read.
            StorageNotFoundError: nothing at that location.
        """
        value = self._value(request, name)
        if value is None:
            if required:
                raise MissingInputError(
                    f"{name} is required: give a storage path (datasets/… or users/{self.user}/…) "
                    "or an output reference of this server",
                    field=name,
                )
            return None
        location = str(value)
        if raster:
            return self.storage.resolve_input(self.user, location, field=name)
        return self.storage.resolve(self.user, location, must_exist=True, field=name)

    def literal(self, request: Any, name: str, default: Any = None) -> Any:
        """The (already type-converted) value of a literal input, or ``default``."""
        value = self._value(request, name)
        return default if value is None else value

    # outputs

    def output_path(self, filename: str) -> Path:
        """A path inside the run folder for an output file (parent folders created).

        Raises:
            InvalidInputError: ``filename`` tries to leave the run folder.
        """
        rel = Path(filename)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InvalidInputError(f"output name {filename!r} must stay inside the run folder")
        path = self.run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def set_output(self, response: Any, name: str, path: str | os.PathLike[str]) -> str:
        """Publish ``path`` (a file or folder in the caller's area) as output ``name``.

        Returns:
            The URL the client gets as the reference.

        Raises:
            AccessDeniedError: the path is outside the caller's own area.
        """
        real = Path(path).resolve()
        home = self.storage.user_dir(self.user).resolve()
        if real != home and home not in real.parents:
            raise AccessDeniedError(f"output {name} must be inside users/{self.user}/", field=name)
        if not real.exists():
            raise StorageNotFoundError(f"output {name}: {real} was not written", field=name)
        output = response.outputs[name]
        output.as_reference = True
        output.storage = InPlaceStorage(self.storage)
        output.file = str(real)
        return self.storage.url_for(real)

    # progress

    def progress(self, response: Any, percent: float, message: str) -> None:
        """Report progress (0–100) in the job's status document."""
        pct = int(max(0.0, min(99.0, float(percent))))
        response.update_status(str(message), pct)

    def progress_callback(
        self, response: Any, start: float = 0.0, end: float = 100.0
    ) -> Callable[[float, str], None]:
        """A ``progress(fraction, message)`` callback for core functions.

        The core reports a fraction in [0, 1]; it is mapped onto ``start``–``end``
        percent so that one job may chain several core steps.
        """

        def report(fraction: float, message: str) -> None:
            fraction = max(0.0, min(1.0, float(fraction)))
            self.progress(response, start + (end - start) * fraction, message)

        return report


# -- input/output builders shared by all processes ---------------------------------------------


def path_input(
    identifier: str, title: str, abstract: str, *, required: bool = True
) -> LiteralInput:
    """A data input: a storage path or an issued URL (rasters: any http(s) URL)."""
    return LiteralInput(
        identifier,
        title,
        abstract=abstract,
        data_type="string",
        min_occurs=1 if required else 0,
        max_occurs=1,
    )


def literal_input(
    identifier: str,
    title: str,
    abstract: str,
    *,
    data_type: str = "string",
    default: Any = None,
    allowed_values: Sequence[Any] | None = None,
) -> LiteralInput:
    """A literal (number, string, boolean) input; optional when it has a default."""
    kwargs: dict[str, Any] = {}
    if allowed_values is not None:
        kwargs["allowed_values"] = list(allowed_values)
    if default is not None:
        kwargs["default"] = default
    return LiteralInput(
        identifier,
        title,
        abstract=abstract,
        data_type=data_type,
        min_occurs=0 if default is not None else 1,
        max_occurs=1,
        **kwargs,
    )


def reference_output(
    identifier: str, title: str, formats: Sequence[Format], abstract: str = ""
) -> ComplexOutput:
    """A data output returned by reference (a URL into the caller's area)."""
    return ComplexOutput(
        identifier,
        title,
        abstract=abstract,
        supported_formats=list(formats),
        as_reference=True,
    )


# -- error mapping ------------------------------------------------------------------------------


def ows_exception(error: BaseException) -> NoApplicableCode:
    """The OGC exception a raised error becomes (user-safe message; generic for bugs)."""
    if isinstance(error, NoApplicableCode):
        return error
    if isinstance(error, MissingInputError):
        return MissingParameterValue(error.message, locator=error.field or "")
    if isinstance(
        error, InvalidInputError | StorageNotFoundError | AccessDeniedError | ConfigError
    ) or (isinstance(error, GeoportalError) and error.field):
        return InvalidParameterValue(error.message, locator=error.field or "")
    if isinstance(error, GeoportalError):
        return NoApplicableCode(error.message)
    return NoApplicableCode(GENERIC_FAILURE, code=500)


def status_message(error: BaseException) -> str:
    """The failure message of an async job's status document (code and locator prefixed)."""
    exc = ows_exception(error)
    code = type(exc).__name__
    locator = getattr(exc, "locator", "") or ""
    where = f" ({locator})" if locator else ""
    return f"{code}{where}: {exc.description}"


# -- the process base class ---------------------------------------------------------------------


class GeoportalProcess(Process):
    """Base of every geoportal WPS process: subclass, set the class attributes, implement run.

    Class attributes:
        identifier: the stable public WPS identifier.
        title: a human-readable title.
        abstract: what the process does, for GetCapabilities/DescribeProcess.
        version: the process version string.
    """

    identifier: ClassVar[str] = ""
    title: ClassVar[str] = ""
    abstract: ClassVar[str] = ""
    version: ClassVar[str] = "1.0"
    #: Inputs (all as strings) with which ``tests/wps`` executes the process end to end,
    #: sync and async, through OWSLib on a real server. Paths refer to the standard test
    #: storage, the same the notebooks get: ``datasets/lsat7_2000_6band.tif``,
    #: ``datasets/S2_L1C_T18SVG_20160112_20m_6band.tif``, ``datasets/RGB.byte.tif``,
    #: ``datasets/labels/landsat96_polygons.gpkg``, ``datasets/labels/landsat96_points.gpkg``
    #: (class field ``id``). A value ``"{extract-samples:samples}"`` stands for that output
    #: reference of that process, run first. The test server runs with ``GEOPORTAL_SMALL=1``;
    #: keep the example small (seconds, not minutes).
    example_inputs: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        cls = type(self)
        if not cls.identifier:
            raise TypeError(f"{cls.__name__} must set the class attribute 'identifier'")
        super().__init__(
            self._handler,
            identifier=cls.identifier,
            title=cls.title or cls.identifier,
            abstract=cls.abstract,
            version=cls.version,
            inputs=self.make_inputs(),
            outputs=self.make_outputs(),
            store_supported=True,
            status_supported=True,
        )

    # to implement

    def make_inputs(self) -> list[Any]:
        """The process inputs (new objects on each call)."""
        raise NotImplementedError

    def make_outputs(self) -> list[Any]:
        """The process outputs (new objects on each call)."""
        raise NotImplementedError

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        """Do the work: inputs → config → core call → outputs."""
        raise NotImplementedError

    # machinery

    def context(self) -> JobContext:
        """The job context derived from this job's workdir."""
        rt = runtime()
        user, run_dir = owner_from_workdir(rt.storage, self.workdir)
        return JobContext(
            user=user,
            storage=rt.storage,
            settings=rt.settings,
            job_id=str(self.uuid),
            run_dir=run_dir,
        )

    def _handler(self, request: Any, response: Any) -> Any:
        ctx = self.context()
        self.run(ctx, request, response)
        return response

    def set_workdir(self, workdir: str) -> None:
        if workdir:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        super().set_workdir(workdir)

    # status document in the run folder, served with the same access rule as outputs
    def _setup_status_storage(self) -> None:
        rt = runtime()
        _, run_dir = owner_from_workdir(rt.storage, self.workdir)
        self._status_store = RunFolderStatusStorage(rt.storage, run_dir)

    @property
    def status_filename(self) -> str:
        return STATUS_FILE

    def _run_process(self, wps_request: Any, wps_response: Any) -> Any:
        """Run the handler; map errors to OGC exceptions (sync) or a failed status (async).

        Replaces PyWPS's version, which reports every error as NoApplicableCode and
        hides the user-safe message of a core error.
        """
        LOGGER.debug("job %s runs in pid %s", self.uuid, os.getpid())
        dblog.update_pid(self.uuid, os.getpid())
        try:
            wps_response._update_status(WPS_STATUS.STARTED, "started", 0)
            self.handler(wps_request, wps_response)
            if wps_response.status not in (WPS_STATUS.SUCCEEDED, WPS_STATUS.FAILED):
                wps_response._update_status(WPS_STATUS.SUCCEEDED, f"{self.title}: done", 100)
        except Exception as error:  # noqa: BLE001 - every failure must end the job
            if isinstance(error, GeoportalError):
                LOGGER.info("job %s (%s) refused: %s", self.uuid, self.identifier, error)
            else:
                LOGGER.error(
                    "job %s (%s) failed:\n%s",
                    self.uuid,
                    self.identifier,
                    "".join(traceback.format_exception(error)),
                )
            if getattr(self, "async_", False):
                wps_response._update_status(WPS_STATUS.FAILED, status_message(error), 100)
            else:
                dblog.store_status(self.uuid, WPS_STATUS.FAILED, status_message(error), 100)
                raise ows_exception(error) from None
        finally:
            self.launch_next_process()
        return wps_response

    def _run_async(self, wps_request: Any, wps_response: Any) -> None:
        """Start the job in a fresh interpreter (see :mod:`wps_processes.runner`)."""
        from wps_processes.runner import start_job

        start_job(self, wps_request)

    def launch_next_process(self) -> None:
        """Start the next queued job, restoring its owner's workdir (PyWPS would lose it)."""
        from wps_processes.jobs import launch_stored

        try:
            launch_stored(self.service)
        except Exception:  # noqa: BLE001 - never break the job that just ended
            LOGGER.exception("could not start the next queued job")
