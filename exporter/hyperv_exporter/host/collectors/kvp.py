"""Allowlisted KVP (Data Exchange) items per VM.

    hyperv_vm_kvp_info{vm="web01",vm_id="...",source="guest_intrinsic",key="OSName",
                       value="Windows Server 2019 Datacenter"} 1

Keys come from the module's ``kvp.keys`` allowlist only; values are guest-written, so they were
cleaned and length-capped by :mod:`hyperv_exporter.host.cimxml`. A VM that is not running has no KVP
component and therefore no series here.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import VM_LABELS, Collector, CollectorContext, Family, gauge


class KvpCollector(Collector):
    name = "kvp"
    help = "Allowlisted KVP items (Msvm_KvpExchangeComponent, Msvm_KvpExchangeComponentSettingData)"
    sections = ("kvp",)
    report_section = "kvp"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        family = gauge(
            "hyperv_vm_kvp_info",
            "Allowlisted Data Exchange (KVP) items; source is guest_intrinsic (GuestIntrinsicExchangeItems), "
            "guest (GuestExchangeItems) or host (HostExchangeItems). Values are written by the guest: untrusted.",
            ("key", "source", "value", *VM_LABELS),  # sorted (see collectors.base)
        )
        for vm in ctx.report.vms:
            for item in vm.kvp or ():
                family.add((item.key, item.source, item.value, vm.name, vm.id), 1.0)
        return [family]
