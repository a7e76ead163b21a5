"""The large-fleet generator (sim.generator): deterministic from the seed, a realistic mix, clean reports."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hyperv_exporter import enums
from hyperv_exporter.host import cimxml, exposition
from hyperv_exporter.host.collectors import COLLECTORS, DEFAULT_COLLECTORS, sections_for
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.report import decode_output, parse_report
from hyperv_exporter.sim.fleet import SimFleet, SimHost
from hyperv_exporter.sim.generator import generate_fleet, generate_host, mix
from hyperv_exporter.sim.host import HostRunner, Simulator

NOW = 1_795_800_000.0
WINDOWS_INTRINSIC = 19  # reference §2.3: the documented GuestIntrinsicExchangeItems keys
LINUX_INTRINSIC = 10  # hv_kvp_daemon's fixed key index 0-9


def _host_state(host: SimHost) -> dict[str, Any]:
    fields = {f.name: getattr(host, f.name) for f in dataclasses.fields(host) if f.name not in ("vms", "lock")}
    vms = [(vm.props, vm.services, vm.kvp, vm.snapshots, vm.started) for vm in host.vms]
    return {**fields, "vms": vms}


def _state(fleet: SimFleet) -> list[dict[str, Any]]:
    return [_host_state(h) for h in fleet.hosts]


def _is_linux(vm: Any) -> bool:
    return bool(vm.props.get("IntegrationServicesVersion") == "0.0")


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    first = generate_fleet(3, 40, seed=7, now=NOW)
    assert _state(first) == _state(generate_fleet(3, 40, seed=7, now=NOW))
    assert _state(first) != _state(generate_fleet(3, 40, seed=8, now=NOW))


def test_a_host_does_not_depend_on_the_fleet_size() -> None:
    small, large = generate_fleet(2, 30, seed=3, now=NOW), generate_fleet(5, 30, seed=3, now=NOW)
    assert _state(small) == _state(large)[:2]
    assert _host_state(generate_host(4, 30, seed=3, now=NOW)) == _host_state(large.hosts[4])


def test_parameters_reach_the_hosts() -> None:
    fleet = generate_fleet(2, 3, latency=0.05, run_seconds=0.2, password="pw", now=NOW)
    assert [(h.latency, h.run_seconds, h.password) for h in fleet.hosts] == [(0.05, 0.2, "pw")] * 2
    assert [h.computer_name for h in fleet.hosts] == ["HV-GEN-0000", "HV-GEN-0001"]
    assert all(vm.host is h for h in fleet.hosts for vm in h.vms)
    with pytest.raises(ValueError, match="negative"):
        generate_fleet(-1, 3)


def test_the_mix_looks_like_a_real_estate() -> None:
    fleet = generate_fleet(4, 500, seed=1, now=NOW)
    counts = mix(fleet)
    assert counts.hosts == 4 and counts.vms == 2000
    assert 0.80 < counts.running / counts.vms < 0.90
    assert 0.30 < counts.linux / counts.vms < 0.40
    vms = [vm for h in fleet.hosts for vm in h.vms]
    states = {vm.props["State"] for vm in vms}
    assert {"Running", "Off", "Saved", "Paused"} <= states
    heartbeats = {vm.props.get("Heartbeat") for vm in vms if vm.running()}
    assert {"OkApplicationsHealthy", "OkApplicationsUnknown", "LostCommunication", "NoContact"} <= heartbeats
    for vm in vms:
        intrinsic = vm.kvp.get("GuestIntrinsicExchangeItems", [])
        if not vm.running():
            assert vm.kvp == {} and "Heartbeat" not in vm.props
        elif _is_linux(vm):
            assert len(intrinsic) == LINUX_INTRINSIC
        else:
            assert len(intrinsic) == WINDOWS_INTRINSIC
    assert any(enums.GUEST_SERVICE_INTERFACE in vm.services for vm in vms)
    assert any(vm.snapshots for vm in vms)
    assert any(vm.props.get("ReplicationMode") == "Primary" for vm in vms)
    assert any(vm.props.get("IntegrationServicesState") == "Update required" for vm in vms)
    assert any(not vm.name.isascii() for vm in vms)
    assert any("HostExchangeItems" in vm.kvp for vm in vms)
    for host in fleet.hosts:
        assert len({vm.name for vm in host.vms}) == len(host.vms)
        assert len({vm.id for vm in host.vms}) == len(host.vms)


@pytest.mark.parametrize("gzip", [True, False])
def test_generated_hosts_parse_without_a_single_problem(gzip: bool) -> None:
    kvp_filter = cimxml.allowlist(DEFAULT_KVP_KEYS, 256)
    sections = sections_for(tuple(COLLECTORS))
    hosts = generate_fleet(24, 40, seed=1, now=NOW).hosts
    # With this seed every host OS (Windows Server 2012 without Guest Service Interface included) and
    # both UI cultures occur, so each shape of the document is parsed.
    assert {h.os_version.split(".")[0] for h in hosts} == {"6", "10"} and {h.ui_culture for h in hosts} == {
        "en-US",
        "de-DE",
    }
    for host in hosts:
        answer = HostRunner(host).answer(sections, gzip, 65001)
        report = parse_report(decode_output(answer.stdout, 1 << 26), kvp_filter)
        assert report.problems == [], (host.computer_name, report.problems[:5])
        assert [vm.id for vm in report.vms] == [vm.id.lower() for vm in host.vms]
        assert all(vm.state != enums.UNKNOWN and vm.heartbeat in enums.HEARTBEAT_STATUSES for vm in report.vms)
        services = 6 if host.has_guest_service_interface() else 5
        for vm in report.vms:
            assert vm.integration_services is not None and len(vm.integration_services) == services
            running = vm.state in enums.VM_RUNNING_STATES
            # Every running guest reports the four default allowlisted keys (Windows and Linux alike).
            assert (sorted(k.key for k in vm.kvp or []) == sorted(DEFAULT_KVP_KEYS)) if running else vm.kvp is None


def test_provisioning_data_never_reaches_the_exposition() -> None:
    host = generate_fleet(1, 200, seed=5, now=NOW).hosts[0]
    assert any("HostExchangeItems" in vm.kvp for vm in host.vms)
    answer = HostRunner(host).answer(sections_for(DEFAULT_COLLECTORS), True, 65001)
    report = parse_report(decode_output(answer.stdout, 1 << 26), cimxml.allowlist(DEFAULT_KVP_KEYS, 256))
    result = ProbeResult("default", host.computer_name, DEFAULT_COLLECTORS, NOW, 0.1, report=report)
    text = exposition.render(result, 10.0).decode()
    assert "ProvisioningToken" not in text and "tok-" not in text


def test_a_generated_fleet_is_served_with_its_latency() -> None:
    fleet = generate_fleet(2, 2, latency=0.01, password="pw", now=NOW)
    simulator = Simulator(fleet)
    simulator.start()
    try:
        assert [simulator.endpoint(h.computer_name).latency_seconds for h in fleet.hosts] == [0.01, 0.01]
    finally:
        simulator.stop()
