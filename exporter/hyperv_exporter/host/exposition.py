"""A probe result -> the text Prometheus scrapes from /probe.

Always present, also when the host failed (a failed probe is HTTP 200 with ``hyperv_up 0``, the
blackbox_exporter convention)::

    hyperv_up 1
    hyperv_probe_duration_seconds 0.41
    hyperv_probe_timeout_seconds 9.5
    hyperv_probe_winrm_requests 3
    hyperv_collection_script_info{version="0.1.0",hash="d87899bdcb9a"} 1   (when the host answered)
    hyperv_collection_script_outdated 0
    hyperv_last_success_timestamp_seconds 1.7e9
    hyperv_collector_success{collector="kvp"} 1
    hyperv_collector_duration_seconds{collector="kvp"} 0.08    (time the collector's queries took on the host)
    hyperv_collector_vm_problems{collector="kvp"} 0            (VMs that lost their data in that section)

followed by the families of every enabled collector that succeeded.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from prometheus_client.core import Metric

from hyperv_exporter import logutil, openmetrics
from hyperv_exporter.host import script
from hyperv_exporter.host.collectors import COLLECTORS
from hyperv_exporter.host.collectors.base import CollectorContext, Escaped, Family, render_families, single
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.probe import ProbeResult

log = logging.getLogger(__name__)


def collector_failure(name: str, result: ProbeResult) -> str | None:
    """Why collector ``name`` has no data in this result, or None if it ran fine on the host."""
    report = result.report
    if report is None:
        return result.reason or "no report"
    collector = COLLECTORS[name]
    needed = [collector.report_section, *(("vm",) if collector.needs_vms else ())]
    for section in needed:
        info = report.sections.get(section)
        if info is None:
            return f"section {section} missing from the host's report"
        if info.error:
            return f"section {section} failed on the host: {info.error}"
    return None


@dataclass
class _Output:
    """One probe's families in exposition order, and their text as UTF-8 chunks (one per collector)."""

    families: list[Family]
    chunks: list[bytes]

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8")


def _script_families(report: HostReport) -> list[Family]:
    """Which collect.ps1 the host ran, and whether it is another than the exporter's own (an
    outdated JEA endpoint). From the report itself, so also when every section failed."""
    info = Family(
        "hyperv_collection_script",
        "The collection script the host ran: its release and the first 12 hex digits of its hash "
        "(empty when the host's copy predates these fields). Present when the host answered with a report.",
        ("version", "hash"),
        kind="info",
    )
    info.add(((report.script_version or "")[:32], script.short_hash(report.script_hash)), 1.0)
    outdated = single(
        "hyperv_collection_script_outdated",
        "1 when the host ran another collection script than this exporter's collect.ps1 (a JEA endpoint "
        "registered from another release: update it), else 0. Present when the host answered with a report.",
        1.0 if report.script_outdated else 0.0,
    )
    return [info, outdated]


def _probe_families(result: ProbeResult, timeout: float, last_success: float | None) -> list[Family]:
    families = [
        single("hyperv_up", "1 when the Hyper-V host answered over WinRM and its output parsed, else 0.",
               1.0 if result.ok else 0.0),
        single("hyperv_probe_duration_seconds", "How long the WinRM conversation for this probe took.",
               result.duration),
        single("hyperv_probe_timeout_seconds", "The deadline this probe had (module timeout or scrape timeout).",
               timeout),
        single("hyperv_probe_winrm_requests", "HTTP requests the WinRM conversation took (3 with a kept shell).",
               float(result.requests)),
    ]  # fmt: skip
    if result.report is not None:
        families += _script_families(result.report)
    if last_success is not None:
        families.append(
            single(
                "hyperv_last_success_timestamp_seconds",
                "When the data served here was collected from the host (Unix time).",
                last_success,
            )
        )
    return families


def _collect(result: ProbeResult, timeout: float, last_success: float | None, keep_families: bool = False) -> _Output:
    """Every family for one probe result, rendered (byte for byte what ``generate_latest`` would write).

    The collectors' families are returned only with ``keep_families``: render() needs their text only,
    and their samples are as many objects as the exposition has lines.
    """
    escaped = Escaped()
    head = _probe_families(result, timeout, last_success)
    success = Family("hyperv_collector_success", "Whether a collector's part of the probe succeeded.", ("collector",))
    duration = Family(
        "hyperv_collector_duration_seconds", "Time the collector's queries took on the host.", ("collector",)
    )
    vm_problems = Family(
        "hyperv_collector_vm_problems",
        "VMs that lost their data in the collector's part of this probe (a VM that vanished mid-probe, one without "
        "integration components); the collector's other VMs are unaffected.",
        ("collector",),
    )
    families: list[Family] = []
    # Each family's text is encoded as soon as it is rendered: a 1,000-VM host's exposition is
    # 8 MB, held once as bytes instead of as lines, a joined string (2 bytes per character as soon
    # as one VM name is not ASCII) and bytes at the same time. The head goes in front at the end,
    # once success and duration are known.
    chunks: list[bytes] = []
    report = result.report
    for name in result.collectors:
        failure = collector_failure(name, result)
        ok = failure is None
        if ok and report is not None:
            ctx = CollectorContext(report=report, clock=result.clock)
            buffer = io.BytesIO()
            try:
                produced = COLLECTORS[name]().collect(ctx)
                # Rendered (and encoded) here rather than at the end, so that data a collector cannot
                # render costs that collector's families only (hyperv_collector_success 0), not the probe.
                for family in produced:
                    lines: list[str] = []
                    family.render_into(lines, escaped)
                    buffer.write("".join(lines).encode("utf-8"))
                    del lines
            except Exception:
                log.exception("collector failed", extra=logutil.fields(collector=name, target=result.target))
                ok = False
            else:
                if keep_families:
                    families.extend(produced)
                chunks.append(buffer.getvalue())  # the buffer itself, not a copy
            del buffer
        success.add((name,), 1.0 if ok else 0.0)
        if report is not None:
            section = report.sections.get(COLLECTORS[name].report_section)
            if section is not None and section.seconds is not None:
                duration.add((name,), section.seconds)
            vm_problems.add((name,), float(report.vm_problems.get(COLLECTORS[name].report_section, 0)))
    head += [success, duration, vm_problems]
    return _Output([*head, *families], [render_families(head, escaped).encode("utf-8"), *chunks])


def render(result: ProbeResult, timeout: float) -> bytes:
    chunks = _collect(result, timeout, result.collected_at).chunks
    # One buffer grown in place while each chunk is dropped once copied: the exposition exists about
    # once, not as chunks and their join side by side.
    body = io.BytesIO()
    chunks.reverse()
    while chunks:
        body.write(chunks.pop())
    return body.getvalue()


def render_openmetrics(result: ProbeResult, timeout: float) -> bytes:
    """:func:`render` as OpenMetrics 1.0 (for a scraper that asks for it; see hyperv_exporter.openmetrics)."""
    output = _collect(result, timeout, result.collected_at, keep_families=True)  # their headers are rewritten
    return openmetrics.text_to_openmetrics(output.text, output.families).encode("utf-8")


def families(result: ProbeResult, timeout: float) -> list[Metric]:
    """The same families as :func:`render`, as prometheus_client objects, for tests and the docs generator."""
    return [f.to_metric() for f in _collect(result, timeout, None, keep_families=True).families]
