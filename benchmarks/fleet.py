"""A fleet run: H hosts x M VMs, each probed every ``interval`` seconds as Prometheus would.

The exporter runs as its own process (so its resident memory is measured alone); the simulated
fleet runs in another, with ``latency`` added to every WS-Management request. One thread per target
plays Prometheus' scrape loop for that target:

- ``spread``: each target at its own offset within the interval, as Prometheus spreads the
  targets of a job (it hashes the target's labels; here a CRC-32 of the name);
- ``burst``: every target at the same instant, the worst case (Prometheus restarted, or several
  servers with aligned schedules).

A probe *misses the interval* when it fails (HTTP error, ``hyperv_up 0``) or takes longer than the
interval; the scrape timeout sent is the interval, as ``scrape_timeout: 15s`` would.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import fetch, percentile, process_cpu_seconds, process_memory, prometheus_headers
from benchmarks.stack import Stack


@dataclass
class FleetResult:
    schedule: str
    hosts: int
    vms: int
    latency: float
    interval: float
    rounds: int
    latencies: list[float] = field(default_factory=list)
    missed: int = 0
    failed: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    cpu_per_probe: float = 0.0
    sim_cpu_per_probe: float = 0.0  # the simulated hosts' work, in their own process
    requests_first: list[int] = field(default_factory=list)
    requests_steady: list[int] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return len(self.latencies)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


_REQUESTS = re.compile(rb"^hyperv_probe_winrm_requests (\S+)$", re.MULTILINE)


def _offset(target: str, interval: float, schedule: str) -> float:
    if schedule == "burst":
        return 0.0
    return (zlib.crc32(target.encode()) % 1_000_000) / 1_000_000 * interval


def run_fleet(
    workdir: Path,
    hosts: int,
    vms: int,
    *,
    latency: float,
    interval: float,
    rounds: int,
    schedules: tuple[str, ...] = ("spread", "burst"),
    log: Callable[[str], None] = print,
) -> list[FleetResult]:
    results = []
    for schedule in schedules:
        directory = workdir / f"fleet-{schedule}"
        directory.mkdir(parents=True, exist_ok=True)
        log(
            f"  fleet {hosts} x {vms}, {schedule}: {rounds} rounds every {interval:g}s, "
            f"{latency * 1000:g} ms per request"
        )
        with Stack(directory, hosts, vms, latency=latency, timeout=interval) as stack:
            results.append(_run(stack, schedule, hosts, vms, latency, interval, rounds))
    return results


def _run(
    stack: Stack, schedule: str, hosts: int, vms: int, latency: float, interval: float, rounds: int
) -> FleetResult:
    assert stack.exporter is not None
    pid = stack.exporter.pid
    result = FleetResult(schedule, hosts, vms, latency, interval, rounds)
    lock = threading.Lock()
    done = threading.Event()
    headers = prometheus_headers(interval)
    start = time.monotonic() + 1.0
    cpu_before, sim_before = process_cpu_seconds(pid), process_cpu_seconds(stack.sim.pid)

    def scrape_loop(target: str) -> None:
        offset = _offset(target, interval, schedule)
        for round_index in range(rounds):
            due = start + offset + round_index * interval
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                answer = fetch(stack.probe_url(target), headers, timeout=interval + 5)
                ok = answer.status == 200 and b"\nhyperv_up 1.0\n" in answer.body
                seconds = answer.seconds
                match = _REQUESTS.search(answer.body)
            except OSError:
                ok, seconds, match = False, interval + 5, None
            with lock:
                result.latencies.append(seconds)
                if not ok:
                    result.failed += 1
                if not ok or seconds > interval:
                    result.missed += 1
                if match is not None:
                    (result.requests_first if round_index == 0 else result.requests_steady).append(
                        int(float(match.group(1)))
                    )

    def memory_loop() -> None:
        while not done.wait(0.2):
            result.rss_peak = max(result.rss_peak, process_memory(pid)[0])

    sampler = threading.Thread(target=memory_loop, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=scrape_loop, args=(t,), daemon=True) for t in stack.targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    rss, hwm = process_memory(pid)
    result.rss_end, result.rss_peak = rss, max(result.rss_peak, hwm)
    result.cpu_per_probe = (process_cpu_seconds(pid) - cpu_before) / max(1, result.probes)
    result.sim_cpu_per_probe = (process_cpu_seconds(stack.sim.pid) - sim_before) / max(1, result.probes)
    return result
