"""Integration services per VM (Get-VMIntegrationService), keyed on the service GUID.

    hyperv_vm_integration_service_status{vm="web01",vm_id="...",service="heartbeat",status="ok"} 1
    hyperv_vm_integration_service_status{vm="web01",vm_id="...",service="guest_service_interface",status="disabled"} 1

One series per VM and service: ``status`` is ``disabled`` when the host has the service disabled
for the VM (Enabled false), otherwise its PrimaryOperationalStatus as snake_case (ok, no_contact,
lost_communication, ...; unknown for a value this exporter does not know). That one series answers
both questions the alerts ask (is it enabled? is it OK?) at a sixth of the former cost (enabled +
ok + status_info per service). The guest's application health, which heartbeat reports as its
SecondaryOperationalStatus, is ``hyperv_vm_heartbeat{status="ok_applications_critical"}``.

``service`` is one of shutdown, time_synchronization, key_value_pair_exchange, heartbeat, vss,
guest_service_interface whatever the host's language. A Windows Server 2012 host has no
guest_service_interface, so that VM simply has no such series.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import VM_LABELS, Collector, CollectorContext, Family, gauge

DISABLED = "disabled"

# In sorted order (see collectors.base.VM_LABELS).
SERVICE_LABELS = ("service", "status", *VM_LABELS)


class IntegrationServicesCollector(Collector):
    name = "integration_services"
    help = "Integration services per VM: disabled, or the primary operational status (Get-VMIntegrationService)"
    sections = ("integration_services",)
    report_section = "integration_services"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        status = gauge(
            "hyperv_vm_integration_service_status",
            "Integration service of the VM: status is disabled when the host disables it for the VM "
            "(Get-VMIntegrationService Enabled), else its PrimaryOperationalStatus as snake_case (ok when "
            "healthy). One series per VM and service, for the current status.",
            SERVICE_LABELS,
        )
        for vm in ctx.report.vms:
            for ic in vm.integration_services or ():
                current = DISABLED if ic.enabled is False else ic.primary_status
                status.add((ic.service, current, vm.name, vm.id), 1.0)
        return [status]
