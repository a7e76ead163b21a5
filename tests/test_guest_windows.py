"""Windows guests through the seam: recorded ``sc query`` outputs and registry values."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hyperv_exporter import enums
from hyperv_exporter.guest import windows
from hyperv_exporter.guest.collector import GuestCollector, TimeProviderProbe, WindowsComponentsProbe, WindowsKvpProbe
from hyperv_exporter.guest.kvp_pool import DEFAULT_KEYS, KeySpec
from hyperv_exporter.guest.windows import FixtureWindowsApi, RegistryValue

FIXTURES = Path(__file__).parent / "fixtures" / "guest" / "windows"
VM_ID = "8e3f2b1a-4c5d-4e6f-9a0b-1c2d3e4f5a6b"


def sc(name: str) -> str:
    return (FIXTURES / f"sc_query_{name}.txt").read_bytes().decode("ascii")


def registry(**overrides: RegistryValue | None) -> dict[tuple[str, str], RegistryValue]:
    """The recorded registry, with ``key|name`` overrides (None deletes a value)."""
    raw = json.loads((FIXTURES / "registry.json").read_text())
    values: dict[tuple[str, str], RegistryValue] = {}
    for key, entries in raw.items():
        if key.startswith("_"):
            continue
        for name, (value, kind) in entries.items():
            values[(key, name)] = (value, kind)
    for spec, value in overrides.items():
        key, name = spec.replace("__", "\\").split("|")
        if value is None:
            values.pop((key, name), None)
        else:
            values[(key, name)] = value
    return values


def service_outputs(**states: str) -> dict[str, str]:
    """sc outputs per vmic* service: every service running unless overridden (fixture name or absent)."""
    outputs = {}
    for name in windows.SERVICES:
        fixture = states.get(name, "running")
        if fixture != "absent":
            outputs[name] = sc(fixture).replace("vmicheartbeat", name)
    return outputs


def scrape(api: FixtureWindowsApi, specs: list[KeySpec] | None = None) -> tuple[CollectorRegistry, str]:
    probes = [
        WindowsComponentsProbe(api),
        WindowsKvpProbe(api, specs or list(DEFAULT_KEYS), 256),
        TimeProviderProbe(api),
    ]
    collector = GuestCollector(probes, timeout=5)
    reg = CollectorRegistry()
    reg.register(collector)
    text = generate_latest(reg).decode()
    return reg, text


# --- sc query parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fixture", "state"),
    [
        ("running", "running"),
        ("running_split_svchost", "running"),
        ("running_de", "running"),
        ("stopped", "stopped"),
        ("start_pending", "start_pending"),
        ("absent", "absent"),
        ("absent_de", "absent"),
    ],
)
def test_parse_sc_query(fixture: str, state: str) -> None:
    assert windows.parse_sc_query(sc(fixture)) == state


def test_sc_query_errors_are_errors() -> None:
    with pytest.raises(windows.ServiceQueryError, match="Win32 error 5"):
        windows.parse_sc_query(sc("access_denied"))
    with pytest.raises(windows.ServiceQueryError, match="unrecognised"):
        windows.parse_sc_query("")


def test_type_line_is_not_taken_for_the_state() -> None:
    # "TYPE : 20  WIN32_SHARE_PROCESS" has the same shape as the state line; only known symbols count.
    text = (
        "SERVICE_NAME: x\r\n        TYPE               : 1  KERNEL_DRIVER\r\n        STATE              : 7  PAUSED\r\n"
    )
    assert windows.parse_sc_query(text) == "paused"


# --- services ------------------------------------------------------------------------------------
def test_services_running_stopped_absent() -> None:
    api = FixtureWindowsApi(service_outputs(vmicguestinterface="stopped", vmicvss="absent"), registry())
    reg, _ = scrape(api)
    running = {s: reg.get_sample_value("hyperv_guest_daemon_running", {"service": s}) for s in enums.SERVICES}
    assert running == {
        enums.SHUTDOWN: 1.0,
        enums.TIME_SYNCHRONIZATION: 1.0,
        enums.KEY_VALUE_PAIR_EXCHANGE: 1.0,
        enums.HEARTBEAT: 1.0,
        enums.VSS: 0.0,
        enums.GUEST_SERVICE_INTERFACE: 0.0,
    }
    state = "hyperv_guest_windows_service_state"
    assert reg.get_sample_value(state, {"service": "vss", "state": "absent"}) == 1.0
    assert reg.get_sample_value(state, {"service": "vss", "state": "running"}) == 0.0
    assert reg.get_sample_value(state, {"service": "guest_service_interface", "state": "stopped"}) == 1.0
    assert reg.get_sample_value("hyperv_guest_hyperv_detected") == 1.0
    assert reg.get_sample_value("hyperv_guest_hyperv_detection_signal", {"signal": "dmi"}) == 1.0


def test_access_denied_fails_components_only(caplog: pytest.LogCaptureFixture) -> None:
    outputs = service_outputs()
    outputs["vmictimesync"] = sc("access_denied")
    with caplog.at_level(logging.ERROR):
        reg, _ = scrape(FixtureWindowsApi(outputs, registry()))
    assert reg.get_sample_value("hyperv_guest_collector_success", {"collector": "components"}) == 0.0
    assert reg.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 1.0
    assert reg.get_sample_value("hyperv_guest_collector_success", {"collector": "time_provider"}) == 1.0


# --- VMICTimeProvider ----------------------------------------------------------------------------
_VMIC = windows.VMIC_PROVIDER_KEY.replace("\\", "__") + "|Enabled"
_TYPE = windows.W32TIME_PARAMETERS.replace("\\", "__") + "|Type"


@pytest.mark.parametrize(
    ("override", "enabled"),
    [((1, windows.REG_DWORD), 1.0), ((0, windows.REG_DWORD), 0.0), (None, 0.0), (("1", windows.REG_SZ), 1.0)],
)
def test_vmic_time_provider(override: RegistryValue | None, enabled: float) -> None:
    api = FixtureWindowsApi(service_outputs(), registry(**{_VMIC: override}))
    assert windows.time_provider(api).vmic_enabled == (None if override is None else bool(enabled))
    reg, _ = scrape(api)
    assert reg.get_sample_value("hyperv_guest_vmic_time_provider_enabled") == enabled


@pytest.mark.parametrize(
    ("value", "label"), [("NT5DS", "NT5DS"), ("nosync", "NoSync"), ("Weird", "other"), (None, "unknown")]
)
def test_w32time_type(value: str | None, label: str) -> None:
    override = None if value is None else (value, windows.REG_SZ)
    api = FixtureWindowsApi(service_outputs(), registry(**{_TYPE: override}))
    reg, _ = scrape(api)
    assert reg.get_sample_value("hyperv_guest_w32time_info", {"sync_type": label}) == 1.0


def test_ntp_servers_from_w32time() -> None:
    api = FixtureWindowsApi({}, registry())
    assert [s.label for s in windows.ntp_servers(api, 8)] == ["time.windows.com", "ntp1.corp.example"]


# --- KVP from the registry -----------------------------------------------------------------------
def test_host_info_from_guest_parameters(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        reg, text = scrape(FixtureWindowsApi(service_outputs(), registry()))
    host = {"host_name": "HV-NODE-07", "physical_host_name": "HV-NODE-07", "vm_name": "web01", "vm_id": VM_ID}
    assert reg.get_sample_value("hyperv_guest_host_info", host) == 1.0
    assert reg.get_sample_value("hyperv_guest_kvp_info", {"pool": "3", "key": "VirtualMachineName", "value": "web01"})
    assert reg.get_sample_value("hyperv_guest_kvp_available") == 1.0
    assert "hunter2" not in text and "hunter2" not in caplog.text
    assert "hyperv_guest_kvp_pool_records{" not in text  # the registry has no record count


def test_braced_upper_case_vm_id_is_normalised() -> None:
    key = windows.KVP_POOL_KEYS[3].replace("\\", "__") + "|VirtualMachineId"
    api = FixtureWindowsApi({}, registry(**{key: ("{8E3F2B1A-4C5D-4E6F-9A0B-1C2D3E4F5A6B}", windows.REG_SZ)}))
    result = windows.registry_kvp(api, DEFAULT_KEYS, 256)
    assert result.host is not None and result.host.vm_id == VM_ID


def test_registry_kvp_other_pools_and_types() -> None:
    api = FixtureWindowsApi({}, registry())
    result = windows.registry_kvp(api, [KeySpec.parse("IntegrationServicesVersion"), KeySpec.parse("0:Missing")], 256)
    items = {p.pool: p.items for p in result.pools}
    assert items[2] == [("IntegrationServicesVersion", "10.0.17763.1")]
    assert items[0] == []
    assert windows.registry_text((["a", "b"], windows.REG_MULTI_SZ)) == "a;b"
    assert windows.registry_text((7, windows.REG_DWORD)) == "7"
    assert windows.registry_text((b"\x00", windows.REG_BINARY)) is None


def test_not_a_hyperv_guest() -> None:
    api = FixtureWindowsApi(service_outputs(), {})
    reg, _ = scrape(api)
    assert reg.get_sample_value("hyperv_guest_hyperv_detected") == 0.0
    assert reg.get_sample_value("hyperv_guest_kvp_available") == 0.0
    assert reg.get_sample_value("hyperv_guest_vmic_time_provider_enabled") == 0.0


def test_real_api_is_windows_only() -> None:
    with pytest.raises(OSError, match="only on Windows"):
        windows.RealWindowsApi().registry_value(windows.VMIC_PROVIDER_KEY, "Enabled")


_WINDOWS_IMPORT = r"""
import json, sys, types
# Import everything that is not the guest agent normally, then pretend to be Windows: no fcntl,
# a winreg stub, sys.platform == "win32" while the agent's modules are imported.
import prometheus_client, hyperv_exporter.web, hyperv_exporter.logutil
sys.modules["fcntl"] = None
sys.modules["winreg"] = types.ModuleType("winreg")
real, sys.platform = sys.platform, "win32"
from hyperv_exporter.guest import cli
from hyperv_exporter.guest.windows import FixtureWindowsApi
sys.platform = real
args = cli.build_parser().parse_args(["--ntp.server", "127.0.0.1:1", "--ntp.samples", "1"])
api = FixtureWindowsApi({"vmicheartbeat": sys.argv[1]}, {})
agent = cli.build_agent(args, platform="win32", api=api)
text = prometheus_client.generate_latest(agent.registry).decode()
agent.close()
print(json.dumps({"collectors": agent.collectors, "heartbeat": 'daemon_running{service="heartbeat"} 1.0' in text}))
"""


def test_agent_imports_and_runs_without_posix_modules() -> None:
    """On Windows there is no fcntl: the agent must import and collect through the seam anyway."""
    done = subprocess.run(
        [sys.executable, "-c", _WINDOWS_IMPORT, sc("running")], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode().splitlines()[-1])
    assert result == {"collectors": ["ntp", "components", "kvp", "time_provider"], "heartbeat": True}
