"""Real Hyper-V semantics end to end (issue 12, items 1-4): exporter -> pywinrm -> hyperv-sim -> metrics.

Per-VM failure isolation, integration-services state and version per host generation (English,
German, 2016+), failover clusters and a live-migrating VM, all through the real WinRM path.
"""

from __future__ import annotations

import pytest

from conftest import Stack, sample
from hyperv_exporter.sim import tables
from hyperv_exporter.sim.fleet import demo_fleet

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(samples: Samples, name: str) -> dict[str, float]:
    """vm -> value of a per-VM family."""
    return {dict(labels)["vm"]: value for (n, labels), value in samples.items() if n == name}


def test_every_demo_host_is_up_with_every_collector_successful(stack: Stack) -> None:
    for host in stack.fleet.hosts:
        samples = stack.probe(host.computer_name)
        assert sample(samples, "hyperv_up") == 1.0, host.computer_name
        success = {
            dict(labels)["collector"]: v for (n, labels), v in samples.items() if n == "hyperv_collector_success"
        }
        assert set(success.values()) == {1.0}, (host.computer_name, success)


def test_a_vm_that_vanishes_mid_probe_loses_only_its_own_data(stack: Stack) -> None:
    samples = stack.probe("HV-NODE-A")
    problems = {dict(ls)["collector"]: v for (n, ls), v in samples.items() if n == "hyperv_collector_vm_problems"}
    assert problems["integration_services"] == 1.0 and problems["checkpoints"] == 1.0
    assert problems["kvp"] == 0.0 and problems["vm"] == 0.0 and problems["replication"] == 0.0
    assert sample(samples, "hyperv_collector_success", collector="integration_services") == 1.0
    # The vanished VM keeps what Get-VM said about it, and nothing from the later cmdlets.
    assert sample(samples, "hyperv_vm_state", vm="vm-vanishing", state="running") == 1.0
    assert not [k for k in samples if k[0] == "hyperv_vm_integration_service_status" and ("vm", "vm-vanishing") in k[1]]
    assert sample(samples, "hyperv_vm_checkpoints", vm="vm-vanishing") is None
    # The other VMs of the same sections are intact.
    assert sample(samples, "hyperv_vm_integration_service_status", vm="cluster-sql", service="heartbeat", status="ok") == 1.0
    assert sample(samples, "hyperv_vm_checkpoints", vm="cluster-sql") == 1.0


def test_a_vm_without_integration_components(stack: Stack) -> None:
    samples = stack.probe("HV-MUENCHEN-01")
    assert sample(samples, "hyperv_collector_vm_problems", collector="integration_services") == 1.0
    assert sample(samples, "hyperv_vm_heartbeat", vm="Firewall-Appliance", status="no_contact") == 1.0
    assert sample(samples, "hyperv_vm_info", vm="Firewall-Appliance", integration_services_version="") == 1.0
    assert sample(samples, "hyperv_vm_integration_services_up_to_date", vm="Firewall-Appliance") is None
    assert sample(samples, "hyperv_vm_integration_service_status", vm="Altsystem", service="heartbeat", status="ok") == 1.0
    assert sample(samples, "hyperv_collector_vm_problems", collector="checkpoints") == 0.0


def test_german_2012_r2_host_localized_state(stack: Stack) -> None:
    host = stack.fleet.host("HV-MUENCHEN-01")
    document = host.document(["integration_services"], 0.0)
    texts = {row["Name"]: row["IntegrationServicesState"] for row in document["VMs"]}
    assert texts == {"Lager-DB": "Aktuell", "Altsystem": "Aktualisierung erforderlich", "Firewall-Appliance": ""}
    samples = stack.probe("HV-MUENCHEN-01")
    assert sample(samples, "hyperv_vm_integration_services_state", vm="Altsystem", state="update_required") == 1.0
    assert sample(samples, "hyperv_vm_integration_services_state", vm="Lager-DB", state="up_to_date") == 1.0
    assert series(samples, "hyperv_vm_integration_services_up_to_date") == {"Lager-DB": 1.0, "Altsystem": 0.0}
    assert sample(samples, "hyperv_host_info", os_version="6.3.9600", cluster="") == 1.0


