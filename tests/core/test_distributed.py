"""Inference on a real Dask LocalCluster: same bytes as one process; clear GPU errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio

from geoportal.errors import ResourceUnavailableError
from geoportal.inference import InferenceConfig, run_inference
from geoportal.inference.distributed import DaskOptions
from tests.core.test_inference import make_checkpoint


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.mark.slow
def test_two_workers_identical_to_single_process(client, nc_scene, tmp_path):
    ckpt = make_checkpoint(
        tmp_path / "u.pt", nc_scene, "unet", "segmentation", k=7, base_channels=4, depth=2
    )
    config = InferenceConfig(tile_size=96, overlap=16, block_tiles=2, probabilities="all")
    local = run_inference(nc_scene, ckpt, tmp_path / "local.tif", config)
    seen = []
    remote = run_inference(
        nc_scene,
        ckpt,
        tmp_path / "dask.tif",
        config,
        dask=client,
        progress=lambda f, m: seen.append(m),
    )
    assert remote.stats.workers == 2  # both workers computed blocks
    assert remote.classification.read_bytes() == local.classification.read_bytes()
    # Workers run torch with 1 thread, this process with 2: float sums are ordered
    # differently, so stored probabilities may differ by one step of 1/254.
    with rasterio.open(remote.probabilities) as a, rasterio.open(local.probabilities) as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert seen[-1] == f"{local.stats.tiles}/{local.stats.tiles} tiles"
    assert remote.stats.stages["forward"] > 0


def test_missing_gpu_resource_fails_fast(client, nc_scene, tmp_path):
    ckpt = make_checkpoint(
        tmp_path / "u.pt", nc_scene, "unet", "segmentation", k=7, base_channels=4, depth=2
    )
    address = client.scheduler.address
    start = time.monotonic()
    with pytest.raises(ResourceUnavailableError, match="GPU") as info:
        run_inference(
            nc_scene,
            ckpt,
            tmp_path / "gpu.tif",
            InferenceConfig(tile_size=128),
            dask=DaskOptions(address=address, gpus_per_task=1),
        )
    assert time.monotonic() - start < 60
    assert "--resources GPU=1" in str(info.value)
    assert not (tmp_path / "gpu.tif").exists()
