"""The exporter's own metrics, served on /metrics (never on /probe, where only host data belongs)."""

from __future__ import annotations

import platform

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from hyperv_exporter import __version__
from hyperv_exporter.host.transport.errors import REASONS

# No *_created series: client_python adds one per counter and histogram child (process start time
# per label set, 6 families here), which no alert, dashboard or recording rule of this project
# reads, and which Go exporters (node_exporter, blackbox_exporter) do not expose in the text format.
# Prometheus does not need them for rate(). Process-wide, like the exporter's registry.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in client_python


class ExporterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PROCESS_COLLECTOR)
        self.registry.register(PLATFORM_COLLECTOR)
        r = self.registry
        build = Gauge(
            "hyperv_exporter_build_info", "Version of the exporter.", ["version", "python_version"], registry=r
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.probes = Counter(
            "hyperv_exporter_probes_total", "Probes answered, by module and whether they succeeded.",
            ["module", "success"], registry=r,
        )  # fmt: skip
        self.probe_errors = Counter(
            "hyperv_exporter_probe_errors_total",
            f"Failed WinRM conversations by module, target and reason ({', '.join(REASONS)}).",
            ["module", "target", "reason"],
            registry=r,
        )
        self.request_errors = Counter(
            "hyperv_exporter_request_errors_total",
            "Probe requests refused before any connection: bad_request (400), forbidden target (403), unknown module.",
            ["reason"],
            registry=r,
        )
        self.collection_duration = Histogram(
            "hyperv_exporter_collection_duration_seconds",
            "Duration of WinRM conversations (a cached or shared result is not counted again).",
            ["module"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
            registry=r,
        )
        self.winrm_requests = Counter(
            "hyperv_exporter_winrm_requests_total", "HTTP requests sent to WinRM listeners.", ["module"], registry=r
        )
        self.shells_opened = Counter(
            "hyperv_exporter_winrm_shells_opened_total",
            "WinRS shells opened (a shell is kept across probes; many openings mean shells keep breaking).",
            ["module"],
            registry=r,
        )
        self.shared_results = Counter(
            "hyperv_exporter_probe_shared_results_total",
            "Probes answered from a result that was cached or already in flight for the same host.",
            ["module"],
            registry=r,
        )
        self.parse_problems = Counter(
            "hyperv_exporter_report_problems_total",
            "Data the exporter had to drop from host reports (malformed KVP items, unknown enum names, ...).",
            ["module"],
            registry=r,
        )
        self.reload_success = Gauge(
            "hyperv_exporter_config_last_reload_successful", "Whether the last configuration reload succeeded.",
            registry=r,
        )  # fmt: skip
        self.reload_timestamp = Gauge(
            "hyperv_exporter_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration (re)load.",
            registry=r,
        )

    def init_module(self, module: str) -> None:
        """Pre-initialise per-module series so that they exist (as 0) before the first probe."""
        for success in ("true", "false"):
            self.probes.labels(module, success)
        self.collection_duration.labels(module)
        self.winrm_requests.labels(module)
        self.shells_opened.labels(module)
        self.shared_results.labels(module)
        self.parse_problems.labels(module)
