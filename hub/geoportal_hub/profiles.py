"""The server choices a user sees on the hub's spawn page, as KubeSpawner ``profile_list``.

An administrator describes profiles once, typed (:class:`ProfilesConfig`, the chart's
``jupyterhub.custom.geoportal.profiles``); :func:`build_profile_list` turns them into the
dictionaries KubeSpawner expects. Keeping the builder pure (no spawner, no cluster) lets the
tests render every profile and option combination into a pod manifest offline.

Choices raise the *limit* of a resource; the profile's guarantee stays the amount the
scheduler reserves (capped by the choice), so a small default does not block a node while a
user may still burst to what they picked. GPUs are extended resources, which Kubernetes
cannot overcommit, so a GPU choice is a hard count.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GPU_RESOURCE = "nvidia.com/gpu"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGT]i?)?$")
# JupyterHub's ByteSpecification (mem_limit, mem_guarantee) reads K, M, G, T as powers of
# 1024, like Ki … Ti; the comparisons here follow it so they agree with the pod.
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


def memory_bytes(quantity: str) -> int:
    """Bytes in a memory quantity such as ``8G`` or ``512Mi``, as KubeSpawner reads it."""
    match = _QUANTITY.match(quantity)
    if not match:
        raise ValueError(f"memory {quantity!r} is not a quantity like 8G or 512Mi")
    number = quantity[: match.start(2)] if match.group(2) else quantity
    return int(float(number) * _UNITS[match.group(2) or ""])


class CpuRange(_Model):
    """CPU cores: what the scheduler reserves and the most the server may use."""

    guarantee: float = Field(gt=0, description="Cores reserved on the node (request).")
    limit: float = Field(gt=0, description="Cores the server may use at most (limit).")

    @model_validator(mode="after")
    def _ordered(self) -> CpuRange:
        if self.guarantee > self.limit:
            raise ValueError(f"cpu guarantee {self.guarantee} exceeds limit {self.limit}")
        return self


class MemoryRange(_Model):
    """Memory as Kubernetes quantities (``4G``, ``16Gi``)."""

    guarantee: str = Field(description="Memory reserved on the node (request), e.g. 4G.")
    limit: str = Field(description="Memory at which the server is killed (limit), e.g. 8G.")

    @model_validator(mode="after")
    def _ordered(self) -> MemoryRange:
        if memory_bytes(self.guarantee) > memory_bytes(self.limit):
            raise ValueError(f"memory guarantee {self.guarantee} exceeds limit {self.limit}")
        return self


class Toleration(_Model):
    """A Kubernetes toleration, so user pods may land on tainted (GPU) nodes."""

    key: str = Field(description="Taint key, e.g. nvidia.com/gpu.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (operator Equal only).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        "NoSchedule", description="Taint effect tolerated; null tolerates every effect."
    )


class GpuNodes(_Model):
    """How GPU nodes are marked in this cluster."""

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node labels a GPU pod requires (the NVIDIA GPU operator's label by default).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key=GPU_RESOURCE)],
        description="Taints of GPU nodes that GPU pods tolerate.",
    )


class OwnImage(_Model):
    """The "own image" choice: a user may start any image matching a pattern."""

    enabled: bool = Field(True, description="Offer a free-text image field.")
    validation_regex: str = Field(
        r"^[a-z0-9][a-z0-9.\-]*(:[0-9]+)?(/[a-z0-9._\-]+)+(:[A-Za-z0-9._\-]+|@sha256:[a-f0-9]{64})$",
        description="Regular expression the image reference must match (registry/path:tag).",
    )
    validation_message: str = Field(
        "Give a full image reference such as registry.example.org/group/image:tag",
        description="Shown when the reference does not match.",
    )

    @field_validator("validation_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"validationRegex does not compile: {exc}") from None
        return value


class Profile(_Model):
    """One entry of the spawn page."""

    slug: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", description="Machine name, e.g. cpu."
    )
    display_name: str = Field(description="Title on the spawn page.")
    description: str = Field("", description="One line under the title.")
    default: bool = Field(False, description="Preselected profile.")
    image: str = Field(description="Container image of the server.")
    cpu: CpuRange = Field(description="CPU guarantee and limit before the user's choice.")
    memory: MemoryRange = Field(description="Memory guarantee and limit before the choice.")
    gpus: int = Field(0, ge=0, description="GPUs before the user's choice; > 0 makes a GPU pod.")
    core_choices: list[float] = Field(
        default_factory=list, description="Core limits offered; empty hides the option."
    )
    memory_choices: list[str] = Field(
        default_factory=list, description="Memory limits offered; empty hides the option."
    )
    gpu_choices: list[int] = Field(
        default_factory=list, description="GPU counts offered (GPU profiles only)."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables of the server."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if any(c <= 0 for c in self.core_choices):
            raise ValueError(f"profile {self.slug}: coreChoices must be positive")
        for value in self.memory_choices:
            memory_bytes(value)
        if self.gpu_choices and not self.gpus:
            raise ValueError(
                f"profile {self.slug}: gpuChoices need gpus >= 1 (a CPU profile cannot add GPUs)"
            )
        if any(n < 1 for n in self.gpu_choices):
            raise ValueError(f"profile {self.slug}: gpuChoices must be >= 1")
        return self


class ProfilesConfig(_Model):
    """All profiles plus what they share."""

    profiles: list[Profile] = Field(min_length=1, description="Profiles, in page order.")
    gpu_nodes: GpuNodes = Field(default_factory=GpuNodes, description="GPU node placement.")
    own_image: OwnImage = Field(default_factory=OwnImage, description="The own-image option.")

    @model_validator(mode="after")
    def _unique(self) -> ProfilesConfig:
        slugs = [p.slug for p in self.profiles]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"profile slugs must be unique, got {slugs}")
        if sum(p.default for p in self.profiles) > 1:
            raise ValueError("at most one profile may be default")
        return self


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _cpu_choices(profile: Profile) -> dict[str, Any]:
    choices = {}
    for cores in profile.core_choices:
        key = f"{_number(cores)}".replace(".", "-")
        choices[key] = {
            "display_name": f"{_number(cores)} cores",
            "default": cores == profile.cpu.limit,
            "kubespawner_override": {
                "cpu_limit": float(cores),
                "cpu_guarantee": float(min(cores, profile.cpu.guarantee)),
            },
        }
    return {"display_name": "CPU cores", "choices": choices}


def _memory_choices(profile: Profile) -> dict[str, Any]:
    choices = {}
    floor = memory_bytes(profile.memory.guarantee)
    for limit in profile.memory_choices:
        guarantee = profile.memory.guarantee if floor <= memory_bytes(limit) else limit
        choices[limit.lower()] = {
            "display_name": f"{limit}B RAM",
            "default": limit == profile.memory.limit,
            "kubespawner_override": {"mem_limit": limit, "mem_guarantee": guarantee},
        }
    return {"display_name": "Memory", "choices": choices}


def _gpu_choices(profile: Profile) -> dict[str, Any]:
    choices = {
        str(n): {
            "display_name": f"{n} GPU" + ("s" if n > 1 else ""),
            "default": n == profile.gpus,
            "kubespawner_override": {"extra_resource_limits": {GPU_RESOURCE: str(n)}},
        }
        for n in profile.gpu_choices
    }
    return {"display_name": "GPUs", "choices": choices}


def _image_option(profile: Profile, own: OwnImage) -> dict[str, Any]:
    return {
        "display_name": "Image",
        "choices": {
            "default": {
                "display_name": profile.image,
                "default": True,
                "kubespawner_override": {"image": profile.image},
            }
        },
        "unlisted_choice": {
            "enabled": True,
            "display_name": "Own image",
            "display_name_in_choices": "Own image…",
            "validation_regex": own.validation_regex,
            "validation_message": own.validation_message,
            "kubespawner_override": {"image": "{value}"},
        },
    }


def build_profile(profile: Profile, config: ProfilesConfig) -> dict[str, Any]:
    """One KubeSpawner profile dictionary (pure)."""
    override: dict[str, Any] = {
        "image": profile.image,
        "cpu_guarantee": profile.cpu.guarantee,
        "cpu_limit": profile.cpu.limit,
        "mem_guarantee": profile.memory.guarantee,
        "mem_limit": profile.memory.limit,
        "environment": {
            "GEOPORTAL_DEVICE": "cuda" if profile.gpus else "cpu",
            **profile.environment,
        },
    }
    if profile.gpus:
        override["extra_resource_limits"] = {GPU_RESOURCE: str(profile.gpus)}
        override["node_selector"] = dict(config.gpu_nodes.node_selector)
        override["tolerations"] = [
            t.model_dump(exclude_none=True) for t in config.gpu_nodes.tolerations
        ]
    options: dict[str, Any] = {}
    if profile.core_choices:
        options["cores"] = _cpu_choices(profile)
    if profile.memory_choices:
        options["memory"] = _memory_choices(profile)
    if profile.gpu_choices:
        options["gpus"] = _gpu_choices(profile)
    if config.own_image.enabled:
        options["image"] = _image_option(profile, config.own_image)
    entry: dict[str, Any] = {
        "slug": profile.slug,
        "display_name": profile.display_name,
        "description": profile.description,
        "default": profile.default,
        "kubespawner_override": override,
    }
    if options:
        entry["profile_options"] = options
    return entry


def build_profile_list(config: ProfilesConfig) -> list[dict[str, Any]]:
    """KubeSpawner's ``profile_list`` for ``config``, in page order (pure)."""
    return [build_profile(p, config) for p in config.profiles]


def option_combinations(config: ProfilesConfig) -> list[dict[str, str]]:
    """Every ``user_options`` a spawn form can submit with listed choices.

    Used by the tests to render each combination; own images are one more option per
    profile (``image--unlisted-choice``), added by the caller with an image of its choice.
    """
    combos: list[dict[str, str]] = []
    for entry in build_profile_list(config):
        options = {
            name: list(option["choices"])
            for name, option in entry.get("profile_options", {}).items()
        }
        partial: list[dict[str, str]] = [{"profile": entry["slug"]}]
        for name, keys in options.items():
            partial = [{**p, name: key} for p in partial for key in keys]
        combos.extend(partial)
    return combos
