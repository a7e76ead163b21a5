"""What a real Hyper-V host reports, as the simulator's own tables.

Written from the cited public sources, never imported from the exporter: if the exporter's
tables (``hyperv_exporter.enums``) drift from what Windows does, the end-to-end tests must see
the difference instead of agreeing with a copy of the mistake. ``tests/test_sim_tables.py``
compares the two sides.

Sources (see ../shared/reference/hyperv-formats-and-winrm.md and real-windows-behaviour.md):
- Enum names: the Hyper-V PowerShell module 2.0.0.0 type stubs (dsccommunity/HyperVDsc
  ``tests/Unit/Stubs/Hyper-V.stubs.psm1``), reference §1.2.
- Integration service GUIDs: hashicorp/packer ``common/powershell/hyperv/hyperv.go`` and Vagrant's
  Hyper-V driver (both key on ``Id``); English names: windowsserverdocs "Manage Hyper-V integration
  services" (reference §1.5); "added in" lines: Virtualization-Documentation integration-services.md.
- German service names: a German Server 2016+ host's ``Get-VMIntegrationService`` output quoted in a
  public DSC configuration (the same source the exporter's docs cite).
- Per-version fields: ``IntegrationServicesState`` "" and ``IntegrationServicesVersion`` 0.0 on
  2016 and later (a-schild/Zabbix-HyperV-Templates; the decompiled module hard-codes them), real
  strings on 2012/2012 R2 (moora/zbx-hyperv).
"""

from __future__ import annotations

from typing import Final

# DateTime(1970-01-01).Ticks: .NET ticks are 100 ns units since 0001-01-01.
DOTNET_EPOCH_TICKS: Final = 621_355_968_000_000_000

# Microsoft.HyperV.PowerShell.VMState, every name of both numberings (2016 lacks Hibernated and
# ComponentServicing; the names are what collect.ps1 prints).
VM_STATE_NAMES: Final = (
    "Other", "Running", "Off", "Stopping", "Saved", "Paused", "Starting", "Reset", "Saving", "Pausing",
    "Resuming", "FastSaved", "FastSaving", "ForceShutdown", "ForceReboot", "Hibernated", "ComponentServicing",
    "RunningCritical", "OffCritical", "StoppingCritical", "SavedCritical", "PausedCritical", "StartingCritical",
    "ResetCritical", "SavingCritical", "PausingCritical", "ResumingCritical", "FastSavedCritical",
    "FastSavingCritical",
)  # fmt: skip
# States in which the guest executes: heartbeat, service statuses and the KVP component exist.
GUEST_RUNNING_STATES: Final = frozenset({"Running", "RunningCritical"})
# Transitions Hyper-V shows while a VM changes state. Taking a checkpoint is not a VMState: the VM
# stays Running and the operation shows in Status / OperationalStatus (CreatingSnapshot, 32768).
TRANSITIONAL_STATES: Final = ("Starting", "Stopping", "Saving", "Pausing", "Resuming")

# Microsoft.HyperV.PowerShell.VMHeartbeatStatus.
HEARTBEAT_NAMES: Final = (
    "Unknown", "Disabled", "NoContact", "Error", "LostCommunication", "OkApplicationsUnknown",
    "OkApplicationsHealthy", "OkApplicationsCritical", "Paused",
)  # fmt: skip

# Microsoft.HyperV.PowerShell.VMIntegrationComponentOperationalStatus.
IC_STATUS_NAMES: Final = (
    "Ok", "Degraded", "Error", "NonRecoverableError", "NoContact", "LostCommunication", "ProtocolMismatch",
    "ApplicationCritical", "CommunicationTimedOut", "CommunicationFailed", "Disabled",
)  # fmt: skip

# VMReplicationState, VMReplicationHealthState, VMReplicationMode.
REPLICATION_STATE_NAMES: Final = (
    "Disabled", "ReadyForInitialReplication", "InitialReplicationInProgress", "WaitingForInitialReplication",
    "Replicating", "PreparedForFailover", "FailedOverWaitingCompletion", "FailedOver", "Suspended", "Error",
    "WaitingForStartResynchronize", "Resynchronizing", "ResynchronizeSuspended", "RecoveryInProgress",
    "FailbackInProgress", "FailbackComplete", "WaitingForUpdateCompletion", "UpdateError",
    "WaitingForRepurposeCompletion", "PreparedForSyncReplication", "PreparedForGroupReverseReplication",
    "FiredrillInProgress",
)  # fmt: skip
REPLICATION_HEALTH_NAMES: Final = ("NotApplicable", "Normal", "Warning", "Critical")
REPLICATION_MODE_NAMES: Final = ("None", "Primary", "Replica", "TestReplica", "ExtendedReplica")

