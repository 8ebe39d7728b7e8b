"""Load figures of the WPS service (a real server on 127.0.0.1, test-only processes).

Measures, on a fresh storage:
* N sequential GetCapabilities requests, then N with 20 concurrent clients (req/s, p95);
* 20 async Executes of a 0.3 s job submitted at once, until all succeed (jobs/s).

Last line: the ratio of concurrent to sequential GetCapabilities throughput (> 1 means
the threaded server serves clients in parallel; on 2 cores expect about 1-2).

Run: ``.venv/bin/python bench/wps.py [N]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "platform")]

from tests.wps.conftest import WpsServer, build_test_storage  # noqa: E402
from tests.wps.test_server import final_state, submit_async  # noqa: E402


def timed_get(url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    resp = requests.get(
        url, params={"service": "WPS", "request": "GetCapabilities"}, headers=headers, timeout=120
    )
    resp.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    base = Path(tempfile.mkdtemp(prefix="wps-bench-"))
    build_test_storage(base / "storage", REPO.parent / "shared" / "data")
    server = WpsServer(base / "storage", base / "state", base / "server.log").start()
    headers = server.headers()
    try:
        for _ in range(5):
            timed_get(server.url, headers)  # warm up
        start = time.perf_counter()
        seq = [timed_get(server.url, headers) for _ in range(n)]
        seq_rate = n / (time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            par = list(pool.map(lambda _: timed_get(server.url, headers), range(n)))
        par_rate = n / (time.perf_counter() - start)
        p95 = lambda xs: statistics.quantiles(xs, n=20)[18]  # noqa: E731
        print(f"GetCapabilities sequential: {seq_rate:.1f} req/s, p95 {1000 * p95(seq):.0f} ms")
        print(f"GetCapabilities 20 clients: {par_rate:.1f} req/s, p95 {1000 * p95(par):.0f} ms")
        start = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            jobs = list(
                pool.map(
                    lambda i: submit_async(
                        server, "test-sleep", [("seconds", "0.3"), ("tag", str(i))], ["result"]
                    ),
                    range(20),
                )
            )
        submitted = time.perf_counter() - start
        states = [final_state(server, url, timeout=300) for url in jobs]
        total = time.perf_counter() - start
        ok = states.count("ProcessSucceeded")
        print(
            f"20 async Executes: submitted in {submitted:.1f} s, {ok}/20 succeeded "
            f"in {total:.1f} s ({20 / total:.2f} jobs/s, parallelprocesses=2)"
        )
        print(f"concurrent/sequential GetCapabilities throughput ratio: {par_rate / seq_rate:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
