"""The simulated fleet: Hyper-V hosts and VMs described in Hyper-V's own terms (a YAML fleet file).

A fleet file lists hosts with the properties Windows reports (ComputerName, OSCaption, OSVersion,
UICulture, the failover Cluster) plus a ``Simulator`` block for the listener (port, credentials, latency), and their VMs
with Get-VM property and enum names (``State: Running``, ``Heartbeat: OkApplicationsUnknown``),
integration services as Get-VMIntegrationService records, KVP items as the CIM-XML strings Hyper-V
stores, and checkpoints as Get-VMSnapshot records. docs/simulator.md documents every key;
``sim/demo_fleet.yml`` is the built-in example.

:meth:`SimHost.document` renders what ``collect.ps1`` would print on such a host, from the same
rules a real host follows (an Off VM has no heartbeat and no KVP component, a Windows Server 2012
host has no Guest Service Interface, service names follow the host's UI language, a 2016+ host
reports IntegrationServicesState "" and IntegrationServicesVersion 0.0, a VM that vanished
mid-probe or has no integration components loses its own data with a VMProblems entry, a VM with
``LiveMigratesTo`` moves to that cluster node after each run of the node that owns it). Tests
change a running fleet through :meth:`SimVM.set` and :meth:`SimHost.set`.

What Windows reports comes from the simulator's own tables (:mod:`hyperv_exporter.sim.tables`),
never from the exporter's: the tests compare the two.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Collection, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from hyperv_exporter.sim import tables
from hyperv_exporter.sim.tables import DOTNET_EPOCH_TICKS
from hyperv_exporter.yamlutil import Node, document, read_text

KVP_ARRAYS = ("GuestIntrinsicExchangeItems", "GuestExchangeItems", "HostExchangeItems")
SNAPSHOT_TYPES = tables.SNAPSHOT_TYPES
SERVICE_BY_GUID = {guid: name for name, guid in tables.SERVICE_GUIDS.items()}
# English descriptions of integration-service statuses; Windows localizes them, but the
# exporter never reads them (it uses the enum names), so the simulator keeps English.
STATUS_DESCRIPTIONS = {
    "Ok": "OK",
    "Degraded": "Degraded",
    "Error": "Error",
    "NonRecoverableError": "Non-Recoverable Error",
    "NoContact": "No Contact",
    "LostCommunication": "Lost Communication",
    "ProtocolMismatch": "Protocol Mismatch",
    "ApplicationCritical": "Application Critical",
    "CommunicationTimedOut": "Communication Timed Out",
    "CommunicationFailed": "Communication Failed",
    "Disabled": "Disabled",
}
# Get-VM Heartbeat -> the heartbeat integration service's (primary, secondary) operational status:
# the secondary half is the guest's application health (Msvm_HeartbeatComponent OperationalStatus[1]).
HEARTBEAT_SERVICE_STATUS: dict[str, tuple[str | None, str | None]] = {
    "OkApplicationsHealthy": ("Ok", "Ok"),
    "OkApplicationsUnknown": ("Ok", None),
    "OkApplicationsCritical": ("Ok", "ApplicationCritical"),
    "NoContact": ("NoContact", None),
    "LostCommunication": ("LostCommunication", None),
    "Error": ("Error", None),
    "Disabled": ("Ok", None),
    "Paused": ("Ok", None),
    "Unknown": (None, None),
}
VM_KEYS = (
    "Name", "Id", "State", "Status", "Heartbeat", "UptimeSeconds", "IntegrationServicesVersion",
    "IntegrationServicesState", "Generation", "Version", "IsClustered", "ProcessorCount", "CPUUsage",
    "MemoryAssigned", "MemoryDemand", "MemoryStartup", "DynamicMemoryEnabled", "ReplicationState",
    "ReplicationHealth", "ReplicationMode", "LastReplicationTime", "LastReplicationAgeSeconds",
    "IntegrationServices", "Kvp", "Snapshots", "IntegrationComponents", "VanishesMidProbe", "LiveMigratesTo",
)  # fmt: skip
HOST_KEYS = (
    "ComputerName", "OSCaption", "OSVersion", "UICulture", "ClockOffsetSeconds", "Cluster",
    "IntegrationServiceNames", "GuestServiceInterface", "Simulator", "VMs",
)  # fmt: skip
SERVICE_KEYS = (
    "Id", "Name", "Enabled", "PrimaryOperationalStatus", "PrimaryStatusDescription",
    "SecondaryOperationalStatus", "SecondaryStatusDescription",
)  # fmt: skip


def kvp_item(name: str, data: str, source: int = 2) -> str:
    """One Msvm_KvpExchangeDataItem as the single-line CIM-XML Hyper-V stores (reference §2.2)."""
    return (
        '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">'
        '<PROPERTY NAME="Caption" PROPAGATED="true" TYPE="string"></PROPERTY>'
        f'<PROPERTY NAME="Data" TYPE="string"><VALUE>{escape(data)}</VALUE></PROPERTY>'
        '<PROPERTY NAME="Description" PROPAGATED="true" TYPE="string"></PROPERTY>'
        '<PROPERTY NAME="ElementName" PROPAGATED="true" TYPE="string"></PROPERTY>'
        f'<PROPERTY NAME="Name" TYPE="string"><VALUE>{escape(name)}</VALUE></PROPERTY>'
        f'<PROPERTY NAME="Source" TYPE="uint16"><VALUE>{source}</VALUE></PROPERTY>'
        "</INSTANCE>"
    )


def service_for_id(ic_id: str) -> str | None:
    """``Microsoft:<VM>\\84EAAE65-...`` -> ``heartbeat`` from the simulator's own GUID table."""
    return SERVICE_BY_GUID.get(ic_id.rsplit("\\", 1)[-1].strip().upper())


