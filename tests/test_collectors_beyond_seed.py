"""Replication, checkpoints and resources (issue 8): same conversation, separate switchable collectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Stack, sample
from hyperv_exporter.host import cimxml, exposition
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.report import decode_output, parse_report

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
T0 = 1795800000.0


def samples_of(
    fixture: str, collectors: tuple[str, ...] = tuple(COLLECTORS)
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    report = parse_report(
        decode_output((FIXTURES / fixture).read_bytes(), 1 << 26), cimxml.allowlist(DEFAULT_KVP_KEYS, 256)
    )
    result = ProbeResult("default", "x", collectors, T0, 0.1, report=report, requests=3)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in exposition.families(result, 10.0) for s in f.samples
    }


def test_replicated_pair_primary_and_replica() -> None:
    london, dublin = samples_of("ps51-compressed-london.json"), samples_of("ps51-compressed-dublin.json")
    assert sample(london, "hyperv_vm_replication_mode", vm="sql-prod", mode="primary") == 1.0
    assert sample(dublin, "hyperv_vm_replication_mode", vm="sql-prod", mode="replica") == 1.0
    assert sample(dublin, "hyperv_vm_state", vm="sql-prod", state="off") == 1.0  # off by design
    assert sample(london, "hyperv_vm_replication_health", vm="sql-prod", health="normal") == 1.0
    assert sample(dublin, "hyperv_vm_replication_health", vm="crm-app", health="warning") == 1.0
    last = sample(dublin, "hyperv_vm_replication_last_success_timestamp_seconds", vm="crm-app")
    assert last == pytest.approx(T0 - 7200, abs=1e-3)
    # Same VM Id on both hosts: the join key the alerts use to tell the replica from the primary.
    ids = {dict(k[1])["vm_id"] for k in london if k[0] == "hyperv_vm_info" and dict(k[1])["vm"] == "sql-prod"}
    assert ids == {dict(k[1])["vm_id"] for k in dublin if k[0] == "hyperv_vm_info" and dict(k[1])["vm"] == "sql-prod"}
    # VMs that do not replicate carry no replication series at all (bounded series per VM).
    assert sample(london, "hyperv_vm_replication_mode", vm="web01", mode="none") is None


def test_checkpoints_exclude_replica_recovery_points() -> None:
    london, dublin = samples_of("ps51-compressed-london.json"), samples_of("ps51-compressed-dublin.json")
    assert sample(london, "hyperv_vm_checkpoints", vm="build-agent") == 2.0
    oldest = sample(london, "hyperv_vm_checkpoint_oldest_timestamp_seconds", vm="build-agent")
    assert oldest == pytest.approx(T0 - 10368000, abs=1e-3)  # 120 days
    assert sample(dublin, "hyperv_vm_checkpoints", vm="sql-prod") == 0.0  # three recovery points, no checkpoints
    assert sample(dublin, "hyperv_vm_checkpoint_oldest_timestamp_seconds", vm="sql-prod") is None
    assert sample(london, "hyperv_vm_checkpoints", vm="web01") == 0.0


def test_resources_in_base_units() -> None:
    london = samples_of("ps51-compressed-london.json")
    assert sample(london, "hyperv_vm_processors", vm="sql-prod") == 8.0
    assert sample(london, "hyperv_vm_cpu_usage_ratio", vm="sql-prod") == pytest.approx(0.41)
    assert sample(london, "hyperv_vm_memory_assigned_bytes", vm="sql-prod") == 34359738368
    assert sample(london, "hyperv_vm_memory_startup_bytes", vm="jumpbox") == 4 * 1024**3
    assert sample(london, "hyperv_vm_memory_assigned_bytes", vm="jumpbox") == 0.0  # saved: nothing assigned
    assert sample(london, "hyperv_vm_dynamic_memory_enabled", vm="web01") == 0.0


def test_collectors_are_separate_sections_of_the_one_script() -> None:
    assert sections_for(["replication"]) == ["replication"]
    assert sections_for(["vm", "checkpoints", "resources"]) == ["vm", "resources", "checkpoints"]
    only_vm = samples_of("ps51-compressed-london.json", ("vm",))
    assert not any(
        name.startswith(("hyperv_vm_replication", "hyperv_vm_checkpoint", "hyperv_vm_memory")) for name, _ in only_vm
    )


def test_switching_collectors_off_by_flag_and_by_module(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        extra_modules="""  lean:
    targets: [HV-LONDON-01]
    collectors: [vm, integration_services]
    endpoints: {{HV-LONDON-01: {url}}}
    winrm: {{scheme: http, transport: basic, allow_unencrypted: true, username: monitor, password_file: password}}
""",
        flags=("--no-collector.checkpoints",),
        endpoint_placeholder=True,
    )
    try:
        full = stack.probe("HV-LONDON-01")
        assert sample(full, "hyperv_collector_success", collector="replication") == 1.0
        assert sample(full, "hyperv_collector_success", collector="checkpoints") is None  # off by flag
        assert not any(name == "hyperv_vm_checkpoints" for name, _ in full)
        lean = stack.probe("HV-LONDON-01", module="lean")
        collectors = {dict(ls)["collector"] for name, ls in lean if name == "hyperv_collector_success"}
        assert collectors == {"vm", "integration_services"}
        # Still exactly one PowerShell run per probe: the collectors only change its -Collectors list.
        endpoint = stack.sim.endpoint("HV-LONDON-01")
        before = endpoint.stats["command"]
        stack.probe("HV-LONDON-01")
        assert endpoint.stats["command"] - before == 1
    finally:
        stack.stop()
