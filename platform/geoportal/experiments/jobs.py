"""Kubernetes Job manifests for experiment runs, as plain dictionaries.

:func:`render_job` is a pure function of a :class:`JobTemplate` and one run, so it
is tested without a cluster and validated against the Kubernetes schema. Each Job
runs ``geoportal train <config> --run <run>`` with the shared-storage PVC mounted
where ``GEOPORTAL_STORAGE`` points, so the run's files land in the user's
``models/`` folder like any other training; a retried pod (``backoffLimit``)
resumes the run from ``last.pt``.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_EXPERIMENT = "geoportal.io/experiment"
LABEL_RUN = "geoportal.io/run"
LABEL_USER = "geoportal.io/user"
ANNOTATION_PARAMS = "geoportal.io/params"


class JobTemplate(BaseModel):
    """How every Job of an experiment runs (values of ``geoportal experiments`` options)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("geoportal", description="Namespace the Jobs are created in.")
    image: str = Field(
        "ghcr.io/geoportal/geoportal-gpu:latest",
        description="Image with the geoportal library (the CUDA variant for GPUs).",
    )
    command: list[str] = Field(
        default_factory=lambda: ["geoportal", "train"],
        description="Command before '<config> --run <run>'.",
    )
    pvc: str = Field(
        "geoportal-storage", description="PersistentVolumeClaim of the shared storage."
    )
    storage_mount: str = Field("/storage", description="Where the storage is mounted in the pod.")
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per Job (0: CPU only).")
    cpu: str = Field("4", description="CPU request.")
    memory: str = Field("16Gi", description="Memory request and limit.")
    ttl_seconds_after_finished: int = Field(
        86400, ge=0, description="Finished Jobs (and their pods) are deleted after this."
    )
    backoff_limit: int = Field(2, ge=0, description="Retries of a failed pod (each resumes).")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Kill a Job running longer than this."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations (e.g. of GPU node taints)."
    )
    service_account: str | None = Field(None, description="Service account of the pods.")
    env: dict[str, str] = Field(default_factory=dict, description="More environment variables.")


def storage_path(template: JobTemplate, relative: str) -> str:
    """Where a storage-relative path is inside the pod."""
    return str(PurePosixPath(template.storage_mount) / relative)


def render_job(
    template: JobTemplate,
    *,
    job_name: str,
    run: str,
    config: str,
    user: str,
    experiment: str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``batch/v1`` Job training ``config`` (storage-relative) as run ``run`` of ``user``."""
    labels = {LABEL_EXPERIMENT: experiment, LABEL_RUN: run, LABEL_USER: _label_value(user)}
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": template.cpu, "memory": template.memory},
        "limits": {"memory": template.memory},
    }
    if template.gpus:
        # Extended resources must be given as limits (requests default to them).
        resources["limits"][GPU_RESOURCE] = str(template.gpus)
        resources["requests"][GPU_RESOURCE] = str(template.gpus)
    env = {
        "GEOPORTAL_STORAGE": template.storage_mount,
        "GEOPORTAL_USER": user,
        "PYTHONUNBUFFERED": "1",
        **template.env,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "train",
                "image": template.image,
                "command": [*template.command, storage_path(template, config), "--run", run],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "resources": resources,
                "volumeMounts": [{"name": "storage", "mountPath": template.storage_mount}],
            }
        ],
        "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": template.pvc}}],
    }
    if template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in template.tolerations]
    if template.service_account:
        pod_spec["serviceAccountName"] = template.service_account
    spec: dict[str, Any] = {
        "backoffLimit": template.backoff_limit,
        "ttlSecondsAfterFinished": template.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if template.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = template.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": template.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_PARAMS: json.dumps(params or {}, sort_keys=True)},
        },
        "spec": spec,
    }


def _label_value(text: str) -> str:
    # Label values: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends.
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in text)[:63]
    return cleaned.strip("_.-") or "user"
