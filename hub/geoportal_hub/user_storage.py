"""How the shared storage appears inside a user's server, and under which identity.

Layout contract: ``<root>/datasets`` (read-only to users) and ``<root>/users/<name>``.
A user pod mounts only those two subPaths of the one ReadWriteMany claim, at the same
path the WPS service and Dask workers use, so a location means the same file everywhere.

Identity: each user runs as ``uidBase + <hub user id>`` with a group of the same number.
The hub's user id is unique and stable, unlike a hash of the name. A root init container
(only CHOWN/FOWNER/DAC_OVERRIDE) creates ``users/<name>`` owned by the user and by the
WPS service's group, mode ``2770``: the owner and the WPS may enter, other users may not.
Files the user writes inherit the WPS group (setgid), so WPS jobs can read them; the WPS
writes group- and world-readable files (umask 0002) that only the owner can reach, because
the parent folder is closed to others. fsGroup is the user's own group, never the WPS
group, since Kubernetes adds fsGroup to every process of the pod.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: The subfolders every user gets (``geoportal.storage.USER_SUBDIRS``, repeated here
#: because the hub image does not carry the core library).
USER_SUBDIRS = ("labels", "samples", "models", "runs")
#: JupyterHub user names that are also valid storage folder names (``geoportal.storage``).
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,127}$"
VOLUME_NAME = "geoportal-storage"


class StorageMount(BaseModel):
    """The shared claim and its place inside user pods."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    claim_name: str = Field(
        "geoportal-storage",
        description="PersistentVolumeClaim of the shared storage (the chart's storage.claimName "
        "or storage.existingClaim).",
    )
    mount_path: str = Field(
        "/srv/geoportal", description="Where the storage root appears (GEOPORTAL_STORAGE)."
    )
    uid_base: int = Field(
        100000, ge=1000, description="A user's uid and gid are uidBase + their hub user id."
    )
    service_gid: int = Field(
        2000, ge=1, description="Group of the WPS service; owns every users/<name> folder."
    )
    init_image: str = Field(
        "busybox:1.37", description="Small image with sh, mkdir, chown, chmod for the init step."
    )


def user_uid(mount: StorageMount):
    """A KubeSpawner ``uid``/``gid``/``fs_gid`` callable: uidBase + the hub user id."""

    def uid(spawner: Any) -> int:
        return mount.uid_base + int(spawner.user.id)

    return uid


def _prepare_script(mount: StorageMount) -> str:
    subdirs = " ".join(f'"$d/{s}"' for s in USER_SUBDIRS)
    return (
        "set -eu; "
        'd="/storage/users/$GEOPORTAL_USER"; '
        f"uid=$(({mount.uid_base} + $GEOPORTAL_USER_ID)); "
        f'mkdir -p "$d" {subdirs}; '
        f'chown "$uid:{mount.service_gid}" "$d" {subdirs}; '
        f'chmod 2770 "$d" {subdirs}; '
        "chmod 0711 /storage/users"
    )


def spawner_settings(mount: StorageMount) -> dict[str, Any]:
    """KubeSpawner traits that mount the storage and set the identity (pure).

    ``{unescaped_username}``/``{userid}`` are expanded by KubeSpawner per user; user names
    are constrained by :data:`USERNAME_PATTERN`, so they are safe as folder names.
    """
    identity = user_uid(mount)
    home = f"{mount.mount_path}/users/{{unescaped_username}}"
    return {
        "uid": identity,
        "gid": identity,
        "fs_gid": identity,
        "supplemental_gids": [],
        "volumes": [
            {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": mount.claim_name}}
        ],
        "volume_mounts": [
            {
                "name": VOLUME_NAME,
                "mountPath": home,
                "subPath": "users/{unescaped_username}",
            },
            {
                "name": VOLUME_NAME,
                "mountPath": f"{mount.mount_path}/datasets",
                "subPath": "datasets",
                "readOnly": True,
            },
        ],
        "init_containers": [
            {
                "name": "prepare-user-folder",
                "image": mount.init_image,
                "command": ["sh", "-c", _prepare_script(mount)],
                "env": [
                    {"name": "GEOPORTAL_USER", "value": "{unescaped_username}"},
                    {"name": "GEOPORTAL_USER_ID", "value": "{userid}"},
                ],
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
                },
                "volumeMounts": [{"name": VOLUME_NAME, "mountPath": "/storage"}],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"},
                },
            }
        ],
        "container_security_context": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        # The image's home belongs to its build user, not to this uid: the user's own
        # folder is home and start folder, so notebooks and settings persist.
        "working_dir": home,
        "environment": {
            "GEOPORTAL_STORAGE": mount.mount_path,
            "GEOPORTAL_USER": "{unescaped_username}",
            "HOME": home,
        },
    }
