"""The same inference on a Dask cluster: blocks as tasks, paths through the scheduler.

* **Where:** a ``LocalCluster`` by default (``address=""``), a running scheduler
  (``tcp://host:8786``), or a Dask Gateway (``gateway://host:port`` or
  ``gateway+https://…``; a new cluster is created and scaled to ``n_workers``).
* **Data:** each task gets the scene path, the model path, the configuration
  and its blocks (a few hundred bytes). Workers open the scene from shared
  storage themselves and load the model once per process (cached), as RESFlow's
  workers do, so no pixels travel through the scheduler.
* **Output:** each task writes its blocks as part files into the parts folder on
  shared storage (:mod:`geoportal.inference.resume`); there is no single writer
  in the compute path. The client assembles the COG from the parts afterwards,
  which is pure sequential I/O (see docs/inference.md for the measurements).
* **GPUs:** tasks ask for worker resources ``{"GPU": gpus_per_task}``; a worker
  started with ``--resources GPU=1`` runs one such task at a time, so two tasks
  never share a GPU unless a worker declares more. When no worker has the
  resource, Dask would keep the tasks pending forever: we check first and raise
  :class:`~geoportal.errors.ResourceUnavailableError`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geoportal.errors import ResourceUnavailableError
from geoportal.inference.blocks import Block
from geoportal.inference.config import InferenceConfig
from geoportal.inference.resume import PartsStore
from geoportal.inference.stats import StageTimer


class DaskOptions(BaseModel):
    """Which Dask cluster runs the blocks and how tasks are shaped."""

    model_config = ConfigDict(extra="forbid")
    address: str = Field(
        "",
        description="'' = start a LocalCluster; tcp://… = a running scheduler; "
        "gateway://host:port or gateway+https://… = a Dask Gateway",
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster / Gateway workers")
    threads_per_worker: int = Field(1, ge=1, description="Dask threads per LocalCluster worker")
    gpus_per_worker: int = Field(0, ge=0, description="GPU resource declared per local worker")
    gpus_per_task: int = Field(
        0, ge=0, description="GPU resource each task needs (1 on GPU clusters; 0 on CPUs)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per task; default: cores / local workers"
    )
    blocks_per_task: int = Field(1, ge=1, description="blocks computed by one task")
    wait_for_workers_s: float = Field(30.0, gt=0, description="how long to wait for workers")


@contextlib.contextmanager
def dask_client(options: DaskOptions) -> Iterator[Any]:
    """A ``distributed.Client`` for the configured cluster, closed afterwards."""
    from distributed import Client, LocalCluster

    from geoportal.hostmemory import dask_worker_environment

    address = options.address
    if not address:
        resources = {"GPU": options.gpus_per_worker} if options.gpus_per_worker else None
        with (
            dask_worker_environment(),
            LocalCluster(
                n_workers=options.n_workers,
                threads_per_worker=options.threads_per_worker,
                processes=True,
                resources=resources,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif address.startswith("gateway"):
        from dask_gateway import Gateway

        url = address.split("+", 1)[1] if "+" in address else "http" + address[len("gateway") :]
        gateway = Gateway(url)
        cluster = gateway.new_cluster()
        try:
            cluster.scale(options.n_workers)
            with cluster.get_client() as client:
                yield client
        finally:
            cluster.shutdown()
    else:
        with Client(address, timeout=options.wait_for_workers_s) as client:
            yield client


def check_resources(client: Any, needed: dict[str, float], wait_s: float) -> int:
    """Return the number of workers; raise if none offers ``needed``.

    Raises:
        ResourceUnavailableError: no worker (within ``wait_s``), or no worker
            declares the resources the tasks ask for.
    """
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, OSError) as exc:
        raise ResourceUnavailableError(
            f"no Dask worker joined the scheduler within {wait_s:.0f} s ({exc})", field="dask"
        ) from None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if needed:
        fit = [
            w
            for w in workers.values()
            if all(w.get("resources", {}).get(k, 0) >= v for k, v in needed.items())
        ]
        if not fit:
            have = sorted({k for w in workers.values() for k in w.get("resources", {})})
            raise ResourceUnavailableError(
                f"no Dask worker offers the resources {needed} (workers declare: "
                f"{have or 'none'}); start GPU workers with --resources GPU=1 or run with "
                "gpus_per_task=0 on CPUs",
                field="dask",
            )
    return len(workers)


def _task(
    blocks: list[Block],
    scene: str,
    model: str,
    config_json: str,
    parts_folder: str,
    run_fingerprint: str,
    torch_threads: int | None,
    device: str,
) -> dict[str, Any]:
    """Compute ``blocks`` on a worker and persist them as part files."""
    import torch

    from geoportal.hostmemory import keep_freed_memory
    from geoportal.inference.engine import BlockEngine, make_geometry
    from geoportal.inference.source import load_predictor
    from geoportal.raster import describe_scene

    keep_freed_memory()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    config = InferenceConfig.model_validate_json(config_json)
    start = time.perf_counter()
    predictor = load_predictor(model, device)
    info = describe_scene(scene)
    geometry = make_geometry(info.width, info.height, predictor, config)
    store = PartsStore(parts_folder, run_fingerprint)
    timer = StageTimer()
    todo = [b for b in blocks if not store.done(b)]
    engine = BlockEngine(scene, predictor, config, geometry, timer)
    engine.run(todo, lambda b, arrays, meta: store.save(b, arrays, meta))
    return {
        "stages": timer.seconds,
        "tiles": sum(b.n_tiles for b in blocks),
        "seconds": time.perf_counter() - start,
        "worker": os.getpid(),
    }


def compute_on_dask(
    dask: DaskOptions | Any,
    scene: str,
    model: str,
    config: InferenceConfig,
    blocks: list[Block],
    store: PartsStore,
    timer: StageTimer,
    on_tiles: Callable[[int], None],
) -> int:
    """Compute ``blocks`` on Dask; returns how many distinct worker processes did it.

    ``dask`` is :class:`DaskOptions` (a cluster is started or joined and closed
    afterwards) or an existing ``distributed.Client``.
    """
    if isinstance(dask, DaskOptions):
        with dask_client(dask) as client:
            return _compute(client, dask, scene, model, config, blocks, store, timer, on_tiles)
    return _compute(dask, DaskOptions(), scene, model, config, blocks, store, timer, on_tiles)


def _compute(
    client: Any,
    options: DaskOptions,
    scene: str,
    model: str,
    config: InferenceConfig,
    blocks: list[Block],
    store: PartsStore,
    timer: StageTimer,
    on_tiles: Callable[[int], None],
) -> int:
    from distributed import as_completed

    needed = {"GPU": float(options.gpus_per_task)} if options.gpus_per_task else {}
    n_workers = check_resources(client, needed, options.wait_for_workers_s)
    if not blocks:
        return 0
    device = config.device
    if device == "auto":
        device = "cuda" if options.gpus_per_task else "cpu"
    threads: int | None = options.torch_threads or max(
        1, (os.cpu_count() or 1) // max(n_workers, 1)
    )
    if options.address:
        threads = options.torch_threads  # remote workers: leave torch's own default
    chunks = [
        blocks[i : i + options.blocks_per_task]
        for i in range(0, len(blocks), options.blocks_per_task)
    ]
    futures = [
        client.submit(
            _task,
            chunk,
            scene,
            model,
            config.model_dump_json(),
            os.fspath(store.folder),
            store.fingerprint,
            threads,
            device,
            resources=needed or None,
            pure=False,
            key=f"geoportal-infer-{store.fingerprint}-{i}",
        )
        for i, chunk in enumerate(chunks)
    ]
    pids = set()
    try:
        for future in as_completed(futures):
            result = future.result()
            timer.merge(result["stages"])
            pids.add(result["worker"])
            on_tiles(result["tiles"])
    finally:
        for future in futures:
            future.cancel()
    return len(pids)
