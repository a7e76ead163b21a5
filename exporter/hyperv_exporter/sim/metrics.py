"""The simulator's own counters on ``/metrics`` (``hyperv-sim --web.listen-address``): what probes cost each host.

hyperv_sim_requests_total{host="HV-LONDON-01"} 12
hyperv_sim_processes_started_total{host="HV-LONDON-01",image="powershell.exe"} 4
hyperv_sim_processes_started_total{host="HV-LONDON-01",image="wsmprovhost.exe"} 0
hyperv_sim_host_cpu_seconds_total{host="HV-LONDON-01"} 6.6

Read at scrape time from the running :class:`~hyperv_exporter.sim.host.Simulator` (its listeners'
request counters and :class:`~hyperv_exporter.sim.cost.HostCounters`), so a dashboard or a
benchmark shows, next to the exporter, what each probe made the simulated hosts do.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from hyperv_exporter.sim.cost import IMAGES
from hyperv_exporter.sim.host import Simulator
from hyperv_exporter.web import Handler, Response
from hyperv_exporter.web.metrics import METRICS_PATH, registry_handler


class SimulatorCollector(Collector):
    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "hyperv_sim_requests", "HTTP requests the simulated host's WinRM listener received.", labels=["host"]
        )
        processes = CounterMetricFamily(
            "hyperv_sim_processes_started",
            "PowerShell host processes started on the simulated host: powershell.exe per WinRS command, "
            "wsmprovhost.exe per PSRP runspace pool.",
            labels=["host", "image"],
        )
        cpu = CounterMetricFamily(
            "hyperv_sim_host_cpu_seconds",
            "Modelled host CPU time: process start-up and Hyper-V module import, plus the collection's run time.",
            labels=["host"],
        )
        for name, endpoint in list(self.simulator.endpoints.items()):
            requests.add_metric([name], endpoint.stats["requests"])
            counters = self.simulator.counters.get(name)
            if counters is None:
                continue
            snapshot = counters.snapshot()
            for image in IMAGES:
                processes.add_metric([name, image], snapshot.processes.get(image, 0))
            cpu.add_metric([name], snapshot.cpu_seconds)
        yield from (requests, processes, cpu)


def make_registry(simulator: Simulator) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimulatorCollector(simulator))
    return registry


def make_handler(simulator: Simulator) -> Handler:
    landing = Response(200, f"hyperv-sim: the simulated hosts' counters are at {METRICS_PATH}\n")
    return registry_handler(make_registry(simulator), landing)
