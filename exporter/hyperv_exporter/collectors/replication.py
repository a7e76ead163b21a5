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

from collections.abc import Iterator

from prometheus_client.core import Metric

from hyperv_exporter import enums
from hyperv_exporter.collectors.base import VM_LABELS, Collector, CollectorContext, add_enum, gauge, vm_labels


class ReplicationCollector(Collector):
    name = "replication"
    help = "Hyper-V Replica mode, state, health and last replication time per replicated VM"
    sections = ("replication",)

    def collect(self, ctx: CollectorContext) -> Iterator[Metric]:
        mode = gauge(
            "hyperv_vm_replication_mode",
            "Replication mode of the VM (Get-VM ReplicationMode); only for replicated VMs. 1 for the current mode.",
            [*VM_LABELS, "mode"],
        )
        state = gauge(
            "hyperv_vm_replication_state",
            "Replication state of the VM (Get-VM ReplicationState as snake_case). 1 for the current state.",
            [*VM_LABELS, "state"],
        )
        health = gauge(
            "hyperv_vm_replication_health",
            "Replication health of the VM (Get-VM ReplicationHealth). 1 for the current health.",
            [*VM_LABELS, "health"],
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
            add_enum(mode, labels, enums.REPLICATION_MODES, r.mode)
            add_enum(state, labels, enums.REPLICATION_STATES, r.state)
            add_enum(health, labels, enums.REPLICATION_HEALTHS, r.health)
            if r.last_replication_timestamp is not None:
                last.add_metric(labels, r.last_replication_timestamp)
        yield from (mode, state, health, last)
