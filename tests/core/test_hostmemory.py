"""The host allocator tuning that keeps freed tensor memory in the process."""

from __future__ import annotations

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