def to_ticks(unix: float) -> int:
    return round(unix * 1e7) + DOTNET_EPOCH_TICKS


def _enum(node: Node, names: Iterable[str]) -> str:
    return node.string(names)


def _timestamp(node: Node) -> float:
    """A YAML timestamp or ISO-8601 string; naive times are UTC."""
    value = node.value
    parsed: dt.datetime | None = value if isinstance(value, dt.datetime) else None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None:
        node.fail("expected an ISO-8601 time like 2025-06-01T08:00:00Z")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


@dataclass
class SimVM:
    """One VM; ``props`` holds Get-VM properties by their Hyper-V names."""

    props: dict[str, Any]
    services: dict[str, dict[str, Any]]  # canonical service -> Get-VMIntegrationService record overrides
    kvp: dict[str, list[Any]]  # KVP array name -> raw items (CIM-XML strings; tests may put anything)
    snapshots: list[dict[str, Any]]
    started: float  # wall clock the simulated VM started (for Uptime)
    host: SimHost | None = None

    @property
    def name(self) -> str:
        return str(self.props["Name"])

    @property
    def id(self) -> str:
        return str(self.props["Id"])

    def set(self, **props: Any) -> None:
        """Change Get-VM properties while the simulator runs (e.g. ``Heartbeat="LostCommunication"``)."""
        lock = self.host.lock if self.host else threading.Lock()
        with lock:
            if props.get("State") in tables.GUEST_RUNNING_STATES and not self.running():
                self.started = time.time()
            self.props.update(props)

    def set_service(self, service: str, **record: Any) -> None:
        """Change an integration service (``service`` is the canonical name, e.g. ``vss``)."""
        lock = self.host.lock if self.host else threading.Lock()
        with lock:
            self.services.setdefault(service, {}).update(record)

    def running(self) -> bool:
        return self.props.get("State") in tables.GUEST_RUNNING_STATES

    def has_integration_components(self) -> bool:
        return bool(self.props.get("IntegrationComponents", True))

    def vanishes(self) -> bool:
        """Listed by Get-VM, gone by the time the next cmdlet asks for it (deleted or migrated away)."""
        return bool(self.props.get("VanishesMidProbe", False))


