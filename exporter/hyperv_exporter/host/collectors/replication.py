"""Hyper-V Replica state and health per replicated VM (Get-VM Replication*, Get-VMReplication).

    hyperv_vm_replication_mode{vm="db01",vm_id="...",mode="primary"} 1              (5 modes + unknown)
    hyperv_vm_replication_state{vm="db01",vm_id="...",state="replicating"} 1        (22 states + unknown)
    hyperv_vm_replication_health{vm="db01",vm_id="...",health="normal"} 1           (4 + unknown)
    hyperv_vm_replication_last_success_timestamp_seconds{vm="db01",vm_id="..."} 1.7e9

Only VMs that take part in replication (mode other than none) get these series, which keeps the
per-VM series count of an ordinary host unchanged. A replica VM is off by design: alerts use
``hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"}`` to leave it alone.
"""

from __future__ import annotations

from hyperv_exporter import enums
from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, enum_gauge, gauge, vm_labels


class ReplicationCollector(Collector):
    name = "replication"
    help = "Hyper-V Replica mode, state, health and last replication time per replicated VM"
    sections = ("replication",)
    report_section = "replication"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        mode = enum_gauge(
            "hyperv_vm_replication_mode",
            "Replication mode of the VM (Get-VM ReplicationMode); only for replicated VMs. 1 for the current mode.",
            "mode",
            enums.REPLICATION_MODES,
        )
        state = enum_gauge(
            "hyperv_vm_replication_state",
            "Replication state of the VM (Get-VM ReplicationState as snake_case). 1 for the current state.",
            "state",
            enums.REPLICATION_STATES,
        )
        health = enum_gauge(
            "hyperv_vm_replication_health",
            "Replication health of the VM (Get-VM ReplicationHealth). 1 for the current health.",
            "health",
            enums.REPLICATION_HEALTHS,
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
            mode.set(labels, r.mode)
            state.set(labels, r.state)
            health.set(labels, r.health)
            if r.last_replication_timestamp is not None:
                last.add(labels, r.last_replication_timestamp)
        return [mode, state, health, last]
