"""The path resolver: hostile locations are refused, legitimate ones resolve inside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoportal.errors import (
    AccessDeniedError,
    GeoportalError,
    InvalidInputError,
    StorageNotFoundError,
)
from geoportal.storage import USER_SUBDIRS, Storage, check_username

URL = "http://127.0.0.1:5000/outputs"


@pytest.fixture
def store(storage: Storage) -> Storage:
    """The shared storage fixture plus links a hostile user could have planted."""
    root = storage.root
    (root / "datasets" / "scene.tif").write_bytes(b"x")
    (root / "users" / "bob" / "labels" / "secret.gpkg").write_bytes(b"bob's")
    (root / "users" / "alice" / "labels" / "mine.gpkg").write_bytes(b"alice's")
    alice = root / "users" / "alice"
    os.symlink("/etc", alice / "labels" / "etc_link")
    os.symlink(root / "users" / "bob" / "labels", alice / "labels" / "bob_link")
    os.symlink(root / "users" / "bob" / "runs", alice / "runs" / "bob_runs")
    os.symlink(root / "datasets", alice / "labels" / "datasets_link")
    os.symlink("/", root / "escape")
    os.symlink("/etc/passwd", root / "datasets" / "passwd.tif")
    return storage


# (location, write, expected error) — each one an attempt to reach what alice must not.
HOSTILE: list[tuple[str, bool, type[GeoportalError]]] = [
    ("../etc/passwd", False, AccessDeniedError),
    ("users/alice/../../../etc/passwd", False, AccessDeniedError),
    ("users/alice/../bob/labels/secret.gpkg", False, AccessDeniedError),
    ("users/bob/labels/secret.gpkg", False, AccessDeniedError),
    ("users/bob", False, AccessDeniedError),
    ("/etc/passwd", False, AccessDeniedError),
    ("{root}/users/bob/labels/secret.gpkg", False, AccessDeniedError),
    ("{root}/../outside.txt", False, AccessDeniedError),
    ("users/alice/labels/etc_link/passwd", False, AccessDeniedError),
    ("users/alice/labels/bob_link/secret.gpkg", False, AccessDeniedError),
    ("users/alice/runs/bob_runs/new.txt", True, AccessDeniedError),
    ("escape/etc/passwd", False, AccessDeniedError),
    ("datasets/passwd.tif", False, AccessDeniedError),
    ("http://evil.example.com/outputs/users/alice/labels/mine.gpkg", False, AccessDeniedError),
    ("https://127.0.0.1:5000/outputs/users/alice/labels/mine.gpkg", False, AccessDeniedError),
    (URL + "X/users/alice/labels/mine.gpkg", False, AccessDeniedError),
    (URL + "/users/alice/%2e%2e/bob/labels/secret.gpkg", False, AccessDeniedError),
    (URL + "/%2E%2E/%2e%2e/etc/passwd", False, AccessDeniedError),
    (URL + "/users/bob/labels/secret.gpkg", False, AccessDeniedError),
    (URL + "/../../etc/passwd", False, AccessDeniedError),
    ("file:///etc/passwd", False, AccessDeniedError),
    ("s3://bucket/users/alice/x.tif", False, AccessDeniedError),
    ("users\\alice\\..\\bob\\labels\\secret.gpkg", False, InvalidInputError),
    ("users/alice/labels/x\x00.gpkg", False, InvalidInputError),
    ("users/alice/labels/x\n.gpkg", False, InvalidInputError),
    ("", False, InvalidInputError),
    ("   ", False, InvalidInputError),
    ("~/labels/mine.gpkg", False, AccessDeniedError),
    ("~bob/labels/secret.gpkg", False, AccessDeniedError),
    ("datasets/new.tif", True, AccessDeniedError),
    ("datasets", True, AccessDeniedError),
    ("users/alice/labels/datasets_link/new.tif", True, AccessDeniedError),
    ("users/alice", True, AccessDeniedError),
    ("users", False, AccessDeniedError),
    (".", False, AccessDeniedError),
    ("{root}", False, AccessDeniedError),
    ("hub/jupyterhub.sqlite", False, AccessDeniedError),
    ("C:/Windows/system32", False, AccessDeniedError),
]


@pytest.mark.parametrize(("location", "write", "error"), HOSTILE, ids=[repr(h[0]) for h in HOSTILE])
def test_hostile_locations_are_refused(
    store: Storage, location: str, write: bool, error: type[GeoportalError]
) -> None:
    location = location.replace("{root}", str(store.root))
    with pytest.raises(error) as info:
        store.resolve("alice", location, write=write, field="raster")
    # Errors name the input so that a WPS client knows which one to fix.
    assert info.value.field == "raster"
    assert "raster" in str(info.value)


def test_at_least_fifteen_hostile_locations() -> None:
    assert len(HOSTILE) >= 15


@pytest.mark.parametrize(
    "user", ["", "..", "../alice", ".hidden", "a/b", "bob/../alice", "al ice", "a\\b", "x" * 200]
)
def test_bad_usernames_are_refused(store: Storage, user: str) -> None:
    with pytest.raises(InvalidInputError, match="user name"):
        store.resolve(user, "datasets/scene.tif")
    with pytest.raises(InvalidInputError):
        check_username(user)


def test_allowed_locations_resolve_inside_the_root(store: Storage) -> None:
    root = store.root
    alice = root / "users" / "alice"
    assert (
        store.resolve("alice", "datasets/scene.tif", must_exist=True) == root / "datasets/scene.tif"
    )
    assert store.resolve("alice", "users/alice/labels/mine.gpkg") == alice / "labels/mine.gpkg"
    assert store.resolve("alice", "users/alice/runs/job-1/out.tif", write=True) == (
        alice / "runs/job-1/out.tif"
    )
    assert store.resolve("alice", str(alice / "labels/mine.gpkg")) == alice / "labels/mine.gpkg"
    assert store.resolve("alice", Path("users/alice/samples")) == alice / "samples"
    assert store.resolve("alice", "users/alice") == alice
    assert store.resolve("alice", "./datasets//scene.tif") == root / "datasets/scene.tif"
    # A link inside the own area that points at datasets/ may be read through.
    assert store.resolve("alice", "users/alice/labels/datasets_link/scene.tif") == (
        root / "datasets/scene.tif"
    )


def test_issued_urls_map_onto_the_storage(store: Storage) -> None:
    alice = store.root / "users" / "alice"
    url = URL + "/users/alice/labels/mine.gpkg"
    assert store.resolve("alice", url, must_exist=True) == alice / "labels/mine.gpkg"
    # Percent-encoding is decoded once, not twice: %252e%252e is a folder named "%2e%2e".
    odd = store.resolve("alice", URL + "/users/alice/runs/%252e%252e/x.txt", write=True)
    assert odd == alice / "runs" / "%2e%2e" / "x.txt"
    assert store.url_for(alice / "labels/mine.gpkg") == url


def test_admins_may_write_datasets(tmp_path: Path) -> None:
    store = Storage(tmp_path / "root", admins=frozenset({"admin"}))
    store.ensure_layout("admin")
    assert store.resolve("admin", "datasets/new.tif", write=True) == store.root / "datasets/new.tif"
    with pytest.raises(AccessDeniedError, match="read-only"):
        store.resolve("alice", "datasets/new.tif", write=True)


def test_must_exist_and_resolve_input(store: Storage) -> None:
    with pytest.raises(StorageNotFoundError, match="nothing at"):
        store.resolve("alice", "users/alice/labels/missing.gpkg", must_exist=True)
    with pytest.raises(FileNotFoundError):  # the builtin it also inherits
        store.resolve("alice", "datasets/missing.tif", must_exist=True)
    foreign = "https://example.com/cog.tif"
    assert store.resolve_input("alice", foreign) == foreign
    issued = URL + "/datasets/scene.tif"
    assert store.resolve_input("alice", issued) == str(store.root / "datasets/scene.tif")
    with pytest.raises(AccessDeniedError):
        store.resolve_input("alice", URL + "/users/bob/labels/secret.gpkg")


def test_errors_are_builtin_errors_too(store: Storage) -> None:
    with pytest.raises(PermissionError):
        store.resolve("alice", "users/bob/labels/secret.gpkg")
    with pytest.raises(ValueError):
        store.resolve("alice", "")


def test_layout_and_relative(tmp_path: Path) -> None:
    store = Storage(tmp_path / "s")
    home = store.ensure_layout("carol")
    assert home == store.root / "users" / "carol"
    assert sorted(p.name for p in home.iterdir()) == sorted(USER_SUBDIRS)
    assert store.datasets_dir.is_dir()
    assert store.relative(home / "runs") == "users/carol/runs"
    with pytest.raises(AccessDeniedError):
        store.relative(tmp_path)
    with pytest.raises(InvalidInputError):
        store.url_for(home)