def test_2016_and_later_hosts_judge_by_the_guests_own_report(stack: Stack) -> None:
    samples = stack.probe("HV-LONDON-01")
    # The host itself says nothing: empty state, version 0.0, for every VM.
    states = {dict(ls)["vm"] for (n, ls), v in samples.items() if n == "hyperv_vm_integration_services_state" and v}
    assert states == {dict(ls)["vm"] for (n, ls) in samples if n == "hyperv_vm_info"}
    assert all(
        dict(ls)["state"] == "unknown"
        for (n, ls), v in samples.items()
        if n == "hyperv_vm_integration_services_state" and v == 1.0
    )
    assert {dict(ls)["integration_services_version"] for (n, ls) in samples if n == "hyperv_vm_info"} == {"0.0"}
    # The guests' KVP report: web01 current, legacy-app's 2012 components inside a 2012 R2 guest
    # outdated; no basis for Linux guests and VMs without the KVP item (absent, not 0).
    assert series(samples, "hyperv_vm_integration_services_up_to_date") == {"web01": 1.0, "legacy-app": 0.0}
    assert sample(samples, "hyperv_vm_info", vm="legacy-app", guest_integration_services_version="6.2.9200.16433")


def test_english_2012_host_state(stack: Stack) -> None:
    samples = stack.probe("HV-LEGACY-01")
    assert series(samples, "hyperv_vm_integration_services_up_to_date") == {"old-dc": 1.0, "print-srv": 1.0}
    stack.fleet.host("HV-LEGACY-01").vm("print-srv").set(IntegrationServicesState="Update required")
    samples = stack.probe("HV-LEGACY-01")
    assert sample(samples, "hyperv_vm_integration_services_up_to_date", vm="print-srv") == 0.0


def test_cluster_nodes_and_a_live_migrating_vm(stack: Stack) -> None:
    vm_id = stack.fleet.host("HV-NODE-A").vm("app-migrating").id.lower()
    seen = []
    for node in ("HV-NODE-A", "HV-NODE-B", "HV-NODE-A", "HV-NODE-B"):
        samples = stack.probe(node)
        assert sample(samples, "hyperv_host_info", cluster="HV-CLUSTER-01") == 1.0
        assert sample(samples, "hyperv_up") == 1.0
        migrating = [dict(ls) for (n, ls) in samples if n == "hyperv_vm_info" and dict(ls)["vm_id"] == vm_id]
        seen.append(node if migrating else None)
        if migrating:
            assert migrating[0]["clustered"] == "true"
            assert sample(samples, "hyperv_vm_state", vm_id=vm_id, state="running") == 1.0
            assert sample(samples, "hyperv_vm_heartbeat", vm_id=vm_id, status="ok_applications_healthy") == 1.0
    # Each node had it when probed: it moved after every probe of its owner, and was never on both.
    assert seen == ["HV-NODE-A", "HV-NODE-B", "HV-NODE-A", "HV-NODE-B"]
    assert sample(stack.probe("HV-LONDON-01"), "hyperv_host_info", cluster="") == 1.0
    samples = stack.probe("HV-NODE-B")
    assert sample(samples, "hyperv_vm_info", vm="cluster-web", clustered="true") == 1.0
    assert sample(samples, "hyperv_vm_info", vm="vm-starting", clustered="false") == 1.0


@pytest.mark.parametrize(
    ("vm", "state"),
    [
        ("vm-starting", "starting"),
        ("vm-stopping", "stopping"),
        ("vm-saving", "saving"),
        ("vm-pausing", "pausing"),
        ("vm-resuming", "resuming"),
        ("vm-checkpointing", "running"),
    ],
)
def test_transitional_states(stack: Stack, vm: str, state: str) -> None:
    samples = stack.probe("HV-NODE-B")
    assert sample(samples, "hyperv_vm_state", vm=vm, state=state) == 1.0
    heartbeat = "ok_applications_healthy" if state == "running" else "unknown"
    assert sample(samples, "hyperv_vm_heartbeat", vm=vm, status=heartbeat) == 1.0


def test_the_demo_fleet_has_every_case_of_issue_12() -> None:
    fleet = demo_fleet()
    vms = [vm for host in fleet.hosts for vm in host.vms]
    assert {vm.props["State"] for vm in vms} >= set(tables.TRANSITIONAL_STATES)
    checkpointing = tables.STATUS_CREATING_CHECKPOINT.split("(")[0]
    assert any(vm.running() and str(vm.props.get("Status", "")).startswith(checkpointing) for vm in vms)
    assert any(vm.vanishes() for vm in vms) and any(not vm.has_integration_components() for vm in vms)
    assert any(vm.props.get("LiveMigratesTo") for vm in vms)
    generations = {(host.generation(), host.ui_culture) for host in fleet.hosts}
    assert {("2016+", "en-US"), ("2012r2", "de-DE"), ("2012", "en-US")} <= generations
    clusters = [host.cluster for host in fleet.hosts if host.cluster]
    assert clusters == ["HV-CLUSTER-01", "HV-CLUSTER-01"]
