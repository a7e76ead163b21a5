"""The whole probe path: exporter /probe -> real pywinrm over HTTP -> hyperv-sim -> metrics."""

from __future__ import annotations

import time

import pytest
import winrm

from conftest import Stack, sample
from hyperv_exporter import enums
from hyperv_exporter.host.cli import Running


def test_demo_serves_every_demo_vm_with_correct_labels(demo: Running) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    base = demo.server.urls[0]
    assert demo.simulator is not None
    for host in demo.simulator.fleet.hosts:
        vms = list(host.vms)  # before the probe: a live-migrating VM leaves its node after each run
        with urllib.request.urlopen(f"{base}/probe?module=default&target={host.computer_name}", timeout=30) as r:
            text = r.read().decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        assert [s.value for s in samples if s.name == "hyperv_up"] == [1.0], host.computer_name
        assert {s.value for s in samples if s.name == "hyperv_collector_success"} == {1.0}, host.computer_name
        infos = {s.labels["vm"]: s.labels for s in samples if s.name == "hyperv_vm_info"}
        assert set(infos) == {vm.name for vm in vms}
        for vm in vms:
            assert infos[vm.name]["vm_id"] == vm.id.lower()
            states = {
                s.labels["state"]: s.value for s in samples if s.name == "hyperv_vm_state" and s.labels["vm"] == vm.name
            }
            assert states == {enums.snake(vm.props["State"]): 1.0}  # one series per VM: the current state
            heartbeat = [
                s for s in samples if s.name == "hyperv_vm_heartbeat" and s.labels["vm"] == vm.name and s.value == 1
            ]
            assert len(heartbeat) == 1
            services = {
                s.labels["service"]
                for s in samples
                if s.name == "hyperv_vm_integration_service_status" and s.labels["vm"] == vm.name
            }
            expected = set(enums.SERVICES) - (
                set() if host.has_guest_service_interface() else {"guest_service_interface"}
            )
            if vm.vanishes() or not vm.has_integration_components():
                expected = set()  # Get-VMIntegrationService failed for this VM only (a VMProblems entry)
            assert services == expected, (host.computer_name, vm.name)


def test_steady_state_is_three_http_requests_on_one_shell(stack: Stack) -> None:
    endpoint = stack.sim.endpoint("HV-LONDON-01")
    requests = []
    for _ in range(3):
        endpoint.stats.reset()
        samples = stack.probe("HV-LONDON-01")
        requests.append((sample(samples, "hyperv_probe_winrm_requests"), endpoint.stats["requests"]))
    assert requests == [(4.0, 4), (3.0, 3), (3.0, 3)]  # Create once; then Command, Receive, Signal
    assert endpoint.shell_count == 1


def test_localized_host_and_non_ascii_names(stack: Stack) -> None:
    samples = stack.probe("HV-BERLIN-01")
    assert sample(samples, "hyperv_vm_integration_service_status", vm="Büro-Server", service="heartbeat", status="ok") == 1.0
    assert sample(samples, "hyperv_vm_info", vm="会計") == 1.0
    assert sample(samples, "hyperv_host_info", ui_culture="de-DE") == 1.0


def test_vm_changes_show_up_in_the_next_probe(stack: Stack) -> None:
    vm = stack.fleet.host("HV-LONDON-01").vm("web01")
    assert (
        sample(stack.probe("HV-LONDON-01"), "hyperv_vm_heartbeat", vm="web01", status="ok_applications_healthy") == 1.0
    )
    vm.set(Heartbeat="LostCommunication")
    vm.set_service("vss", Enabled=False)
    samples = stack.probe("HV-LONDON-01")
    assert sample(samples, "hyperv_vm_heartbeat", vm="web01", status="lost_communication") == 1.0
    assert sample(samples, "hyperv_vm_integration_service_status", vm="web01", service="vss", status="disabled") == 1.0


def test_host_clock_offset_is_measured_within_its_uncertainty(stack: Stack) -> None:
    samples = stack.probe("HV-DUBLIN-01")
    offset = sample(samples, "hyperv_host_time_offset_seconds")
    uncertainty = sample(samples, "hyperv_host_time_offset_uncertainty_seconds")
    assert offset is not None and uncertainty is not None
    assert abs(offset - 4.2) <= uncertainty + 0.005


