"""The whole loop on one scene, through the WPS service, as a newcomer would run it.

``geoportal demo`` extracts samples, balances them, trains, infers over the
scene and assesses the classification, each step as an asynchronous WPS Execute
against a real server (a standalone ``geoportal wps`` started on a free
loopback port for the duration, or a given service URL), and prints each step
with its time and then the accuracy report. Going through the service rather
than calling the library directly is the point: the demo exercises exactly the
path the map and GIS clients take, so a demo that passes says the platform
works, not only the library.

The results stay in the user's storage area (samples, model run, job folders
with the classification and the reports), where the map can show them; their
storage paths are printed at the end. Without a scene it uses the real NC
Landsat 7 scene when the storage holds it, and otherwise generates a scene with
labels (:mod:`geoportal.synthetic`), saying so loudly.
"""

from __future__ import annotations

import filecmp
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geoportal.errors import GeoportalError, InvalidInputError, StorageNotFoundError
from geoportal.storage import Storage
from geoportal.wpsclient import storage_location

Echo = Callable[[str], None]

NC_SCENE = "datasets/lsat7_2000_6band.tif"
NC_LABELS = "datasets/labels/landsat96_polygons.gpkg"
SYNTHETIC_NAME = "demo_synthetic"


class DemoError(GeoportalError, RuntimeError):
    """The demo could not run (the WPS server did not start, say); the message says why."""


class DemoOptions(BaseModel):
    """The knobs of the loop; defaults suit a small scene on a laptop."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(5, ge=1, description="Patch side in pixels (extract-samples).")
    epochs: int = Field(5, ge=1, description="Training epochs (train-model).")
    n_clusters: int = Field(
        4, ge=0, description="Clusters per class; 0 chooses by silhouette (slower)."
    )
    threshold: int = Field(20, ge=1, description="Clusters smaller than this are kept whole.")
    step: int = Field(2, ge=1, description="Every step-th sample of larger clusters is kept.")
    tile_size: int = Field(256, ge=8, description="Inference tile size (run-inference).")
    name: str = Field("demo", description="Name of the sample set and of the model run.")


@dataclass
class DemoInputs:
    """Storage-relative inputs of the demo and whether they were generated."""

    scene: str
    labels: str
    class_field: str
    generated: bool = False


@dataclass
class DemoStep:
    """One finished WPS job: its name, wall time and outputs (storage paths)."""

    name: str
    identifier: str
    seconds: float
    outputs: dict[str, str]
    message: str = ""


@dataclass
class DemoResult:
    """Every step, and the accuracy report (``report.json`` of assess-accuracy)."""

    inputs: DemoInputs
    steps: list[DemoStep] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> dict[str, str]:
        """``step.output`` → storage path of every output, in step order."""
        return {f"{s.identifier}.{k}": v for s in self.steps for k, v in s.outputs.items()}


# -- inputs -----------------------------------------------------------------------------------


def prepare_inputs(
    storage: Storage,
    user: str,
    scene: str | None,
    labels: str | None,
    class_field: str | None,
    echo: Echo,
) -> DemoInputs:
    """Put the scene and labels where the WPS can read them, or generate them.

    A location inside the storage is used as it is (the WPS checks the caller may read
    it). A local file outside it is brought in: a scene into ``datasets/`` (validated
    and catalogued, so the map lists it; an existing dataset of that name is reused
    only if it is the same file), labels into the user's ``labels/`` as a GeoPackage.

    Raises:
        InvalidInputError: only some of scene/labels/class_field were given, or a
            dataset of the scene's name exists with other content.
        StorageNotFoundError: a given location does not exist.
    """
    storage.ensure_layout(user)
    if scene or labels or class_field:
        if not (scene and labels and class_field):
            missing = [n for n, v in (("--scene", scene), ("--labels", labels),
                                      ("--class-field", class_field)) if not v]  # fmt: skip
            raise InvalidInputError(
                f"give --scene, --labels and --class-field together (missing {', '.join(missing)})",
                field=missing[0].lstrip("-").replace("-", "_"),
            )
        return DemoInputs(
            _into_storage(storage, user, scene, kind="scene"),
            _into_storage(storage, user, labels, kind="labels"),
            class_field,
        )
    if (storage.root / NC_SCENE).exists() and (storage.root / NC_LABELS).exists():
        echo(f"Using the real NC Landsat 7 scene in the storage: {NC_SCENE} with {NC_LABELS}")
        return DemoInputs(NC_SCENE, NC_LABELS, "id")
    return generate_inputs(storage, user, echo)


def generate_inputs(storage: Storage, user: str, echo: Echo) -> DemoInputs:
    """Generate a scene and labels in the user's area, announcing it loudly."""
    from geoportal.atomic import atomic_path
    from geoportal.synthetic import make_scene

    banner = "!" * 76
    for line in (
        banner,
        "!!  NO REAL DATA: this demo runs on a GENERATED scene and GENERATED labels.",
        "!!  Its accuracy says nothing about real imagery. For real data, run",
        "!!    geoportal datasets add SCENE.tif && geoportal datasets add-labels LABELS.gpkg",
        "!!    geoportal demo --scene datasets/SCENE.tif --labels datasets/labels/LABELS.gpkg "
        "--class-field FIELD",
        banner,
    ):
        echo(line)
    home = storage.user_dir(user)
    scene = home / "runs" / "demo-input" / f"{SYNTHETIC_NAME}.tif"
    labels = home / "labels" / f"{SYNTHETIC_NAME}.gpkg"
    with tempfile.TemporaryDirectory(dir=home / "runs", prefix=".demo-") as tmp:
        made = make_scene(tmp, width=320, height=288, bands=4, n_classes=4,
                          name=SYNTHETIC_NAME, labels_per_class=12, seed=7)  # fmt: skip
        scene.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(scene) as target:
            os.replace(made.raster, target)
        with atomic_path(labels) as target:
            os.replace(made.labels, target)
    echo(f"generated scene  {storage.relative(scene)}")
    echo(f"generated labels {storage.relative(labels)} (class field '{made.class_field}')")
    return DemoInputs(
        storage.relative(scene), storage.relative(labels), made.class_field, generated=True
    )


