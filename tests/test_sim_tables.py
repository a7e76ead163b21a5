"""The simulator's tables of what Windows reports agree with the exporter's, and the simulator never imports them.

The two sides are written separately from the cited sources (sim/tables.py, enums.py). A mistake
in one (say, the heartbeat and shutdown GUIDs swapped in the exporter) then shows up here and in
every end-to-end test, instead of being copied into the simulator and agreed with.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hyperv_exporter import enums
from hyperv_exporter.host import report
from hyperv_exporter.sim import tables

SIM = Path(tables.__file__).parent


def test_service_guids_agree() -> None:
    assert {guid: name for name, guid in tables.SERVICE_GUIDS.items()} == enums.SERVICE_GUIDS
    assert tables.SERVICES == enums.SERVICES


@pytest.mark.parametrize(
    ("sim", "exporter"),
    [
        (tables.VM_STATE_NAMES, enums.VM_STATE_NAMES),
        (tables.HEARTBEAT_NAMES, enums.HEARTBEAT_NAMES),
        (tables.IC_STATUS_NAMES, enums.IC_STATUS_NAMES),
        (tables.REPLICATION_STATE_NAMES, enums.REPLICATION_STATE_NAMES),
        (tables.REPLICATION_HEALTH_NAMES, enums.REPLICATION_HEALTH_NAMES),
        (tables.REPLICATION_MODE_NAMES, enums.REPLICATION_MODE_NAMES),
    ],
    ids=["VMState", "VMHeartbeatStatus", "ICOperationalStatus", "ReplicationState", "ReplicationHealth", "Mode"],
)
def test_enum_names_agree(sim: tuple[str, ...], exporter: tuple[str, ...]) -> None:
    assert sim == exporter


def test_running_states_agree() -> None:
    assert {enums.snake(s) for s in tables.GUEST_RUNNING_STATES} == enums.VM_RUNNING_STATES


def test_english_integration_services_state_text_agrees() -> None:
    english = {text.lower(): meaning for meaning, text in tables.IS_STATE_TEXT["en-US"].items()}
    assert english == enums.IS_STATE_TEXT


def test_snapshot_types_cover_the_replica_exclusions() -> None:
    assert {enums.snake(t) for t in tables.SNAPSHOT_TYPES} >= report.REPLICA_SNAPSHOT_TYPES


def test_dotnet_epoch_agrees() -> None:
    assert tables.DOTNET_EPOCH_TICKS == report.DOTNET_EPOCH_TICKS


@pytest.mark.parametrize("module", sorted(p.name for p in SIM.glob("*.py")))
def test_simulator_never_imports_the_exporters_knowledge(module: str) -> None:
    """sim/ may use the exporter's script (it must run the real collect.ps1) but not its tables or parser."""
    tree = ast.parse((SIM / module).read_text(encoding="utf-8"))
    forbidden = {"hyperv_exporter.enums", "hyperv_exporter.host.report", "hyperv_exporter.host.cimxml"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names}
        else:
            continue
        assert not names & forbidden, f"sim/{module} imports {sorted(names & forbidden)}"
