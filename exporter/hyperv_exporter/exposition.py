"""A probe result -> the text Prometheus scrapes from /probe.

Always present, also when the host failed (a failed probe is HTTP 200 with ``hyperv_up 0``, the
blackbox_exporter convention)::

    hyperv_up 1
    hyperv_probe_duration_seconds 0.41
    hyperv_probe_timeout_seconds 9.5
    hyperv_probe_winrm_requests 3
    hyperv_last_success_timestamp_seconds 1.7e9
    hyperv_collector_success{collector="kvp"} 1
    hyperv_collector_duration_seconds{collector="kvp"} 0.08    (time the collector's queries took on the host)

followed by the families of every enabled collector that succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hyperv_exporter import logutil
from hyperv_exporter.collectors import COLLECTORS
from hyperv_exporter.collectors.base import CollectorContext
from hyperv_exporter.probe import ProbeResult

log = logging.getLogger(__name__)


def collector_failure(name: str, result: ProbeResult) -> str | None:
    """Why collector ``name`` has no data in this result, or None if it ran fine on the host."""
    report = result.report
    if report is None:
        return result.reason or "no report"
    collector = COLLECTORS[name]
    needed = list(collector.sections)
    if collector.needs_vms:
        needed.append("vm")
    for section in needed:
        if section in ("resources",):  # part of Get-VM, not a section of its own on the host
            continue
        info = report.sections.get(section)
        if info is None:
            return f"section {section} missing from the host's report"
        if info.error:
            return f"section {section} failed on the host: {info.error}"
    return None


class ProbeCollector:
    """Yields every family for one probe result (registered on a fresh registry per request)."""

    def __init__(self, result: ProbeResult, timeout: float, last_success: float | None) -> None:
        self.result = result
        self.timeout = timeout
        self.last_success = last_success

    def collect(self) -> Iterator[Metric]:
        result = self.result
        yield GaugeMetricFamily(
            "hyperv_up", "1 when the Hyper-V host answered over WinRM and its output parsed, else 0.",
            value=1.0 if result.ok else 0.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "hyperv_probe_duration_seconds",
            "How long the WinRM conversation for this probe took.",
            value=result.duration,
        )
        yield GaugeMetricFamily(
            "hyperv_probe_timeout_seconds", "The deadline this probe had (module timeout or scrape timeout).",
            value=self.timeout,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "hyperv_probe_winrm_requests", "HTTP requests the WinRM conversation took (3 with a kept shell).",
            value=float(result.requests),
        )  # fmt: skip
        if self.last_success is not None:
            yield GaugeMetricFamily(
                "hyperv_last_success_timestamp_seconds",
                "When the data served here was collected from the host (Unix time).",
                value=self.last_success,
            )
        success = GaugeMetricFamily(
            "hyperv_collector_success", "Whether a collector's part of the probe succeeded.", labels=["collector"]
        )
        duration = GaugeMetricFamily(
            "hyperv_collector_duration_seconds",
            "Time the collector's queries took on the host.",
            labels=["collector"],
        )
        families: list[Metric] = []
        report = result.report
        for name in result.collectors:
            failure = collector_failure(name, result)
            ok = failure is None
            if ok and report is not None:
                ctx = CollectorContext(report=report, clock=result.clock)
                try:
                    families.extend(COLLECTORS[name]().collect(ctx))
                except Exception:
                    log.exception("collector failed", extra=logutil.fields(collector=name, target=result.target))
                    ok = False
            success.add_metric([name], 1.0 if ok else 0.0)
            if report is not None:
                section = report.sections.get(COLLECTORS[name].sections[0] if COLLECTORS[name].sections else "vm")
                if section is not None and section.seconds is not None:
                    duration.add_metric([name], section.seconds)
        yield success
        yield duration
        yield from families


def render(result: ProbeResult, timeout: float) -> bytes:
    last_success = result.started + result.duration if result.ok else None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(result, timeout, last_success))
    return generate_latest(registry)


def families(result: ProbeResult, timeout: float) -> Iterable[Metric]:
    """The same families as :func:`render`, for tests and the docs generator."""
    return list(ProbeCollector(result, timeout, None).collect())
