"""``geoportal demo``: the whole loop through the WPS service, step by step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from

if TYPE_CHECKING:
    from geoportal.demo import DemoResult


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @reports_errors
    def demo_command(
        ctx: typer.Context,
        scene: str | None = typer.Option(
            None, "--scene", help="Scene: a storage path (datasets/…) or a local GeoTIFF."
        ),
        labels: str | None = typer.Option(
            None, "--labels", help="Labels (polygons/points, any CRS): storage path or local file."
        ),
        class_field: str | None = typer.Option(
            None, "--class-field", help="Field of the labels holding the classes."
        ),
        epochs: int = typer.Option(5, "--epochs", min=1, help="Training epochs."),
        patch_size: int = typer.Option(5, "--patch-size", min=1, help="Patch side in pixels."),
        wps_url: str | None = typer.Option(
            None,
            "--wps-url",
            help="Use this WPS endpoint instead of starting a local server "
            "(it must see the same storage).",
        ),
        token: str | None = typer.Option(
            None, "--token", envvar="JUPYTERHUB_API_TOKEN", help="Token for --wps-url."
        ),
        user: str | None = typer.Option(
            None, "--user", help="Act for this user (default: $GEOPORTAL_USER or the login)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    ) -> None:
        """Run extract → balance → train → infer → assess through the WPS service.

        Without --scene/--labels: the NC Landsat 7 scene if the storage holds it, else a
        generated scene (and it says so). Prints each step with its time, the accuracy
        report and the storage paths of the results.
        """
        from geoportal.demo import (
            DemoOptions,
            format_outputs,
            format_report,
            local_wps_server,
            prepare_inputs,
            run_demo,
        )
        from geoportal.storage import storage_from_settings
        from geoportal.wpsclient import WpsClient

        settings = settings_from(ctx)
        storage = storage_from_settings(settings)
        who = user or current_user()
        echo = typer.echo
        inputs = prepare_inputs(storage, who, scene, labels, class_field, echo)
        options = DemoOptions(epochs=epochs, patch_size=patch_size)

        def progress(step: str) -> Callable[[float, str], None]:
            last = [-10.0]

            def report(percent: float, message: str) -> None:
                if quiet or (percent - last[0] < 10 and percent < 100):
                    return
                last[0] = percent
                echo(f"    [{percent:5.1f}%] {message}")

            return report

        started = time.monotonic()

        def loop(url: str, token: str | None) -> DemoResult:
            echo(f"WPS service: {url}")
            client = WpsClient(url, token=token, timeout=120)
            return run_demo(client, inputs, options, echo=echo, progress=progress)

        if wps_url:
            result = loop(wps_url, token)
        else:
            # The server must see this command's storage and settings, also when they
            # came from --config rather than the environment.
            env = {
                "GEOPORTAL_STORAGE": str(settings.storage_root),
                "GEOPORTAL_STATE_DIR": str(settings.state_dir),
            }
            config = ctx.find_root().params.get("config")
            if config:
                env["GEOPORTAL_CONFIG"] = str(config)
            log = settings.state_dir / "demo" / "wps.log"
            with local_wps_server(who, log, env=env) as url:
                result = loop(url, None)
        echo("")
        echo("Steps:")
        for s in result.steps:
            echo(f"  {s.name:<18} {s.seconds:7.1f} s")
        echo(f"  {'total':<18} {time.monotonic() - started:7.1f} s")
        echo("")
        if inputs.generated:
            echo("Accuracy on the GENERATED scene (not real imagery):")
        else:
            echo(f"Accuracy of the classification of {inputs.scene} against {inputs.labels}")
            echo("(the same labels trained the model, so this measures fit, not generalisation):")
        echo(format_report(result.report))
        echo("")
        echo(format_outputs(result, storage))
