"""The guest agent: CPU time and memory per scrape, and how accurately its NTP client measures an offset.

- **Per scrape.** ``hyperv-guest-agent`` runs as its own process on the test fixture root (a Hyper-V
  Linux guest: modules, daemons, KVP pools, chrony configuration) against a loopback NTP server,
  with every Linux collector enabled, and is scraped N times; its CPU time from /proc divided by N
  is the cost per scrape (CPU time excludes waiting for the network by definition). The first
  scrape, which starts the NTP measurement, is not counted.
- **NTP accuracy.** The agent's own client (``guest.ntp.measure``: three requests, the one with the
  least delay kept) measures a loopback server whose clock is behind by a known offset, 100 times.
  The error |measured - injected| is set against the bound the method gives: half the round trip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.common import (
    REPO,
    fetch,
    free_port,
    median,
    percentile,
    process_cpu_seconds,
    process_memory,
    python_module,
    read_json_line,
    stop,
    wait_http,
)
from hyperv_exporter.guest import ntp

INJECTED_OFFSET = 0.1234567  # seconds the guest appears ahead of the server
FIXTURE_ROOT = REPO / "tests" / "fixtures" / "guest" / "hyperv-root"


@dataclass
class GuestResult:
    scrapes: int = 0
    cpu_per_scrape: float = 0.0
    scrape_wall_median: float = 0.0
    rss: int = 0
    rss_peak: int = 0
    metrics_bytes: int = 0
    measurements: int = 0
    errors: list[float] = field(default_factory=list)  # |measured - injected|, seconds
    bounds: list[float] = field(default_factory=list)  # delay / 2 of each measurement, seconds
    failed: int = 0

    @property
    def within_bound(self) -> int:
        return sum(e <= b for e, b in zip(self.errors, self.bounds, strict=True))

    @property
    def error_median(self) -> float:
        return median(self.errors)

    @property
    def error_p99(self) -> float:
        return percentile(self.errors, 99)

    @property
    def bound_median(self) -> float:
        return median(self.bounds)

    @property
    def bound_p99(self) -> float:
        return percentile(self.bounds, 99)


def run_guest(scrapes: int, measurements: int, log: Callable[[str], None] = print) -> GuestResult:
    result = GuestResult(scrapes=scrapes)
    server = python_module(
        "benchmarks.ntpserver", "--offset", repr(INJECTED_OFFSET), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        port = int(read_json_line(server.stdout, "the NTP server")["port"])
        log(f"  guest agent: {scrapes} scrapes")
        _scrapes(result, port, scrapes)
        log(
            f"  guest agent: {measurements} NTP measurements against a loopback server "
            f"{INJECTED_OFFSET * 1000:g} ms behind"
        )
        _ntp(result, port, measurements)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        stop(server)
    return result


def _scrapes(result: GuestResult, ntp_port: int, scrapes: int) -> None:
    port = free_port()
    agent = python_module(
        "hyperv_exporter.guest",
        "--root", str(FIXTURE_ROOT),
        "--web.listen-address", f"127.0.0.1:{port}",
        "--ntp.server", f"127.0.0.1:{ntp_port}",
        "--ntp.sample-interval", "0.05s",
        "--log.level", "error",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_http(f"http://127.0.0.1:{port}/")
        first = fetch(url)  # starts (and waits for) the first NTP measurement
        result.metrics_bytes = len(first.body)
        if b"hyperv_guest_ntp_up" not in first.body:
            raise RuntimeError("the guest agent's answer has no NTP metrics")
        cpu_before = process_cpu_seconds(agent.pid)
        walls = [fetch(url).seconds for _ in range(scrapes)]
        result.cpu_per_scrape = (process_cpu_seconds(agent.pid) - cpu_before) / scrapes
        result.scrape_wall_median = median(walls)
        result.rss, result.rss_peak = process_memory(agent.pid)
    finally:
        stop(agent)


def _ntp(result: GuestResult, port: int, measurements: int) -> None:
    server = ntp.NtpServer("127.0.0.1", port)
    options = ntp.MeasureOptions(version=4, samples=3, sample_interval=0.01, request_timeout=0.5, timeout=2.0)
    for _ in range(measurements):
        measurement = ntp.measure(server, options)
        if measurement.sample is None:
            result.failed += 1
            continue
        result.errors.append(abs(measurement.sample.offset_seconds - INJECTED_OFFSET))
        result.bounds.append(measurement.sample.uncertainty_seconds)
    result.measurements = measurements
