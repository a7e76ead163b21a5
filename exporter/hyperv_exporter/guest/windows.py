"""Windows guests: vmic* integration services, VMICTimeProvider, KVP from the registry.

Every Windows call sits behind :class:`WindowsApi`, a two-method seam: :class:`RealWindowsApi`
(``sc.exe`` and ``winreg``, used only on Windows) and :class:`FixtureWindowsApi` (recorded ``sc
query`` output and registry values, for tests). Everything above the seam is plain Python and
is tested on Linux.

Why ``sc.exe query`` rather than ctypes/advapi32: its output is what administrators paste into
tickets, so fixtures are real captures, and the parser relies only on parts that are not
localised: the numeric state and its upper-case symbol (``4  RUNNING``) and the Win32 error code
1060 (ERROR_SERVICE_DOES_NOT_EXIST). The field labels (``STATE``) are not relied upon.
"""

from __future__ import annotations

import ntpath
import os
import re
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from hyperv_exporter import enums
from hyperv_exporter.guest.kvp_pool import (
    HOST_IDENTITY_KEYS,
    HOST_POOL,
    KeySpec,
    KvpResult,
    PoolRead,
    clean_value,
    host_info_from,
)
from hyperv_exporter.guest.ntp import NtpServer, parse_server

if sys.platform == "win32":
    import winreg

# Service names from Virtualization-Documentation "integration-services.md" (Quick Reference).
SERVICES: Final = {
    "vmicheartbeat": enums.HEARTBEAT,
    "vmickvpexchange": enums.KEY_VALUE_PAIR_EXCHANGE,
    "vmicshutdown": enums.SHUTDOWN,
    "vmictimesync": enums.TIME_SYNCHRONIZATION,
    "vmicvss": enums.VSS,
    "vmicguestinterface": enums.GUEST_SERVICE_INTERFACE,
}
# SERVICE_STATUS.dwCurrentState values (winsvc.h) and the symbols sc.exe prints for them.
SERVICE_STATES: Final = {
    1: "STOPPED",
    2: "START_PENDING",
    3: "STOP_PENDING",
    4: "RUNNING",
    5: "CONTINUE_PENDING",
    6: "PAUSE_PENDING",
    7: "PAUSED",
}
ABSENT: Final = "absent"
STATE_LABELS: Final = (*(s.lower() for s in SERVICE_STATES.values()), ABSENT)
ERROR_SERVICE_DOES_NOT_EXIST: Final = 1060

HKLM_VM: Final = r"SOFTWARE\Microsoft\Virtual Machine"
# KVP pools as registry keys (hyperv-formats §3.1/§3.6); pool 4 has no registry counterpart.
KVP_POOL_KEYS: Final = {
    0: HKLM_VM + r"\External",
    1: HKLM_VM + r"\Guest",
    2: HKLM_VM + r"\Auto",
    3: HKLM_VM + r"\Guest\Parameters",
}
W32TIME: Final = r"SYSTEM\CurrentControlSet\Services\W32Time"
VMIC_PROVIDER_KEY: Final = W32TIME + r"\TimeProviders\VMICTimeProvider"
W32TIME_PARAMETERS: Final = W32TIME + r"\Parameters"
BIOS_KEY: Final = r"HARDWARE\DESCRIPTION\System\BIOS"
W32TIME_TYPES: Final = ("NTP", "NT5DS", "AllSync", "NoSync")

# winreg value types (winnt.h).
REG_SZ: Final = 1
REG_EXPAND_SZ: Final = 2
REG_BINARY: Final = 3
REG_DWORD: Final = 4
REG_MULTI_SZ: Final = 7
REG_QWORD: Final = 11

RegistryValue = tuple[object, int]  # what winreg.QueryValueEx returns: (value, type)


class WindowsApi(Protocol):
    """The only Windows-specific calls the agent makes."""

    def sc_query(self, service: str) -> str:
        """The text ``sc.exe query <service>`` prints (stdout and stderr together)."""
        ...

    def registry_value(self, key: str, name: str) -> RegistryValue | None:
        """``HKLM\\<key>`` value ``name`` as (value, type); None if the key or the value is absent."""
        ...


class ServiceQueryError(RuntimeError):
    """sc.exe answered something other than a status or "does not exist" (e.g. access denied)."""


_STATE_LINE = re.compile(r":\s*(\d)\s+([A-Z_]+)\s*$")
_SC_ERROR = re.compile(r"^\[SC\].*?(\d+):?\s*$")


def parse_sc_query(text: str) -> str:
    """``sc query`` output -> ``running``/``stopped``/... or ``absent``; ServiceQueryError otherwise."""
    for line in text.splitlines():
        match = _STATE_LINE.search(line)
        if match and SERVICE_STATES.get(int(match.group(1))) == match.group(2):
            return match.group(2).lower()
    for line in text.splitlines():
        error = _SC_ERROR.match(line.strip())
        if error:
            code = int(error.group(1))
            if code == ERROR_SERVICE_DOES_NOT_EXIST:
                return ABSENT
            raise ServiceQueryError(f"sc query failed with Win32 error {code}")
    raise ServiceQueryError("unrecognised sc query output")


