"""Golden exposition for the demo fleet's fixture reports, linted by ``promtool check metrics``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import require_tool
from hyperv_exporter.host import cimxml, exposition
from hyperv_exporter.host.collectors import COLLECTORS
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.report import decode_output, parse_report

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
GOLDEN = Path(__file__).parent / "golden"
T0 = 1795800000.0  # the fixtures' ClockStartTicks, minus the host's clock offset
HOSTS = {
    "ps51-indented-berlin.json": "berlin",
    "ps51-compressed-london.json": "london",
    "ps51-compressed-dublin.json": "dublin",
    "legacy-2012.json": "legacy",
    "ps51-compressed-node-a.json": "node-a",
    "ps51-indented-muenchen.json": "muenchen",
}


def render_fixture(name: str) -> bytes:
    text = decode_output((FIXTURES / name).read_bytes(), 1 << 26)
    report = parse_report(text, cimxml.allowlist(DEFAULT_KVP_KEYS, 256))
    result = ProbeResult(
        module="default", target=report.host.computer_name or "", collectors=tuple(COLLECTORS), started=T0,
        duration=0.5, report=report, clock=ClockExchange(sent=T0 - 0.01, received=T0 + 0.42), requests=3,
    )  # fmt: skip
    return exposition.render(result, timeout=9.5)


@pytest.mark.parametrize("fixture", list(HOSTS))
def test_golden_exposition(fixture: str, request: pytest.FixtureRequest) -> None:
    golden = GOLDEN / f"demo-{HOSTS[fixture]}.prom"
    output = render_fixture(fixture)
    if request.config.getoption("--update-golden"):
        golden.write_bytes(output)
    assert output.decode() == golden.read_text(encoding="utf-8"), "rerun with --update-golden after a deliberate change"


@pytest.mark.parametrize("fixture", list(HOSTS))
def test_exposition_passes_promtool_check_metrics(fixture: str) -> None:
    promtool = require_tool("promtool")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=render_fixture(fixture), capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()


def test_golden_content_for_every_demo_vm() -> None:
    london = (GOLDEN / "demo-london.prom").read_text(encoding="utf-8")
    assert (
        'hyperv_vm_heartbeat{status="lost_communication",vm="web02",vm_id="8e3ece81-7ef3-4581-a6b4-92f152abe268"} 1.0'
        in london
    )
    # A 2019 host says nothing about integration services (state "", version 0.0); the guests' own
    # KVP report does: legacy-app runs 2012 components in a 2012 R2 guest.
    assert (
        'hyperv_vm_integration_services_state{state="unknown",vm="legacy-app",vm_id="8e3ece81-7ef3-4581-a6b4-92f152abe269"} 1.0'
        in london
    )
    assert (
        'hyperv_vm_integration_services_up_to_date{vm="legacy-app",vm_id="8e3ece81-7ef3-4581-a6b4-92f152abe269"} 0.0'
        in london
    )
    assert (
        'hyperv_vm_integration_services_up_to_date{vm="web01",vm_id="8e3ece81-7ef3-4581-a6b4-92f152abe267"} 1.0'
        in london
    )
    assert 'hyperv_vm_integration_services_up_to_date{vm="build-agent"' not in london  # Linux: no basis
    assert 'hyperv_vm_state{state="saved",vm="jumpbox"' in london
    assert "hyperv_host_time_offset_seconds" in london
    berlin = (GOLDEN / "demo-berlin.prom").read_text(encoding="utf-8")
    assert 'hyperv_vm_integration_service_status{service="guest_service_interface",status="ok",vm="Web-Proxy"' in berlin
    assert 'vm="会計"' in berlin and 'vm="Büro-Server"' in berlin
    assert 'hyperv_vm_kvp_info{key="OSName",source="guest_intrinsic",value="Ubuntu",vm="Datenbank-01"' in berlin
    assert "ProvisioningToken" not in berlin and "tok-9f3a27c1e5b84d0a" not in berlin
    legacy = (GOLDEN / "demo-legacy.prom").read_text(encoding="utf-8")
    assert "guest_service_interface" not in legacy
    # Written from the fixtures (not from the output): what the cluster node and the German
    # 2012 R2 host must show.
    node_a = (GOLDEN / "demo-node-a.prom").read_text(encoding="utf-8")
    assert 'hyperv_host_info{cluster="HV-CLUSTER-01",host_name="HV-NODE-A"' in node_a
    assert 'hyperv_collector_vm_problems{collector="integration_services"} 1.0' in node_a
    assert 'hyperv_collector_vm_problems{collector="checkpoints"} 1.0' in node_a
    assert 'hyperv_collector_success{collector="checkpoints"} 1.0' in node_a
    assert 'service="heartbeat",status=' in node_a and 'vm="vm-vanishing",vm_id' in node_a
    assert not re.search(r'service="heartbeat",status="[^"]*",vm="vm-vanishing"', node_a)
    assert 'hyperv_vm_integration_services_up_to_date{vm="app-migrating",' in node_a
    assert (
        'clustered="true",config_version="9.0",generation="2",guest_integration_services_version="10.0.20348.1",integration_services_version="0.0",vm="app-migrating"'
        in node_a
    )
    muenchen = (GOLDEN / "demo-muenchen.prom").read_text(encoding="utf-8")
    assert 'hyperv_vm_integration_services_state{state="update_required",vm="Altsystem"' in muenchen
    assert (
        'hyperv_vm_integration_services_up_to_date{vm="Altsystem",vm_id="3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b02"} 0.0'
        in muenchen
    )
    assert (
        'hyperv_vm_integration_services_up_to_date{vm="Lager-DB",vm_id="3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b01"} 1.0'
        in muenchen
    )
    assert 'hyperv_vm_integration_services_up_to_date{vm="Firewall-Appliance"' not in muenchen
    assert 'service="heartbeat",status="ok",vm="Altsystem"' in muenchen and 'vm="Firewall-Appliance",vm_id' in muenchen
