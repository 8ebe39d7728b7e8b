"""The ``stats`` of an inference run: how much, how fast, and where the time went.

Stage seconds are *busy* time of each pipeline stage (read, wait, transfer, forward,
blend, write, assemble). The stages overlap, so they add up to more than the
wall time when the pipeline works; ``forward / seconds`` close to 1 means the
model, not I/O, sets the pace, and ``wait`` is how long the model sat idle
waiting for the reader.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("read", "transfer", "forward", "blend", "write", "assemble")


class StageTimer:
    """Thread-safe accumulator of busy seconds per stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def merge(self, other: dict[str, float]) -> None:
        for name, value in other.items():
            self.add(name, value)


class InferenceStats(BaseModel):
    """What the ``stats`` output of run-inference holds."""

    model_config = ConfigDict(extra="forbid")
    pixels: int = Field(description="pixels of the scene (width × height)")
    valid_pixels: int = Field(description="pixels with data in every band")
    area_km2: float = Field(description="area of the scene in km², from its CRS")
    seconds: float = Field(description="wall time of the run, assembly included")
    mpx_per_s: float = Field(description="scene megapixels per wall second")
    km2_per_s: float = Field(description="scene km² per wall second")
    stages: dict[str, float] = Field(description="busy seconds per pipeline stage")
    tiles: int = Field(description="tiles in the scene")
    blocks: int = Field(description="blocks (units of work) in the scene")
    blocks_resumed: int = Field(0, description="blocks found finished by an earlier run")
    workers: int = Field(1, description="processes that computed blocks")
    device: str = Field(description="where the forward pass ran")
    precision: str = Field(description="fp32, bf16 or fp16")
    agreement_vs_fp32: float | None = Field(
        None, description="share of valid pixels whose class equals the fp32 class (sampled)"
    )
    model: str = Field(description="checkpoint or gallery used")
    kind: str = Field(description="patch, segmentation, or gallery of either")
    extra: dict[str, Any] = Field(default_factory=dict)


def make_stats(
    *,
    pixels: int,
    valid_pixels: int,
    area_km2: float,
    seconds: float,
    stages: dict[str, float],
    **rest: Any,
) -> InferenceStats:
    """Build :class:`InferenceStats`, deriving the throughputs."""
    seconds = max(seconds, 1e-9)
    return InferenceStats(
        pixels=pixels,
        valid_pixels=valid_pixels,
        area_km2=area_km2,
        seconds=round(seconds, 4),
        mpx_per_s=round(pixels / seconds / 1e6, 4),
        km2_per_s=round(area_km2 / seconds, 4),
        stages={k: round(v, 4) for k, v in stages.items()},
        **rest,
    )
