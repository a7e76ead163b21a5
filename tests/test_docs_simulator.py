"""docs/simulator.md documents every key of the fleet file, every output and listener fault."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from hyperv_exporter.sim import cli as sim_cli
from hyperv_exporter.sim import fleet, host, wsman_http
from test_docs_configuration import documented, flags, mapping_keys

SIMULATOR_MD = REPO / "docs" / "simulator.md"
FLEET_PY = REPO / "exporter" / "hyperv_exporter" / "sim" / "fleet.py"


def fleet_keys() -> set[str]:
    keys = mapping_keys(FLEET_PY) | set(fleet.VM_KEYS) | set(fleet.SERVICE_KEYS) | set(fleet.KVP_ARRAYS)
    keys |= set(fleet.HOST_KEYS)
    assert {"hosts", "ComputerName", "Simulator", "Port", "Snapshots", "AgeSeconds"} <= keys, "the extraction broke"
    return keys


@pytest.mark.parametrize("key", sorted(fleet_keys()))
def test_every_fleet_key_is_documented(key: str) -> None:
    assert documented(SIMULATOR_MD.read_text(encoding="utf-8"), key), f"docs/simulator.md lacks `{key}`"


@pytest.mark.parametrize("fault", sorted(host.OUTPUT_FAULTS) + sorted(wsman_http.FAULT_KINDS))
def test_every_fault_is_documented(fault: str) -> None:
    assert f"`{fault}`" in SIMULATOR_MD.read_text(encoding="utf-8"), f"docs/simulator.md lacks `{fault}`"


def test_snapshot_types_are_listed() -> None:
    text = SIMULATOR_MD.read_text(encoding="utf-8")
    for snapshot_type in fleet.SNAPSHOT_TYPES:
        assert f"`{snapshot_type}`" in text


def test_the_example_fleet_in_the_doc_loads() -> None:
    text = SIMULATOR_MD.read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(hosts:.*?)```", text, flags=re.S)
    assert example, "docs/simulator.md has a fleet example"
    loaded = fleet.parse_fleet(example.group(1).replace("PasswordEnv: LAB_PASSWORD, ", ""), "example.yml")
    (lab,) = loaded.hosts
    assert lab.ui_culture == "de-DE" and lab.port == 15985 and lab.clock_offset == 0.25
    assert lab.vm("web01").services["vss"] == {"PrimaryOperationalStatus": "NoContact"}


@pytest.mark.parametrize("flag", flags(sim_cli.build_parser()))
def test_every_hyperv_sim_flag_is_documented(flag: str) -> None:
    assert documented(SIMULATOR_MD.read_text(encoding="utf-8"), flag), f"docs/simulator.md lacks `{flag}`"
