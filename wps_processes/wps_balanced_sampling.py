"""WPS process ``balanced-sampling``: the seed paper's cluster-balanced sample selection."""

from __future__ import annotations

from typing import Any

from pywps import FORMATS, Format

from geoportal.sampling.balanced import (
    PLOT_PNG,
    REPORT_JSON,
    SELECTION_CSV,
    BalancedConfig,
    BalancedSampler,
)
from wps_processes.base import (
    GeoportalProcess,
    JobContext,
    literal_input,
    path_input,
    reference_output,
)

CSV = Format("text/csv", extension=".csv")


class BalancedSampling(GeoportalProcess):
    identifier = "balanced-sampling"
    title = "Balanced sampling"
    abstract = (
        "Clusters the samples of a sample set by the per-band mean and standard deviation of each "
        "sample (KMeans on standardised features, per class by default), then takes every sample "
        "of clusters smaller than threshold and every step-th sample of larger ones. Outputs the "
        "selection manifest (file,index,class,cluster), a JSON report and a PCA plot."
    )
    example_inputs = {
        "samples": "{extract-samples:samples}",
        "n_clusters": "3",
        "threshold": "20",
        "step": "3",
    }

    def make_inputs(self) -> list[Any]:
        return [
            path_input("samples", "Sample set", "Storage path of a sample-set folder."),
            literal_input("n_clusters", "Clusters", "Clusters per group; 0 chooses by silhouette.",
                          data_type="integer", default=0),
            literal_input("threshold", "Threshold", "Clusters smaller than this are kept whole.",
                          data_type="integer", default=50),
            literal_input("step", "Step", "Every step-th sample of larger clusters is kept.",
                          data_type="integer", default=4),
            literal_input("per_class", "Per class", "Cluster each class separately.",
                          data_type="boolean", default=True),
            literal_input("seed", "Seed", "Seed of the clustering.", data_type="integer",
                          default=0),
        ]  # fmt: skip

    def make_outputs(self) -> list[Any]:
        return [
            reference_output("selection", "Selection manifest", [CSV]),
            reference_output("report", "Report", [FORMATS.JSON]),
            reference_output("plot", "PCA plot", [Format("image/png", extension=".png")]),
        ]

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        samples = ctx.input_path(request, "samples")
        config = BalancedConfig(
            n_clusters=ctx.literal(request, "n_clusters", 0) or None,
            threshold=ctx.literal(request, "threshold", 50),
            step=ctx.literal(request, "step", 4),
            per_class=bool(ctx.literal(request, "per_class", True)),
            seed=ctx.literal(request, "seed", 0),
        )
        sampler = BalancedSampler(config)
        sampler.run(
            samples, ctx.run_dir, samples_ref=ctx.storage.relative(samples),
            progress=ctx.progress_callback(response, 0, 98),
        )  # fmt: skip
        ctx.set_output(response, "selection", ctx.run_dir / SELECTION_CSV)
        ctx.set_output(response, "report", ctx.run_dir / REPORT_JSON)
        ctx.set_output(response, "plot", ctx.run_dir / PLOT_PNG)


PROCESSES = [BalancedSampling]
