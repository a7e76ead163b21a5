"""Typed records for one Hyper-V host's collection report (what ``collect.ps1`` printed).

The records keep Hyper-V's meaning but not its quirks: enums are already snake_case label
values (``unknown`` when absent or new), times are Unix seconds, KVP items are decoded pairs.
They are built by :mod:`hyperv_exporter.host.report` and turned into metrics by
:mod:`hyperv_exporter.host.collectors`; neither side needs to know the other's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# KVP sources, named after the Msvm_KvpExchangeComponent(SettingData) properties they come from.
KVP_GUEST_INTRINSIC = "guest_intrinsic"  # GuestIntrinsicExchangeItems: written by the guest OS / integration services
KVP_GUEST = "guest"  # GuestExchangeItems: written by software in the guest
KVP_HOST = "host"  # HostExchangeItems: pushed by the host administrator
KVP_SOURCES = (KVP_GUEST_INTRINSIC, KVP_GUEST, KVP_HOST)


@dataclass(slots=True, frozen=True)  # shared by the VMs whose entries are equal (report._services)
class IntegrationService:
    service: str  # canonical name from enums.SERVICES, whatever the host's language
    display_name: str  # the host's (localized) Name, for humans only
    enabled: bool | None
    primary_status: str  # enums.IC_STATUSES
    secondary_status: str | None  # only Heartbeat reports one (application health); None when absent
    primary_description: str | None = None
    secondary_description: str | None = None


@dataclass(slots=True)
class KvpItem:
    source: str  # one of KVP_SOURCES
    key: str
    value: str


@dataclass(slots=True)
class Resources:
    processor_count: int | None = None
    cpu_usage_ratio: float | None = None  # Get-VM CPUUsage is percent; stored as 0-1
    memory_assigned_bytes: int | None = None
    memory_demand_bytes: int | None = None
    memory_startup_bytes: int | None = None
    dynamic_memory_enabled: bool | None = None


@dataclass(slots=True)
class Replication:
    state: str  # enums.REPLICATION_STATES
    health: str  # enums.REPLICATION_HEALTHS
    mode: str  # enums.REPLICATION_MODES
    last_replication_timestamp: float | None = None


@dataclass(slots=True)
class Checkpoint:
    snapshot_type: str  # snake_case SnapshotType name, e.g. standard, recovery, replica
    creation_timestamp: float | None


@dataclass(slots=True)
class VM:
    name: str
    id: str  # lower-case GUID, as Get-VM prints it
    state: str  # enums.VM_STATES
    status: str | None  # localized free text from Get-VM, for humans only
    heartbeat: str  # enums.HEARTBEAT_STATUSES; "unknown" when null (VM off, heartbeat service absent)
    uptime_seconds: float | None
    integration_services_version: str | None  # Get-VM's; "0.0" on 2016+ hosts
    integration_services_state: str  # enums.IS_STATES (localized text already mapped: host.icversion)
    generation: int | None
    version: str | None  # configuration version, e.g. "9.0"
    is_clustered: bool | None = None
    integration_services: list[IntegrationService] | None = None  # None when not collected
    kvp: list[KvpItem] | None = None  # None when not collected or no KVP component (VM not running)
    resources: Resources | None = None
    replication: Replication | None = None
    checkpoints: list[Checkpoint] | None = None
    # What the guest says about itself in the KVP intrinsic items IntegrationServicesVersion and
    # OSVersion, read whatever the KVP allowlist says (None when not collected or not reported).
    guest_integration_services_version: str | None = None
    guest_os_version: str | None = None
    # hyperv_vm_integration_services_up_to_date: None where the host generation gives no basis.
    integration_services_up_to_date: bool | None = None


@dataclass(slots=True)
class HostInfo:
    computer_name: str | None
    os_caption: str | None
    os_version: str | None
    ui_culture: str | None
    cluster: str | None = None  # failover cluster name (MSCluster_Cluster), None when not clustered


@dataclass(slots=True)
class Section:
    """One collector's part of the run on the host: how long it took and why it failed, if it did."""

    seconds: float | None
    error: str | None


@dataclass(slots=True)
class HostReport:
    host: HostInfo
    vms: list[VM]
    sections: dict[str, Section]
    clock_start: float | None  # host clock (Unix seconds) when the script started
    clock_end: float | None  # host clock (Unix seconds) just before it printed its output
    problems: list[str] = field(default_factory=list)  # data the parser had to drop, with where and why
    # Which collect.ps1 ran (ScriptVersion, ScriptHash; None when the report has none: a copy older
    # than these fields) and whether it is another than the exporter's own (an outdated JEA endpoint).
    script_version: str | None = None
    script_hash: str | None = None
    script_outdated: bool = False
    # Section -> how many VMs lost their data in it (collect.ps1's VMProblems), for
    # hyperv_collector_vm_problems.
    vm_problems: dict[str, int] = field(default_factory=dict)
