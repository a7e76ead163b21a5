"""Hyper-V enumerations as the collection script reports them: by *name*, never by number.

The numbers behind ``VMState`` above 32782 differ between Windows versions (Windows Server 2016
lacks ``Hibernated`` and ``ComponentServicing``), so the script casts every enum to its name and
this module maps names to the snake_case label values the metrics use. Sources: the Hyper-V
PowerShell module 2.0.0.0 type stubs (HyperVDsc), Eryph's VirtualMachineState comment, and
MicrosoftDocs (see ../shared/reference/hyperv-formats-and-winrm.md §1.2).

An enum name this module does not know maps to ``unknown``: the label set stays fixed and bounded,
and the caller logs the raw name once.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

UNKNOWN: Final = "unknown"


@lru_cache(maxsize=1024)
def snake(name: str) -> str:
    """``OkApplicationsHealthy`` -> ``ok_applications_healthy``; ``RunningCritical`` -> ``running_critical``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _labels(*names: str) -> tuple[str, ...]:
    return tuple(snake(n) for n in names)


# Microsoft.HyperV.PowerShell.VMState (all names of both numberings).
VM_STATE_NAMES: Final = (
    "Other", "Running", "Off", "Stopping", "Saved", "Paused", "Starting", "Reset", "Saving", "Pausing",
    "Resuming", "FastSaved", "FastSaving", "ForceShutdown", "ForceReboot", "Hibernated", "ComponentServicing",
    "RunningCritical", "OffCritical", "StoppingCritical", "SavedCritical", "PausedCritical", "StartingCritical",
    "ResetCritical", "SavingCritical", "PausingCritical", "ResumingCritical", "FastSavedCritical",
    "FastSavingCritical",
)  # fmt: skip
VM_STATES: Final = (*_labels(*VM_STATE_NAMES), UNKNOWN)
# States in which the guest is executing (its heartbeat, services and KVP are meaningful).
VM_RUNNING_STATES: Final = frozenset({"running", "running_critical"})

# Microsoft.HyperV.PowerShell.VMHeartbeatStatus. Linux guests report OkApplicationsUnknown.
HEARTBEAT_NAMES: Final = (
    "Unknown", "Disabled", "NoContact", "Error", "LostCommunication", "OkApplicationsUnknown",
    "OkApplicationsHealthy", "OkApplicationsCritical", "Paused",
)  # fmt: skip
HEARTBEAT_STATUSES: Final = _labels(*HEARTBEAT_NAMES)
HEARTBEAT_HEALTHY: Final = frozenset({"ok_applications_healthy", "ok_applications_unknown"})

# Microsoft.HyperV.PowerShell.VMIntegrationComponentOperationalStatus.
IC_STATUS_NAMES: Final = (
    "Ok", "Degraded", "Error", "NonRecoverableError", "NoContact", "LostCommunication", "ProtocolMismatch",
    "ApplicationCritical", "CommunicationTimedOut", "CommunicationFailed", "Disabled",
)  # fmt: skip
IC_STATUSES: Final = (*_labels(*IC_STATUS_NAMES), UNKNOWN)

# Get-VM IntegrationServicesState is a *string*, not an enum: "Up to date", "Update required", or ""
# (moora/zbx-hyperv). It mirrors Msvm_SummaryInformation.IntegrationServicesVersionState.
IS_STATES: Final = ("up_to_date", "update_required", UNKNOWN)
IS_STATE_TEXT: Final = {"up to date": "up_to_date", "update required": "update_required"}

# Replication (Get-VM ReplicationState / ReplicationHealth / ReplicationMode).
REPLICATION_STATE_NAMES: Final = (
    "Disabled", "ReadyForInitialReplication", "InitialReplicationInProgress", "WaitingForInitialReplication",
    "Replicating", "PreparedForFailover", "FailedOverWaitingCompletion", "FailedOver", "Suspended", "Error",
    "WaitingForStartResynchronize", "Resynchronizing", "ResynchronizeSuspended", "RecoveryInProgress",
    "FailbackInProgress", "FailbackComplete", "WaitingForUpdateCompletion", "UpdateError",
    "WaitingForRepurposeCompletion", "PreparedForSyncReplication", "PreparedForGroupReverseReplication",
    "FiredrillInProgress",
)  # fmt: skip
REPLICATION_STATES: Final = (*_labels(*REPLICATION_STATE_NAMES), UNKNOWN)
REPLICATION_HEALTH_NAMES: Final = ("NotApplicable", "Normal", "Warning", "Critical")
REPLICATION_HEALTHS: Final = (*_labels(*REPLICATION_HEALTH_NAMES), UNKNOWN)
REPLICATION_MODE_NAMES: Final = ("None", "Primary", "Replica", "TestReplica", "ExtendedReplica")
REPLICATION_MODES: Final = (*_labels(*REPLICATION_MODE_NAMES), UNKNOWN)


def label_for(name: str | None, allowed: tuple[str, ...]) -> str:
    """Map an enum *name* from the script to its label value, or ``unknown`` when absent or new."""
    if not name:
        return UNKNOWN
    value = snake(name)
    return value if value in allowed else UNKNOWN


# ---------------------------------------------------------------------------------------------
# Integration services. Their display names are localized, their Id is
# ``Microsoft:<VM GUID>\<service GUID>`` and the service GUID is stable across versions and
# languages, so the exporter keys on it. The canonical names below are the label values shared by
# the host exporter and the guest agent, so that PromQL can join the two sides by ``service``.
SHUTDOWN: Final = "shutdown"
TIME_SYNCHRONIZATION: Final = "time_synchronization"
KEY_VALUE_PAIR_EXCHANGE: Final = "key_value_pair_exchange"
HEARTBEAT: Final = "heartbeat"
VSS: Final = "vss"
GUEST_SERVICE_INTERFACE: Final = "guest_service_interface"

SERVICE_GUIDS: Final = {
    "9F8233AC-BE49-4C79-8EE3-E7E1985B2077": SHUTDOWN,
    "2497F4DE-E9FA-4204-80E4-4B75C46419C0": TIME_SYNCHRONIZATION,
    "2A34B1C2-FD73-4043-8A5B-DD2159BC743F": KEY_VALUE_PAIR_EXCHANGE,
    "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47": HEARTBEAT,
    "5CED1297-4598-4915-A5FC-AD21BB4D02A4": VSS,
    "6C09BB55-D683-4DA0-8931-C9BF705F6480": GUEST_SERVICE_INTERFACE,
}
SERVICES: Final = (SHUTDOWN, TIME_SYNCHRONIZATION, KEY_VALUE_PAIR_EXCHANGE, HEARTBEAT, VSS, GUEST_SERVICE_INTERFACE)
# The localized display names are not needed here (the exporter keys on the GUID); the simulator
# keeps its own per culture (sim/tables.py).


def service_for_id(ic_id: str | None) -> str | None:
    """``Microsoft:<VM>\\84EAAE65-...`` -> ``heartbeat``; ``None`` for an Id this exporter does not know."""
    if not ic_id:
        return None
    return SERVICE_GUIDS.get(ic_id.rsplit("\\", 1)[-1].strip().upper())
