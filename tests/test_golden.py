"""Golden exposition for the demo fleet's fixture reports, linted by ``promtool check metrics``."""

from __future__ import annotations

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
    assert 'hyperv_vm_integration_services_state{state="update_required",vm="legacy-app"' in london
    assert 'hyperv_vm_state{state="saved",vm="jumpbox"' in london
    assert "hyperv_host_time_offset_seconds" in london
    berlin = (GOLDEN / "demo-berlin.prom").read_text(encoding="utf-8")
    assert 'hyperv_vm_integration_service_status{service="guest_service_interface",status="ok",vm="Web-Proxy"' in berlin
    assert 'vm="会計"' in berlin and 'vm="Büro-Server"' in berlin
    assert 'hyperv_vm_kvp_info{key="OSName",source="guest_intrinsic",value="Ubuntu",vm="Datenbank-01"' in berlin
    assert "ProvisioningToken" not in berlin and "tok-9f3a27c1e5b84d0a" not in berlin
    legacy = (GOLDEN / "demo-legacy.prom").read_text(encoding="utf-8")
    assert "guest_service_interface" not in legacy
