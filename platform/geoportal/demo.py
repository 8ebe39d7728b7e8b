"""The whole loop on one scene, through the WPS service, as a newcomer would run it.

``geoportal demo`` extracts samples, balances them, trains, infers over the
scene and assesses the classification, each step as a WPS Execute against a
real server, and prints each step with its time and then the accuracy report.
The results stay in the user's storage area, where the map can show them.
Without a scene it uses the real NC Landsat 7 scene if it is in ``datasets/``
and otherwise generates a scene with labels, saying so loudly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoportal.errors import InvalidInputError
from geoportal.storage import Storage

Echo = Callable[[str], None]

NC_SCENE = "datasets/lsat7_2000_6band.tif"
NC_LABELS = "datasets/labels/landsat96_polygons.gpkg"


@dataclass
class DemoInputs:
    """Storage-relative inputs of the demo and whether they were generated."""

    scene: str
    labels: str
    class_field: str
    generated: bool = False


@dataclass
class DemoStep:
    name: str
    seconds: float
    outputs: dict[str, str]


@dataclass
class DemoResult:
    inputs: DemoInputs
    steps: list[DemoStep] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def prepare_inputs(
    storage: Storage,
    user: str,
    scene: str | None,
    labels: str | None,
    class_field: str | None,
    echo: Echo,
) -> DemoInputs:
    """Put the scene and labels where the WPS can read them, or generate them.

    Files outside the storage are copied in: the scene into ``datasets/`` (catalogued),
    the labels into the user's ``labels/``.
    """
    storage.ensure_layout(user)
    if scene or labels:
        if not (scene and labels and class_field):
            raise InvalidInputError(
                "give --scene, --labels and --class-field together (or none of them)",
                field="scene",
            )
        return DemoInputs(
            _into_storage(storage, user, scene, kind="scene"),
            _into_storage(storage, user, labels, kind="labels"),
            class_field,
        )
    if (storage.root / NC_SCENE).exists() and (storage.root / NC_LABELS).exists():
        echo(f"Using the real NC Landsat 7 scene in the storage: {NC_SCENE}")
        return DemoInputs(NC_SCENE, NC_LABELS, "id")
    from geoportal.synthetic import make_scene

    banner = "=" * 72
    echo(banner)
    echo("NO REAL DATA GIVEN: generating a synthetic scene and labels for the demo.")
    echo("Results on generated data say nothing about real imagery. Use")
    echo("  geoportal demo --scene SCENE.tif --labels LABELS.gpkg --class-field FIELD")
    echo(banner)
    folder = storage.user_dir(user) / "labels"
    made = make_scene(folder, width=400, height=360, bands=4, n_classes=4, name="demo_synthetic",
                      labels_per_class=12)  # fmt: skip
    target = storage.user_dir(user) / "runs" / "demo-input" / "demo_synthetic.tif"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(made.raster, target)
    return DemoInputs(
        storage.relative(target), storage.relative(made.labels), made.class_field, generated=True
    )


def _into_storage(storage: Storage, user: str, location: str, kind: str) -> str:
    path = Path(location).expanduser()
    if path.exists() and path.resolve().is_relative_to(storage.root):
        return storage.relative(storage.resolve(user, str(path.resolve()), field=kind))
    if not (storage.root / location).exists() and not path.exists():
        raise InvalidInputError(f"{kind} {location} does not exist", field=kind)
    if (storage.root / location).exists() and not path.is_absolute():
        return storage.relative(storage.resolve(user, location, must_exist=True, field=kind))
    if not path.exists():
        raise InvalidInputError(f"{kind} {location} does not exist", field=kind)
    if kind == "scene":
        from geoportal.catalog import add_datasets

        entries = add_datasets(storage, [path], replace=True)
        return storage.relative(storage.datasets_dir / Path(entries[0].path).name)
    import geopandas as gpd

    from geoportal.atomic import atomic_path

    target = storage.user_dir(user) / "labels" / f"{path.stem}.gpkg"
    with atomic_path(target) as tmp:
        gpd.read_file(path).to_file(tmp, driver="GPKG", layer=path.stem)
    return storage.relative(target)


def run_demo(
    client: Any,
    inputs: DemoInputs,
    *,
    epochs: int,
    patch_size: int,
    echo: Echo,
    progress: Callable[[str], Callable[[float, str], None]] | None = None,
) -> DemoResult:
    """Run extract → balance → train → infer → assess through ``client`` (a WpsClient)."""
    result = DemoResult(inputs)

    def step(name: str, identifier: str, values: dict[str, Any]) -> dict[str, str]:
        echo(f"▶ {name} ({identifier})")
        done = client.execute(identifier, values, progress=progress(name) if progress else None)
        result.steps.append(DemoStep(name, done.seconds, done.outputs))
        echo(f"  ✔ {name}: {done.seconds:.1f} s — {done.status_message}")
        return done.outputs

    extracted = step(
        "extract samples",
        "extract-samples",
        {"raster": inputs.scene, "labels": inputs.labels, "class_field": inputs.class_field,
         "patch_size": patch_size},
    )  # fmt: skip
    balanced = step(
        "balance samples",
        "balanced-sampling",
        {"samples": extracted["samples"], "n_clusters": 0, "threshold": 20, "step": 2},
    )
    trained = step(
        "train",
        "train-model",
        {"samples": balanced["selection"], "config": json.dumps({"epochs": epochs})},
    )
    inferred = step("infer", "run-inference", {"raster": inputs.scene, "model": trained["model"]})
    assessed = step(
        "assess",
        "assess-accuracy",
        {"classification": inferred["classification"], "reference": inputs.labels,
         "class_field": inputs.class_field},
    )  # fmt: skip
    result.report = json.loads(client.fetch(assessed["report"]))
    return result


def format_report(report: dict[str, Any]) -> str:
    """A short text table of the accuracy report: overall figures, then per class."""
    overall = report.get("overall", {})
    lines = [
        f"Overall ACC {overall.get('Overall ACC', float('nan')):.3f}   "
        f"Kappa {overall.get('Kappa', float('nan')):.3f}"
    ]
    per_class = report.get("class", {})
    lines.append(f"{'class':<16}{'PPV':>8}{'TPR':>8}{'F1':>8}")
    for name, stats in per_class.items():

        def fmt(key: str, stats: dict[str, Any] = stats) -> str:
            value = stats.get(key)
            return f"{value:8.3f}" if isinstance(value, (int, float)) else f"{'-':>8}"

        lines.append(f"{name:<16}{fmt('PPV')}{fmt('TPR')}{fmt('F1')}")
    return "\n".join(lines)
