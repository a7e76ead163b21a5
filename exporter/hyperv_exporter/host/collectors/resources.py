"""VM resources from Get-VM, in base units.

hyperv_vm_processors{vm="web01",vm_id="..."} 4
hyperv_vm_cpu_usage_ratio{vm="web01",vm_id="..."} 0.03
hyperv_vm_memory_assigned_bytes{vm="web01",vm_id="..."} 4294967296
hyperv_vm_memory_demand_bytes{vm="web01",vm_id="..."} 2147483648
hyperv_vm_memory_startup_bytes{vm="web01",vm_id="..."} 4294967296
hyperv_vm_dynamic_memory_enabled{vm="web01",vm_id="..."} 0
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, gauge, vm_labels

_FIELDS = (
    ("hyperv_vm_processors", "Virtual processors assigned to the VM (Get-VM ProcessorCount).", "processor_count"),
    (
        "hyperv_vm_cpu_usage_ratio",
        "CPU usage of the VM as a ratio 0-1 of its virtual processors (Get-VM CPUUsage / 100).",
        "cpu_usage_ratio",
    ),
    ("hyperv_vm_memory_assigned_bytes", "Memory assigned to the VM (Get-VM MemoryAssigned).", "memory_assigned_bytes"),
    (
        "hyperv_vm_memory_demand_bytes",
        "Memory the guest currently demands (Get-VM MemoryDemand; dynamic memory only).",
        "memory_demand_bytes",
    ),
    ("hyperv_vm_memory_startup_bytes", "Startup memory of the VM (Get-VM MemoryStartup).", "memory_startup_bytes"),
    (
        "hyperv_vm_dynamic_memory_enabled",
        "1 when dynamic memory is enabled for the VM (Get-VM DynamicMemoryEnabled).",
        "dynamic_memory_enabled",
    ),
)


class ResourcesCollector(Collector):
    name = "resources"
    help = "Processor count, CPU usage and memory per VM (Get-VM)"
    sections = ("resources",)

    def collect(self, ctx: CollectorContext) -> list[Family]:
        families = [(gauge(name, doc), attr) for name, doc, attr in _FIELDS]
        for vm in ctx.report.vms:
            if vm.resources is None:
                continue
            labels = vm_labels(vm)
            for family, attr in families:
                value = getattr(vm.resources, attr)
                if value is not None:
                    family.add(labels, float(value))
        return [family for family, _ in families]
