"""Bounded soak on loopback: 20 simulated hosts probed concurrently in a loop while faults come and go.

The exporter runs as its own process (so its resident memory, threads and descriptors are its
own); the simulated fleet runs here, where the chaos thread changes it. Afterwards every host must
recover, no probe may have outlived its deadline by much, and the exporter's memory, threads and
open files must not have grown without bound after a warm-up. The numbers are printed (run with
``-s``) as one ``SOAK`` summary line.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyperv_exporter.sim.fleet import SimFleet
from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import Simulator
from hyperv_exporter.sim.wsman import Fault

pytestmark = pytest.mark.slow

HOSTS = 20
WARM_UP_SECONDS = 20.0
MEASURED_SECONDS = 60.0
SCRAPE_TIMEOUT = 2.0  # the deadline is 1.5 s
PASSWORD = "Soak-Pa55word"

ENDPOINT_FAULTS = [
    Fault("hang"),
    Fault("slow", seconds=3.0),
    Fault("http_500"),
    Fault("unauthorized"),
    Fault("reset"),
    Fault("garbage"),
    Fault("drip", seconds=0.05),
    Fault("huge_body", size=8 * 1024 * 1024),
    Fault("gzip_body"),
    Fault("dtd"),
]
OUTPUT_FAULTS = ["not_json", "truncated", "zip_bomb", "powershell_error", "surrogates", "huge_stderr", "deep_nesting"]


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    fields["fds"] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return fields


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
        return str(resp.read().decode())


class Chaos:
    """Puts a random fault on a random host every ``period`` seconds and clears it a little later."""

    def __init__(self, sim: Simulator, fleet: SimFleet, seed: int = 5) -> None:
        self.sim, self.fleet = sim, fleet
        self.rng = random.Random(seed)
        self.applied: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._active: list[tuple[float, Callable[[], None]]] = []

    def start(self) -> None:
        self._thread.start()

    def _apply(self) -> tuple[str, Callable[[], None]]:
        host = self.rng.choice(self.fleet.hosts)
        endpoint = self.sim.endpoint(host.computer_name)
        kind = self.rng.choice(["endpoint", "endpoint", "output", "output", "stop", "password", "expire"])
        if kind == "endpoint":
            fault = self.rng.choice(ENDPOINT_FAULTS)
            endpoint.fault = fault

            def clear() -> None:
                endpoint.fault = None

            return fault.kind, clear
        if kind == "output":
            name = self.rng.choice(OUTPUT_FAULTS)
            host.set(output_fault=name)
            return name, lambda: host.set(output_fault=None)
        if kind == "stop":
            endpoint.stop()
            return "refused", endpoint.start
        if kind == "password":
            host.set(password="Wrong-Pa55word")
            return "password", lambda: host.set(password=PASSWORD)
        endpoint.expire_shells()
        return "expire_shells", lambda: None

    def _run(self) -> None:
        while not self._stop.wait(0.4):
            now = time.monotonic()
            due = [(t, c) for t, c in self._active if t <= now]
            self._active = [(t, c) for t, c in self._active if t > now]
            for _, clear in due:
                clear()
            if len(self._active) < 5:
                name, clear = self._apply()
                self.applied[name] += 1
                self._active.append((now + self.rng.uniform(0.5, 3.0), clear))

    def storm(self, seconds: float) -> None:
        """Every memory-heavy fault at once on most hosts: after this the allocator has seen the
        worst the measured phase can bring (it holds at most five faults at a time)."""
        heavy: list[tuple[str, Callable[[], None]]] = []
        for index, host in enumerate(self.fleet.hosts[:16]):
            endpoint = self.sim.endpoint(host.computer_name)
            if index % 4 == 0:
                endpoint.fault = Fault("huge_body", size=8 * 1024 * 1024)
                heavy.append(("huge_body", lambda e=endpoint: setattr(e, "fault", None)))  # type: ignore[misc]
            else:
                name = ("zip_bomb", "huge_stderr", "deep_nesting")[index % 4 - 1]
                host.set(output_fault=name)
                heavy.append((name, lambda h=host: h.set(output_fault=None)))  # type: ignore[misc]
        time.sleep(seconds)
        for name, clear in heavy:
            clear()
            self.applied[name] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for _, clear in self._active:
            clear()
        self._active = []


def test_soak(tmp_path: Path) -> None:
    fleet = generate_fleet(hosts=HOSTS, vms_per_host=20, seed=7, password=PASSWORD, run_seconds=0.02)
    sim = Simulator(fleet)
    sim.start()
    (tmp_path / "password").write_text(PASSWORD)
    endpoints = "".join(f"      {name}: {url}\n" for name, url in sim.urls().items())
    (tmp_path / "hyperv.yml").write_text(
        f"""modules:
  default:
    targets: [{", ".join(sim.urls())}]
    cache_ttl: 0s
    timeout: 10s
    endpoints:
{endpoints}    winrm: {{scheme: http, transport: ntlm, username: monitor, password_file: password,
             max_output_bytes: 8MiB}}