@dataclass
class SimHost:
    computer_name: str
    os_caption: str
    os_version: str
    ui_culture: str
    vms: list[SimVM]
    clock_offset: float = 0.0
    port: int = 0
    username: str = "monitor"
    password: str | None = None
    latency: float = 0.0
    run_seconds: float = 0.05
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Output faults for resilience tests (see sim.host.OUTPUT_FAULTS); None = answer normally.
    output_fault: str | None = None
    # WinRS MaxMemoryPerShellMB: a run whose modelled peak (sim.scale.MODEL) exceeds it fails with the
    # OutOfMemoryException a real host gives. None: not enforced.
    max_memory_per_shell_mb: int | None = None
    last_peak_memory_bytes: int = 0  # the model's estimate for the latest run (when enforced)
    cluster: str | None = None  # failover cluster name (MSCluster_Cluster Name); None: not clustered
    service_names: dict[str, str] = field(default_factory=dict)  # IntegrationServiceNames: per-host overrides
    guest_service_interface: bool | None = None  # None: from the Windows version (2012 R2 and later)
    fleet: SimFleet | None = field(default=None, repr=False)

    def vm(self, name: str) -> SimVM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(f"no VM {name!r} on simulated host {self.computer_name}")

    def set(self, **attrs: Any) -> None:
        with self.lock:
            for key, value in attrs.items():
                if not hasattr(self, key):
                    raise AttributeError(key)
                setattr(self, key, value)

    def has_guest_service_interface(self) -> bool:
        # Guest Service Interface arrived with Windows Server 2012 R2 (6.3); 2012 (6.2) lists five services.
        if self.guest_service_interface is not None:
            return self.guest_service_interface
        return self.generation() != "2012"

    def generation(self) -> str:
        return tables.host_generation(self.os_version)

    def migrate_after_run(self) -> None:
        """Live-migrate every VM with ``LiveMigratesTo`` to that node (the next probe sees it there).

        The move is atomic between two runs: at any moment exactly one node lists the VM, as after
        a completed live migration (the source stops listing it, the destination's Get-VM shows it
        Running, uptime continuing). The VM's ``LiveMigratesTo`` then names this node, so it keeps
        moving back and forth.
        """
        if self.fleet is None:
            return
        moving = [vm for vm in self.vms if vm.props.get("LiveMigratesTo")]
        for vm in moving:
            target = self.fleet.host(str(vm.props["LiveMigratesTo"]))
            first, second = sorted((self, target), key=lambda h: h.computer_name)
            with first.lock, second.lock:
                if vm not in self.vms:
                    continue
                self.vms.remove(vm)
                vm.props["LiveMigratesTo"] = self.computer_name
                vm.host = target
                target.vms.append(vm)

    # -- rendering ---------------------------------------------------------------------------------
    def _service_records(self, vm: SimVM) -> list[dict[str, Any]]:
        names = {**tables.SERVICE_DISPLAY_NAMES.get(self.ui_culture, tables.SERVICE_DISPLAY_NAMES["en-US"])}
        names.update(self.service_names)
        running = vm.running()
        records = []
        for service in tables.SERVICES:
            if service == tables.GUEST_SERVICE_INTERFACE and not self.has_guest_service_interface():
                continue
            override = vm.services.get(service, {})
            enabled = bool(override.get("Enabled", service not in tables.DEFAULT_OFF_SERVICES))
            # A VM that is not running reports no operational status for its services; the heartbeat
            # service's status follows Get-VM's Heartbeat unless the fleet overrides it.
            default_primary, default_secondary = ("Ok" if running else None), None
            if running and service == tables.HEARTBEAT:
                default_primary, default_secondary = HEARTBEAT_SERVICE_STATUS.get(
                    vm.props.get("Heartbeat") or "OkApplicationsHealthy", ("Ok", "Ok")
                )
            primary = override.get("PrimaryOperationalStatus", default_primary)
            secondary = override.get("SecondaryOperationalStatus", default_secondary)
            records.append(
                {
                    "Id": override.get("Id", f"Microsoft:{vm.id.upper()}\\{tables.SERVICE_GUIDS[service]}"),
                    "Name": override.get("Name", names[service]),
                    "Enabled": enabled,
                    "PrimaryOperationalStatus": primary,
                    "PrimaryStatusDescription": override.get(
                        "PrimaryStatusDescription", STATUS_DESCRIPTIONS.get(primary) if primary else None
                    ),
                    "SecondaryOperationalStatus": secondary,
                    "SecondaryStatusDescription": override.get(
                        "SecondaryStatusDescription", STATUS_DESCRIPTIONS.get(secondary) if secondary else None
                    ),
                }
            )
        return records

    def _integration_services_fields(self, vm: SimVM) -> tuple[str | None, str]:
        """Get-VM (IntegrationServicesVersion, IntegrationServicesState) as this host generation reports them."""
        p = vm.props
        has_ics = vm.has_integration_components()
        version = p.get("IntegrationServicesVersion") if has_ics else None
        if self.generation() == "2016+":
            # The module hard-codes ICStatus.None and Version 0.0 (reference: real-windows-behaviour.md).
            return (None if version is None else tables.IS_VERSION_2016), ""
        meaning = p.get("IntegrationServicesState", "Up to date" if vm.running() else "")
        if version is None or not meaning:  # nothing installed in the guest: nothing to compare
            return version, ""
        key = "up_to_date" if meaning == "Up to date" else "update_required"
        texts = tables.IS_STATE_TEXT.get(self.ui_culture, tables.IS_STATE_TEXT["en-US"])
        return version, texts[key]

    def _vm_problems(self, vm: SimVM, sections: AbstractSet[str]) -> list[dict[str, Any]]:
        """collect.ps1's VMProblems entries for this VM (it vanished, or has no integration components)."""
        failed: list[tuple[str, str]] = []
        if vm.vanishes():
            error = tables.VANISHED_VM_ERROR.format(name=vm.name)
            failed = [(s, error) for s in ("integration_services", "checkpoints") if s in sections]
            if "replication" in sections and vm.props.get("ReplicationMode", "None") != "None":
                failed.append(("replication", error))
        elif not vm.has_integration_components() and "integration_services" in sections:
            failed = [
                (
                    "integration_services",
                    tables.NO_INTEGRATION_COMPONENTS_ERROR.format(host=self.computer_name, name=vm.name),
                )
            ]
        return [{"Section": s, "Name": vm.name, "Id": vm.id, "Error": e} for s, e in sorted(failed)]

    def _vm_record(self, vm: SimVM, sections: AbstractSet[str], now: float, lost: AbstractSet[str]) -> dict[str, Any]:
        """One row of collect.ps1's VMs; ``lost`` are the sections with a VMProblems entry for this VM."""
        p = vm.props
        running = vm.running()
        state = p.get("State", "Off")
        ic_version, ic_state = self._integration_services_fields(vm)
        # Without integration components the heartbeat service never hears from the guest.
        default_heartbeat = "OkApplicationsHealthy" if vm.has_integration_components() else "NoContact"
        record: dict[str, Any] = {
            "Name": vm.name,
            "Id": vm.id,
            "State": state,
            "Status": p.get("Status", tables.STATUS_NORMAL),
            "Heartbeat": p.get("Heartbeat", default_heartbeat) if running else None,
            "UptimeSeconds": round(max(0.0, now - vm.started), 7) if running else 0,
            "IntegrationServicesVersion": ic_version,
            "IntegrationServicesState": ic_state,
            "Generation": p.get("Generation", 2),
            "Version": p.get("Version", "9.0"),
            "IsClustered": bool(p.get("IsClustered", False)),
        }
        if "integration_services" in sections:
            record["IntegrationServices"] = None if "integration_services" in lost else self._service_records(vm)
        if "kvp" in sections:
            # Msvm_KvpExchangeComponent only exists while the VM runs (and not for a VM that vanished).
            present = running and not vm.vanishes()
            record["Kvp"] = {name: list(vm.kvp.get(name, [])) for name in KVP_ARRAYS} if present else None
        if "resources" in sections:
            record["Resources"] = {
                "ProcessorCount": p.get("ProcessorCount", 2),
                "CPUUsage": p.get("CPUUsage", 1 if running else 0),
                "MemoryAssigned": p.get("MemoryAssigned", 4 * 1024**3) if running else 0,
                "MemoryDemand": p.get("MemoryDemand", 2 * 1024**3) if running else 0,
                "MemoryStartup": p.get("MemoryStartup", 4 * 1024**3),
                "DynamicMemoryEnabled": bool(p.get("DynamicMemoryEnabled", False)),
            }
        if "replication" in sections and "replication" in lost:
            record["Replication"] = None
        elif "replication" in sections:
            # As Get-VMReplication reports it (collect.ps1 no longer reads Get-VM's Replication* properties).
            mode = p.get("ReplicationMode", "None")
            last = p.get("LastReplicationTime")
            if last is None and p.get("LastReplicationAgeSeconds") is not None:
                last = now - float(p["LastReplicationAgeSeconds"])
            record["Replication"] = {
                "State": p.get("ReplicationState", "Disabled"),
                "Health": p.get("ReplicationHealth", "NotApplicable"),
                "Mode": mode,
                "LastReplicationTimeTicks": to_ticks(float(last)) if last is not None and mode != "None" else None,
            }
        if "checkpoints" in sections and "checkpoints" in lost:
            record["Checkpoints"] = None
        elif "checkpoints" in sections:
            record["Checkpoints"] = [
                {
                    "SnapshotType": s.get("SnapshotType", "Standard"),
                    "CreationTimeTicks": to_ticks(
                        s["CreationTime"] if "CreationTime" in s else now - s.get("AgeSeconds", 0)
                    ),
                }
                for s in vm.snapshots
            ]
        return record

    def document(self, sections: Iterable[str], started: float) -> dict[str, Any]:
        """What collect.ps1 builds on this host for ``-Collectors <sections>``; ClockEndTicks is added
        by the caller after serialisation, as the script does."""
        wanted = set(sections)
        with self.lock:
            now = started
            vms = self.vms
            doc_sections: dict[str, Any] = {
                "host": {"Seconds": 0.012, "Error": None},
                "vm": {"Seconds": 0.3, "Error": None},
            }
            for name in ("integration_services", "kvp", "replication", "checkpoints"):
                if name in wanted:
                    doc_sections[name] = {"Seconds": round(0.0004 * len(vms) + 0.02, 4), "Error": None}
            problems = [entry for vm in vms for entry in self._vm_problems(vm, wanted)]
            rows = []
            for vm in vms:
                lost = {e["Section"] for e in problems if e["Id"] == vm.id}
                rows.append(self._vm_record(vm, wanted, now, lost))
            return {
                "SchemaVersion": 1,
                "Host": {
                    "ComputerName": self.computer_name,
                    "OSCaption": self.os_caption,
                    "OSVersion": self.os_version,
                    "UICulture": self.ui_culture,
                    "Cluster": self.cluster,
                    "ClusterError": None,
                },
                "VMs": rows,
                "Sections": doc_sections,
                # collect.ps1 prints the problems in section order; the simulator groups them by VM.
                "VMProblems": problems,
                "ClockStartTicks": to_ticks(started + self.clock_offset),
            }


