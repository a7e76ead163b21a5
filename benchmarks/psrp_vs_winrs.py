"""PSRP against WinRS on the demo fleet: HTTP requests and wall time of the first and of a steady-state
probe, and the runspace pools / shells opened on the host. ``.venv/bin/python -m benchmarks.psrp_vs_winrs``.

Both protocols run in this process against the simulator (one listener per demo host, NTLM with
message encryption over loopback HTTP, as ``hyperv-exporter --demo`` does): psrp through the JEA
endpoint with the least-privilege account, winrs with an administrator (the only account WinRS
admits). The simulator charges what a new process costs with the demo's model (``sim.cost.WINDOWS``:
0.6 s start-up + 1 s Hyper-V module import; ``--process-cost none`` for the protocols alone), and
counts the processes each probe starts on the host.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from benchmarks.common import median
from hyperv_exporter.host import script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.host.transport.winrs import WinRMSession
from hyperv_exporter.sim.cost import MODELS, ProcessCost
from hyperv_exporter.sim.fleet import demo_fleet, with_password
from hyperv_exporter.sim.host import Simulator, use_least_privilege

PASSWORD = "bench-password-1"  # noqa: S105 - the simulated fleet's password for this run


@dataclass
class Result:
    protocol: str
    first_requests: float
    first_wall: float
    steady_requests: float
    steady_wall: float
    processes_per_steady_probe: float  # powershell.exe (winrs) or wsmprovhost.exe (psrp) started on the host
    first_wire: float  # HTTP requests the listener saw, NTLM handshake included
    steady_wire: float


def measure(protocol: str, probes: int, cost: ProcessCost) -> Result:
    fleet = with_password(demo_fleet(), PASSWORD)
    if protocol == "psrp":
        use_least_privilege(fleet)
    simulator = Simulator(fleet, process_cost=cost)
    simulator.start()
    settings = WinRMSettings(
        protocol=protocol,
        configuration_name="HyperVExporter",
        scheme="http",
        transport="ntlm",
        username="monitor",
        password=Secret(PASSWORD),
    )
    sections = sections_for(COLLECTORS)
    first_requests, first_wall, steady_requests, steady_wall, processes = [], [], [], [], []
    first_wire, steady_wire = [], []
    try:
        for host in fleet.hosts:
            kind = PSRPSession if protocol == "psrp" else WinRMSession
            session = kind(simulator.url(host.computer_name), settings, script.script_text())
            endpoint = simulator.endpoint(host.computer_name)
            counters = simulator.counters[host.computer_name]
            for index in range(probes + 1):
                before = endpoint.stats.snapshot()
                processes_before = sum(counters.snapshot().processes.values())
                started = time.perf_counter()
                exchange = session.collect(sections, True, time.monotonic() + 30.0)
                wall = time.perf_counter() - started
                assert exchange.exit_code == 0 and exchange.failure is None
                after = endpoint.stats.snapshot()
                wire = after["requests"] - before["requests"]
                if index == 0:
                    first_requests.append(exchange.requests)
                    first_wall.append(wall)
                    first_wire.append(wire)
                else:
                    steady_requests.append(exchange.requests)
                    steady_wall.append(wall)
                    steady_wire.append(wire)
                    processes.append(sum(counters.snapshot().processes.values()) - processes_before)
            session.close()
    finally:
        simulator.stop()
    return Result(
        protocol,
        median(first_requests),
        median(first_wall),
        sum(steady_requests) / len(steady_requests),
        median(steady_wall),
        sum(processes) / len(processes),
        median(first_wire),
        sum(steady_wire) / len(steady_wire),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=10, help="steady-state probes per host (default 10)")
    parser.add_argument("--process-cost", choices=sorted(MODELS), default="windows", help="the host's process cost")
    args = parser.parse_args()
    print("| protocol | first probe: requests (exporter / wire) | first probe: wall (ms) "
          "| steady probe: requests (exporter / wire) | steady probe: wall, median (ms) "
          "| processes started per steady probe |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for protocol in ("psrp", "winrs"):
        r = measure(protocol, args.probes, MODELS[args.process_cost])
        print(
            f"| {r.protocol} | {r.first_requests:.0f} / {r.first_wire:.0f} | {r.first_wall * 1000:.1f} "
            f"| {r.steady_requests:.1f} / {r.steady_wire:.1f} | {r.steady_wall * 1000:.1f} "
            f"| {r.processes_per_steady_probe:.1f} |"
        )


if __name__ == "__main__":
    main()
