"""``geoportal assess``: score a classification against reference labels (PyCM)."""

from __future__ import annotations

from pathlib import Path

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("assess")
    @reports_errors
    def assess_command(
        ctx: typer.Context,
        classification: str = typer.Argument(
            ..., help="Classification raster: local path, storage path or http(s) URL."
        ),
        reference: str = typer.Argument(
            ..., help="Labelset (polygons/points, any CRS) or label raster: local or storage path."
        ),
        class_field: str | None = typer.Option(
            None, "--class-field", help="Field of a labelset holding the classes (codes or names)."
        ),
        baseline: str | None = typer.Option(
            None, "--baseline", help="A second classification of the same scene to compare with."
        ),
        mapping: str | None = typer.Option(
            None,
            "--mapping",
            help='JSON: classification class -> reference class, e.g. \'{"1": "forest"}\'.',
        ),  # fmt: skip
        resample: bool = typer.Option(
            False, "--resample", help="Resample a reference or baseline on another grid (nearest)."
        ),
        match_by: str = typer.Option("auto", "--match-by", help="auto, code or name."),
        all_touched: bool = typer.Option(
            False, "--all-touched", help="Count every pixel a label polygon touches."
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="Folder for report.json, report.html and confusion.png "
            "(default: ./<classification>_accuracy).",
        ),  # fmt: skip
        user: str | None = typer.Option(None, "--user", help="Act for this user."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    ) -> None:
        """Score CLASSIFICATION against REFERENCE where labels exist; print a short summary."""
        from geoportal.accuracy import assess_accuracy, write_assessment
        from geoportal.accuracy.assess import parse_options
        from geoportal.storage import storage_from_settings

        storage = storage_from_settings(settings_from(ctx))
        who = user or current_user()

        def resolve(location: str, field: str) -> str:
            local = Path(location).expanduser()
            if local.exists() and not local.resolve().is_relative_to(storage.root):
                return str(local)
            return storage.resolve_input(who, location, field=field)

        options = parse_options(
            class_field=class_field, mapping=mapping, resample=resample, match_by=match_by,
            all_touched=all_touched,
        )  # fmt: skip

        def progress(fraction: float, message: str) -> None:
            if not quiet:
                typer.echo(f"[{100 * fraction:5.1f}%] {message}", err=True)

        assessment = assess_accuracy(
            resolve(classification, "classification"),
            resolve(reference, "reference"),
            options,
            baseline=resolve(baseline, "baseline") if baseline else None,
            progress=progress,
        )
        folder = out or Path.cwd() / f"{Path(classification).stem}_accuracy"
        paths = write_assessment(assessment, folder)
        report = assessment.report
        typer.echo(assessment.summary())
        typer.echo(f"classes matched by {report.matching['by']}: " + ", ".join(
            f"{name} PPV {_fmt(report.per_class['PPV'].get(name))} "
            f"TPR {_fmt(report.per_class['TPR'].get(name))}"
            for name in report.classes
        ))  # fmt: skip
        for warning in report.matching.get("warnings", []):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"report: {paths.report}\nhtml: {paths.html}\nplot: {paths.plot}")


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "n/a"
