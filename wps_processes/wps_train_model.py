"""WPS process ``train-model``: train a model on a sample set, as a configuration says."""

from __future__ import annotations

import os
from typing import Any

from pywps import FORMATS, Format

from geoportal.errors import ConfigError, GeoportalError, InvalidInputError
from wps_processes.base import (
    FOLDER_FORMAT,
    GeoportalProcess,
    JobContext,
    literal_input,
    path_input,
    reference_output,
)

CHECKPOINT_FORMAT = Format("application/octet-stream", extension=".pt")
#: Fields that name the ``samples`` input; every other field is a key of ``config``.
_SAMPLE_FIELDS = ("samples", "data.samples")


class TrainModel(GeoportalProcess):
    identifier = "train-model"
    title = "Train a model"
    abstract = (
        "Trains a patch classifier or a segmentation network on a sample set or a balanced "
        "selection.csv. `config` is the training configuration as YAML or JSON text (every key "
        "optional, e.g. 'epochs: 5'; see docs/training.md). The run is written to "
        "users/<you>/models/<name>/ (config.yaml, last.pt, best.pt, metrics.json, "
        "learning_curve.png); a run name that exists with the same configuration resumes. "
        "Status reports a percentage per epoch."
    )
    example_inputs = {
        "samples": "{extract-samples:samples}",
        "config": "epochs: 1",
    }

    def make_inputs(self) -> list[Any]:
        return [
            path_input("samples", "Samples", "Sample-set folder or selection.csv (storage path)."),
            literal_input(
                "config",
                "Configuration",
                "Training configuration as YAML or JSON text; empty means all defaults.",
                default="",
            ),
            literal_input(
                "name",
                "Run name",
                "Folder under users/<you>/models/ (default: from the job).",
                default="",
            ),  # fmt: skip
        ]

    def make_outputs(self) -> list[Any]:
        return [
            reference_output("model", "Best checkpoint", [CHECKPOINT_FORMAT]),
            reference_output("metrics", "Metrics per epoch", [FORMATS.JSON]),
            reference_output("run", "Run folder", [FOLDER_FORMAT]),
            reference_output("curve", "Learning curve", [Format("image/png", extension=".png")]),
        ]

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        from geoportal.training import config_from_text
        from geoportal.training.loop import train
        from geoportal.training.runs import check_run_name

        samples = ctx.input_path(request, "samples")
        text = str(ctx.literal(request, "config", "") or "")
        name = check_run_name(str(ctx.literal(request, "name", "") or "").strip() or
                              f"run-{ctx.job_id[:8]}")  # fmt: skip
        run_dir = ctx.storage.resolve(ctx.user, f"users/{ctx.user}/models/{name}", write=True,
                                      field="name")  # fmt: skip

        def resolve(location: str) -> os.PathLike[str]:
            # Locations inside the configuration, and the sample set a selection.csv names.
            return ctx.storage.resolve(ctx.user, location, must_exist=True, field="samples")

        def progress(percent: float, message: str) -> None:
            ctx.progress(response, 2 + 0.97 * percent, message)

        try:
            config = config_from_text(text)
            ctx.progress(response, 1, "indexing the samples")
            result = train(config, run_dir, samples=samples, resolve=resolve, progress=progress)
        except GeoportalError as exc:
            raise _as_input_error(exc) from None
        ctx.set_output(response, "model", result.best)
        ctx.set_output(response, "metrics", run_dir / "metrics.json")
        ctx.set_output(response, "run", run_dir)
        ctx.set_output(response, "curve", run_dir / "learning_curve.png")


def _as_input_error(exc: GeoportalError) -> GeoportalError:
    # A WPS locator names an input; configuration keys are inside the input `config`.
    if exc.field in _SAMPLE_FIELDS or exc.field in ("name", "run") or exc.field is None:
        return exc
    if isinstance(exc, ConfigError | InvalidInputError):
        prefix = f"config key '{exc.field}': " if exc.field not in ("config",) else ""
        return type(exc)(prefix + exc.message, field="config")
    return exc


PROCESSES = [TrainModel]
