"""Checkpoints (snapshots) per VM, without Hyper-V Replica recovery points.

    hyperv_vm_checkpoints{vm="web01",vm_id="..."} 2
    hyperv_vm_checkpoint_oldest_timestamp_seconds{vm="web01",vm_id="..."} 1.69e9

The oldest checkpoint is exported as its creation time (Prometheus exports timestamps, not ages);
its age is ``time() - hyperv_vm_checkpoint_oldest_timestamp_seconds``. Forgotten checkpoints grow
their differencing disks until the volume is full.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, gauge, vm_labels
from hyperv_exporter.host.report import REPLICA_SNAPSHOT_TYPES


class CheckpointsCollector(Collector):
    name = "checkpoints"
    help = "Checkpoint count and oldest checkpoint per VM, replica recovery points excluded (Get-VMSnapshot)"
    sections = ("checkpoints",)
    report_section = "checkpoints"

    def collect(self, ctx: CollectorContext) -> list[Family]:
        count = gauge(
            "hyperv_vm_checkpoints",
            "Checkpoints of the VM (Get-VMSnapshot), Hyper-V Replica recovery points excluded.",
        )
        oldest = gauge(
            "hyperv_vm_checkpoint_oldest_timestamp_seconds",
            "Creation time of the VM's oldest checkpoint (Get-VMSnapshot CreationTime), Unix time; "
            "absent when the VM has none.",
        )
        for vm in ctx.report.vms:
            if vm.checkpoints is None:
                continue
            labels = vm_labels(vm)
            user = [c for c in vm.checkpoints if c.snapshot_type not in REPLICA_SNAPSHOT_TYPES]
            count.add(labels, float(len(user)))
            times = [c.creation_timestamp for c in user if c.creation_timestamp is not None]
            if times:
                oldest.add(labels, min(times))
        return [count, oldest]
