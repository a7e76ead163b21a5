{
  prometheusAlerts+:: {
    groups+: [
      {
        name: "hyperv-replication",
        // Comment block of the rendered rule file: before and after its table of rules.
        intro:: |||
          Alerts on Hyper-V Replica and checkpoints, from the host exporter (/probe).

          Thresholds and durations (the single list of all of them is docs/alerts.md; a test keeps the
          two in step). Change a value where its rule uses it:
        |||,
        notes:: |||
          Conventions:
            - replication alerts come from the primary side only: a replica VM (mode replica,
              test_replica or extended_replica) is off by design and reports the same pair, so it would
              only duplicate the alert; when the primary host is gone, HyperVExporterTargetDown fires;
            - only running VMs alert: an off primary sends nothing, so its last replication ages by
              design, and a checkpoint of an off VM does not grow;
            - checkpoints exclude Hyper-V Replica recovery points (the exporter drops them).
        |||,
        rules: [
          {
            alert: "HyperVReplicationUnhealthy",
            expr: |||
              hyperv_vm_replication_health{health="critical"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "Hyper-V Replica health of a VM is critical.",
              description: "Replication of VM {{ $labels.vm }} from Hyper-V host {{ $labels.instance }} is critical (state {{ $labels.state }}): changes no longer reach the replica server.",
              runbook_url: $._config.runbookURLBase + "HyperVReplicationUnhealthy.md",
            },
            threshold:: "replication health critical",
          },
          {
            alert: "HyperVReplicationUnhealthy",
            expr: |||
              hyperv_vm_replication_health{health="warning"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "Hyper-V Replica health of a VM is degraded.",
              description: "Replication of VM {{ $labels.vm }} from Hyper-V host {{ $labels.instance }} is in warning (state {{ $labels.state }}): replication cycles are being missed.",
              runbook_url: $._config.runbookURLBase + "HyperVReplicationUnhealthy.md",
            },
            threshold:: "replication health warning",
          },
          {
            alert: "HyperVReplicationLagging",
            expr: |||
              time() - hyperv_vm_replication_last_success_timestamp_seconds > %(replicationLagSeconds)s
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            ||| % $._config,
            'for': "10m",
            labels: { severity: "warning" },
            annotations: {
              summary: "Hyper-V Replica of a VM is not in sync.",
              description: "VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} last replicated successfully {{ $value | humanizeDuration }} ago: the replica would lose that much data on failover.",
              runbook_url: $._config.runbookURLBase + "HyperVReplicationLagging.md",
            },
            threshold:: "last successful replication older than 3600 s (1 h)",
          },
          {
            alert: "HyperVCheckpointTooOld",
            expr: |||
              time() - hyperv_vm_checkpoint_oldest_timestamp_seconds > %(checkpointMaxAgeSeconds)s
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
            ||| % $._config,
            'for': "1h",
            labels: { severity: "warning" },
            annotations: {
              summary: "A Hyper-V VM has an old checkpoint.",
              description: "The oldest of the {{ with printf \"hyperv_vm_checkpoints{instance=%q,job=%q,vm_id=%q}\" $labels.instance $labels.job $labels.vm_id | query }}{{ . | first | value }}{{ end }} checkpoints of VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} is {{ $value | humanizeDuration }} old: its differencing disk keeps growing and slows the VM down.",
              runbook_url: $._config.runbookURLBase + "HyperVCheckpointTooOld.md",
            },
            threshold:: "oldest checkpoint older than 7 days (604800 s)",
          },
        ],
      },
    ],
  },
}