# Microsoft.HyperV.PowerShell.SnapshotType (Get-VMSnapshot SnapshotType).
SNAPSHOT_TYPES: Final = (
    "Standard", "Recovery", "Planned", "Missing", "Replica", "AppConsistentReplica", "SyncedReplica",
)  # fmt: skip

# Integration services: the fleet file's key for each (snake_case of the English name), the
# stable GUID at the end of ``Id`` (``Microsoft:<VM GUID>\\<service GUID>``), and the Windows
# version that added it.
SERVICE_GUIDS: Final = {
    "shutdown": "9F8233AC-BE49-4C79-8EE3-E7E1985B2077",
    "time_synchronization": "2497F4DE-E9FA-4204-80E4-4B75C46419C0",
    "key_value_pair_exchange": "2A34B1C2-FD73-4043-8A5B-DD2159BC743F",
    "heartbeat": "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47",
    "vss": "5CED1297-4598-4915-A5FC-AD21BB4D02A4",
    "guest_service_interface": "6C09BB55-D683-4DA0-8931-C9BF705F6480",  # added in Windows Server 2012 R2
}
SERVICES: Final = tuple(SERVICE_GUIDS)
GUEST_SERVICE_INTERFACE: Final = "guest_service_interface"
HEARTBEAT: Final = "heartbeat"
# "All integration services except Hyper-V Guest Service Interface are on by default."
DEFAULT_OFF_SERVICES: Final = frozenset({GUEST_SERVICE_INTERFACE})

# Get-VMIntegrationService Name per host UI culture.
SERVICE_DISPLAY_NAMES: Final = {
    "en-US": {
        "shutdown": "Shutdown",
        "time_synchronization": "Time Synchronization",
        "key_value_pair_exchange": "Key-Value Pair Exchange",
        "heartbeat": "Heartbeat",
        "vss": "VSS",
        "guest_service_interface": "Guest Service Interface",
    },
    "de-DE": {
        "shutdown": "Herunterfahren",
        "time_synchronization": "Zeitsynchronisierung",
        "key_value_pair_exchange": "Austausch von Schlüsselwertepaaren",
        "heartbeat": "Takt",
        "vss": "VSS",
        "guest_service_interface": "Gastdienstschnittstelle",
    },
}

# Get-VM IntegrationServicesState on 2012/2012 R2: a string from the module's resources, so
# translated on a localized host. en-US is documented (moora/zbx-hyperv). No public capture of
# the German text was found: the de-DE strings are the simulator's stand-ins for "some localized
# text", which is exactly what the exporter must cope with (it maps any non-English text by the
# rule in docs/metrics.md, never by these words).
IS_STATE_TEXT: Final = {
    "en-US": {"up_to_date": "Up to date", "update_required": "Update required"},
    "de-DE": {"up_to_date": "Aktuell", "update_required": "Aktualisierung erforderlich"},
}
# What Get-VM prints for IntegrationServicesVersion on 2016 and later, whatever the guest runs.
IS_VERSION_2016: Final = "0.0"

# Get-VMIntegrationService / Get-VMSnapshot -VM <a VM that no longer exists>: the error the
# simulator reports for a VM that vanished mid-probe (wording modelled on Hyper-V's "unable to find
# a virtual machine" errors; inference, no capture of this exact case).
VANISHED_VM_ERROR: Final = 'Hyper-V was unable to find a virtual machine with name "{name}".'
# Get-VMIntegrationService for a VM whose guest has no integration components (inference: the
# reference notes say the call throws; the wording is the simulator's).
NO_INTEGRATION_COMPONENTS_ERROR: Final = (
    "The operation on computer '{host}' failed: The integration components of virtual machine '{name}' "
    "are not available."
)

# Get-VM Status while a checkpoint is taken (Hyper-V Manager's status column shows the operation
# with a percentage; inference for Get-VM's text), and normally (integration-services.md).
STATUS_CREATING_CHECKPOINT: Final = "Creating checkpoint ({percent}%)"
STATUS_NORMAL: Final = "Operating normally"


def host_generation(os_version: str) -> str:
    """``2012``, ``2012r2`` or ``2016+`` from Win32_OperatingSystem Version (6.2, 6.3, 10.0)."""
    parts = os_version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return "2016+"
    if (major, minor) < (6, 3):
        return "2012"
    if major < 10:
        return "2012r2"
    return "2016+"
