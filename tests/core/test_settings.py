"""Settings: defaults < YAML < environment; unknown keys and wrong types fail naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoportal.errors import ConfigError
from geoportal.settings import Device, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("GEOPORTAL_") and key != "GEOPORTAL_SHARED_DATA":
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_documented_local_folders(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.storage_root == tmp_path / "xdg" / "geoportal" / "storage"
    assert settings.state_dir == tmp_path / "xdg" / "geoportal" / "state"
    assert settings.device is Device.auto
    assert settings.dask.scheduler == ""  # empty: a LocalCluster
    assert settings.wps_url == "http://127.0.0.1:5000/wps"
    for name, info in Settings.model_fields.items():
        if name not in ("wps", "hub", "dask"):
            assert info.description, f"setting {name} has no description"


def test_yaml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "geoportal.yaml",
        "storage_root: /srv/from-yaml\ndevice: cpu\nwps:\n  port: 5100\n  public_url: http://w/services/wps\n"
        "dask:\n  scheduler: tcp://10.0.0.1:8786\n",
    )
    settings = load_settings(config)
    assert settings.storage_root == Path("/srv/from-yaml")
    assert settings.device is Device.cpu
    assert settings.wps.port == 5100
    assert settings.wps_url == "http://w/services/wps/wps"
    assert settings.dask.scheduler == "tcp://10.0.0.1:8786"
    # The environment wins over the file, nested keys with "__".
    monkeypatch.setenv("GEOPORTAL_DEVICE", "cuda")
    monkeypatch.setenv("GEOPORTAL_WPS__PORT", "5200")
    settings = load_settings(config)
    assert settings.device is Device.cuda
    assert settings.wps.port == 5200
    # The rest of the section stays from YAML.
    assert settings.wps.public_url == "http://w/services/wps"
    # GEOPORTAL_CONFIG names the file when no path is given.
    monkeypatch.setenv("GEOPORTAL_CONFIG", str(config))
    assert load_settings().dask.scheduler == "tcp://10.0.0.1:8786"


def test_storage_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "c.yaml", "storage_root: /srv/yaml\n")
    monkeypatch.setenv("GEOPORTAL_STORAGE", str(tmp_path / "env-storage"))
    assert load_settings(config).storage_root == tmp_path / "env-storage"
    monkeypatch.delenv("GEOPORTAL_STORAGE")
    monkeypatch.setenv("GEOPORTAL_STORAGE_ROOT", str(tmp_path / "env-root"))
    assert load_settings(config).storage_root == tmp_path / "env-root"


def test_overrides_rank_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(storage_root=str(tmp_path / "o")).storage_root == tmp_path / "o"
    monkeypatch.setenv("GEOPORTAL_STORAGE", str(tmp_path / "env"))
    assert load_settings(storage_root=str(tmp_path / "o")).storage_root == tmp_path / "env"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("storage_rot: /x\n", "storage_rot"),
        ("wps:\n  prot: 5000\n", "wps.prot"),
        ("hub:\n  admins: [a]\n", "hub.admins"),
    ],
)
def test_unknown_keys_fail_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "c.yaml", yaml_text))
    assert f"unknown setting '{key}'" in str(info.value)
    assert info.value.field == key


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("wps:\n  port: many\n", "wps.port"),
        ("wps:\n  port: 70000\n", "wps.port"),
        ("device: tpu\n", "device"),
        ("dask:\n  n_workers: 0\n", "dask.n_workers"),
        ("hub:\n  authenticator: ldap\n", "hub.authenticator"),
    ],
)
def test_wrong_types_fail_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "c.yaml", yaml_text))
    assert f"setting '{key}'" in str(info.value)
    assert info.value.field == key


def test_wrong_type_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOPORTAL_WPS__PORT", "not-a-port")
    with pytest.raises(ConfigError, match="wps.port"):
        load_settings()


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path / "bad.yaml", "wps: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert load_settings(write(tmp_path / "empty.yaml", "")).wps.port == 5000


def test_yaml_round_trip(tmp_path: Path) -> None:
    settings = load_settings(storage_root=str(tmp_path / "s"), device="cpu")
    again = load_settings(write(tmp_path / "dump.yaml", settings.to_yaml()))
    assert again == settings
