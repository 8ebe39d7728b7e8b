"""The host allocator tuning that keeps freed tensor memory in the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
def test_large_allocations_stop_faulting_after_tuning():
    """After keep_freed_memory, reallocating a 40 MB buffer costs no new page faults."""
    script = textwrap.dedent(
        """
        import ctypes
        import resource
        from geoportal.hostmemory import keep_freed_memory

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        SIZE = 40_000_000  # above glibc's largest mmap threshold (32 MiB)

        def faults_of_reallocating():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):  # what a tensor of a forward pass goes through
                block = libc.malloc(SIZE)
                libc.memset(block, 1, SIZE)
                libc.free(block)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        plain = faults_of_reallocating()
        assert keep_freed_memory() and keep_freed_memory()  # idempotent
        faults_of_reallocating()  # the heap grows once
        tuned = faults_of_reallocating()
        print(plain, tuned)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    plain, tuned = int(out[0]), int(out[1])
    # 20 × 40 MB / 4 KiB pages ≈ 195,000 faults when every buffer is a fresh mapping.
    assert plain > 100_000
    assert tuned < plain / 20


def test_worker_environment_reaches_dask_workers_and_the_chart(monkeypatch):
    """LocalCluster workers start with the allocator settings; the chart's Gateway workers too."""
    from pathlib import Path

    from distributed import Client, LocalCluster

    from geoportal.hostmemory import WORKER_ENVIRONMENT, dask_worker_environment

    def environment() -> dict[str, str]:
        import os

        return {k: os.environ.get(k, "") for k in (*WORKER_ENVIRONMENT, "OMP_NUM_THREADS")}

    # A cluster started earlier in this process may have left Dask's own values in the
    # environment (the Nanny writes them there); they must not win.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with (
        dask_worker_environment(),
        LocalCluster(n_workers=1, processes=True, host="127.0.0.1", dashboard_address=None) as c,
        Client(c) as client,
    ):
        seen = client.submit(environment).result(timeout=60)
    assert seen == {**WORKER_ENVIRONMENT, "OMP_NUM_THREADS": "1"}  # Dask's own entries stay
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # restored
    chart = Path(__file__).parents[2] / "helm" / "geoportal"
    values = (chart / "values.yaml").read_text()
    wps = (chart / "templates" / "wps" / "deployment.yaml").read_text()
    for key, value in WORKER_ENVIRONMENT.items():
        assert f'"{key}": "{value}"' in values
        assert f'- name: {key}\n              value: "{value}"' in wps


def test_local_wps_service_gets_the_worker_environment():
    """Sync Executes run in the WPS server's threads: it starts with the settings too."""
    from geoportal.hostmemory import WORKER_ENVIRONMENT
    from geoportal.settings import Settings
    from geoportal_hub.config import wps_service

    env = wps_service(Settings(), port=1)["environment"]
    assert WORKER_ENVIRONMENT.items() <= env.items()
