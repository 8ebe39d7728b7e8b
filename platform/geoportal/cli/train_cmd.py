"""``geoportal train CONFIG``: train a model from a configuration file, resumably."""

from __future__ import annotations

from pathlib import Path

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("train")
    @reports_errors
    def train_command(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="Training configuration (YAML or JSON)."),
        run: str | None = typer.Option(
            None, "--run", help="Run name: users/<user>/models/<run>/. An existing run resumes."
        ),
        samples: str | None = typer.Option(
            None, "--samples", help="Sample-set folder or selection.csv (overrides data.samples)."
        ),
        user: str | None = typer.Option(
            None, "--user", help="Act for this user (default: $GEOPORTAL_USER or the login)."
        ),
    ) -> None:
        """Train as CONFIG says; prints one line per epoch and the run folder at the end."""
        from geoportal.storage import storage_from_settings
        from geoportal.training import load_config
        from geoportal.training.loop import train
        from geoportal.training.runs import check_run_name, default_run_name

        cfg = load_config(config)
        who = user or current_user()
        storage = storage_from_settings(settings_from(ctx))
        storage.ensure_layout(who)

        def resolve(location: str) -> Path:
            # Local files of the person at the shell are theirs; storage locations are confined.
            local = Path(location).expanduser()
            if local.is_absolute() and local.exists() and not local.is_relative_to(storage.root):
                return local
            return storage.resolve(who, location, must_exist=True, field="data.samples")

        samples_path = resolve(samples) if samples else None
        name = check_run_name(run or default_run_name(cfg.model.architecture or "model"))
        run_dir = storage.resolve(who, f"users/{who}/models/{name}", write=True, field="run")

        def progress(percent: float, message: str) -> None:
            typer.echo(f"[{percent:5.1f}%] {message}")

        result = train(cfg, run_dir, samples=samples_path, resolve=resolve, progress=progress)
        if result.resumed_from_epoch:
            typer.echo(f"resumed after epoch {result.resumed_from_epoch}")
        best = result.metrics
        typer.echo(
            f"run {name}: best epoch {best['best_epoch']} ({best['monitor']}="
            f"{best['best_value']}); files in {run_dir}"
        )
