"""One host with N VMs: where a probe's time goes, what it costs the exporter, and the two baselines.

Per size, against a generated host served by the simulator in its own process:

1. **In-process split.** The exporter's own code (``WinRMSession``, ``report``, ``exposition``) runs in
   this process, one phase at a time: WinRM exchange (wall time, and the CPU time this thread spent
   in pywinrm/requests: the rest of the exchange is waiting for the host), decode + parse, render.
2. **End to end, interleaved.** The real exporter, as its own process, is probed over HTTP as
   Prometheus does (gzip, scrape-timeout header), and node_exporter serving the same exposition
   from its textfile collector is scraped the same way, in alternation: round after round, one
   batch of exporter probes (A), then one batch of node_exporter scrapes (B), so that both see the
   same load on the machine. Per round: the exporter's CPU per probe (its *overhead*: everything
   it does except waiting for the host), the simulator's CPU per probe (the host's work, in its own
   process, not counted as the exporter's), node_exporter's CPU per scrape, all from
   /proc/<pid>/stat, and the exporter's peak resident memory during the batch (VmHWM, reset before
   it through /proc/<pid>/clear_refs). A batch holds as many probes as make about 0.3 s of CPU,
   because /proc counts CPU in 10 ms ticks. Min and median over the rounds are reported.
3. **Floor.** prometheus_client's ``generate_latest`` rendering the same families, already built.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    fetch,
    free_port,
    median,
    process_cpu_seconds,
    process_memory,
    prometheus_headers,
    stop,
    wait_http,
)
from benchmarks.stack import MODULE, Stack
from hyperv_exporter.host import cimxml, exposition, report, script
from hyperv_exporter.host.collectors import COLLECTORS, DEFAULT_COLLECTORS, sections_for
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import load_config
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.transport.winrs import WinRMSession

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TIMEOUT = 120.0
# Series that do not belong to a VM: hyperv_up, probe duration/timeout/requests, last success,
# collector success and duration (7 collectors each), host info, clock offset and its uncertainty.
HOST_SERIES_PREFIXES = (b"hyperv_up", b"hyperv_probe_", b"hyperv_last_", b"hyperv_collector_", b"hyperv_host_")


@dataclass
class Phase:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


@dataclass
class SizeResult:
    vms: int
    exchange: Phase = field(default_factory=Phase)
    parse: Phase = field(default_factory=Phase)
    render: Phase = field(default_factory=Phase)
    requests_first: int = 0
    requests_steady: int = 0
    sim_requests_first: int = 0
    sim_requests_steady: int = 0
    stdout_bytes: int = 0  # what crossed WinRM (gzip + base64)
    json_bytes: int = 0
    exposition_bytes: int = 0
    exposition_gzip_bytes: int = 0
    samples: int = 0
    series_per_vm: float = 0.0
    family_series: dict[str, float] = field(default_factory=dict)
    e2e_wall: list[float] = field(default_factory=list)
    exporter_cpu: list[float] = field(default_factory=list)  # per probe, one value per round (A)
    sim_cpu: list[float] = field(default_factory=list)  # the simulated host's CPU per probe, per round
    exporter_peak_rss: list[int] = field(default_factory=list)  # VmHWM during each round's batch
    exporter_rss: int = 0  # resident after the rounds
    peak_reset: bool = True  # False: VmHWM could not be reset, peaks are the process's lifetime peak
    batch: int = 1  # exporter probes per round
    floor_render: float = 0.0
    node_wall: list[float] = field(default_factory=list)
    node_cpu: list[float] = field(default_factory=list)  # per scrape, one value per round (B)
    node_batch: int = 1
    node_ok: bool = False
    problems: int = 0
    profile: str = ""

    @property
    def overhead(self) -> float:
        """Exporter CPU per probe, median over the rounds (the target's numerator)."""
        return median(self.exporter_cpu)

    @property
    def node_cpu_per_scrape(self) -> float:
        return median(self.node_cpu)

    @property
    def peak_rss(self) -> int:
        return max(self.exporter_peak_rss, default=0)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    value = fn()
    return value, time.perf_counter() - wall, time.thread_time() - cpu


def _in_process(stack: Stack, result: SizeResult, probes: int, profile: bool) -> bytes:
    module = load_config(str(stack.config_path)).modules[MODULE]
    target = stack.targets[0]
    session = WinRMSession(module.endpoint_url(target), module.winrm, script.script_text())
    collectors = tuple(c for c in COLLECTORS if c in DEFAULT_COLLECTORS)
    kvp_keys = report.kvp_keys_read(module.kvp.keys)
    command, args = script.probe_command(sections_for(collectors), module.winrm.gzip, kvp_keys)
    kvp_filter = cimxml.allowlist(module.kvp.keys, module.kvp.max_value_length)
    sources = frozenset(module.kvp.sources)
    body = b""
    try:
        for index in range(probes):
            stack.sim_command("reset")
            deadline = time.monotonic() + TIMEOUT
            exchange, wall, cpu = _timed(lambda: session.run(command, args, deadline))  # noqa: B023
            sim_requests = stack.sim_command(f"stats {target}")["requests"]
            if index == 0:
                result.requests_first, result.sim_requests_first = exchange.requests, sim_requests
            else:
                result.requests_steady, result.sim_requests_steady = exchange.requests, sim_requests
                result.exchange.add(wall, cpu)
            result.stdout_bytes = len(exchange.stdout)

            def parse(stdout: bytes = exchange.stdout) -> tuple[int, HostReport]:
                document = report.decode_bytes(stdout, module.winrm.max_output_bytes)  # as the prober does
                return len(document), report.parse_report(document, kvp_filter, sources)

            (result.json_bytes, host_report), wall, cpu = _timed(parse)
            result.problems = len(host_report.problems)
            probe = ProbeResult(
                MODULE, target, collectors, time.time(), duration=wall, report=host_report,
                clock=ClockExchange(exchange.sent, exchange.received), requests=exchange.requests,
            )  # fmt: skip
            body, render_wall, render_cpu = _timed(lambda: exposition.render(probe, TIMEOUT))  # noqa: B023
            if index > 0:
                result.parse.add(wall, cpu)
                result.render.add(render_wall, render_cpu)
        if profile:
            result.profile = _profile(exchange.stdout, module.winrm.max_output_bytes, kvp_filter, sources, probe)
        # The floor: prometheus_client rendering the same families, already built.
        from prometheus_client import CollectorRegistry, generate_latest

        built = exposition.families(probe, TIMEOUT)

        class Prebuilt:
            def collect(self) -> list[Any]:
                return built

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Prebuilt())
        result.floor_render = median([_timed(lambda: generate_latest(registry))[1] for _ in range(max(2, probes - 1))])
        counts = Counter(s.name for f in built for s in f.samples)
        result.family_series = {name: n / max(1, result.vms) for name, n in counts.items()}
    finally:
        session.close()
    return body


