"""Helpers shared by the benchmarks: processes, /proc accounting, HTTP timing, statistics, the machine."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the machine ------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count() or "?"),
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every number, so it is recorded."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


# -- statistics ---------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- /proc accounting ---------------------------------------------------------------------------------
def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads, also finished ones), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def process_memory(pid: int) -> tuple[int, int]:
    """(resident set size, peak resident set size) in bytes."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


# -- processes ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_module(module: str, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``python -m module args`` with this interpreter, from the repository root."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, text=True, **kwargs)


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback http URLs we build
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout:.0f}s") from None
            time.sleep(0.05)


def read_json_line(stream: IO[str] | None, timeout_hint: str) -> Any:
    if stream is None:
        raise RuntimeError("no stdout to read from")
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{timeout_hint} exited before it was ready")
    return json.loads(line)


# -- HTTP ---------------------------------------------------------------------------------------------
@dataclass
class Fetch:
    status: int
    body: bytes  # decompressed
    wire_bytes: int
    seconds: float


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> Fetch:
    """GET ``url``; the time is from sending the request to the last byte of the body."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback http URLs we build
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            status, encoding = response.status, response.headers.get("Content-Encoding", "")
    except urllib.error.HTTPError as exc:
        raw, status, encoding = exc.read(), exc.code, ""
    seconds = time.perf_counter() - start
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    return Fetch(status, body, len(raw), seconds)


PROMETHEUS_HEADERS = {
    # What Prometheus sends on a scrape: it asks for gzip and says how long it will wait.
    "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def prometheus_headers(scrape_timeout: float) -> dict[str, str]:
    return {**PROMETHEUS_HEADERS, "X-Prometheus-Scrape-Timeout-Seconds": f"{scrape_timeout:g}"}
