"""One typed settings model, shared by the CLI, the WPS service, the hub and notebooks.

Values come, in increasing priority, from the defaults below, an optional YAML
file (``GEOPORTAL_CONFIG`` or an explicit path) and ``GEOPORTAL_*`` environment
variables (nested keys with ``__``, e.g. ``GEOPORTAL_WPS__PORT=5001``). Unknown
keys and wrong types fail at start with a :class:`~geoportal.errors.ConfigError`
naming the key, because a silently ignored misspelt key is worse than no start.
The Helm chart renders the same YAML into a ConfigMap, so Kubernetes and one
machine read one model.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from geoportal.errors import ConfigError

ENV_PREFIX = "GEOPORTAL_"
CONFIG_ENV = "GEOPORTAL_CONFIG"


def default_home() -> Path:
    """The embedded default's home: ``$XDG_DATA_HOME/geoportal`` (``~/.local/share/geoportal``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "geoportal"


class Device(StrEnum):
    """Where tensors go: ``auto`` picks CUDA when torch sees a GPU, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WpsSettings(_Section):
    """The WPS service: where it listens and how PyWPS runs jobs."""

    host: str = Field("127.0.0.1", description="Interface the standalone WPS server binds to.")
    port: int = Field(5000, ge=1, le=65535, description="Port of the WPS server.")
    public_url: str = Field(
        "",
        description="Base URL of the WPS service as clients see it, e.g. "
        "http://127.0.0.1:8000/services/wps; the OGC endpoint is <public_url>/wps. "
        "Empty means http://<host>:<port>.",
    )
    database: str = Field(
        "",
        description="SQLAlchemy URL of PyWPS's job log: a sqlite file (default, under state_dir) "
        "or postgresql://… in the chart. In-memory SQLite breaks async jobs and is refused.",
    )
    parallelprocesses: int = Field(2, ge=1, description="Jobs that run at once.")
    maxprocesses: int = Field(64, ge=1, description="Jobs queued beyond the running ones.")
    log_level: str = Field("INFO", description="PyWPS's log level (DEBUG echoes SQL).")


class HubSettings(_Section):
    """The embedded JupyterHub started by ``geoportal up``."""

    host: str = Field("127.0.0.1", description="Interface of the hub's public proxy.")
    port: int = Field(8000, ge=1, le=65535, description="Public port of the hub.")
    authenticator: Literal["local-password", "nextcloud", "dummy"] = Field(
        "local-password",
        description="local-password: a fixed shared password for one machine (local use only); "
        "nextcloud: GenericOAuthenticator against Nextcloud; dummy: tests only.",
    )
    admin_users: list[str] = Field(default_factory=list, description="Hub administrators.")
    idle_cull_seconds: int = Field(
        0,
        ge=0,
        description="Local hub: stop servers idle this long (jupyterhub-idle-culler; on "
        "Kubernetes the chart's jupyterhub.cull does it); 0 = never.",
    )


class DaskSettings(_Section):
    """Where distributed work runs."""

    scheduler: str = Field(
        "", description="Scheduler address (tcp://…, gateway://…); empty means a LocalCluster."
    )
    n_workers: int = Field(2, ge=1, description="Workers of the embedded LocalCluster.")
    threads_per_worker: int = Field(1, ge=1, description="Threads per LocalCluster worker.")
    gpus_per_worker: int = Field(0, ge=0, description="GPU resource declared per local worker.")
    dashboard_port: int = Field(8787, ge=0, le=65535, description="0 picks a free port.")


class Settings(BaseSettings):
    """Everything the platform needs to know about where it runs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
        populate_by_name=True,
    )

    storage_root: Path = Field(
        default_factory=lambda: default_home() / "storage",
        validation_alias=AliasChoices(
            "storage_root", "GEOPORTAL_STORAGE", "GEOPORTAL_STORAGE_ROOT"
        ),
        description="The shared storage: datasets/ and users/<name>/ live here "
        "(environment: GEOPORTAL_STORAGE).",
    )
    state_dir: Path = Field(
        default_factory=lambda: default_home() / "state",
        description="Service state: hub database, WPS job log, cookie secret, proxy token.",
    )
    device: Device = Field(Device.auto, description="auto, cpu or cuda.")
    log_level: str = Field("INFO", description="Log level of the platform's own loggers.")
    wps: WpsSettings = Field(default_factory=WpsSettings)
    hub: HubSettings = Field(default_factory=HubSettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments (from YAML via load_settings) rank below the environment,
        # so an operator's GEOPORTAL_* variable overrides a file value.
        return (env_settings, init_settings)

    @property
    def wps_url(self) -> str:
        """The URL clients use for the WPS endpoint (``<public_url>/wps`` behind the hub)."""
        if self.wps.public_url:
            return self.wps.public_url.rstrip("/") + "/wps"
        return f"http://{self.wps.host}:{self.wps.port}/wps"

    def to_yaml(self) -> str:
        """Serialise to the YAML form :func:`load_settings` reads (and the chart renders)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{key}'")
        else:
            problems.append(f"setting '{key}': {item['msg']}")
    return "; ".join(problems)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the settings from YAML (optional), the environment and ``overrides``.

    Args:
        path: a YAML file; defaults to ``$GEOPORTAL_CONFIG`` when set.
        overrides: values that win over the file (not over the environment).

    Raises:
        ConfigError: the file is unreadable, or a key is unknown or of the wrong type.
    """
    data: dict[str, Any] = {}
    path = path or os.environ.get(CONFIG_ENV) or None
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(
                f"cannot read settings file {path}: {exc.strerror}", field="config"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"settings file {path} is not valid YAML: {exc}", field="config"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"settings file {path} must hold a mapping", field="config")
        data.update(loaded)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"]
        raise ConfigError(
            f"invalid settings: {_describe(exc)}", field=".".join(map(str, first))
        ) from None