def _into_storage(storage: Storage, user: str, location: str, kind: str) -> str:
    """The storage-relative location of ``location``, copying a local file in if needed."""
    local = Path(location).expanduser()
    in_storage = (local.is_absolute() and local.resolve().is_relative_to(storage.root)) or (
        not local.is_absolute() and (storage.root / location).exists()
    )
    if in_storage:
        return storage.relative(storage.resolve(user, location, must_exist=True, field=kind))
    if not local.exists():
        raise StorageNotFoundError(
            f"{kind} {location} exists neither as a local file nor in the storage ({storage.root})",
            field=kind,
        )
    if kind == "scene":
        return _scene_into_datasets(storage, local)
    import geopandas as gpd

    from geoportal.atomic import atomic_path

    target = storage.user_dir(user) / "labels" / f"{local.stem}.gpkg"
    try:
        frame = gpd.read_file(local)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InvalidInputError(
            f"labels {local.name} cannot be read: {exc}", field="labels"
        ) from None
    with atomic_path(target) as tmp:
        frame.to_file(tmp, driver="GPKG", layer=local.stem)
    return storage.relative(target)


def _scene_into_datasets(storage: Storage, local: Path) -> str:
    from geoportal.catalog import add_datasets

    existing = storage.datasets_dir / local.name
    if existing.exists():
        if filecmp.cmp(existing, local, shallow=False):
            return storage.relative(existing)
        raise InvalidInputError(
            f"datasets/{local.name} exists with other content; give --scene "
            f"datasets/{local.name} to use it, or rename {local}",
            field="scene",
        )
    entries = add_datasets(storage, [local])
    return entries[0].path


# -- the WPS server ---------------------------------------------------------------------------


def wps_command(port: int) -> list[str]:
    """``geoportal wps --port PORT`` run with this interpreter."""
    return [sys.executable, "-c", "from geoportal.cli import main; main()", "wps",
            "--port", str(port)]  # fmt: skip