class RealWindowsApi:
    """``sc.exe`` + ``winreg``; only constructed on Windows."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.sc = ntpath.join(os.environ.get("SYSTEMROOT", r"C:\Windows"), "System32", "sc.exe")

    def sc_query(self, service: str) -> str:
        done = subprocess.run(
            [self.sc, "query", service],
            capture_output=True,
            timeout=self.timeout,
            check=False,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        # The parts the parser reads are ASCII, so the OEM code page does not matter.
        return (done.stdout + done.stderr).decode("ascii", "replace")

    def registry_value(self, key: str, name: str) -> RegistryValue | None:
        if sys.platform == "win32":
            try:
                # KEY_WOW64_64KEY: a 32-bit Python would otherwise be redirected to WOW6432Node.
                access = winreg.KEY_READ | winreg.KEY_WOW64_64KEY
                with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key, 0, access) as handle:
                    value, kind = winreg.QueryValueEx(handle, name)
            except FileNotFoundError:
                return None
            return value, kind
        raise OSError("the Windows registry exists only on Windows")


@dataclass
class FixtureWindowsApi:
    """Recorded answers: ``sc query`` texts by service name and registry values by (key, name).

    A service missing from ``sc_outputs`` answers like sc.exe does for an unknown service.
    Registry keys are compared case-insensitively, as Windows does.
    """

    sc_outputs: Mapping[str, str]
    registry: Mapping[tuple[str, str], RegistryValue]

    def sc_query(self, service: str) -> str:
        return self.sc_outputs.get(
            service,
            "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\n"
            "The specified service does not exist as an installed service.\r\n\r\n",
        )

    def registry_value(self, key: str, name: str) -> RegistryValue | None:
        for (k, n), value in self.registry.items():
            if k.lower() == key.lower() and n.lower() == name.lower():
                return value
        return None


# --- mapping -------------------------------------------------------------------------------------
def service_states(api: WindowsApi) -> dict[str, str]:
    """``service`` label -> state label (``running``, ``stopped``, ..., ``absent``)."""
    return {label: parse_sc_query(api.sc_query(name)) for name, label in SERVICES.items()}


def registry_text(value: RegistryValue | None) -> str | None:
    """A registry value as text (REG_SZ as is, DWORDs in decimal as the KVP daemon does, MULTI_SZ joined)."""
    if value is None:
        return None
    data, kind = value
    if kind in (REG_SZ, REG_EXPAND_SZ) and isinstance(data, str):
        return data
    if kind in (REG_DWORD, REG_QWORD) and isinstance(data, int):
        return str(data)
    if kind == REG_MULTI_SZ and isinstance(data, list):
        return ";".join(str(x) for x in data)
    return None


def registry_flag(value: RegistryValue | None) -> bool | None:
    """A DWORD flag (``Enabled``): True/False, None when absent or not a number."""
    text = registry_text(value)
    if text is None:
        return None
    try:
        return int(text.strip(), 0) != 0
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TimeProvider:
    vmic_enabled: bool | None  # None: VMICTimeProvider is not installed (no key)
    sync_type: str  # W32Time Parameters\Type: NTP, NT5DS, AllSync, NoSync, other or unknown


def time_provider(api: WindowsApi) -> TimeProvider:
    enabled = registry_flag(api.registry_value(VMIC_PROVIDER_KEY, "Enabled"))
    sync_type = (registry_text(api.registry_value(W32TIME_PARAMETERS, "Type")) or "").strip()
    canonical = {t.lower(): t for t in W32TIME_TYPES}
    label = canonical.get(sync_type.lower(), "other" if sync_type else "unknown")
    return TimeProvider(enabled, label)


def ntp_servers(api: WindowsApi, limit: int) -> list[NtpServer]:
    """W32Time's ``NtpServer``: ``time.windows.com,0x8 ntp2,0x9`` (the ``,0x..`` suffix holds flags)."""
    text = registry_text(api.registry_value(W32TIME_PARAMETERS, "NtpServer")) or ""
    servers: list[NtpServer] = []
    for word in text.split():
        host = word.split(",", 1)[0]
        try:
            servers.append(parse_server(host))
        except ValueError:
            continue
    return list(dict.fromkeys(servers))[:limit]


def registry_kvp(api: WindowsApi, specs: Collection[KeySpec], max_value_length: int) -> KvpResult:
    """KVP from the registry: the allowlisted names only are queried (nothing is enumerated)."""
    pools: list[PoolRead] = []
    for pool, key in KVP_POOL_KEYS.items():
        items: dict[str, str] = {}
        for spec in specs:
            if spec.pool is not None and spec.pool != pool:
                continue
            text = registry_text(api.registry_value(key, spec.key))
            if text is not None:
                items[clean_value(spec.key, max_value_length)] = clean_value(text, max_value_length)
        pools.append(PoolRead(pool, None, list(items.items())))
    host_items: dict[str, str] = {}
    for name in HOST_IDENTITY_KEYS:
        text = registry_text(api.registry_value(KVP_POOL_KEYS[HOST_POOL], name))
        if text is not None:
            host_items[name] = clean_value(text, max_value_length)
    host = host_info_from(host_items)
    return KvpResult(host is not None or any(p.items for p in pools), pools, host)


@dataclass(frozen=True, slots=True)
class WindowsDetection:
    """``dmi``: the BIOS strings Hyper-V's firmware sets (as on Linux, from the registry copy);
    ``kvp_parameters``: the host has written its VM identity into Guest\\Parameters."""

    dmi: bool
    kvp_parameters: bool

    @property
    def hyperv(self) -> bool:
        return self.dmi or self.kvp_parameters

    def signals(self) -> dict[str, bool]:
        return {"dmi": self.dmi, "kvp_parameters": self.kvp_parameters}


def detect(api: WindowsApi) -> WindowsDetection:
    vendor = registry_text(api.registry_value(BIOS_KEY, "SystemManufacturer")) or ""
    product = registry_text(api.registry_value(BIOS_KEY, "SystemProductName")) or ""
    vm_id = registry_text(api.registry_value(KVP_POOL_KEYS[HOST_POOL], "VirtualMachineId"))
    return WindowsDetection(
        dmi=vendor.strip() == "Microsoft Corporation" and product.strip() == "Virtual Machine",
        kvp_parameters=bool(vm_id and vm_id.strip()),
    )
