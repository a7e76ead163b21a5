"""Report parsing against faithful fixtures (PowerShell 5.1 ConvertTo-Json output of collect.ps1)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from hyperv_exporter import enums
from hyperv_exporter.host import cimxml
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.report import ReportError, decode_output, parse_report, ticks_to_unix

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
KVP = cimxml.allowlist(DEFAULT_KVP_KEYS, 256)
MAX = 64 * 1024 * 1024


def load(name: str) -> HostReport:
    raw = (FIXTURES / name).read_bytes()
    return parse_report(decode_output(raw, MAX), KVP)


def test_ps51_indented_layout_with_crlf_and_german_host() -> None:
    raw = (FIXTURES / "ps51-indented-berlin.json").read_bytes()
    assert b'\r\n    "SchemaVersion":  1' in raw  # the 5.1 layout really is in the fixture
    assert b"\\u003cINSTANCE" in raw  # and 5.1's escaping of < > & '
    report = load("ps51-indented-berlin.json")
    assert report.host.computer_name == "HV-BERLIN-01"
    assert report.host.ui_culture == "de-DE"
    names = [vm.name for vm in report.vms]
    assert names == ["Büro-Server", "Datenbank-01", "会計", "Dateiablage", "Web-Proxy"]
    buero = report.vms[0]
    # German display names map to the canonical services through the GUID in the Id.
    by_service = {ic.service: ic for ic in buero.integration_services or []}
    assert set(by_service) == set(enums.SERVICES)
    assert by_service["heartbeat"].display_name == "Takt"
    assert by_service["key_value_pair_exchange"].display_name == "Austausch von Schlüsselwertepaaren"
    assert by_service["heartbeat"].secondary_status == "ok"
    assert by_service["vss"].secondary_status is None
    assert by_service["guest_service_interface"].enabled is False
    assert report.problems == []


def test_off_vm_has_no_heartbeat_no_kvp_and_no_service_status() -> None:
    off = next(vm for vm in load("ps51-indented-berlin.json").vms if vm.name == "Dateiablage")
    assert off.state == "off"
    assert off.heartbeat == "unknown"
    assert off.kvp is None
    assert off.uptime_seconds == 0
    assert off.integration_services_state == "unknown"
    assert all(ic.primary_status == "unknown" for ic in off.integration_services or [])


def test_kvp_allowlist_escapes_and_secrets() -> None:
    report = load("ps51-indented-berlin.json")
    buero = report.vms[0]
    pairs = {(k.source, k.key): k.value for k in buero.kvp or []}
    assert pairs[("guest_intrinsic", "NetworkAddressIPv4")] == "10.20.1.11;169.254.12.7"
    assert pairs[("guest_intrinsic", "OSName")] == "Windows Server 2022 Datacenter"
    # Department and ProvisioningToken are present on the host but not allowlisted.
    assert {key for _, key in pairs} <= set(DEFAULT_KVP_KEYS)
    wide = cimxml.allowlist([*DEFAULT_KVP_KEYS, "Department"], 256)
    text = decode_output((FIXTURES / "ps51-indented-berlin.json").read_bytes(), MAX)
    dept = [k for k in parse_report(text, wide).vms[0].kvp or [] if k.key == "Department"]
    assert dept[0].value == "Finanzen & Controlling <Abt. 4>"
    assert dept[0].source == "guest"
    assert "tok-9f3a27c1e5b84d0a" not in repr(parse_report(text, wide))


def test_non_ascii_names_survive() -> None:
    report = load("ps51-indented-berlin.json")
    assert "会計" in [vm.name for vm in report.vms]


def test_compressed_layout_and_replication_and_checkpoints() -> None:
    report = load("ps51-compressed-london.json")
    sql = next(vm for vm in report.vms if vm.name == "sql-prod")
    assert sql.replication is not None
    assert (sql.replication.mode, sql.replication.state, sql.replication.health) == ("primary", "replicating", "normal")
    assert sql.replication.last_replication_timestamp == pytest.approx(1795800000.0 - 120, abs=1e-3)
    agent = next(vm for vm in report.vms if vm.name == "build-agent")
    assert [c.snapshot_type for c in agent.checkpoints or []] == ["standard", "standard"]
    web01 = next(vm for vm in report.vms if vm.name == "web01")
    assert web01.resources is not None
    assert web01.resources.cpu_usage_ratio == pytest.approx(0.03)
    assert web01.resources.memory_assigned_bytes == 4294967296
    assert [(k.source, k.key) for k in web01.kvp or [] if k.source == "host"] == []  # Role is not allowlisted


def test_replica_recovery_points_are_typed() -> None:
    replica = next(vm for vm in load("ps51-compressed-dublin.json").vms if vm.name == "sql-prod")
    assert replica.replication is not None and replica.replication.mode == "replica"
    assert replica.state == "off"
    assert {c.snapshot_type for c in replica.checkpoints or []} == {"replica", "app_consistent_replica"}


def test_zero_and_one_vm_are_arrays() -> None:
    assert load("zero-vms.json").vms == []
    assert (FIXTURES / "zero-vms.json").read_text().count('"VMs":[]') == 1
    one = load("one-vm.json")
    assert [vm.name for vm in one.vms] == ["old-dc"]


def test_windows_server_2012_host_has_five_services() -> None:
    for vm in load("legacy-2012.json").vms:
        assert {ic.service for ic in vm.integration_services or []} == set(enums.SERVICES) - {"guest_service_interface"}


def test_every_state_heartbeat_and_operational_status() -> None:
    report = load("every-status.json")
    by_name = {vm.name: vm for vm in report.vms}
    for name in enums.VM_STATE_NAMES:
        assert by_name[f"state-{name}"].state == enums.snake(name)
    for name in enums.HEARTBEAT_NAMES:
        assert by_name[f"heartbeat-{name}"].heartbeat == enums.snake(name)
    for name in enums.IC_STATUS_NAMES:
        services = {ic.service: ic for ic in by_name[f"ic-{name}"].integration_services or []}
        assert services["vss"].primary_status == enums.snake(name)
    assert services["heartbeat"].secondary_status == "ok"
    assert by_name["ic-ApplicationCritical"].integration_services is not None
    heartbeat = {ic.service: ic for ic in by_name["ic-ApplicationCritical"].integration_services}["heartbeat"]
    assert heartbeat.secondary_status == "application_critical"
    assert report.problems == []


def test_damaged_report_keeps_what_it_can_and_says_where() -> None:
    report = load("damaged.json")
    names = [vm.name for vm in report.vms]
    assert names == ["good", "strange", "off"]  # nameless, duplicate and non-object entries skipped
    good, strange, off = report.vms
    assert good.id == "11111111-0000-4000-8000-00000000000a"  # braces stripped, lower-cased
    assert [(k.key, k.value) for k in good.kvp or []] == [("OSName", "Windows Server 2025")]
    assert [ic.service for ic in good.integration_services or []] == ["heartbeat"]  # bare object accepted
    assert strange.state == "unknown" and strange.heartbeat == "unknown"
    assert strange.uptime_seconds is None and strange.generation is None and strange.is_clustered is None
    assert strange.integration_services_state == "unknown"
    ts = {ic.service: ic for ic in strange.integration_services or []}
    assert set(ts) == {"time_synchronization"}  # the unknown GUID is left out
    assert ts["time_synchronization"].enabled is None and ts["time_synchronization"].primary_status == "unknown"
    assert strange.kvp is None
    assert strange.resources is not None and strange.resources.processor_count == 4
    assert strange.resources.memory_assigned_bytes is None
    assert strange.replication is not None and strange.replication.last_replication_timestamp is None
    assert off.heartbeat == "unknown" and off.kvp is None
    assert report.sections["kvp"].error == "Zugriff verweigert" and report.sections["kvp"].seconds is None
    assert report.clock_end is None and report.clock_start is not None
    text = "\n".join(report.problems)
    for expected in (
        "VM #0: no Name or Id",
        "duplicate Id",
        "VM #4: not an object",
        "unknown Heartbeat 'SuperHealthy'",
        "property State is not a string",
        "unknown IntegrationServicesState 'Aktuell'",
        "unknown PrimaryOperationalStatus 'Quantum'",
        "skipped 5 malformed KVP item(s)",
        "property Kvp is not an object",
    ):
        assert expected in text, expected
    assert "lol" not in text and "passwd" not in text  # problem lines never quote KVP content


def test_gzip_base64_output_and_caps() -> None:
    doc = (FIXTURES / "one-vm.json").read_bytes()
    packed = base64.b64encode(gzip.compress(doc))
    assert packed.startswith(b"H4sI")
    assert parse_report(decode_output(packed, MAX), KVP).vms[0].name == "old-dc"
    with pytest.raises(ReportError) as info:
        decode_output(packed, len(doc) - 1)
    assert info.value.reason == "output_too_large"
    with pytest.raises(ReportError, match="truncated"):
        decode_output(packed[: len(packed) // 2 // 4 * 4], MAX)
    with pytest.raises(ReportError) as info:
        decode_output(doc, 100)
    assert info.value.reason == "output_too_large"


def test_not_utf8_output_is_decoded_as_windows_1252() -> None:
    raw = (FIXTURES / "one-vm.json").read_text(encoding="utf-8").replace("old-dc", "Büro").encode("cp1252")
    assert parse_report(decode_output(raw, MAX), KVP).vms[0].name == "Büro"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON"),
        (b"WARNING: this is not JSON", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"SchemaVersion": 2}', "unsupported SchemaVersion 2"),
        (b'{"VMs": []}', "unsupported SchemaVersion None"),
        (b"[" * 100000, "not JSON"),
    ],
)
def test_documents_that_are_not_ours(raw: bytes, message: str) -> None:
    with pytest.raises(ReportError, match=message) as info:
        parse_report(decode_output(raw, MAX), KVP)
    assert info.value.reason == "parse"


def test_ticks_conversion() -> None:
    assert ticks_to_unix(621355968000000000) == 0.0
    assert ticks_to_unix(621355968000000000 + 10_000_000) == 1.0
    assert ticks_to_unix(None) is None and ticks_to_unix("1") is None and ticks_to_unix(True) is None


def test_fixture_json_is_valid_for_other_parsers_too() -> None:
    for path in FIXTURES.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


def _vm_with_services(index: int, services: list[object]) -> dict[str, object]:
    vm_id = f"11111111-0000-4000-8000-{index:012d}"
    for entry in services:
        if isinstance(entry, dict) and isinstance(entry.get("Id"), str):
            entry["Id"] = f"Microsoft:{vm_id.upper()}\\{entry['Id']}"
    return {"Name": f"vm{index}", "Id": vm_id, "State": "Running", "IntegrationServices": services}


def test_equal_service_entries_share_one_record_and_bad_ones_stay_apart() -> None:
    """Entries that repeat across VMs are parsed once (report._services keeps their records). A wrong
    type that equals a right one (1 == True), an unhashable value and a problem are never taken from
    or put in that store: each VM gets its own problem line, as without it."""
    heartbeat = "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47"
    good = {"Id": heartbeat, "Name": "Heartbeat", "Enabled": True, "PrimaryOperationalStatus": "Ok"}
    vms = [
        _vm_with_services(0, [dict(good)]),
        _vm_with_services(1, [dict(good)]),
        _vm_with_services(2, [{**good, "Enabled": 1}]),
        _vm_with_services(3, [{**good, "Name": ["not", "text"]}]),
        _vm_with_services(4, [{**good, "PrimaryOperationalStatus": "Quantum"}]),
        _vm_with_services(5, [{**good, "PrimaryOperationalStatus": "Quantum"}]),
        _vm_with_services(6, [dict(good), {**good, "Enabled": False}]),  # the first entry of a service counts
    ]
    doc = json.dumps({"SchemaVersion": 1, "Sections": {"vm": {}, "integration_services": {}}, "VMs": vms})
    report = parse_report(doc, KVP)
    services = [(vm.integration_services or [None])[0] for vm in report.vms]
    assert all(ic is not None and ic.service == "heartbeat" for ic in services)
    assert services[0] is services[1] is services[6]  # one record for equal entries
    assert services[2] is not None and services[2].enabled is None  # 1 is not a boolean
    assert services[3] is not None and services[3].display_name == "heartbeat"  # no text: the canonical name
    assert services[4] is not None and services[4].primary_status == "unknown"
    assert [len(vm.integration_services or []) for vm in report.vms] == [1] * 7
    text = "\n".join(report.problems)
    assert "vm2" in text and "Enabled is not a boolean" in text
    assert "vm3" in text and "Name is not a string" in text
    assert text.count("unknown PrimaryOperationalStatus 'Quantum'") == 2  # vm4 and vm5 each
