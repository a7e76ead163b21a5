"""Parsing the new report shapes (issue 12): VMProblems, cluster, localized state, guest-reported versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperv_exporter.host import cimxml, icversion
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.report import decode_output, parse_report
from hyperv_exporter.sim.fleet import kvp_item

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
KVP = cimxml.allowlist(DEFAULT_KVP_KEYS, 256)


def load(name: str) -> HostReport:
    return parse_report(decode_output((FIXTURES / name).read_bytes(), 1 << 26), KVP)


def test_cluster_node_with_a_vanished_vm() -> None:
    report = load("ps51-compressed-node-a.json")
    assert report.host.cluster == "HV-CLUSTER-01"
    assert report.vm_problems == {"integration_services": 1, "checkpoints": 1}
    vms = {vm.name: vm for vm in report.vms}
    gone = vms["vm-vanishing"]
    assert gone.state == "running" and gone.is_clustered is True
    assert gone.integration_services is None and gone.checkpoints is None and gone.kvp is None
    assert any("vm-vanishing" in p and "unable to find a virtual machine" in p for p in report.problems)
    sql = vms["cluster-sql"]
    assert len(sql.integration_services or []) == 6 and len(sql.checkpoints or []) == 1
    migrating = vms["app-migrating"]
    assert migrating.is_clustered is True
    assert migrating.integration_services_version == "0.0" and migrating.integration_services_state == "unknown"
    assert migrating.guest_integration_services_version == "10.0.20348.1"
    assert migrating.integration_services_up_to_date is True


def test_german_2012_r2_host_localized_state() -> None:
    report = load("ps51-indented-muenchen.json")
    assert report.host.cluster is None and report.host.ui_culture == "de-DE"
    vms = {vm.name: vm for vm in report.vms}
    assert vms["Lager-DB"].integration_services_state == "up_to_date"
    assert vms["Altsystem"].integration_services_state == "update_required"
    assert vms["Altsystem"].integration_services_up_to_date is False
    assert vms["Lager-DB"].integration_services_up_to_date is True
    firewall = vms["Firewall-Appliance"]
    assert firewall.integration_services is None and firewall.integration_services_up_to_date is None
    assert firewall.integration_services_version is None
    assert report.vm_problems == {"integration_services": 1}
    assert not [p for p in report.problems if "IntegrationServicesState" in p]  # localized text is recognised


def document(os_version: str, vm: dict[str, object], **top: object) -> str:
    return json.dumps(
        {
            "SchemaVersion": 1,
            "Host": {"ComputerName": "HV", "OSVersion": os_version},
            "VMs": [{"Name": "vm1", "Id": "11111111-0000-4000-8000-000000000001", "State": "Running", **vm}],
            "Sections": {},
            **top,
        }
    )


def test_guest_facts_are_read_whatever_the_allowlist_and_not_exported() -> None:
    kvp = {
        "GuestIntrinsicExchangeItems": [
            kvp_item("IntegrationServicesVersion", "6.2.9200.16433"),
            kvp_item("OSVersion", "6.3.9600"),
            kvp_item("OSName", "Windows Server 2012 R2 Standard"),
        ]
    }
    only_osname = cimxml.allowlist(["OSName"], 256)
    (vm,) = parse_report(document("10.0.17763", {"Kvp": kvp}), only_osname).vms
    assert vm.guest_integration_services_version == "6.2.9200.16433" and vm.guest_os_version == "6.3.9600"
    assert [(k.key, k.value) for k in vm.kvp or []] == [("OSName", "Windows Server 2012 R2 Standard")]
    assert vm.integration_services_up_to_date is False
    # The guest_intrinsic source switched off: still judged, nothing exported.
    (vm,) = parse_report(document("10.0.17763", {"Kvp": kvp}), only_osname, frozenset({"guest"})).vms
    assert vm.kvp == [] and vm.integration_services_up_to_date is False


def test_cluster_error_and_malformed_vm_problems_are_problems_not_failures() -> None:
    text = document(
        "10.0.20348",
        {},
        VMProblems=[
            "not an object",
            {"Section": "checkpoints", "Name": "vm1", "Id": "{11111111-0000-4000-8000-000000000001}", "Error": None},
            {"Section": "checkpoints", "Name": "vm1", "Id": "11111111-0000-4000-8000-000000000001", "Error": "again"},
        ],
    )
    doc = json.loads(text)
    doc["Host"]["ClusterError"] = "Access denied"
    report = parse_report(json.dumps(doc), KVP)
    assert report.vm_problems == {"checkpoints": 1}  # one VM, however often it is named
    assert "VMProblems: an entry is not an object" in report.problems
    assert any("failover cluster not readable: Access denied" in p for p in report.problems)
    assert report.host.cluster is None and len(report.vms) == 1


@pytest.mark.parametrize(
    ("text", "version", "host", "expected"),
    [
        ("Up to date", "6.3.9600.16384", "6.3.9600", ("up_to_date", True)),
        ("Update required", None, "6.2.9200", ("update_required", True)),
        ("", None, "6.3.9600", ("unknown", True)),
        ("Aktuell", "6.3.9600.16384", "6.3.9600", ("up_to_date", True)),
        ("Aktualisierung erforderlich", "6.1.7601.17514", "6.3.9600", ("update_required", True)),
        ("Mise à jour requise", "6.2.9200.16433", "6.3.9600", ("update_required", True)),
        ("Aktuell", None, "6.3.9600", ("unknown", True)),
        ("Aktuell", "6.3.9600.16384", "10.0.20348", ("unknown", False)),  # 2016+ never says anything
    ],
)
def test_state_from_text(text: str, version: str | None, host: str, expected: tuple[str, bool]) -> None:
    assert icversion.state_from_text(text, version, host) == expected


@pytest.mark.parametrize(
    ("ic", "os_version", "expected"),
    [
        ("10.0.17763.1", "10.0.17763", True),
        ("10.0.20348.1", "10.0.17763", True),
        ("6.3.9600.18692", "6.3.9600", True),
        ("6.2.9200.16433", "6.3.9600", False),
        ("3.1", "5.15.0", None),  # Linux: the kernel module's version, not comparable
        ("Unknown version", "5.15.0", None),
        (None, "10.0.17763", None),
        ("10.0.17763.1", None, None),
        ("10.0.17763.1", "22.04", None),
    ],
)
def test_guest_up_to_date(ic: str | None, os_version: str | None, expected: bool | None) -> None:
    assert icversion.guest_up_to_date(ic, os_version) is expected


@pytest.mark.parametrize(
    ("host", "state", "expected"),
    [
        ("6.2.9200", "up_to_date", True),
        ("6.3.9600", "update_required", False),
        ("6.3.9600", "unknown", None),
        ("10.0.14393", "up_to_date", None),  # 2016+: the state is no basis (it is always empty there)
        ("6.1.7601", "up_to_date", None),  # 2008 R2: not a supported host generation
        (None, "up_to_date", None),
    ],
)
def test_up_to_date_by_host_generation(host: str | None, state: str, expected: bool | None) -> None:
    assert icversion.up_to_date(state, host, None, None) is expected
