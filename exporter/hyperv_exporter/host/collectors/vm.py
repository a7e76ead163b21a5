"""Per-VM facts from Get-VM: state, heartbeat, uptime, integration services version.

hyperv_vm_info{vm="web01",vm_id="8e3ece81-...",clustered="false",config_version="9.0",generation="2",
               guest_integration_services_version="10.0.17763.1",integration_services_version="0.0"} 1
hyperv_vm_state{vm="web01",vm_id="8e3ece81-...",state="running"} 1
hyperv_vm_heartbeat{vm="web01",vm_id="8e3ece81-...",status="ok_applications_healthy"} 1
hyperv_vm_integration_services_state{vm="web01",vm_id="8e3ece81-...",state="up_to_date"} 1
hyperv_vm_uptime_seconds{vm="web01",vm_id="8e3ece81-..."} 311352.37
hyperv_vm_integration_services_up_to_date{vm="web01",vm_id="8e3ece81-..."} 1   (absent without a basis)

The three enums are encoded as one series per VM carrying the current value (see
:func:`collectors.base.current_value` and docs/metrics.md, "Series budget").
``integration_services_version`` is what Get-VM says (``0.0`` on 2016+ hosts);
``guest_integration_services_version`` what the guest reports in its KVP intrinsic items. How
``hyperv_vm_integration_services_up_to_date`` is decided per host generation: host.icversion.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import (
    VM_LABELS,
    Collector,
    CollectorContext,
    Family,
    current_value,
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
        state = current_value(
            "hyperv_vm_state",
            "VM state (Get-VM State as snake_case; *_critical means Hyper-V lost access to the VM's storage). "
            "One series per VM, for the current state.",
            "state",
        )
        heartbeat = current_value(
            "hyperv_vm_heartbeat",
            "Heartbeat integration service status (Get-VM Heartbeat as snake_case; unknown when the VM is off). "
            "ok_applications_unknown is what Linux guests report. One series per VM, for the current status.",
            "status",
        )
        is_state = current_value(
            "hyperv_vm_integration_services_state",
            "Whether the guest's integration services are current (Get-VM IntegrationServicesState: "
            "up_to_date, update_required, unknown). One series per VM, for the current state.",
            "state",
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
            state.add((vm.state, *labels), 1.0)
            heartbeat.add((vm.heartbeat, *labels), 1.0)
            is_state.add((vm.integration_services_state, *labels), 1.0)
            if vm.uptime_seconds is not None:
                uptime.add(labels, vm.uptime_seconds)
            if vm.integration_services_up_to_date is not None:
                up_to_date.add(labels, 1.0 if vm.integration_services_up_to_date else 0.0)
        return [info, state, heartbeat, is_state, uptime, up_to_date]
