"""What a steady-state probe costs the Hyper-V host, per protocol, and how well it measures the host clock.

    .venv/bin/python -m benchmarks.host_cost                    # writes its section of docs/performance.md
    .venv/bin/python -m benchmarks.host_cost --quick --no-write # smoke run

For ``psrp`` and ``winrs``, against one simulated host with 100 and with 1,000 VMs, charged the
simulator's default process cost (``sim.cost.WINDOWS``: 0.6 s start-up + 1.0 s Hyper-V module
import per new process) at a 50 ms simulated round trip. The host runs in a process of its own
(``--serve`` mode of this module) and serves its counters on /metrics, exactly what
``hyperv-sim --web.listen-address`` serves; the exporter's transport (``PSRPSession`` or
``WinRMSession``) runs here. Per steady-state probe (the first probe opens the shell or runspace
pool and is reported apart): processes the host started, modelled host CPU seconds, HTTP requests,
probe wall time (exchange + decode + parse), and the host clock offset's error against the offset
the host was configured with, next to the uncertainty the exporter reports and what the NTP
midpoint alone would have said.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import REPO, fetch, load_average, machine, median, python_module, read_json_line, stop
from benchmarks.run import write_into
from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.collectors import DEFAULT_COLLECTORS, sections_for
from hyperv_exporter.host.collectors.host import host_clock_offset
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.host.transport.winrs import WinRMSession

BEGIN = "<!-- host-cost:begin -->"
END = "<!-- host-cost:end -->"
DOC = REPO / "docs" / "performance.md"
HEADING = "## What a probe costs the Hyper-V host, and the host clock offset"
PASSWORD_ENV = "HYPERV_BENCH_PASSWORD"  # noqa: S105 - the name of a variable
PROTOCOLS = ("psrp", "winrs")
CLOCK_OFFSET = 2.5  # seconds the simulated host's clock runs ahead
TIMEOUT = 120.0
# How long the collection itself runs on the host, by default: as long as the simulated host's own
# report says its sections took (0.3 s for Get-VM, 1.6 ms per VM for the other sections: 0.55 s
# for 100 VMs, 2 s for 1,000). The simulator's default (50 ms, for fast tests) is shorter than the
# 50 ms round trip and than any real host's queries; with it the output would wait for the
# exporter's next Receive instead of the Receive waiting for the output, as on a real host.
RUN_SECONDS: float | None = None


# -- the simulated host, in its own process -------------------------------------------------------------
def serve(vms: int, latency: float, run_seconds: float | None, password: str, process_cost: str) -> int:
    from hyperv_exporter.sim.cost import MODELS
    from hyperv_exporter.sim.generator import generate_fleet
    from hyperv_exporter.sim.host import Simulator
    from hyperv_exporter.sim.metrics import make_handler
    from hyperv_exporter.web import WebServer

    fleet = generate_fleet(1, vms, seed=1, latency=latency, password=password)
    (host,) = fleet.hosts
    if run_seconds is None:
        sections = host.document(sections_for(DEFAULT_COLLECTORS), time.time())["Sections"]
        run_seconds = round(sum(section["Seconds"] for section in sections.values()), 3)
    host.run_seconds = run_seconds
    host.clock_offset = CLOCK_OFFSET
    simulator = Simulator(fleet, process_cost=MODELS[process_cost])
    simulator.start()
    server = WebServer(["127.0.0.1:0"], make_handler(simulator), name="hyperv-sim")
    server.start()
    try:
        print(
            json.dumps(
                {
                    "url": simulator.url(host.computer_name),
                    "metrics": server.urls[0] + "/metrics",
                    "host": host.computer_name,
                    "username": host.username,
                    "offset": host.clock_offset,
                    "run_seconds": host.run_seconds,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the benchmark closes our stdin
    finally:
        server.stop()
        simulator.stop()
    return 0


# -- measuring ------------------------------------------------------------------------------------------
@dataclass
class HostCounts:
    requests: float = 0.0
    processes: float = 0.0
    cpu: float = 0.0

    def __sub__(self, other: HostCounts) -> HostCounts:
        return HostCounts(self.requests - other.requests, self.processes - other.processes, self.cpu - other.cpu)


@dataclass
class Probe:
    wall: float
    requests: int  # counted by the exporter's transport
    host: HostCounts  # what the host counted (its /metrics)
    error: float  # offset minus the configured one
    uncertainty: float
    ntp_error: float  # what the NTP midpoint alone would have said


@dataclass
class CostResult:
    protocol: str
    vms: int
    latency: float
    run_seconds: float = 0.0  # how long the collection ran on the simulated host
    first: Probe | None = None
    steady: list[Probe] = field(default_factory=list)


def host_counts(url: str) -> HostCounts:
    counts = HostCounts()
    for family in text_string_to_metric_families(fetch(url).body.decode()):
        for sample in family.samples:
            if sample.name == "hyperv_sim_requests_total":
                counts.requests += sample.value
            elif sample.name == "hyperv_sim_processes_started_total":
                counts.processes += sample.value
            elif sample.name == "hyperv_sim_host_cpu_seconds_total":
                counts.cpu += sample.value
    return counts


def measure(
    protocol: str,
    vms: int,
    probes: int,
    latency: float,
    run_seconds: float | None = RUN_SECONDS,
    process_cost: str = "windows",
    log: bool = True,
) -> CostResult:
    result = CostResult(protocol, vms, latency)
    password = secrets.token_urlsafe(18)
    server = python_module(
        "benchmarks.host_cost", "--serve", "--vms", str(vms), "--latency", str(latency),
        "--process-cost", process_cost, *(["--run-seconds", str(run_seconds)] if run_seconds is not None else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, PASSWORD_ENV: password},
    )  # fmt: skip
    try:
        info = read_json_line(server.stdout, "the simulated host")
        result.run_seconds = info["run_seconds"]
        settings = WinRMSettings(
            scheme="http",
            transport="basic",
            username=info["username"],
            password=Secret(password),
            allow_unencrypted=True,
            message_encryption="never",
            protocol=protocol,
        )
        kind = PSRPSession if protocol == "psrp" else WinRMSession
        session = kind(info["url"], settings, script.script_text())
        sections = sections_for(DEFAULT_COLLECTORS)
        kvp_filter = cimxml.allowlist(("OSName",), 1024)
        try:
            for index in range(probes + 1):
                before = host_counts(info["metrics"])
                started = time.perf_counter()
                exchange = session.collect(sections, True, time.monotonic() + TIMEOUT)
                parsed = report.parse_report(
                    report.decode_output(exchange.stdout, 1 << 28), kvp_filter, frozenset({"guest_intrinsic"})
                )
                wall = time.perf_counter() - started
                counted = host_counts(info["metrics"]) - before
                if parsed.clock_start is None or parsed.clock_end is None:
                    raise RuntimeError("the report has no host clock readings")
                offset, uncertainty = host_clock_offset(
                    exchange.sent,
                    parsed.clock_start,
                    parsed.clock_end,
                    exchange.received,
                    exchange.return_leg,
                )
                ntp, _ = host_clock_offset(exchange.sent, parsed.clock_start, parsed.clock_end, exchange.received)
                # The /metrics scrape after the probe is itself no request to the host's WinRM listener.
                probe = Probe(
                    wall, exchange.requests, counted, offset - info["offset"], uncertainty, ntp - info["offset"]
                )
                if index == 0:
                    result.first = probe
                else:
                    result.steady.append(probe)
                if log:
                    print(
                        f"    {protocol} {vms} VMs probe {index}: {wall:.3f} s, {exchange.requests} requests, "
                        f"{counted.processes:g} processes, offset error {probe.error * 1000:+.2f} ms "
                        f"(± {uncertainty * 1000:.1f} ms)",
                        flush=True,
                    )
        finally:
            closing = threading.Thread(target=session.close)  # deletes the shell/pool in the background
            closing.start()
            closing.join(10)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        stop(server)
    return result


# -- Markdown -------------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if abs(seconds) < 10 else f"{seconds:,.1f} s"


def render(results: Sequence[CostResult], command: str, seconds: float, process_cost: str = "windows") -> str:
    info = machine()
    model = (
        "cost model `sim.cost.WINDOWS` (0.6 s start-up + 1.0 s Hyper-V module import per new process)"
        if process_cost == "windows"
        else "**no process cost** (`--process-cost none`)"
    )
    latency = _ms(results[0].latency) if results else "?"
    runs = ", ".join(f"{_ms(r.run_seconds)} with {r.vms:,} VMs" for r in results if r.protocol == results[0].protocol)
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores; {info['python']}. Command: "
        f"`{command.strip()}` ({seconds / 60:.1f} minutes; 1-minute load average {load_average()}); {model}; "
        f"simulated round trip {latency} (half each way); the collection runs {runs} (what the simulated "
        f"host's report says its sections took); host clock "
        f"{CLOCK_OFFSET:g} s ahead. Steady state: "
        "medians over the probes after the first (which opens the WinRS shell or the runspace pool; in brackets).",
        "",
        "| protocol | VMs | processes started per probe | modelled host CPU per probe | HTTP requests per probe "
        "| probe wall time | offset error (median / worst) | reported uncertainty (median) "
        "| error within uncertainty | NTP midpoint's error |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        steady, first = r.steady, r.first
        if not steady or first is None:
            continue
        worst = max(steady, key=lambda p: abs(p.error))
        within = sum(abs(p.error) <= p.uncertainty for p in steady)
        lines.append(
            f"| {r.protocol} | {r.vms:,} "
            f"| {median([p.host.processes for p in steady]):g} ({first.host.processes:g}) "
            f"| {median([p.host.cpu for p in steady]):.2f} s ({first.host.cpu:.2f} s) "
            f"| {median([p.requests for p in steady]):g} ({first.requests}) "
            f"| {_ms(median([p.wall for p in steady]))} ({_ms(first.wall)}) "
            f"| {median([abs(p.error) for p in steady]) * 1000:.1f} ms / {worst.error * 1000:+.1f} ms "
            f"| {median([p.uncertainty for p in steady]) * 1000:.1f} ms "
            f"| {within} of {len(steady)} "
            f"| {median([p.ntp_error for p in steady]) * 1000:+.1f} ms |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of ``path`` (between its markers), or append it with a heading."""
    write_into(path, text, BEGIN, END, HEADING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="VMs on the simulated host, comma-separated")
    parser.add_argument("--probes", type=int, default=5, help="steady-state probes per protocol and size")
    parser.add_argument("--latency", type=float, default=0.05, help="simulated round trip (seconds)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument(
        "--process-cost", default="windows", choices=("windows", "none"), help="the simulator's cost model (sim.cost)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument(
        "--run-seconds", type=float, default=RUN_SECONDS,
        help="how long the collection runs on the simulated host (default: what its report says)",
    )
    parser.add_argument("--quick", action="store_true", help="20 VMs, 2 probes, nothing written unless --output")
    parser.add_argument("--output", type=Path, help=f"Markdown file to write the section into (default: {DOC})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the simulated host's process
    parser.add_argument("--vms", type=int, default=100, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve(args.vms, args.latency, args.run_seconds, os.environ[PASSWORD_ENV], args.process_cost)
    sizes = [20] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    probes = 2 if args.quick else args.probes
    started = time.monotonic()
    results = []
    for vms in sizes:
        for protocol in (p for p in args.protocols.split(",") if p):
            print(f"  host cost: {protocol}, {vms} VMs", flush=True)
            results.append(measure(protocol, vms, probes, args.latency, args.run_seconds, args.process_cost))
    command = "python -m benchmarks.host_cost " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(results, command, time.monotonic() - started, args.process_cost)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    output = args.output or (None if args.quick else DOC)
    if output is not None and not args.no_write:
        write_section(output, text)
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
