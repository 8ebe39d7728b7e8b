"""The hub's Kubernetes configuration, read from the chart's ``jupyterhub.custom.geoportal``.

Zero to JupyterHub runs ``hub.extraConfig`` after its own ``jupyterhub_config.py``; the
chart's extraConfig is two lines that call :func:`configure_from_z2jh`. Everything that
decides what a user pod looks like (profiles, storage, identity) or how users sign in is
here, typed and testable, instead of Python pasted into YAML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from geoportal_hub.nextcloud import NextcloudLogin, configure_nextcloud
from geoportal_hub.profiles import ProfilesConfig, build_profile_list
from geoportal_hub.user_storage import USERNAME_PATTERN, StorageMount, spawner_settings

#: Where the chart's values put our block (``jupyterhub.custom.geoportal``).
CUSTOM_KEY = "custom.geoportal"


class HubValues(ProfilesConfig):
    """``jupyterhub.custom.geoportal``: the profiles plus storage, sign-in and the WPS link."""

    storage: StorageMount = Field(
        default_factory=StorageMount, description="Shared storage inside user pods."
    )
    nextcloud: NextcloudLogin | None = Field(
        None, description="Sign in through Nextcloud; null keeps the hub's authenticator."
    )
    wps_url: str = Field(
        "http://proxy-public/services/wps",
        description="Base URL of the WPS as seen from user servers (through the hub's proxy), "
        "given to notebooks as GEOPORTAL_WPS__PUBLIC_URL.",
    )


def _merge(config_section: Any, name: str, value: Any) -> None:
    """Set a trait, extending what z2jh's own config already put there (lists, dicts)."""
    existing = config_section.get(name) if name in config_section else None
    if isinstance(value, list) and isinstance(existing, list):
        value = existing + value
    elif isinstance(value, dict) and isinstance(existing, Mapping):
        value = {**existing, **value}
    setattr(config_section, name, value)


def configure(c: Any, custom: Mapping[str, Any]) -> HubValues:
    """Apply the chart's ``custom.geoportal`` block to the traitlets config ``c``.

    Returns the validated values, so a caller (or a test) can inspect them.

    Raises:
        pydantic.ValidationError: a key is unknown or a value is invalid; the hub then
            refuses to start with the key named in the message.
    """
    values = HubValues.model_validate(dict(custom))
    c.KubeSpawner.profile_list = build_profile_list(values)
    settings = spawner_settings(values.storage)
    settings["environment"]["GEOPORTAL_WPS__PUBLIC_URL"] = values.wps_url
    for name, value in settings.items():
        _merge(c.KubeSpawner, name, value)
    # Names become storage folders (users/<name>), so only folder-safe names may sign in.
    c.Authenticator.username_pattern = USERNAME_PATTERN
    if values.nextcloud is not None:
        configure_nextcloud(c, values.nextcloud)
    return values


def dask_gateway_wiring(release: str, namespace: str) -> tuple[dict[str, str], str]:
    """User-server environment and hub-service URL for the dask-gateway subchart (pure).

    The gateway's Traefik Service is named after the release, which plain values cannot
    express (daskhub solves it the same way). Notebooks reach the gateway through the hub's
    proxy and authenticate with their hub token; schedulers are reached over Traefik.
    """
    traefik = f"traefik-{release}-dask-gateway.{namespace}"
    environment = {
        "DASK_GATEWAY__ADDRESS": "http://proxy-public/services/dask-gateway",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{traefik}:80",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "/services/dask-gateway/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    return environment, f"http://{traefik}"


def configure_from_z2jh(c: Any) -> HubValues:
    """Entry point for the chart's ``hub.extraConfig`` (needs z2jh's ``z2jh`` module)."""
    from z2jh import get_config  # available inside the z2jh hub image only

    values = configure(c, get_config(CUSTOM_KEY, {}) or {})
    release, namespace = os.environ.get("HELM_RELEASE_NAME"), os.environ.get("POD_NAMESPACE")
    services = c.JupyterHub.services if "services" in c.JupyterHub else []
    gateway = next((s for s in services if s.get("name") == "dask-gateway"), None)
    if gateway is not None and release and namespace:
        environment, url = dask_gateway_wiring(release, namespace)
        _merge(c.KubeSpawner, "environment", environment)
        gateway.setdefault("url", url)
    return values
