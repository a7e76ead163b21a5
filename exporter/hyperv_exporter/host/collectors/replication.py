"""Hyper-V Replica state and health per replicated VM (Get-VM Replication*, Get-VMReplication).

    hyperv_vm_replication_mode{vm="db01",vm_id="...",mode="primary"} 1
    hyperv_vm_replication_health{vm="db01",vm_id="...",health="normal",state="replicating"} 1
    hyperv_vm_replication_last_success_timestamp_seconds{vm="db01",vm_id="..."} 1.7e9

Each enum is one series per VM carrying the current value (collectors.base.current_value): 3
series per replicated VM instead of 35. Only VMs that take part in replication (mode other than
none) get these series, which keeps the per-VM series count of an ordinary host unchanged. A
replica VM is off by design: alerts use
``hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"}`` to leave it alone.
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


class ReplicationCollector(Collector):
    name = "replication"
    help = "Hyper-V Replica mode, state, health and last replication time per replicated VM"
    sections = ("replication",)
    report_section = "replication"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        mode = current_value(
            "hyperv_vm_replication_mode",
            "Replication mode of the VM (Get-VM ReplicationMode); only for replicated VMs. "
            "One series, for the current mode.",
            "mode",
        )
        # The state is a label of the health series: whoever looks at the health wants the state
        # that explains it, and one series per VM instead of two keeps the series budget.
        health = gauge(
            "hyperv_vm_replication_health",
            "Replication health of the VM (Get-VM ReplicationHealth) and its replication state (ReplicationState "
            "as snake_case). One series, for the current health and state.",
            ("health", "state", *VM_LABELS),
        )
        last = gauge(
            "hyperv_vm_replication_last_success_timestamp_seconds",
            "When the last replication cycle succeeded (Get-VMReplication LastReplicationTime), Unix time.",
        )
        for vm in ctx.report.vms:
            r = vm.replication
            if r is None or r.mode == "none":
                continue
            labels = vm_labels(vm)
            mode.add((r.mode, *labels), 1.0)
            health.add((r.health, r.state, *labels), 1.0)
            if r.last_replication_timestamp is not None:
                last.add(labels, r.last_replication_timestamp)
        return [mode, health, last]
