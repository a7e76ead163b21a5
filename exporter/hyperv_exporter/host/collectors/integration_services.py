"""Integration services per VM (Get-VMIntegrationService), keyed on the service GUID.

    hyperv_vm_integration_service_enabled{vm="web01",vm_id="...",service="heartbeat"} 1
    hyperv_vm_integration_service_ok{vm="web01",vm_id="...",service="heartbeat"} 1
    hyperv_vm_integration_service_status_info{vm="web01",vm_id="...",service="heartbeat",primary_status="ok",
                                              secondary_status="application_critical"} 1

``service`` is one of shutdown, time_synchronization, key_value_pair_exchange, heartbeat, vss,
guest_service_interface whatever the host's language. A Windows Server 2012 host has no
guest_service_interface, so that VM simply has no such series.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import VM_LABELS, Collector, CollectorContext, Family, gauge

# In sorted order (see collectors.base.VM_LABELS).
SERVICE_LABELS = ("service", *VM_LABELS)


class IntegrationServicesCollector(Collector):
    name = "integration_services"
    help = "Integration services per VM: enabled, primary/secondary operational status (Get-VMIntegrationService)"
    sections = ("integration_services",)
    report_section = "integration_services"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        enabled = gauge(
            "hyperv_vm_integration_service_enabled",
            "Whether the integration service is enabled for the VM on the host (Get-VMIntegrationService Enabled).",
            SERVICE_LABELS,
        )
        ok = gauge(
            "hyperv_vm_integration_service_ok",
            "1 when the integration service's primary operational status is Ok "
            "(Get-VMIntegrationService PrimaryOperationalStatus).",
            SERVICE_LABELS,
        )
        status = gauge(
            "hyperv_vm_integration_service_status_info",
            "Detailed operational status of the integration service as snake_case labels "
            "(PrimaryOperationalStatus, SecondaryOperationalStatus; secondary is the guest's application "
            "health, reported by heartbeat only).",
            ("primary_status", "secondary_status", *SERVICE_LABELS),
        )
        for vm in ctx.report.vms:
            for ic in vm.integration_services or ():
                labels = (ic.service, vm.name, vm.id)
                if ic.enabled is not None:
                    enabled.add(labels, 1.0 if ic.enabled else 0.0)
                ok.add(labels, 1.0 if ic.primary_status == "ok" else 0.0)
                status.add((ic.primary_status, ic.secondary_status or "", *labels), 1.0)
        return [enabled, ok, status]
