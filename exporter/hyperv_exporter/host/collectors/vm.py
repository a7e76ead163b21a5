"""Per-VM facts from Get-VM: state, heartbeat, uptime, integration services version.

hyperv_vm_info{vm="web01",vm_id="8e3ece81-...",clustered="false",config_version="9.0",generation="2",
               guest_integration_services_version="10.0.17763.1",integration_services_version="0.0"} 1
hyperv_vm_state{vm="web01",vm_id="8e3ece81-...",state="running"} 1      (one series per VMState, 30 in all)
hyperv_vm_heartbeat{vm="web01",vm_id="8e3ece81-...",status="ok_applications_healthy"} 1   (9 per VM)
hyperv_vm_integration_services_state{vm="web01",vm_id="8e3ece81-...",state="up_to_date"} 1 (3 per VM)
hyperv_vm_uptime_seconds{vm="web01",vm_id="8e3ece81-..."} 311352.37
hyperv_vm_integration_services_up_to_date{vm="web01",vm_id="8e3ece81-..."} 1   (absent without a basis)

``integration_services_version`` is what Get-VM says (``0.0`` on 2016+ hosts);
``guest_integration_services_version`` what the guest reports in its KVP intrinsic items. How
``hyperv_vm_integration_services_up_to_date`` is decided per host generation: host.icversion.
"""

from __future__ import annotations

from hyperv_exporter import enums
from hyperv_exporter.host.collectors.base import (
    VM_LABELS,
    Collector,
    CollectorContext,
    Family,
    enum_gauge,
    gauge,
    vm_labels,
)


class VMCollector(Collector):
    name = "vm"
    help = "VM state, heartbeat, uptime and integration services version (Get-VM)"
    sections = ("vm",)

    def collect(self, ctx: CollectorContext) -> list[Family]:
        # Label names in sorted order, values passed in the same order: see collectors.base.VM_LABELS.
        info = Family(
            "hyperv_vm",
            "Facts about a VM (Get-VM Generation, Version, IsClustered, IntegrationServicesVersion: 0.0 on 2016+ "
            "hosts; guest_integration_services_version: the KVP intrinsic item IntegrationServicesVersion).",
            (
                "clustered",
                "config_version",
                "generation",
                "guest_integration_services_version",
                "integration_services_version",
                *VM_LABELS,
            ),
            kind="info",
        )
        state = enum_gauge(
            "hyperv_vm_state",
            "VM state (Get-VM State as snake_case; *_critical means Hyper-V lost access to the VM's storage). "
            "1 for the current state.",
            "state",
            enums.VM_STATES,
        )
        heartbeat = enum_gauge(
            "hyperv_vm_heartbeat",
            "Heartbeat integration service status (Get-VM Heartbeat as snake_case; unknown when the VM is off). "
            "ok_applications_unknown is what Linux guests report. 1 for the current status.",
            "status",
            enums.HEARTBEAT_STATUSES,
        )
        is_state = enum_gauge(
            "hyperv_vm_integration_services_state",
            "Whether the guest's integration services are current (Get-VM IntegrationServicesState). "
            "1 for the current state.",
            "state",
            enums.IS_STATES,
        )
        uptime = gauge("hyperv_vm_uptime_seconds", "Time since the VM was started (Get-VM Uptime); 0 when off.")
        up_to_date = gauge(
            "hyperv_vm_integration_services_up_to_date",
            "1 when the VM's integration services are up to date, 0 when outdated; absent without a basis to judge. "
            "2012/2012 R2 hosts: IntegrationServicesState; 2016+: the guest's KVP IntegrationServicesVersion "
            "against its OSVersion (docs/alerts.md).",
        )
        for vm in ctx.report.vms:
            labels = vm_labels(vm)
            info.add(
                (
                    "" if vm.is_clustered is None else ("true" if vm.is_clustered else "false"),
                    vm.version or "",
                    "" if vm.generation is None else str(vm.generation),
                    vm.guest_integration_services_version or "",
                    vm.integration_services_version or "",
                    *labels,
                ),
                1.0,
            )
            state.set(labels, vm.state)
            heartbeat.set(labels, vm.heartbeat)
            is_state.set(labels, vm.integration_services_state)
            if vm.uptime_seconds is not None:
                uptime.add(labels, vm.uptime_seconds)
            if vm.integration_services_up_to_date is not None:
                up_to_date.add(labels, 1.0 if vm.integration_services_up_to_date else 0.0)
        return [info, state, heartbeat, is_state, uptime, up_to_date]
