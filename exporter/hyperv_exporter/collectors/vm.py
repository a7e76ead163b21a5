"""Per-VM facts from Get-VM: state, heartbeat, uptime, integration services version.

hyperv_vm_info{vm="web01",vm_id="8e3ece81-...",generation="2",config_version="9.0",
               integration_services_version="10.0.17763.1"} 1
hyperv_vm_state{vm="web01",vm_id="8e3ece81-...",state="running"} 1      (one series per VMState, 30 in all)
hyperv_vm_heartbeat{vm="web01",vm_id="8e3ece81-...",status="ok_applications_healthy"} 1   (9 per VM)
hyperv_vm_integration_services_state{vm="web01",vm_id="8e3ece81-...",state="up_to_date"} 1 (3 per VM)
hyperv_vm_uptime_seconds{vm="web01",vm_id="8e3ece81-..."} 311352.37
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import InfoMetricFamily, Metric

from hyperv_exporter import enums
from hyperv_exporter.collectors.base import VM_LABELS, Collector, CollectorContext, add_enum, gauge, vm_labels


class VMCollector(Collector):
    name = "vm"
    help = "VM state, heartbeat, uptime and integration services version (Get-VM)"
    sections = ("vm",)

    def collect(self, ctx: CollectorContext) -> Iterator[Metric]:
        info = InfoMetricFamily(
            "hyperv_vm",
            "Facts about a VM (Get-VM Generation, Version, IntegrationServicesVersion).",
            labels=[*VM_LABELS, "generation", "config_version", "integration_services_version"],
        )
        state = gauge(
            "hyperv_vm_state",
            "VM state (Get-VM State as snake_case; *_critical means Hyper-V lost access to the VM's storage). "
            "1 for the current state.",
            [*VM_LABELS, "state"],
        )
        heartbeat = gauge(
            "hyperv_vm_heartbeat",
            "Heartbeat integration service status (Get-VM Heartbeat as snake_case; unknown when the VM is off). "
            "ok_applications_unknown is what Linux guests report. 1 for the current status.",
            [*VM_LABELS, "status"],
        )
        is_state = gauge(
            "hyperv_vm_integration_services_state",
            "Whether the guest's integration services are current (Get-VM IntegrationServicesState). "
            "1 for the current state.",
            [*VM_LABELS, "state"],
        )
        uptime = gauge("hyperv_vm_uptime_seconds", "Time since the VM was started (Get-VM Uptime); 0 when off.")
        for vm in ctx.report.vms:
            labels = vm_labels(vm)
            info.add_metric(
                [
                    *labels,
                    "" if vm.generation is None else str(vm.generation),
                    vm.version or "",
                    vm.integration_services_version or "",
                ],
                {},
            )
            add_enum(state, labels, enums.VM_STATES, vm.state)
            add_enum(heartbeat, labels, enums.HEARTBEAT_STATUSES, vm.heartbeat)
            add_enum(is_state, labels, enums.IS_STATES, vm.integration_services_state)
            if vm.uptime_seconds is not None:
                uptime.add_metric(labels, vm.uptime_seconds)
        yield from (info, state, heartbeat, is_state, uptime)
