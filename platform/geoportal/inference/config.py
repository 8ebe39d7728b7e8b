"""Typed options of an inference run, shared by the CLI, the WPS process and notebooks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class InferenceConfig(BaseModel):
    """How to run a model over a scene.

    Only ``precision``, ``blend``, ``tile_size``, ``overlap``, ``patch_stride`` and
    ``block_tiles`` change the pixels; the rest changes speed and which outputs
    exist (see :func:`geoportal.inference.resume.fingerprint`).
    """

    model_config = ConfigDict(extra="forbid")
    tile_size: int = Field(512, ge=8, description="core size of a tile in pixels")
    overlap: int | None = Field(
        None,
        ge=0,
        description="context pixels read around each tile core; default "
        "min(32, tile_size // 4) for segmentation models. Blending is exact for models whose "
        "receptive radius is at most overlap // 2 (centre crop: at most overlap). Patch models "
        "always read p // 2 of context.",
    )
    blend: Literal["cosine", "crop"] = Field(
        "cosine",
        description="cosine: weighted (cos²) blend of class probabilities across tile overlaps; "
        "crop: each tile keeps its core only",
    )
    batch_size: int = Field(8, ge=1, description="tiles per forward pass")
    block_tiles: int | None = Field(
        None, ge=1, description="tiles per block side (unit of work); default ≈ 4 Mpx per block"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16: autocast on CPUs (fast with AMX) and GPUs; fp16: GPUs only"
    )
    device: str = Field("auto", description="auto (CUDA if present), cpu, cuda or cuda:N")
    probabilities: Literal["none", "confidence", "all"] = Field(
        "none",
        description="also write a confidence raster (winning probability) or all class "
        "probabilities, as uint8 round(p × 254), nodata 255",
    )
    bucket_raster: bool = Field(
        False, description="gallery models: also write which bucket's model produced each tile"
    )
    patch_stride: int = Field(
        1,
        ge=1,
        description="patch models: classify every n-th pixel and upsample (nearest); "
        "n² fewer patch evaluations, a map blocky at n-pixel scale",
    )
    prefetch: int = Field(2, ge=1, description="batches read ahead of the forward pass")
    agreement_blocks: int = Field(
        1, ge=0, description="with bf16/fp16: blocks also run in fp32 to report the agreement"
    )
    keep_parts: bool = Field(False, description="keep the per-block part files after assembly")
    resume: bool = Field(True, description="reuse finished blocks of an interrupted earlier run")

    def pixel_affecting(self) -> dict[str, object]:
        return self.model_dump(
            include={
                "tile_size",
                "overlap",
                "blend",
                "precision",
                "patch_stride",
                "block_tiles",
                "batch_size",
                "probabilities",
                "bucket_raster",
            }
        )
