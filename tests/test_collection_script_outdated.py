"""The outdated-endpoint warning: a host that runs another collect.ps1 than the exporter's own (a JEA
endpoint registered from an older release) is named in a metric, once in the log and on the landing page.

The simulator serves the outdated copy (fleet key ``Simulator.CollectScriptVersion``); the report
fields travel the same way on every protocol: the ``stack`` tests use the test stack's module, the
``demo`` test the recommended set-up (psrp, the JEA endpoint, a least-privilege account).
"""

from __future__ import annotations

import logging

import pytest

from conftest import Stack, sample
from hyperv_exporter.host import cimxml, script
from hyperv_exporter.host.cli import Running
from hyperv_exporter.host.report import parse_report
from hyperv_exporter.sim.fleet import parse_fleet
from hyperv_exporter.sim.ps51json import dumps

OLD = "0.0.9"


def test_current_host_reports_the_exporters_own_script(stack: Stack) -> None:
    samples = stack.probe("HV-LONDON-01")
    assert sample(samples, "hyperv_collection_script_outdated") == 0.0
    labels = {"version": script.script_version(), "hash": script.short_hash(script.script_hash())}
    assert sample(samples, "hyperv_collection_script_info", **labels) == 1.0


def test_outdated_host_is_named_in_metric_log_and_landing_page(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack.fleet.host("HV-LONDON-01").set(collect_script_version=OLD)
    with caplog.at_level(logging.WARNING, logger="hyperv_exporter.host.probe"):
        for _ in range(3):
            samples = stack.probe("HV-LONDON-01")
            assert sample(samples, "hyperv_up") == 1.0  # an outdated copy still collects
            assert sample(samples, "hyperv_collection_script_outdated") == 1.0
            assert sample(samples, "hyperv_collection_script_info", version=OLD) == 1.0
        other = stack.probe("HV-DUBLIN-01")
    assert sample(other, "hyperv_collection_script_outdated") == 0.0
    warnings = [r.getMessage() for r in caplog.records if "collection script" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per host, not on every probe
    assert f"collection script {OLD}" in warnings[0]
    assert f"not this exporter's {script.script_version()}" in warnings[0]
    assert "HyperVExporterEndpoint.ps1 -Update" in warnings[0]

    status, page = stack.get("/")
    assert status == 200
    assert 'id="outdated"' in page
    section = page[page.index('id="outdated"') : page.index("<h2>Modules</h2>")]
    assert "HV-LONDON-01" in section and f"collection script {OLD}" in section
    assert "HV-DUBLIN-01" not in section


def test_outdated_jea_endpoint_in_the_demo(demo: Running) -> None:
    """Through pypsrp, the JEA endpoint's Get-HyperVExporterReport and a non-admin account."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    assert demo.simulator is not None
    demo.simulator.fleet.host("HV-DUBLIN-01").set(collect_script_version=OLD)
    base = demo.server.urls[0]
    values = {}
    for host in ("HV-DUBLIN-01", "HV-LONDON-01"):
        with urllib.request.urlopen(f"{base}/probe?module=default&target={host}", timeout=30) as r:
            text = r.read().decode()
        values[host] = {
            s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
        }
    assert values["HV-DUBLIN-01"]["hyperv_up"] == 1.0
    assert values["HV-DUBLIN-01"]["hyperv_collection_script_outdated"] == 1.0
    assert values["HV-LONDON-01"]["hyperv_collection_script_outdated"] == 0.0
    with urllib.request.urlopen(f"{base}/", timeout=30) as r:
        page = r.read().decode()
    assert 'id="outdated"' in page and "HV-DUBLIN-01" in page


def test_warning_repeats_only_for_another_outdated_copy(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    host = stack.fleet.host("HV-LONDON-01")
    with caplog.at_level(logging.WARNING, logger="hyperv_exporter.host.probe"):
        host.set(collect_script_version=OLD)
        stack.probe("HV-LONDON-01")
        stack.probe("HV-LONDON-01")
        host.set(collect_script_version=None)  # re-registered: the warning ends ...
        assert sample(stack.probe("HV-LONDON-01"), "hyperv_collection_script_outdated") == 0.0
        host.set(collect_script_version=OLD)  # ... and is given again if it comes back
        stack.probe("HV-LONDON-01")
    warnings = [r for r in caplog.records if "collection script" in r.getMessage()]
    assert len(warnings) == 2
    _, page = stack.get("/")
    assert 'id="outdated"' in page


def test_landing_page_clears_when_the_host_is_current_again(stack: Stack) -> None:
    host = stack.fleet.host("HV-LONDON-01")
    host.set(collect_script_version=OLD)
    stack.probe("HV-LONDON-01")
    host.set(collect_script_version=None)
    stack.probe("HV-LONDON-01")
    _, page = stack.get("/")
    assert 'id="outdated"' not in page  # only the latest probe of each host counts


def test_fleet_file_option() -> None:
    fleet = parse_fleet(
        "hosts:\n"
        "  - ComputerName: HV-OLD\n"
        f"    Simulator: {{CollectScriptVersion: '{OLD}'}}\n"
        "  - ComputerName: HV-NEW\n",
        "fleet.yml",
    )
    old, new = (fleet.host(name).document(["vm"], 1.8e9) for name in ("HV-OLD", "HV-NEW"))
    assert old["ScriptVersion"] == OLD and old["ScriptHash"] != script.script_hash()
    assert new["ScriptVersion"] == script.script_version() and new["ScriptHash"] == script.script_hash()
    kvp = cimxml.allowlist([], 64)
    assert parse_report(dumps({**old, "ClockEndTicks": 1}, compress=True), kvp).script_outdated
    assert not parse_report(dumps({**new, "ClockEndTicks": 1}, compress=True), kvp).script_outdated


@pytest.mark.parametrize(
    ("fields", "outdated"),
    [
        ({}, True),  # a copy older than these fields
        ({"ScriptVersion": "0.1.0", "ScriptHash": ""}, True),  # an unstamped copy: not known to be ours
        ({"ScriptVersion": "9.9.9", "ScriptHash": "x" * 5000}, True),  # hostile: capped in labels and log
        ({"ScriptVersion": 1, "ScriptHash": ["not", "text"]}, True),  # wrong types: a problem line, no crash
    ],
)
def test_report_fields_are_read_defensively(fields: dict[str, object], outdated: bool) -> None:
    report = parse_report(dumps({"SchemaVersion": 1, "VMs": [], **fields}, compress=True), cimxml.allowlist([], 64))
    assert report.script_outdated is outdated
    message = script.outdated_message(report.script_version, report.script_hash)
    assert len(message) < 400
