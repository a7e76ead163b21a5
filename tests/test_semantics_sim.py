"""The simulator's host profiles and fleet keys of issue 12, without the WinRM path."""

from __future__ import annotations

import pytest

from hyperv_exporter.sim.fleet import SimFleet, parse_fleet
from hyperv_exporter.sim.host import HostRunner
from hyperv_exporter.yamlutil import YamlError

SECTIONS = ["integration_services", "kvp", "replication", "checkpoints"]


def fleet(hosts: str) -> SimFleet:
    return parse_fleet("hosts:\n" + hosts, "test.yml")


def rows(f: SimFleet, host: str) -> dict[str, dict[str, object]]:
    return {row["Name"]: row for row in f.host(host).document(SECTIONS, 1.7e9)["VMs"]}


def test_host_level_service_names_and_guest_service_interface() -> None:
    f = fleet(
        """  - ComputerName: HV-PARIS
    OSVersion: 10.0.17763
    IntegrationServiceNames: {heartbeat: Pulsation, shutdown: Arrêt du système d'exploitation}
    GuestServiceInterface: false
    VMs:
      - {Name: a, Id: 00000000-0000-4000-8000-000000000001, State: Running}
      - {Name: b, Id: 00000000-0000-4000-8000-000000000002, State: "Off"}
"""
    )
    for row in rows(f, "HV-PARIS").values():
        services = row["IntegrationServices"]
        assert isinstance(services, list)
        names = {s["Id"].rsplit("\\", 1)[1]: s["Name"] for s in services}
        assert names["84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47"] == "Pulsation"  # once per host, every VM
        assert names["9F8233AC-BE49-4C79-8EE3-E7E1985B2077"] == "Arrêt du système d'exploitation"
        assert names["2497F4DE-E9FA-4204-80E4-4B75C46419C0"] == "Time Synchronization"  # the rest from UICulture
        assert "6C09BB55-D683-4DA0-8931-C9BF705F6480" not in names  # no Guest Service Interface


@pytest.mark.parametrize(
    ("os_version", "culture", "expected"),
    [
        ("10.0.20348", "de-DE", {"cur": ("0.0", ""), "old": ("0.0", ""), "none": (None, ""), "off": ("0.0", "")}),
        (
            "6.3.9600",
            "de-DE",
            {
                "cur": ("6.3.9600.16384", "Aktuell"),
                "old": ("6.1.7601.17514", "Aktualisierung erforderlich"),
                "none": (None, ""),
                "off": ("6.3.9600.16384", ""),
            },
        ),
        (
            "6.2.9200",
            "en-US",
            {
                "cur": ("6.3.9600.16384", "Up to date"),
                "old": ("6.1.7601.17514", "Update required"),
                "none": (None, ""),
                "off": ("6.3.9600.16384", ""),
            },
        ),
    ],
)
def test_integration_services_fields_per_host_generation(
    os_version: str, culture: str, expected: dict[str, tuple[str | None, str]]
) -> None:
    f = fleet(
        f"""  - ComputerName: HV
    OSVersion: {os_version}
    UICulture: {culture}
    VMs:
      - {{Name: cur, Id: 00000000-0000-4000-8000-000000000001, State: Running, IntegrationServicesVersion: 6.3.9600.16384}}
      - {{Name: old, Id: 00000000-0000-4000-8000-000000000002, State: Running, IntegrationServicesVersion: 6.1.7601.17514,
          IntegrationServicesState: Update required}}
      - {{Name: none, Id: 00000000-0000-4000-8000-000000000003, State: Running, IntegrationServicesVersion: null}}
      - {{Name: "off", Id: 00000000-0000-4000-8000-000000000004, State: "Off", IntegrationServicesVersion: 6.3.9600.16384}}
"""
    )
    got = {
        name: (row["IntegrationServicesVersion"], row["IntegrationServicesState"])
        for name, row in rows(f, "HV").items()
    }
    assert got == expected


def test_a_vanishing_replicated_vm_loses_its_replication_data_too() -> None:
    f = fleet(
        """  - ComputerName: HV
    VMs:
      - {Name: gone, Id: 00000000-0000-4000-8000-000000000001, State: Running, VanishesMidProbe: true,
         ReplicationMode: Primary, ReplicationState: Replicating, ReplicationHealth: Normal}
      - {Name: plain, Id: 00000000-0000-4000-8000-000000000002, State: Running, VanishesMidProbe: true}
"""
    )
    doc = f.host("HV").document(SECTIONS, 1.7e9)
    lost = sorted((p["Name"], p["Section"]) for p in doc["VMProblems"])
    assert lost == [
        ("gone", "checkpoints"),
        ("gone", "integration_services"),
        ("gone", "replication"),
        ("plain", "checkpoints"),
        ("plain", "integration_services"),
    ]
    by_name = {row["Name"]: row for row in doc["VMs"]}
    assert by_name["gone"]["Replication"] is None and by_name["gone"]["Kvp"] is None
    assert by_name["plain"]["Replication"] == {
        "State": "Disabled",
        "Health": "NotApplicable",
        "Mode": "None",
        "LastReplicationTimeTicks": None,
    }


CLUSTER = """  - ComputerName: HV-A
    Cluster: C1
    VMs:
      - {Name: mover, Id: 00000000-0000-4000-8000-000000000001, State: Running, IsClustered: true, LiveMigratesTo: HV-B}
  - ComputerName: HV-B
    Cluster: C1
  - ComputerName: HV-C
"""


def test_live_migration_moves_the_vm_after_each_run_of_its_owner() -> None:
    f = fleet(CLUSTER)
    a, b = HostRunner(f.host("HV-A")), HostRunner(f.host("HV-B"))
    assert [vm.name for vm in f.host("HV-A").vms] == ["mover"]
    b.answer(["vm"], False, 65001)  # the other node's run moves nothing
    assert [vm.name for vm in f.host("HV-A").vms] == ["mover"]
    a.answer(["vm"], False, 65001)
    assert f.host("HV-A").vms == [] and [vm.name for vm in f.host("HV-B").vms] == ["mover"]
    started = f.host("HV-B").vm("mover").started
    b.answer(["vm"], False, 65001)
    assert [vm.name for vm in f.host("HV-A").vms] == ["mover"] and f.host("HV-B").vms == []
    assert f.host("HV-A").vm("mover").started == started  # a live migration keeps the VM running


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("LiveMigratesTo: HV-B", "LiveMigratesTo: HV-C"), "another node of the same Cluster"),
        (("LiveMigratesTo: HV-B", "LiveMigratesTo: HV-A"), "another node of the same Cluster"),
        (("LiveMigratesTo: HV-B", "LiveMigratesTo: HV-X"), "not a host of this fleet"),
        (
            ("Cluster: C1\n    VMs", "Cluster: C1\n    IntegrationServiceNames: {pulse: x}\n    VMs"),
            "unknown integration",
        ),
    ],
)
def test_fleet_mistakes_are_clear_errors(change: tuple[str, str], message: str) -> None:
    with pytest.raises(YamlError, match=message):
        fleet(CLUSTER.replace(*change, 1))
