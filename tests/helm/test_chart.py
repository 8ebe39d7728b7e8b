"""The chart: lint, render, validate every manifest, and keep the values consistent."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from traitlets.config import Config

from geoportal.settings import load_settings
from tests.helm.conftest import CHART, KUBE_VERSION, NO_SUBCHARTS, REPO, run_helm

SHARED_SCHEMAS = REPO.parent / "shared" / "chart-schemas"
VARIANTS = {
    "defaults": [],
    "postgres-replicas": [
        "--set",
        "wps.replicas=3",
        "--set",
        "wps.database.url=postgresql://wps:secret@db.example.org:5432/wps",
    ],
    "existing-claim-and-secret": [
        "--set",
        "storage.existingClaim=institute-nfs",
        "--set",
        "wps.database.existingSecret=wps-db,wps.replicas=2",
    ],
    "no-policies-no-tiles": ["--set", "networkPolicy.enabled=false,tiles.enabled=false"],
}


def by_kind(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def test_lint(chart_copy: Path) -> None:
    strict = run_helm("lint", "--strict", str(chart_copy), *NO_SUBCHARTS)
    assert "0 chart(s) failed" in strict.stdout
    # the real chart (with its dependencies declared) lints too; only their absence is noted
    real = run_helm("lint", str(CHART), *NO_SUBCHARTS)
    assert "missing these dependencies: jupyterhub,dask-gateway" in real.stdout
    assert "0 chart(s) failed" in real.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_manifest_is_valid_kubernetes(render, variant: str) -> None:
    manifests = render(*VARIANTS[variant])
    kinds = sorted(m["kind"] for m in manifests)
    assert "Deployment" in kinds and "Service" in kinds
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_default_render_has_our_components_only(render) -> None:
    names = sorted((m["kind"], m["metadata"]["name"]) for m in render())
    assert names == [
        ("ConfigMap", "geoportal-wps-settings"),
        ("Deployment", "geoportal-tiles"),
        ("Deployment", "geoportal-wps"),
        ("NetworkPolicy", "geoportal-tiles"),
        ("NetworkPolicy", "geoportal-wps"),
        ("PersistentVolumeClaim", "geoportal-storage"),
        ("Service", "geoportal-tiles"),
        ("Service", "geoportal-wps"),
    ]


def test_storage_is_rwx_and_mounted_everywhere(render, chart_values) -> None:
    manifests = render()
    claim = by_kind(manifests, "PersistentVolumeClaim", "geoportal-storage")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-client"
    mount = chart_values["storage"]["mountPath"]
    for name in ("geoportal-wps", "geoportal-tiles"):
        pod = by_kind(manifests, "Deployment", name)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "storage")
        assert volume["persistentVolumeClaim"]["claimName"] == "geoportal-storage"
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mount in mounts
        assert pod["securityContext"]["runAsUser"] == chart_values["storage"]["serviceUid"]
        assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
    existing = render("--set", "storage.existingClaim=institute-nfs")
    assert not [m for m in existing if m["kind"] == "PersistentVolumeClaim"]
    wps = by_kind(existing, "Deployment", "geoportal-wps")["spec"]["template"]["spec"]
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "institute-nfs"}} in wps[
        "volumes"
    ]


def test_wps_settings_configmap_loads_with_the_settings_model(render, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("GEOPORTAL_")]:
        monkeypatch.delenv(key)
    config = by_kind(render(), "ConfigMap", "geoportal-wps-settings")
    path = tmp_path / "settings.yaml"
    path.write_text(config["data"]["settings.yaml"])
    settings = load_settings(path)
    assert str(settings.storage_root) == "/srv/geoportal"
    assert settings.wps.host == "0.0.0.0" and settings.wps.port == 5000
    assert settings.wps.public_url == "https://geoportal.example.org/services/wps"
    assert settings.wps.database == ""  # the URL is never in the ConfigMap


def test_wps_has_probes_token_and_database_secret(render) -> None:
    manifests = render(*VARIANTS["postgres-replicas"])
    deployment = by_kind(manifests, "Deployment", "geoportal-wps")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/services/wps/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/services/wps/healthz"
    assert container["resources"]["limits"]["memory"] == "16Gi"
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.wps.apiToken",
    }
    assert env["GEOPORTAL_WPS__DATABASE"]["valueFrom"]["secretKeyRef"]["name"] == (
        "geoportal-wps-database"
    )
    secret = by_kind(manifests, "Secret", "geoportal-wps-database")
    assert secret["stringData"]["url"].startswith("postgresql://")
    assert "postgresql" not in json.dumps(by_kind(manifests, "ConfigMap", "geoportal-wps-settings"))


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "wps.replicas=2"],
        ["--set", "wps.replicas=2,wps.database.url=sqlite:////var/lib/geoportal/jobs.sqlite"],
    ],
)
def test_sqlite_job_log_with_several_replicas_is_refused(chart_copy: Path, args) -> None:
    result = run_helm(
        "template",
        "g",
        str(chart_copy),
        "--kube-version",
        KUBE_VERSION,
        *NO_SUBCHARTS,
        *args,
        check=False,
    )
    assert result.returncode != 0
    assert "wps.replicas is 2 but the WPS job log is SQLite" in result.stderr


@pytest.mark.parametrize(
    "key",
    [
        "storage.sizee=1Ti",
        "wps.settings.wps.bogus=1",
        "jupyterhub.custom.geoportal.ownImage.enabeld=true",
    ],
)
def test_values_schema_refuses_misspelt_keys(chart_copy: Path, key: str) -> None:
    result = run_helm(
        "template",
        "g",
        str(chart_copy),
        "--kube-version",
        KUBE_VERSION,
        *NO_SUBCHARTS,
        "--set",
        key,
        check=False,
    )
    assert result.returncode != 0
    assert "Additional property" in result.stderr


def test_values_schema_is_generated_from_its_source() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "helm" / "generate_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def _subchart_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SHARED_SCHEMAS / f"{name}.values.schema.json").read_text())
    schema.pop('$schema"', None)  # misspelt key in the dask-gateway source
    schema = _without_required(schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("name", ["jupyterhub", "dask-gateway"])
def test_subchart_values_match_the_official_schemas(chart_values, name: str) -> None:
    validator = _subchart_validator(name)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(chart_values[name])
    ]
    assert not errors, errors
    broken = copy.deepcopy(chart_values[name])
    (broken.get("singleuser") or broken["gateway"])["imagee"] = {}
    assert not validator.is_valid(broken), "the schema must refuse misspelt keys"


def test_subchart_values_agree_with_ours(chart_values) -> None:
    """The subcharts cannot read our values, so names are repeated; they must match."""
    ours = chart_values
    hub = ours["jupyterhub"]["custom"]["geoportal"]
    assert hub["storage"]["claimName"] == ours["storage"]["claimName"]
    assert hub["storage"]["mountPath"] == ours["storage"]["mountPath"]
    assert hub["storage"]["serviceGid"] == ours["storage"]["serviceGid"]
    notebook = ours["images"]["notebook"]
    cpu = f"{notebook['repository']}:{notebook['cpuTag']}"
    cuda = f"{notebook['repository']}:{notebook['cudaTag']}"
    assert [p["image"] for p in hub["profiles"]] == [cpu, cuda]
    gateway = ours["dask-gateway"]["gateway"]
    image = gateway["backend"]["image"]
    assert f"{image['name']}:{image['tag']}" == cpu
    snippet = gateway["extraConfig"]["10-geoportal-options"]
    for text in (f'"{cpu}"', f'"{cuda}"', f'"{ours["storage"]["claimName"]}"'):
        assert text in snippet
    assert f'MOUNT = "{ours["storage"]["mountPath"]}"' in snippet
    services = ours["jupyterhub"]["hub"]["services"]
    assert services["wps"]["url"] == f"http://geoportal-wps:{ours['wps']['port']}"
    assert services["tiles"]["url"] == f"http://geoportal-tiles:{ours['tiles']['port']}"
    assert ours["wps"]["hubToken"]["secretKey"] == "hub.services.wps.apiToken"
    assert ours["jupyterhub"]["cull"]["enabled"] is False  # unlimited working time


def test_dask_gateway_options_build_valid_worker_pods(chart_values) -> None:
    from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
    from dask_gateway_server.backends.kubernetes.controller import KubeController
    from dask_gateway_server.models import User

    c = Config()
    snippet = chart_values["dask-gateway"]["gateway"]["extraConfig"]["10-geoportal-options"]
    exec(compile(snippet, "dask-gateway extraConfig", "exec"), {"c": c})
    options = c.Backend.cluster_options
    fields = {f["field"] for f in options.get_specification()}
    assert fields == {"worker_cores", "worker_memory", "worker_gpus", "image"}
    controller = KubeController(gateway_instance="geoportal", api_url="http://api")
    user = User("alice.m", groups=[])
    for chosen in ({}, {"worker_gpus": 2, "worker_cores": 8}, {"image": "reg.example.org/a:1"}):
        config = KubeClusterConfig(**options.get_configuration(chosen, user))
        pod = controller.make_pod("geoportal", "c1", config, is_worker=True)
        pod["metadata"]["name"] = "dask-worker-c1-x"
        kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        container = pod["spec"]["containers"][0]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/srv/geoportal/users/alice.m"]["subPath"] == "users/alice.m"
        assert mounts["/srv/geoportal/datasets"]["readOnly"] is True
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if chosen.get("worker_gpus"):
            assert gpus == "2" and container["image"].endswith("-cuda")
            assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert gpus is None and "tolerations" not in pod["spec"]
        if "image" in chosen:
            assert container["image"] == chosen["image"]
