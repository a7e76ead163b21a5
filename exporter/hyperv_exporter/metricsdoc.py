"""Generates docs/metrics.md from the code: every metric family with its type, labels and HELP text.

    python -m hyperv_exporter.metricsdoc --write docs/metrics.md     # regenerate
    python -m hyperv_exporter.metricsdoc --check docs/metrics.md     # exit 1 if stale

The families are not listed by hand, they are produced the way the exporter produces them:

- ``/probe``: the simulator renders what ``collect.ps1`` prints for each host of the demo fleet,
  :func:`report.parse_report` turns it into a report, :func:`exposition.render` into the text
  /probe serves (once per collector, to tell their families apart), read back with
  prometheus_client's parser.
- ``/metrics``: a fresh :class:`ExporterMetrics` registry.
- ``hyperv-guest-agent``: the agent's family builders (:mod:`guest.metrics`) called with neutral
  inputs; a family builder that is never called here is reported as missing.

Only names, types, labels and HELP go into the document (no values or times), so the output is
the same on every run; ``tests/test_docs_metrics.py`` fails when docs/metrics.md differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from hyperv_exporter import enums
from hyperv_exporter.host import cimxml, exposition, report
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.selfmetrics import ExporterMetrics

REGENERATE = "python -m hyperv_exporter.metricsdoc --write docs/metrics.md"
# Labels whose values are a fixed set (enum names, collectors); their values are listed.
ENUM_LABELS = frozenset({"state", "status", "service", "health", "mode", "collector", "source"})


@dataclass
class FamilyDoc:
    name: str  # as exposed: counters with _total, info metrics with _info
    type: str  # as in the text exposition format
    help: str
    labels: list[str] = field(default_factory=list)
    values: dict[str, set[str]] = field(default_factory=dict)  # enum label -> values seen


def _exposed(metric: Metric) -> tuple[str, str]:
    if metric.type == "counter":
        return metric.name + "_total", "counter"
    if metric.type == "info":
        return metric.name + "_info", "gauge (info)"
    if metric.name.endswith("_info"):  # an info family read back from the text format
        return metric.name, "gauge (info)"
    return metric.name, metric.type


def _labels(metric: Metric) -> list[str]:
    # Families without samples (an NTP server never measured) still declare their label names;
    # prometheus_client keeps them in _labelnames.
    names = list(getattr(metric, "_labelnames", ()))
    for sample in metric.samples:
        names += [n for n in sample.labels if n not in names and n not in ("le", "quantile")]
    return names


def collect(families: Iterable[Metric], into: dict[str, FamilyDoc] | None = None) -> dict[str, FamilyDoc]:
    """Merge families into FamilyDocs by exposed name (labels and enum values accumulate)."""
    docs = {} if into is None else into
    for metric in families:
        name, kind = _exposed(metric)
        doc = docs.setdefault(name, FamilyDoc(name, kind, metric.documentation))
        doc.labels += [n for n in _labels(metric) if n not in doc.labels]
        for sample in metric.samples:
            for label, value in sample.labels.items():
                if label in ENUM_LABELS:
                    doc.values.setdefault(label, set()).add(value)
    return docs


# --- /probe ---------------------------------------------------------------------------------------------
def demo_results() -> list[ProbeResult]:
    """A successful probe result for every host of the demo fleet, with every collector."""
    from hyperv_exporter.sim.fleet import demo_fleet, to_ticks  # noqa: PLC0415 - the simulator is a dev dependency here

    started = time.time()
    collectors = tuple(COLLECTORS)
    kvp_filter = cimxml.allowlist(DEFAULT_KVP_KEYS, 256)
    results = []
    for host in demo_fleet().hosts:
        doc = host.document(sections_for(collectors), started)
        doc["ClockEndTicks"] = to_ticks(started + host.clock_offset + 0.05)
        parsed = report.parse_report(json.dumps(doc), kvp_filter)
        clock = ClockExchange(sent=started - 0.01, received=started + 0.1)
        results.append(ProbeResult("default", host.computer_name, collectors, started, 0.2, parsed, clock, requests=3))
    return results


def _rendered(result: ProbeResult) -> list[Metric]:
    """The families of ``exposition.render`` for a result, read back from the text format."""
    return list(text_string_to_metric_families(exposition.render(result, 9.5).decode("utf-8")))


def probe_sections() -> list[tuple[str, str, dict[str, FamilyDoc]]]:
    """("probe", ..., the probe's own families), then (collector, its help, its families) per collector.

    Each collector's families are told apart by rendering the probe once per collector.
    """
    results = demo_results()
    head = {_exposed(m)[0] for m in _rendered(dataclasses.replace(results[0], collectors=()))}
    common: dict[str, FamilyDoc] = {}
    for result in results:
        collect((m for m in _rendered(result) if _exposed(m)[0] in head), common)
    sections = [("probe", "Always present, also when the host could not be probed.", common)]
    for name, collector in COLLECTORS.items():
        docs: dict[str, FamilyDoc] = {}
        for result in results:
            only = _rendered(dataclasses.replace(result, collectors=(name,)))
            collect((m for m in only if _exposed(m)[0] not in common), docs)
        sections.append((name, collector.help, docs))
    return sections


# --- /metrics --------------------------------------------------------------------------------------------
def self_metric_families() -> tuple[dict[str, FamilyDoc], dict[str, FamilyDoc]]:
    """(the exporter's own families, client_python's process/platform families)."""
    metrics = ExporterMetrics()
    metrics.init_module("default")
    # Two series that only appear after an error; created here so their labels show.
    metrics.probe_errors.labels("default", "hv01.example", "timeout")
    metrics.request_errors.labels("forbidden")
    own: dict[str, FamilyDoc] = {}
    standard: dict[str, FamilyDoc] = {}
    for metric in metrics.registry.collect():
        collect([metric], own if metric.name.startswith("hyperv_") else standard)
    for doc in own.values():
        doc.values.clear()  # made-up values above
    return own, standard


# --- hyperv-guest-agent ----------------------------------------------------------------------------------
def guest_families() -> dict[str, FamilyDoc]:
    from hyperv_exporter import __version__  # noqa: PLC0415
    from hyperv_exporter.guest import metrics as g  # noqa: PLC0415
    from hyperv_exporter.guest import timex  # noqa: PLC0415
    from hyperv_exporter.guest.components import Detection  # noqa: PLC0415
    from hyperv_exporter.guest.kvp_pool import KvpResult  # noqa: PLC0415
    from hyperv_exporter.guest.ntp import Measurement, NtpServer, ServerSnapshot  # noqa: PLC0415
    from hyperv_exporter.guest.ptp import HostClockReading  # noqa: PLC0415
    from hyperv_exporter.guest.windows import TimeProvider, WindowsDetection  # noqa: PLC0415

    def all_false(cls: type) -> object:
        return cls(**{f.name: False for f in dataclasses.fields(cls)})

    server = NtpServer("ntp.example")

    families: list[Metric] = [
        g.build_info(__version__),
        *g.collector_meta([("ptp", True, 0.0)]),
        *g.host_clock(HostClockReading(available=True)),
        *g.offset_families(),
        # A server whose last measurement failed: the error info family then shows its labels.
        *g.ntp([ServerSnapshot(server, Measurement(server, None, sent=1, valid=0, reason="timeout"), 64.0)]),
        *g.timex(timex.read_timex(lambda buf: 0)),
        *g.detection(all_false(Detection)),  # type: ignore[arg-type]
        *g.detection(all_false(WindowsDetection)),  # type: ignore[arg-type]
        *g.modules({}),
        *g.windows_services({}),
        *g.time_provider(TimeProvider(vmic_enabled=True, sync_type="NTP")),
        *g.kvp(KvpResult(available=True, pools=[], host=None)),
    ]
    docs = collect(families)
    for doc in docs.values():
        doc.values.clear()  # neutral inputs, not real values
    source = resources.files("hyperv_exporter.guest").joinpath("metrics.py").read_text(encoding="utf-8")
    declared = {f"hyperv_guest_{n}" for n in re.findall(r'f"\{P\}_(\w+)"', source)}
    declared |= {f"hyperv_guest_{n}" for n in re.findall(r'\(\s*"(timex_\w+)"', source)}
    generated = {re.sub(r"_info$", "", name) for name in docs} | set(docs)
    missing = declared - generated
    if missing:
        raise RuntimeError(f"metricsdoc.guest_families() does not call the builders of: {', '.join(sorted(missing))}")
    return docs


# --- Markdown --------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(docs: dict[str, FamilyDoc], with_values: bool = True) -> list[str]:
    lines = ["| Metric | Type | Labels | Meaning |", "| --- | --- | --- | --- |"]
    for doc in docs.values():
        labels = ", ".join(f"`{label}`" for label in doc.labels) or "—"
        meaning = _cell(doc.help)
        if with_values:
            for label in doc.labels:
                if doc.values.get(label):
                    meaning += f" `{label}`: " + ", ".join(f"`{v}`" for v in sorted(doc.values[label])) + "."
        lines.append(f"| `{doc.name}` | {doc.type} | {labels} | {meaning} |")
    return lines


SERIES_BUDGET = 25  # series per running VM in the default module (issue: operator-grade alerts and dashboards)


def series_per_vm() -> dict[tuple[str, str], tuple[bool, int]]:
    """(host, vm_id) -> (running, number of /probe series of that VM), over the demo fleet, all collectors.

    By host and VM: a replica pair has one vm_id on two hosts, and each side is a VM of its own host.
    """
    counts: dict[tuple[str, str], int] = {}
    running: set[tuple[str, str]] = set()
    for result in demo_results():
        for metric in _rendered(result):
            for sample in metric.samples:
                if "vm_id" not in sample.labels:
                    continue
                key = (result.target, sample.labels["vm_id"])
                counts[key] = counts.get(key, 0) + 1
                if sample.name == "hyperv_vm_state" and sample.labels.get("state") in enums.VM_RUNNING_STATES:
                    running.add(key)
    return {vm_id: (vm_id in running, n) for vm_id, n in counts.items()}


def series_budget_markdown() -> list[str]:
    per_vm = series_per_vm()
    running = sorted(n for is_running, n in per_vm.values() if is_running)
    total = sum(n for _, n in per_vm.values())
    return [
        "## Series budget",
        "",
        f"At most {SERIES_BUDGET} series per running VM with every collector on, measured on the demo fleet "
        "when this page was generated:",
        "",
        "| VMs | running VMs | per-VM series in all | per running VM: mean | per running VM: max |",
        "|---|---|---|---|---|",
        f"| {len(per_vm)} | {len(running)} | {total} | {sum(running) / max(len(running), 1):.1f} "
        f"| {max(running, default=0)} |",
        "",
        "The VM enumerations (`hyperv_vm_state`, `hyperv_vm_heartbeat`, `hyperv_vm_integration_services_state`,",
        "`hyperv_vm_replication_mode`, `hyperv_vm_replication_health`) are one series per VM whose label holds",
        "the current value (value 1), not one 0/1 series per possible value: 30 states, 9 heartbeat statuses",
        "and 34 replication values per VM were 70 of the former 73-79 series per VM, and the alerts and",
        "dashboards only ever ask `{state=\"running\"} == 1`-style questions, which read the same. Prometheus'",
        "guidance (instrumentation practices: a label per state, one series each, is fine while the states",
        "are few) and windows_exporter's practice (one series per object for a many-valued state) both point",
        "away from a 30-value one-hot family per VM. A VM that changes state starts a new series and ends the",
        "old one; VM state changes are rare. Integration services are one series per VM and service:",
        "`status` is `disabled` or the service's operational status. The full one-hot form is not offered:",
        "nothing in the alerts or dashboards needs the zeros (a \"not running\" question is",
        "`unless ... {state=\"running\"}`), and it would cost 30 series per VM again.",
    ]


# What each Hyper-V host generation lets the exporter know about integration services (host.icversion).
IC_GENERATIONS = [
    "### Integration services per host generation",
    "",
    "Which host versions give which integration-services data (sources and reasoning: docs/alerts.md,",
    "`HyperVIntegrationServicesOutdated`). `hyperv_host_info{os_version}` carries the host's build.",
    "",
    "| | Windows Server 2012 (6.2) / 2012 R2 (6.3) | Windows Server 2016 and later (10.0) |",
    "|---|---|---|",
    "| `hyperv_vm_info{integration_services_version}` | the guest's IC version, judged by the host "
    "| always `0.0` (or empty) |",
    "| `hyperv_vm_integration_services_state` | `up_to_date` / `update_required` (English text; a localized "
    "text is decided like the host does: Get-VM's IC version older than the host build's major.minor.build "
    "is `update_required`); `unknown` when off | always `unknown` (the host reports an empty string) |",
    "| `hyperv_vm_info{guest_integration_services_version}` | KVP intrinsic `IntegrationServicesVersion` "
    "(needs the `kvp` collector; running VMs) | the same |",
    "| `hyperv_vm_integration_services_up_to_date` | from the state: 1 / 0; absent when `unknown` | Windows "
    "guests: 1 when the KVP `IntegrationServicesVersion` is not older than the KVP `OSVersion` "
    "(major.minor.build), else 0; absent for Linux guests, VMs that are not running, and without the `kvp` "
    "collector |",
    "",
]


def render_markdown() -> str:
    out = [
        "# Metrics",
        "",
        f"<!-- Generated by `{REGENERATE}`; do not edit by hand. tests/test_docs_metrics.py checks it. -->",
        "",
        "Every metric the exporter and the guest agent expose, generated from the code: the `/probe`",
        "families are what the collectors produce for the demo fleet, the others come from the exporter's",
        "and the agent's own registries. Types are as in the text exposition format (an info metric is a",
        "gauge whose value is always 1 and whose labels carry the information). Label values listed for",
        "enumerations are those that occur in the demo fleet; an enumeration is one series per VM whose",
        "label holds the current value, with the value 1 (see the series budget below).",
        "",
        *series_budget_markdown(),
        "",
        "None of the `/probe` series carries a `host` or `instance` label: Prometheus adds `instance`",
        "(the probed host) from the scrape target. `vm` is the VM name and `vm_id` its GUID (lower case);",
        "names are not unique, the GUID is.",
        "",
        "## /probe: one Hyper-V host",
        "",
    ]
    for name, help_text, docs in probe_sections():
        if name == "probe":
            out += ["### Probe", "", help_text, ""]
        else:
            out += [
                f"### Collector `{name}`",
                "",
                f"{help_text}. Switch: `--collector.{name}` / `--no-collector.{name}`.",
                "",
            ]
        out += [*_table(docs), ""]
    out += IC_GENERATIONS
    own, standard = self_metric_families()
    out += [
        "## /metrics: the exporter itself",
        "",
        "Never on `/probe`, where only the host's data belongs. The process and Python series below",
        "come from client_python's standard collectors. There are no `*_created` series: client_python's",
        "per-counter creation timestamps are switched off (nothing reads them; Go exporters do not expose them).",
        "",
        "Both programs answer `/probe` and `/metrics` in OpenMetrics 1.0 when the scraper's `Accept` header",
        "asks for `application/openmetrics-text` (Prometheus does), else in the text format 0.0.4.",
        "",
        *_table(own, with_values=False),
        "",
        "### Standard process and platform metrics",
        "",
        *_table(standard, with_values=False),
        "",
        "## hyperv-guest-agent",
        "",
        "Served on the agent's `/metrics` (default port 10021) or written to a textfile. Sign convention:",
        "an offset is the guest clock minus the reference, positive when the guest is ahead. Which families",
        "appear depends on the platform and the enabled collectors (docs/guest-agent.md).",
        "",
        *_table(guest_families(), with_values=False),
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperv_exporter.metricsdoc", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="FILE", help="Write the Markdown to FILE.")
    action.add_argument("--check", metavar="FILE", help="Exit 1 if FILE differs from what would be generated.")
    args = parser.parse_args(argv)
    text = render_markdown()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    elif args.check:
        current = Path(args.check).read_text(encoding="utf-8") if Path(args.check).exists() else ""
        if current != text:
            print(f"{args.check} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