@contextmanager
def local_wps_server(
    user: str, log_path: Path, *, startup_timeout: float = 60.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``geoportal wps`` on a free loopback port for the block; yield its endpoint.

    The server acts for ``user`` (``GEOPORTAL_USER``), serves loopback only and is
    stopped (its whole process group) when the block ends, also on errors.

    Raises:
        DemoError: the server exited or did not answer within ``startup_timeout``.
    """
    from geoportal.services import ManagedProcess, free_port

    port = free_port()
    server = ManagedProcess(
        "wps", wps_command(port), {**os.environ, **(env or {}), "GEOPORTAL_USER": user}, log_path
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if not server.running():
                raise DemoError(
                    f"the WPS server exited before answering; see {log_path}:\n{_tail(log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the WPS server did not answer on {base} within {startup_timeout:.0f} s; "
                    f"see {log_path}"
                )
            time.sleep(0.2)
        yield f"{base}/wps"
    finally:
        server.stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the loop ---------------------------------------------------------------------------------


def run_demo(
    client: Any,
    inputs: DemoInputs,
    options: DemoOptions,
    *,
    echo: Echo,
    progress: Callable[[str], Callable[[float, str], None]] | None = None,
) -> DemoResult:
    """Run extract → balance → train → infer → assess through ``client`` (a WpsClient).

    Each output reference is handed to the next process as it is (the service maps
    its own references back onto the storage), as any WPS client would chain them.
    """
    result = DemoResult(inputs)

    def step(name: str, identifier: str, values: dict[str, Any]) -> dict[str, str]:
        echo(f"▶ {name} ({identifier})")
        done = client.execute(identifier, values, progress=progress(name) if progress else None)
        paths = {k: storage_location(v) for k, v in done.outputs.items()}
        result.steps.append(DemoStep(name, identifier, done.seconds, paths, done.status_message))
        echo(f"✔ {name}: {done.seconds:.1f} s — {done.status_message or 'done'}")
        return done.outputs

    extracted = step(
        "extract samples",
        "extract-samples",
        {"raster": inputs.scene, "labels": inputs.labels, "class_field": inputs.class_field,
         "patch_size": options.patch_size, "name": f"{options.name}-{_stamp()}"},
    )  # fmt: skip
    balanced = step(
        "balance samples",
        "balanced-sampling",
        {"samples": extracted["samples"], "n_clusters": options.n_clusters,
         "threshold": options.threshold, "step": options.step},
    )  # fmt: skip
    config = {"epochs": options.epochs, "batch_size": 32, "device": "auto"}
    trained = step(
        "train",
        "train-model",
        {"samples": balanced["selection"], "config": json.dumps(config),
         "name": f"{options.name}-{_stamp()}"},
    )  # fmt: skip
    inferred = step(
        "infer",
        "run-inference",
        {"raster": inputs.scene, "model": trained["model"], "tile_size": options.tile_size},
    )
    assessed = step(
        "assess",
        "assess-accuracy",
        {"classification": inferred["classification"], "reference": inputs.labels,
         "class_field": inputs.class_field},
    )  # fmt: skip
    result.report = json.loads(client.fetch(assessed["report"]))
    return result


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def format_report(report: dict[str, Any]) -> str:
    """A short text table of an assess-accuracy ``report.json``: overall, then per class."""
    overall = report.get("overall", {})

    def num(value: Any, width: int = 8) -> str:
        return f"{value:{width}.3f}" if isinstance(value, int | float) else f"{'-':>{width}}"

    pixels = report.get("pixels", {})
    lines = [
        f"Overall ACC {num(overall.get('Overall ACC'), 0)}   Kappa {num(overall.get('Kappa'), 0)}"
        f"   on {pixels.get('assessed', 0):,} labelled pixels"
        + (f" ({pixels['excluded_nodata']:,} excluded as nodata)"
           if pixels.get("excluded_nodata") else ""),
    ]  # fmt: skip
    stats = report.get("class", {})
    classes = report.get("matrix", {}).get("classes") or list(stats.get("PPV", {}))
    counts = report.get("matrix", {}).get("counts") or []
    lines.append(f"{'class':<16}{'pixels':>8}{'PPV':>8}{'TPR':>8}{'F1':>8}")
    for i, name in enumerate(classes):
        support = sum(counts[i]) if i < len(counts) else 0
        lines.append(
            f"{name:<16}{support:>8}{num(stats.get('PPV', {}).get(name))}"
            f"{num(stats.get('TPR', {}).get(name))}{num(stats.get('F1', {}).get(name))}"
        )
    return "\n".join(lines)


def format_outputs(result: DemoResult, storage: Storage) -> str:
    """Where the results are, as storage paths (and the folder they live in)."""
    wanted = {
        "extract-samples": ("samples",),
        "balanced-sampling": ("selection", "plot"),
        "train-model": ("run", "model", "curve"),
        "run-inference": ("classification", "stats"),
        "assess-accuracy": ("report", "html", "plot"),
    }
    lines = [f"Results (storage paths, under {storage.root}):"]
    for s in result.steps:
        for key in wanted.get(s.identifier, tuple(s.outputs)):
            if key in s.outputs:
                lines.append(f"  {s.identifier + '.' + key:<32} {s.outputs[key]}")
    classification = next(
        (s.outputs.get("classification") for s in result.steps if s.identifier == "run-inference"),
        None,
    )
    if classification:
        lines.append(
            "On the map: LabelingMap(scene).show_classification("
            f"'{classification}'), or open it in QGIS."
        )
    return "\n".join(lines)