@dataclass
class SimFleet:
    hosts: list[SimHost]
    source: str = "<built-in>"

    def host(self, name: str) -> SimHost:
        for host in self.hosts:
            if host.computer_name.lower() == name.lower():
                return host
        raise KeyError(f"no simulated host {name!r}")


# -- loading -----------------------------------------------------------------------------------------
def _services(node: Node) -> dict[str, dict[str, Any]]:
    """Either a mapping canonical-service -> overrides, or a list of full Get-VMIntegrationService records."""
    result: dict[str, dict[str, Any]] = {}
    if isinstance(node.value, list):
        for item in node.items():
            keys = item.mapping(SERVICE_KEYS, required=["Id"])
            service = service_for_id(keys["Id"].string())
            if service is None:
                keys["Id"].fail("not the Id of a known integration service (Microsoft:<VM GUID>\\<service GUID>)")
            result[service] = _service_record(keys)
        return result
    for name, item in node.entries():
        if name not in tables.SERVICES:
            item.fail(f"unknown integration service (one of {', '.join(tables.SERVICES)})")
        result[name] = _service_record(item.mapping(SERVICE_KEYS))
    return result


def _service_record(keys: dict[str, Node]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in keys.items():
        if key == "Enabled":
            record[key] = value.boolean()
        elif key in ("PrimaryOperationalStatus", "SecondaryOperationalStatus"):
            record[key] = None if value.value is None else _enum(value, tables.IC_STATUS_NAMES)
        else:
            record[key] = None if value.value is None else value.string()
    return record


def _kvp(node: Node) -> dict[str, list[Any]]:
    keys = node.mapping(KVP_ARRAYS)
    result: dict[str, list[Any]] = {}
    for name, value in keys.items():
        source = 0 if name == "HostExchangeItems" else (1 if name == "GuestExchangeItems" else 2)
        if isinstance(value.value, dict):  # shorthand: {Name: Data}
            result[name] = [kvp_item(k, v.string(), source) for k, v in value.entries()]
        else:
            result[name] = [item.string() for item in value.items()]  # raw CIM-XML strings
    return result


def _vm(node: Node, now: float) -> SimVM:
    keys = node.mapping(VM_KEYS, required=["Name", "Id", "State"])
    props: dict[str, Any] = {}
    enum_keys = {
        "State": tables.VM_STATE_NAMES,
        "Heartbeat": tables.HEARTBEAT_NAMES,
        "ReplicationState": tables.REPLICATION_STATE_NAMES,
        "ReplicationHealth": tables.REPLICATION_HEALTH_NAMES,
        "ReplicationMode": tables.REPLICATION_MODE_NAMES,
    }
    for key, value in keys.items():
        if key in ("IntegrationServices", "Kvp", "Snapshots"):
            continue
        if key in enum_keys:
            props[key] = None if value.value is None else _enum(value, enum_keys[key])
        elif key in ("Generation", "ProcessorCount", "CPUUsage", "MemoryAssigned", "MemoryDemand", "MemoryStartup"):
            props[key] = value.integer(minimum=0)
        elif key in ("UptimeSeconds", "LastReplicationAgeSeconds"):
            props[key] = value.number(minimum=0)
        elif key in ("IsClustered", "DynamicMemoryEnabled", "IntegrationComponents", "VanishesMidProbe"):
            props[key] = value.boolean()
        elif key == "IntegrationServicesVersion":
            props[key] = None if value.value is None else value.string()  # null: no integration components
        elif key == "LastReplicationTime":
            props[key] = _timestamp(value)
        elif key == "IntegrationServicesState":
            # The meaning, in English; the host renders it in its own language and generation.
            props[key] = value.string(("Up to date", "Update required", ""))
        else:
            props[key] = value.string()
    snapshots = []
    for item in keys["Snapshots"].items() if "Snapshots" in keys else []:
        s = item.mapping(["Name", "SnapshotType", "CreationTime", "AgeSeconds"])
        snapshot: dict[str, Any] = {
            "SnapshotType": _enum(s["SnapshotType"], SNAPSHOT_TYPES) if "SnapshotType" in s else "Standard"
        }
        if "CreationTime" in s:
            snapshot["CreationTime"] = _timestamp(s["CreationTime"])
        elif "AgeSeconds" in s:
            snapshot["AgeSeconds"] = s["AgeSeconds"].number(minimum=0)  # relative to the time of each answer
        else:
            item.fail("a snapshot needs CreationTime or AgeSeconds")
        snapshots.append(snapshot)
    uptime = float(props.get("UptimeSeconds", 3600.0))
    return SimVM(
        props=props,
        services=_services(keys["IntegrationServices"]) if "IntegrationServices" in keys else {},
        kvp=_kvp(keys["Kvp"]) if "Kvp" in keys else {},
        snapshots=snapshots,
        started=now - uptime,
    )


def _password(keys: dict[str, Node], base: Path) -> str | None:
    if "PasswordFile" in keys:
        path = Path(keys["PasswordFile"].string())
        try:
            return (path if path.is_absolute() else base / path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            keys["PasswordFile"].fail(f"cannot read: {exc.strerror}")
    if "PasswordEnv" in keys:
        value = os.environ.get(keys["PasswordEnv"].string())
        if not value:
            keys["PasswordEnv"].fail("environment variable is not set")
        return value
    return None


def _host(node: Node, base: Path, now: float) -> SimHost:
    keys = node.mapping(HOST_KEYS, required=["ComputerName"])
    sim = keys["Simulator"].mapping(
        ["Port", "Username", "PasswordFile", "PasswordEnv", "LatencySeconds", "RunSeconds", "MaxMemoryPerShellMB"]
    ) if "Simulator" in keys else {}  # fmt: skip
    vms = [_vm(item, now) for item in keys["VMs"].items()] if "VMs" in keys else []
    ids = [vm.id.lower() for vm in vms]
    if len(set(ids)) != len(ids):
        keys["VMs"].fail("VM Ids must be unique on a host")
    culture = keys["UICulture"].string() if "UICulture" in keys else "en-US"
    if culture not in tables.SERVICE_DISPLAY_NAMES:
        keys["UICulture"].fail(f"simulated cultures: {', '.join(tables.SERVICE_DISPLAY_NAMES)}")
    service_names: dict[str, str] = {}
    for name, item in keys["IntegrationServiceNames"].entries() if "IntegrationServiceNames" in keys else []:
        if name not in tables.SERVICES:
            item.fail(f"unknown integration service (one of {', '.join(tables.SERVICES)})")
        service_names[name] = item.string()
    host = SimHost(
        computer_name=keys["ComputerName"].string(),
        os_caption=keys["OSCaption"].string() if "OSCaption" in keys else "Microsoft Windows Server 2022 Datacenter",
        os_version=keys["OSVersion"].string() if "OSVersion" in keys else "10.0.20348",
        ui_culture=culture,
        vms=vms,
        clock_offset=keys["ClockOffsetSeconds"].number() if "ClockOffsetSeconds" in keys else 0.0,
        port=sim["Port"].integer(0, 65535) if "Port" in sim else 0,
        username=sim["Username"].string() if "Username" in sim else "monitor",
        password=_password(sim, base),
        latency=sim["LatencySeconds"].number(minimum=0) if "LatencySeconds" in sim else 0.0,
        run_seconds=sim["RunSeconds"].number(minimum=0) if "RunSeconds" in sim else 0.05,
        max_memory_per_shell_mb=sim["MaxMemoryPerShellMB"].integer(1) if "MaxMemoryPerShellMB" in sim else None,
        cluster=keys["Cluster"].string() if "Cluster" in keys else None,
        service_names=service_names,
        guest_service_interface=keys["GuestServiceInterface"].boolean() if "GuestServiceInterface" in keys else None,
    )
    for vm in vms:
        vm.host = host
    return host


def parse_fleet(text: str, filename: str, base: Path | None = None) -> SimFleet:
    now = time.time()
    root = document(text, filename)
    top = root.mapping(["hosts"], required=["hosts"])
    hosts = [_host(item, base or Path(filename).parent, now) for item in top["hosts"].items()]
    names = [h.computer_name.lower() for h in hosts]
    if len(set(names)) != len(names):
        top["hosts"].fail("ComputerName must be unique")
    fleet = SimFleet(hosts=hosts, source=filename)
    for host in hosts:
        host.fleet = fleet
        for vm in host.vms:
            target = vm.props.get("LiveMigratesTo")
            if target is not None:
                try:
                    other = fleet.host(str(target))
                except KeyError:
                    top["hosts"].fail(f"VM {vm.name!r}: LiveMigratesTo {target!r} is not a host of this fleet")
                if other is host or other.cluster is None or other.cluster != host.cluster:
                    top["hosts"].fail(f"VM {vm.name!r}: LiveMigratesTo must name another node of the same Cluster")
    return fleet


def load_fleet(path: str) -> SimFleet:
    return parse_fleet(read_text(path, "fleet file"), path, Path(path).resolve().parent)


def demo_fleet() -> SimFleet:
    text = resources.files("hyperv_exporter.sim").joinpath("demo_fleet.yml").read_text(encoding="utf-8")
    return parse_fleet(text, "demo_fleet.yml", Path())


def with_password(fleet: SimFleet, password: str, hosts: Collection[str] | None = None) -> SimFleet:
    """Give every simulated host (or the named ones) this password; used by --demo and tests."""
    for host in fleet.hosts:
        if hosts is None or host.computer_name in hosts:
            host.password = password
    return fleet