def _profile(stdout: bytes, cap: int, kvp_filter: cimxml.KvpFilter, sources: frozenset[str], probe: ProbeResult) -> str:
    """The top of a pyinstrument profile of decode + parse + render (three rounds)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "(pyinstrument is not installed: scripts/setup-venv.sh bench)"
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(3):
        host_report = report.parse_report(report.decode_bytes(stdout, cap), kvp_filter, sources)
        exposition.render(
            ProbeResult(MODULE, probe.target, probe.collectors, probe.started, report=host_report, clock=probe.clock),
            TIMEOUT,
        )
    profiler.stop()
    lines = profiler.output_text(unicode=False, color=False, short_mode=False).splitlines()
    return "\n".join(line.rstrip() for line in lines if line.strip())


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current resident size (Linux 4.0+, same user or root)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def _batch(vms: int) -> int:
    """Probes per round so that a round is about 0.3 s of the exporter's CPU (at ~0.15 ms per VM)."""
    return max(1, min(20, round(2000 / max(1, vms))))


class _NodeExporter:
    """node_exporter's textfile collector serving ``body``, the Go anchor."""

    def __init__(self, body: bytes, directory: str) -> None:
        Path(directory, "hyperv.prom").write_bytes(body)
        port = free_port()
        self.process = subprocess.Popen(
            [
                NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
                f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}",
                "--web.disable-exporter-metrics", "--log.level=error",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_http(f"http://127.0.0.1:{port}/")  # not /metrics: a large textfile takes seconds per scrape
        except BaseException:
            stop(self.process)
            raise


def _interleaved(stack: Stack, body: bytes, result: SizeResult, rounds: int) -> None:
    """Rounds of (A) a batch of exporter probes, (B) a batch of node_exporter scrapes, alternating."""
    assert stack.exporter is not None
    pid, sim_pid, url = stack.exporter.pid, stack.sim.pid, stack.probe_url(stack.targets[0])
    headers = prometheus_headers(TIMEOUT)
    first = fetch(url, headers, timeout=TIMEOUT + 10)  # warm-up: imports, shell creation
    if b"hyperv_up 1.0" not in first.body:
        raise RuntimeError(f"probe of {result.vms} VMs failed: {first.body[:300]!r}")
    result.batch = _batch(result.vms)
    with tempfile.TemporaryDirectory(prefix="bench-textfile-") as directory:
        node = _NodeExporter(body, directory) if Path(NODE_EXPORTER).exists() else None
        try:
            if node is not None:
                warm = fetch(node.url, headers, timeout=TIMEOUT)
                result.node_ok = b"node_textfile_scrape_error 0" in warm.body
                result.node_batch = max(1, round(result.batch / 4))  # node_exporter is ~4x the exporter's CPU
            for _ in range(rounds):
                result.peak_reset = _reset_peak(pid) and result.peak_reset
                cpu, sim_cpu = process_cpu_seconds(pid), process_cpu_seconds(sim_pid)
                for _ in range(result.batch):
                    result.e2e_wall.append(fetch(url, headers, timeout=TIMEOUT + 10).seconds)
                result.exporter_cpu.append((process_cpu_seconds(pid) - cpu) / result.batch)
                result.sim_cpu.append((process_cpu_seconds(sim_pid) - sim_cpu) / result.batch)
                result.exporter_peak_rss.append(process_memory(pid)[1])
                if node is not None and result.node_ok:
                    cpu = process_cpu_seconds(node.process.pid)
                    for _ in range(result.node_batch):
                        result.node_wall.append(fetch(node.url, headers, timeout=TIMEOUT).seconds)
                    result.node_cpu.append((process_cpu_seconds(node.process.pid) - cpu) / result.node_batch)
        finally:
            if node is not None:
                stop(node.process)
    result.exporter_rss = process_memory(pid)[0]


def run_size(
    workdir: Path, vms: int, probes: int, profile: bool = False, log: Callable[[str], None] = print
) -> SizeResult:
    result = SizeResult(vms=vms)
    size_dir = workdir / f"host-{vms}"
    size_dir.mkdir(parents=True, exist_ok=True)
    with Stack(size_dir, 1, vms, run_seconds=0.0, timeout=TIMEOUT) as stack:
        log(f"  {vms} VMs: in-process split ({probes} probes)")
        body = _in_process(stack, result, probes, profile)
        log(f"  {vms} VMs: exporter and node_exporter interleaved ({probes} rounds)")
        _interleaved(stack, body, result, probes)
    lines = [line for line in body.split(b"\n") if line and not line.startswith(b"#")]
    result.samples = len(lines)
    vm_lines = [line for line in lines if not line.startswith(HOST_SERIES_PREFIXES)]
    result.series_per_vm = len(vm_lines) / max(1, vms)
    result.exposition_bytes = len(body)
    import gzip

    result.exposition_gzip_bytes = len(gzip.compress(body, compresslevel=1, mtime=0))  # the exporter's level
    return result


def node_exporter_version() -> str:
    if not shutil.which(NODE_EXPORTER):
        return "not installed"
    out = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "unknown"
