"""User pods rendered by the real KubeSpawner from the chart's values, offline.

The chart's ``jupyterhub.custom.geoportal`` block goes through the same function the hub
runs (``geoportal_hub.k8s_config.configure``); KubeSpawner then builds the pod for every
profile and option combination without a cluster (its API client is never called), and
each manifest is validated against the Kubernetes schemas in strict mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from geoportal_hub.k8s_config import configure
from geoportal_hub.profiles import GPU_RESOURCE, memory_bytes, option_combinations

VALUES = Path(__file__).resolve().parents[2] / "helm" / "geoportal" / "values.yaml"
K8S_VERSION = "1.30"
USER_ID = 7
OWN_IMAGE = "registry.example.org/lab/custom-geo:2.1"


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def hub_config(chart_values: dict[str, Any]) -> tuple[Config, Any]:
    c = Config()
    values = configure(c, chart_values["jupyterhub"]["custom"]["geoportal"])
    return c, values


def render_pod(c: Config, user_options: dict[str, str], username: str = "alice") -> dict[str, Any]:
    """Build the pod manifest KubeSpawner would create, as a plain dict."""
    import kubespawner.spawner as spawner_module
    from kubernetes_asyncio.client import ApiClient

    async def build() -> dict[str, Any]:
        spawner = spawner_module.KubeSpawner(
            config=c,
            user=SimpleNamespace(name=username, id=USER_ID, url=f"/user/{username}/"),
            hub=SimpleNamespace(
                public_host="",
                url="http://hub:8081/hub/",
                base_url="/",
                api_url="http://hub:8081/hub/api",
            ),
            namespace="geoportal",
            _mock=True,
        )
        spawner.api_token = "0" * 32
        spawner.user_options = dict(user_options)
        await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(pod)

    original = spawner_module.load_config
    spawner_module.load_config = lambda **_: None
    try:
        return asyncio.run(build())
    finally:
        spawner_module.load_config = original


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def notebook(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")


def test_every_profile_and_option_combination_renders_a_valid_pod(hub_config) -> None:
    c, values = hub_config
    combos = option_combinations(values)
    # cpu: 4 core x 4 memory choices; cuda: 3 x 3 x 3 GPU choices (x the listed image each)
    assert len(combos) == 4 * 4 + 3 * 3 * 3
    for options in combos:
        pod = render_pod(c, options)
        validate(pod)
        container = notebook(pod)
        limits = container["resources"]["limits"]
        profile = next(p for p in values.profiles if p.slug == options["profile"])
        if profile.gpus:
            assert limits[GPU_RESOURCE] == options["gpus"], options
            assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod[
                "spec"
            ]["tolerations"]
            assert container["image"].endswith("-cuda")
        else:
            assert GPU_RESOURCE not in limits, options
            assert "nodeSelector" not in pod["spec"] or not pod["spec"]["nodeSelector"]
            assert container["image"].endswith("-cpu")
        assert float(limits["cpu"]) == float(options["cores"])
        assert limits["memory"] == memory_bytes(options["memory"].upper())
        requests = container["resources"]["requests"]
        assert float(requests["cpu"]) <= float(limits["cpu"])


def test_cpu_profile_has_no_gpu_and_cuda_profile_has_gpu_and_tolerations(hub_config) -> None:
    c, _ = hub_config
    cpu = render_pod(c, {"profile": "cpu"})
    assert GPU_RESOURCE not in notebook(cpu)["resources"].get("limits", {})
    assert not any(t.get("key") == GPU_RESOURCE for t in cpu["spec"].get("tolerations", []))
    env = {e["name"]: e.get("value") for e in notebook(cpu)["env"]}
    assert env["GEOPORTAL_DEVICE"] == "cpu"

    cuda = render_pod(c, {"profile": "cuda", "gpus": "2"})
    assert notebook(cuda)["resources"]["limits"][GPU_RESOURCE] == "2"
    assert any(t.get("key") == GPU_RESOURCE for t in cuda["spec"]["tolerations"])
    env = {e["name"]: e.get("value") for e in notebook(cuda)["env"]}
    assert env["GEOPORTAL_DEVICE"] == "cuda"


@pytest.mark.parametrize("profile", ["cpu", "cuda"])
def test_own_image_option_sets_the_image(hub_config, profile: str) -> None:
    c, _ = hub_config
    pod = render_pod(c, {"profile": profile, "image--unlisted-choice": OWN_IMAGE})
    validate(pod)
    assert notebook(pod)["image"] == OWN_IMAGE


def test_own_image_must_match_the_pattern(hub_config) -> None:
    c, _ = hub_config
    with pytest.raises(ValueError, match="image"):
        render_pod(c, {"profile": "cpu", "image--unlisted-choice": "bad image; rm -rf /"})


def test_storage_is_mounted_per_user_and_datasets_read_only(hub_config) -> None:
    c, values = hub_config
    pod = render_pod(c, {"profile": "cpu"}, username="bob")
    claim = values.storage.claim_name
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["geoportal-storage"]["persistentVolumeClaim"]["claimName"] == claim
    mounts = {m["mountPath"]: m for m in notebook(pod)["volumeMounts"]}
    root = values.storage.mount_path
    assert mounts[f"{root}/users/bob"]["subPath"] == "users/bob"
    assert not mounts[f"{root}/users/bob"].get("readOnly")
    assert mounts[f"{root}/datasets"]["subPath"] == "datasets"
    assert mounts[f"{root}/datasets"]["readOnly"] is True
    env = {e["name"]: e.get("value") for e in notebook(pod)["env"]}
    assert env["GEOPORTAL_STORAGE"] == root
    assert env["GEOPORTAL_USER"] == "bob"
    assert env["HOME"] == notebook(pod)["workingDir"] == f"{root}/users/bob"
    init = pod["spec"]["initContainers"][0]
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init_env == {"GEOPORTAL_USER": "bob", "GEOPORTAL_USER_ID": str(USER_ID)}
    assert "chmod 2770" in init["command"][-1]


def test_pod_runs_as_the_users_own_non_root_identity(hub_config) -> None:
    c, values = hub_config
    pod = render_pod(c, {"profile": "cuda"})
    uid = values.storage.uid_base + USER_ID
    security = pod["spec"]["securityContext"]
    # fsGroup joins every process of the pod: it must never be the WPS group that owns
    # all users/<name> folders.
    assert security["fsGroup"] == uid != values.storage.service_gid
    assert values.storage.service_gid not in security.get("supplementalGroups", [])
    container_security = notebook(pod)["securityContext"]
    assert container_security["runAsUser"] == uid and container_security["runAsGroup"] == uid
    assert container_security["runAsNonRoot"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]


def test_unknown_profile_key_is_refused(chart_values) -> None:
    custom = yaml.safe_load(yaml.safe_dump(chart_values["jupyterhub"]["custom"]["geoportal"]))
    custom["profiles"][1]["gpuz"] = 2
    with pytest.raises(ValueError, match="gpuz"):
        configure(Config(), custom)


def test_z2jh_entry_point_wires_dask_gateway(chart_values, monkeypatch) -> None:
    """What the chart's hub.extraConfig runs, with z2jh's get_config over our values."""
    import sys
    import types

    def get_config(key: str, default=None):
        node = chart_values["jupyterhub"]
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    monkeypatch.setitem(sys.modules, "z2jh", types.SimpleNamespace(get_config=get_config))
    monkeypatch.setenv("HELM_RELEASE_NAME", "geo")
    monkeypatch.setenv("POD_NAMESPACE", "portal")
    from geoportal_hub.k8s_config import configure_from_z2jh

    c = Config()
    # z2jh turns hub.services into this list before extraConfig runs
    c.JupyterHub.services = [
        {"name": name, **service}
        for name, service in chart_values["jupyterhub"]["hub"]["services"].items()
    ]
    configure_from_z2jh(c)
    gateway = next(s for s in c.JupyterHub.services if s["name"] == "dask-gateway")
    assert gateway["url"] == "http://traefik-geo-dask-gateway.portal"
    pod = render_pod(c, {"profile": "cpu"})
    env = {e["name"]: e.get("value") for e in notebook(pod)["env"]}
    assert env["DASK_GATEWAY__ADDRESS"] == "http://proxy-public/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://traefik-geo-dask-gateway.portal:80"
    assert env["GEOPORTAL_STORAGE"] == "/srv/geoportal"  # our settings kept alongside
    assert c.JupyterHub.authenticator_class.__name__ == "GenericOAuthenticator"
    assert c.GenericOAuthenticator.token_url == (
        "https://cloud.example.org/index.php/apps/oauth2/api/v1/token"
    )