def test_shell_expired_on_the_host_is_recreated_transparently(stack: Stack) -> None:
    stack.probe("HV-LONDON-01")
    endpoint = stack.sim.endpoint("HV-LONDON-01")
    endpoint.expire_shells()
    samples = stack.probe("HV-LONDON-01")
    assert sample(samples, "hyperv_up") == 1.0
    assert (
        sample(samples, "hyperv_probe_winrm_requests") == 5.0
    )  # failed Command, then Create, Command, Receive, Signal


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("powershell_error", "powershell"),
        ("not_json", "parse"),
        ("truncated", "parse"),
        ("old_schema", "parse"),
        ("zip_bomb", "output_too_large"),
    ],
)
def test_output_faults_give_hyperv_up_0_with_reason_and_spare_other_hosts(
    stack: Stack, fault: str, reason: str
) -> None:
    stack.fleet.host("HV-LONDON-01").set(output_fault=fault)
    samples = stack.probe("HV-LONDON-01")
    assert sample(samples, "hyperv_up") == 0.0
    assert sample(stack.probe("HV-BERLIN-01"), "hyperv_up") == 1.0
    _, metrics = stack.get("/metrics")
    assert (
        f'hyperv_exporter_probe_errors_total{{module="default",reason="{reason}",target="HV-LONDON-01"}} 1.0' in metrics
    )
    stack.fleet.host("HV-LONDON-01").set(output_fault=None)
    assert sample(stack.probe("HV-LONDON-01"), "hyperv_up") == 1.0  # and it recovers


def test_degraded_but_parseable_outputs(stack: Stack) -> None:
    host = stack.fleet.host("HV-BERLIN-01")
    host.set(output_fault="progress_stderr")
    assert sample(stack.probe("HV-BERLIN-01"), "hyperv_up") == 1.0  # stderr is not failure
    host.set(output_fault="cp1252")
    samples = stack.probe("HV-BERLIN-01")
    assert sample(samples, "hyperv_vm_info", vm="Büro-Server") == 1.0
    assert sample(samples, "hyperv_vm_info", vm="??") == 1.0  # 会計 cannot be written in Windows-1252
    host.set(output_fault="vm_section_error")
    samples = stack.probe("HV-BERLIN-01")
    assert sample(samples, "hyperv_up") == 1.0
    assert sample(samples, "hyperv_collector_success", collector="vm") == 0.0
    assert sample(samples, "hyperv_collector_success", collector="host") == 1.0


def test_wrong_password_is_an_auth_failure(stack: Stack) -> None:
    stack.fleet.host("HV-LEGACY-01").set(password="something-else")  # rotated on the host only
    _, text = stack.get("/probe?module=default&target=HV-LEGACY-01&debug=true")
    assert "failed (auth)" in text
    assert stack.password not in text and "something-else" not in text
    assert sample(stack.probe("HV-LONDON-01"), "hyperv_up") == 1.0


def test_simulator_refuses_anything_but_the_collection_script(stack: Stack) -> None:
    session = winrm.Session(
        stack.sim.url("HV-LONDON-01"),
        auth=("monitor", stack.password),
        transport="basic",
        server_cert_validation="ignore",
    )
    result = session.run_ps("Get-Process")
    assert result.status_code == 1
    assert b"hyperv-sim: this simulated Hyper-V host runs only" in result.std_err
    assert session.run_cmd("ipconfig", ["/all"]).status_code == 1


def test_probe_request_validation(stack: Stack) -> None:
    assert stack.get("/probe?module=default")[0] == 400
    assert stack.get("/probe?module=default&target=a&target=b")[0] == 400
    assert stack.get("/probe?module=nope&target=HV-LONDON-01")[0] == 400
    assert stack.get("/probe?module=default&target=http://evil.example/wsman")[0] == 400
    status, text = stack.get("/probe?module=default&target=evil.example")
    assert status == 403 and "not in the targets allowlist" in text
    _, metrics = stack.get("/metrics")
    assert 'hyperv_exporter_request_errors_total{reason="forbidden"} 1.0' in metrics


def test_debug_output_and_landing_page_hide_the_password(stack: Stack) -> None:
    status, text = stack.get("/probe?module=default&target=HV-LONDON-01&debug=true")
    assert status == 200
    assert "Logs for the probe:" in text and "Metrics that would have been returned:" in text
    assert "password: <secret>" in text
    status, page = stack.get("/")
    assert status == 200 and "HV-LONDON-01" in page and "password &lt;secret&gt;" in page
    status, config = stack.get("/config")
    for body in (text, page, config):
        assert stack.password not in body


def test_scrape_timeout_header_bounds_the_probe(stack: Stack) -> None:
    host = stack.fleet.host("HV-LONDON-01")
    host.set(run_seconds=5.0)  # the script takes 5 s on this host
    started = time.monotonic()
    status, text = stack.get(
        "/probe?module=default&target=HV-LONDON-01", headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    )
    elapsed = time.monotonic() - started
    assert status == 200 and "hyperv_up 0.0" in text and "hyperv_probe_timeout_seconds 1.5" in text
    assert elapsed < 4.5  # not a benchmark: only that the 5 s host did not hold the scrape
