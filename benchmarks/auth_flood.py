"""A valid user's scrapes while clients flood basic auth with wrong passwords (issue 13).

``.venv/bin/python -m benchmarks.auth_flood [--flooders 32] [--scrapes 300]``

Starts the real exporter (``--demo``, with a web config holding one bcrypt user of cost 10, as
``htpasswd -B`` makes), lets ``--flooders`` clients in another process send unique wrong passwords
(half for the real user name, half for unknown ones) as fast as the exporter answers them, and
meanwhile scrapes ``/metrics`` as the valid user on a kept-alive connection, as Prometheus does.
Prints the valid user's latency percentiles (target: p99 under 200 ms) and the flood's rate. Before
issue 13, one LRU cache held successes and failures alike, so the flood evicted the valid user's
entry and every scrape queued behind the flood's bcrypt work (2.5-10.7 s).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import multiprocessing
import subprocess
import tempfile
import threading
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import bcrypt

from benchmarks import common
from benchmarks.common import free_port, machine, percentile, python_module

USER, PASSWORD = "prometheus", "Valid-Scrape-Pa55word"
TARGET_P99 = 0.200


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _flood(port: int, flooders: int, stop: EventType, counts: multiprocessing.Queue[int]) -> None:
    def one(index: int) -> None:
        sent = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            user = USER if sent % 2 else f"intruder{index}"
            try:
                conn.request("GET", "/metrics", headers=_auth(user, f"wrong-{index}-{sent}"))
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            sent += 1
        counts.put(sent)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(flooders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/-/healthy", headers=_auth(USER, PASSWORD))
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the exporter did not start")
        time.sleep(0.2)


def run(flooders: int, scrapes: int, interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        web = Path(tmp) / "web.yml"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
        port = free_port()
        proc = python_module(
            "hyperv_exporter", "--demo", "--web.config.file", str(web), "--web.listen-address", f"127.0.0.1:{port}",
            "--log.level", "error", stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(port)
            stop = multiprocessing.Event()
            counts: multiprocessing.Queue[int] = multiprocessing.Queue()
            flood = multiprocessing.Process(target=_flood, args=(port, flooders, stop, counts), daemon=True)
            flood.start()
            time.sleep(2.0)  # let the flood reach its steady state first
            latencies: list[float] = []
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.monotonic()
            for _ in range(scrapes):
                t0 = time.perf_counter()
                conn.request("GET", "/metrics", headers=_auth(USER, PASSWORD))
                response = conn.getresponse()
                response.read()
                latencies.append(time.perf_counter() - t0)
                assert response.status == 200, response.status
                time.sleep(interval)
            elapsed = time.monotonic() - started
            stop.set()
            flood.join(90)
            attempts = sum(counts.get(timeout=30) for _ in range(flooders))
        finally:
            common.stop(proc)
    return {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "flood_per_second": attempts / (elapsed + 2.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.auth_flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--flooders", type=int, default=32)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between the valid user's scrapes")
    args = parser.parse_args()
    info = machine()
    result = run(args.flooders, args.scrapes, args.interval)
    print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['python']}")
    print(f"{args.flooders} clients flooding unique wrong passwords; {args.scrapes} valid /metrics scrapes")
    print("| p50 | p90 | p99 | max | wrong-password attempts answered per second |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| {result['p50'] * 1000:.1f} ms | {result['p90'] * 1000:.1f} ms | {result['p99'] * 1000:.1f} ms "
        f"| {result['max'] * 1000:.1f} ms | {result['flood_per_second']:.1f} |"
    )
    verdict = "met" if result["p99"] < TARGET_P99 else "MISSED"
    print(f"Target p99 < {TARGET_P99 * 1000:.0f} ms: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