"""
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "exporter.log").open("wb")
    exporter = subprocess.Popen(
        [sys.executable, "-m", "hyperv_exporter", "--config.file", "hyperv.yml", "--web.listen-address",
         f"127.0.0.1:{port}", "--log.level", "error"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    chaos = Chaos(sim, fleet)
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: Counter[str] = Counter()
    slowest = [0.0]
    failures: list[str] = []

    def scrape(target: str) -> None:
        url = f"{base}/probe?module=default&target={target}"
        while not stop.is_set():
            started = time.monotonic()
            try:
                text = _get(url, {"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)})
            except (OSError, urllib.error.HTTPError) as exc:
                with lock:
                    failures.append(f"{target}: {exc}")
                continue
            elapsed = time.monotonic() - started
            up = "hyperv_up 1.0" in text
            with lock:
                outcomes["up" if up else "down"] += 1
                slowest[0] = max(slowest[0], elapsed)
            stop.wait(0.05)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(base + "/-/healthy")
                break
            except OSError:
                assert exporter.poll() is None and time.monotonic() < deadline, (tmp_path / "exporter.log").read_text()
                time.sleep(0.1)
        threads = [threading.Thread(target=scrape, args=(h.computer_name,), daemon=True) for h in fleet.hosts]
        for thread in threads:
            thread.start()
        chaos.storm(5.0)
        chaos.start()
        time.sleep(WARM_UP_SECONDS)
        start_status = _status(exporter.pid)
        start_probes = sum(outcomes.values())
        time.sleep(MEASURED_SECONDS)
        end_status = _status(exporter.pid)
        chaos.stop()
        stop.set()
        for thread in threads:
            thread.join(30)

        # Every host recovers once the faults are gone.
        time.sleep(0.5)
        for host in fleet.hosts:
            text = _get(f"{base}/probe?module=default&target={host.computer_name}")
            assert "hyperv_up 1.0" in text, host.computer_name
        metrics = _get(base + "/metrics")
        errors: Counter[str] = Counter()
        for family in text_string_to_metric_families(metrics):
            for s in family.samples:
                if s.name == "hyperv_exporter_probe_errors_total":
                    errors[s.labels["reason"]] += int(s.value)
        assert exporter.poll() is None
    finally:
        stop.set()
        chaos.stop()
        exporter.send_signal(signal.SIGTERM)
        try:
            exporter.wait(15)
        except subprocess.TimeoutExpired:
            exporter.kill()
        log.close()
        sim.stop()

    summary = {
        "probes": sum(outcomes.values()),
        "probes_measured": sum(outcomes.values()) - start_probes,
        "up": outcomes["up"],
        "down": outcomes["down"],
        "errors_by_reason": dict(sorted(errors.items())),
        "faults_applied": dict(sorted(chaos.applied.items())),
        "slowest_probe_seconds": round(slowest[0], 2),
        "rss_kib_start": start_status["VmRSS"],
        "rss_kib_end": end_status["VmRSS"],
        "threads_start": start_status["Threads"],
        "threads_end": end_status["Threads"],
        "fds_start": start_status["fds"],
        "fds_end": end_status["fds"],
    }
    print("\nSOAK " + json.dumps(summary))
    assert not failures, failures[:5]
    assert summary["up"] > summary["down"] > 0
    assert set(errors) >= {"timeout", "connection", "auth", "winrm_fault", "parse", "output_too_large", "powershell"}
    assert slowest[0] < SCRAPE_TIMEOUT + 2.0, "a probe outlived its deadline"
    assert end_status["VmRSS"] < start_status["VmRSS"] * 1.5 + 32 * 1024, "resident memory keeps growing"
    assert end_status["Threads"] < start_status["Threads"] + 40, "threads keep growing"
    # One connection per host and the scrapes in flight: a dropped pool or shell closes its connection
    # at once (test_transport_connections), so the count holds steady under faults.
    assert end_status["fds"] < start_status["fds"] + 20, "open files keep growing"
