"""``geoportal experiments BASE GRID``: one config and one Kubernetes Job per grid combination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("experiments")
    @reports_errors
    def experiments_command(
        ctx: typer.Context,
        base: Path = typer.Argument(..., help="Base training configuration (YAML/JSON)."),
        grid: Path = typer.Argument(
            ..., help="Grid YAML mapping dotted config keys to lists of values."
        ),
        name: str = typer.Option(..., "--name", help="Experiment name (lowercase, digits, '-')."),
        user: str | None = typer.Option(None, "--user", help="Owner (default $GEOPORTAL_USER)."),
        job_template: Path | None = typer.Option(
            None, "--job-template", help="YAML of Job settings (image, pvc, gpus, tolerations...)."
        ),
        image: str | None = typer.Option(None, "--image", help="Container image."),
        namespace: str | None = typer.Option(None, "--namespace", help="Kubernetes namespace."),
        pvc: str | None = typer.Option(None, "--pvc", help="Shared-storage PVC name."),
        gpus: int | None = typer.Option(None, "--gpus", help="nvidia.com/gpu per Job."),
        cpu: str | None = typer.Option(None, "--cpu", help="CPU request per Job."),
        memory: str | None = typer.Option(None, "--memory", help="Memory per Job."),
        ttl: int | None = typer.Option(None, "--ttl", help="ttlSecondsAfterFinished."),
        backoff_limit: int | None = typer.Option(None, "--backoff-limit", help="Pod retries."),
        submit: bool = typer.Option(False, "--submit", help="Create the Jobs in the cluster."),
        wait: bool = typer.Option(False, "--wait", help="With --submit: wait for the Jobs."),
        poll: float = typer.Option(30.0, "--poll", help="Seconds between status polls."),
        timeout: float | None = typer.Option(None, "--timeout", help="Stop waiting after this."),
        api_server: str | None = typer.Option(None, "--api-server", help="Kubernetes API URL."),
        token: str | None = typer.Option(
            None, "--token", envvar="GEOPORTAL_K8S_TOKEN", help="Bearer token for --api-server."
        ),  # fmt: skip
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file."),
    ) -> None:
        """Write one configuration per combination and render (or submit) one Job each.

        Files go to users/<user>/runs/exp-<name>/ in the storage (configs/, jobs/,
        jobs.yaml for kubectl, summary.json); runs train into users/<user>/models/<name>-NNN/.
        """
        import yaml

        from geoportal.atomic import atomic_write_text
        from geoportal.errors import ConfigError
        from geoportal.experiments.cluster import api_client, best_run, submit_jobs, wait_for_jobs
        from geoportal.experiments.grid import check_experiment_name, describe, prepare_experiment
        from geoportal.experiments.jobs import JobTemplate, render_job
        from geoportal.storage import storage_from_settings

        check_experiment_name(name)
        who = user or current_user()
        storage = storage_from_settings(settings_from(ctx))
        storage.ensure_layout(who)
        values: dict[str, Any] = {}
        if job_template is not None:
            try:
                values = yaml.safe_load(job_template.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(
                    f"cannot read job template: {exc}", field="job_template"
                ) from None
        options = {"image": image, "namespace": namespace, "pvc": pvc, "gpus": gpus, "cpu": cpu,
                   "memory": memory, "ttl_seconds_after_finished": ttl,
                   "backoff_limit": backoff_limit}  # fmt: skip
        values.update({k: v for k, v in options.items() if v is not None})
        try:
            template = JobTemplate.model_validate(values)
        except ValueError as exc:
            raise ConfigError(f"invalid job settings: {exc}", field="job_template") from None

        folder = storage.resolve(who, f"users/{who}/runs/exp-{name}", write=True, field="name")
        experiment = prepare_experiment(name, base, grid, folder)
        jobs = []
        for run in experiment.runs:
            job = render_job(
                template,
                job_name=run.job_name,
                run=run.run,
                config=storage.relative(run.config_path),
                user=who,
                experiment=name,
                params=run.params,
            )
            run.job_path = atomic_write_text(
                folder / "jobs" / f"{run.run}.yaml", yaml.safe_dump(job, sort_keys=False)
            )
            jobs.append(job)
        atomic_write_text(folder / "jobs.yaml", yaml.safe_dump_all(jobs, sort_keys=False))
        typer.echo(f"{len(jobs)} runs of experiment '{name}' in {folder}")
        for run in experiment.runs:
            typer.echo(f"  {run.job_name}: {describe(run.params)}")
        if not submit:
            typer.echo(
                f"rendered only; submit with --submit or: kubectl apply -f {folder / 'jobs.yaml'}"
            )
            return

        api = api_client(host=api_server, token=token, kubeconfig=kubeconfig)
        summary = experiment.summary()
        submitted = submit_jobs(jobs, api)
        for s in submitted:
            typer.echo(f"  {s.name}: {s.submitted}")
        names = [j["metadata"]["name"] for j in jobs]
        states = wait_for_jobs(
            names,
            template.namespace,
            api,
            poll_seconds=poll,
            timeout_seconds=timeout if wait else 0,
            progress=lambda p, m: typer.echo(f"[{p:5.1f}%] {m}"),
        )
        for entry in summary["runs"]:
            entry["state"] = states[entry["job"]].state
        best = best_run(storage.user_dir(who) / "models", [r.run for r in experiment.runs])
        summary["best"] = best
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))
        if best is None:
            typer.echo("no run has finished an epoch yet")
        else:
            typer.echo(
                f"best run: {best['run']} ({best['monitor']}={best['value']:.4f} "
                f"at epoch {best['epoch']})"
            )
