"""``geoportal samples``: extract training samples and select a balanced subset.

A thin layer over :mod:`geoportal.sampling`: ``extract`` calls
:func:`~geoportal.sampling.extract.extract_samples`, ``balance`` runs
:class:`~geoportal.sampling.balanced.BalancedSampler`, ``check-labels`` runs
:func:`~geoportal.labelcheck.check_labels`, the same functions the
WPS processes and notebooks call. Paths are local paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from geoportal.cli.common import reports_errors

samples_app = typer.Typer(
    help="Training samples: extract from labels, balanced selection.", no_args_is_help=True
)


def _progress(label: str):  # noqa: ANN202 - a tqdm-backed progress callback
    from tqdm import tqdm

    bar = tqdm(total=100, desc=label, unit="%", leave=False)

    def report(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message, refresh=True)

    report.close = bar.close  # type: ignore[attr-defined]
    return report


@samples_app.command("extract")
@reports_errors
def extract(
    raster: Path = typer.Argument(..., help="Scene (GeoTIFF or any GDAL raster with a CRS)."),
    labels: Path = typer.Argument(..., help="Vector labels (any CRS) or a label raster."),
    out: Path = typer.Argument(..., help="Sample-set folder to create."),
    class_field: str | None = typer.Option(None, help="Field with class names or codes."),
    patch_size: int = typer.Option(16, help="Patch height and width in pixels."),
    mode: str = typer.Option("patch", help="patch or segmentation."),
    stride: int | None = typer.Option(None, help="Grid spacing (patch: 1, segmentation: patch)."),
    samples_per_polygon: int | None = typer.Option(None, help="Random pixels per polygon."),
    min_valid: float = typer.Option(1.0, help="Minimum fraction of valid pixels."),
    edge: str = typer.Option("skip", help="skip, pad or shift."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Cut patches (or image/mask pairs) where labels are; print the summary as JSON."""
    from geoportal.errors import InvalidInputError
    from geoportal.sampling.extract import ExtractConfig, extract_samples

    try:
        config = ExtractConfig(
            patch_size=patch_size, mode=mode, class_field=class_field, stride=stride,
            samples_per_polygon=samples_per_polygon, min_valid=min_valid, edge=edge,
        )  # fmt: skip
    except ValueError as exc:
        raise InvalidInputError(f"invalid option: {exc}", field="options") from None
    progress = None if quiet else _progress("extract")
    try:
        result = extract_samples(raster, labels, out, config, progress=progress)
    finally:
        if progress is not None:
            progress.close()  # type: ignore[attr-defined]
    typer.echo(json.dumps(result.summary, indent=1))


@samples_app.command("balance")
@reports_errors
def balance(
    samples: Path = typer.Argument(..., help="Sample-set folder (class folders of containers)."),
    out: Path = typer.Argument(..., help="Folder for selection.csv, report.json, plot.png."),
    n_clusters: int = typer.Option(0, help="Clusters per group; 0 chooses by silhouette."),
    threshold: int = typer.Option(50, help="Clusters smaller than this are kept whole."),
    step: int = typer.Option(4, help="Every step-th sample of larger clusters is kept."),
    per_class: bool = typer.Option(True, "--per-class/--global", help="Cluster per class."),
    seed: int = typer.Option(0, help="Seed of the clustering."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw plot.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Cluster-balanced selection (the seed paper's algorithm); print the per-class table."""
    from geoportal.sampling.balanced import BalancedConfig, BalancedSampler

    config = BalancedConfig(
        n_clusters=n_clusters or None, threshold=threshold, step=step, per_class=per_class,
        seed=seed,
    )  # fmt: skip
    sampler = BalancedSampler(config)
    progress = None if quiet else _progress("balance")
    try:
        result = sampler.run(samples, out, plot=plot, progress=progress)
    finally:
        if progress is not None:
            progress.close()  # type: ignore[attr-defined]
    rep = result.report_data
    for name, cls in rep["classes"].items():
        typer.echo(
            f"{name}: {cls['selected']}/{cls['samples']} kept, {cls['n_clusters']} clusters "
            f"(sizes {[c['size'] for c in cls['clusters']]})"
        )
    typer.echo(f"selected {rep['selected']} of {rep['samples']} -> {result.selection}")


@samples_app.command("check-labels")
@reports_errors
def check_labels_cmd(
    raster: Path = typer.Argument(..., help="Scene the labels describe."),
    labels: Path = typer.Argument(..., help="Vector labels (polygons and/or points)."),
    class_field: str = typer.Option(..., help="Field with class names or codes."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Write every feature's verdict here."),
    drop: Path | None = typer.Option(None, help="Write the labels without the suspects (.gpkg)."),
    points: bool = typer.Option(True, "--points/--no-points", help="Drop suspect points too."),
    k: int = typer.Option(7, help="Neighbours that vote for each pixel."),
    max_own_share: float = typer.Option(0.2, help="Suspect at most this share for its class."),
    min_other_share: float = typer.Option(0.6, help="...and at least this for one other class."),
) -> None:
    """Find labelled features whose pixels the other labels call another class."""
    import csv

    from geoportal.atomic import atomic_path
    from geoportal.labelcheck import LabelCheckConfig, check_labels, checks_table, drop_suspects

    config = LabelCheckConfig(k=k, max_own_share=max_own_share, min_other_share=min_other_share)
    checks = check_labels(raster, labels, class_field, config)
    suspects = [c for c in checks if c.suspect]
    judged = sum(c.own_share is not None for c in checks)
    typer.echo(
        f"{len(suspects)} suspect of {judged} features with valid pixels ({len(checks)} in all)"
    )
    for c in suspects:
        typer.echo(
            f"  feature {c.index} ({c.kind}, {c.pixels} px): labelled {c.label}, "
            f"{c.other_share:.0%} of the votes say {c.other_class}"
        )
    if csv_out is not None:
        rows = checks_table(checks)
        with atomic_path(csv_out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        typer.echo(f"verdicts -> {csv_out}")
    if drop is not None:
        kinds = ("polygon", "point") if points else ("polygon",)
        typer.echo(f"labels without suspects -> {drop_suspects(labels, checks, drop, kinds=kinds)}")


def register(app: typer.Typer) -> None:
    app.add_typer(samples_app, name="samples")
