"""Submit experiment Jobs through the Kubernetes API, follow them, pick the best run.

The ``kubernetes`` client is imported lazily: rendering needs no cluster and no
client. Submitting an experiment twice is harmless: a Job that exists already
(HTTP 409) is reported as such and followed like the others, so re-running the
command is also how one asks for the status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoportal.errors import ResourceUnavailableError
from geoportal.training.runs import METRICS

FINISHED = ("succeeded", "failed")


def api_client(
    *,
    host: str | None = None,
    token: str | None = None,
    verify_ssl: bool = True,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> Any:
    """A kubernetes ``ApiClient``: an explicit API server, else in-cluster, else kubeconfig.

    Raises:
        ResourceUnavailableError: no cluster configuration is found.
    """
    from kubernetes import client, config

    if host:
        configuration = client.Configuration()
        configuration.host = host.rstrip("/")
        configuration.verify_ssl = verify_ssl
        if token:
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise ResourceUnavailableError(
                f"no Kubernetes cluster configured ({exc}); give --api-server or --kubeconfig, "
                "or leave out --submit to only render the Jobs",
                field="kubernetes",
            ) from None
    return client.ApiClient()


def _unreachable(api: Any, exc: Exception) -> ResourceUnavailableError:
    return ResourceUnavailableError(
        f"the Kubernetes API at {api.configuration.host} is unreachable ({type(exc).__name__})",
        field="kubernetes",
    )


def _api_error(exc: Any, what: str) -> ResourceUnavailableError:
    try:
        message = json.loads(exc.body).get("message", exc.reason)
    except (TypeError, ValueError):
        message = exc.reason
    return ResourceUnavailableError(
        f"Kubernetes refused to {what}: HTTP {exc.status} {message}", field="kubernetes"
    )


@dataclass
class JobStatus:
    """A Job's state: pending, running, succeeded, failed, or gone (deleted after its TTL)."""

    name: str
    state: str
    submitted: str = ""
    active: int = 0
    succeeded: int = 0
    failed: int = 0


def submit_jobs(jobs: Sequence[dict[str, Any]], api: Any) -> list[JobStatus]:
    """Create the Jobs; ``submitted`` is ``created`` or ``exists`` (HTTP 409)."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    batch = client.BatchV1Api(api)
    out = []
    for job in jobs:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        try:
            # The client serialises plain dictionaries as they are.
            batch.create_namespaced_job(namespace, job)  # type: ignore[arg-type]
            outcome = "created"
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(exc, f"create Job {name}") from None
            outcome = "exists"
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(api, exc) from None
        out.append(JobStatus(name, "pending", outcome))
    return out


def job_status(name: str, namespace: str, api: Any) -> JobStatus:
    """Read one Job's status."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        job = client.BatchV1Api(api).read_namespaced_job_status(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return JobStatus(name, "gone")
        raise _api_error(exc, f"read Job {name}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(api, exc) from None
    status = job.status
    if status is None:
        return JobStatus(name, "pending")
    active, succeeded, failed = status.active or 0, status.succeeded or 0, status.failed or 0
    conditions = {c.type: c.status for c in (status.conditions or [])}
    if succeeded or conditions.get("Complete") == "True":
        state = "succeeded"
    elif conditions.get("Failed") == "True":
        state = "failed"
    elif active:
        state = "running"
    else:
        state = "pending"
    return JobStatus(name, state, active=active, succeeded=succeeded, failed=failed)


def wait_for_jobs(
    names: Sequence[str],
    namespace: str,
    api: Any,
    *,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, JobStatus]:
    """Poll until every Job succeeded, failed or is gone (or the timeout passes)."""
    started = time.monotonic()
    while True:
        states = {n: job_status(n, namespace, api) for n in names}
        done = sum(s.state in (*FINISHED, "gone") for s in states.values())
        if progress is not None:
            counts: dict[str, int] = {}
            for s in states.values():
                counts[s.state] = counts.get(s.state, 0) + 1
            progress(
                100.0 * done / max(len(names), 1), ", ".join(f"{v} {k}" for k, v in counts.items())
            )
        if done == len(names):
            return states
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            return states
        time.sleep(poll_seconds)


def best_run(models_dir: str | Path, runs: Sequence[str]) -> dict[str, Any] | None:
    """The run with the best monitored validation value, from each run's ``metrics.json``.

    Runs without metrics (not started, failed early) are skipped; ``val_loss`` is
    minimised, the other monitors maximised. Returns the run's name, monitor,
    value and epoch, or None when no run has metrics yet.
    """
    best: dict[str, Any] | None = None
    for run in runs:
        path = Path(models_dir) / run / METRICS
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        value = record.get("best_value")
        if value is None:
            continue
        monitor = record.get("monitor", "val_mean_f1")
        score = -value if monitor == "val_loss" else value
        if best is None or score > best["_score"]:
            best = {
                "run": run,
                "monitor": monitor,
                "value": value,
                "epoch": record.get("best_epoch"),
                "completed_epochs": record.get("completed_epochs"),
                "_score": score,
            }
    if best is not None:
        best.pop("_score")
    return best
