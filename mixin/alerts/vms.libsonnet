{
  prometheusAlerts+:: {
    groups+: [
      {
        name: "hyperv-vms",
        // Comment block of the rendered rule file: before and after its table of rules.
        intro:: |||
          Alerts on Hyper-V VMs and their integration services, from the host exporter (/probe).

          Thresholds and durations (the single list of all of them is docs/alerts.md; a test keeps the
          two in step). Change a value where its rule uses it:
        |||,
        notes:: |||
          Conventions of every VM alert here:
            - only running VMs alert (hyperv_vm_state{state="running"} == 1): an off or saved VM has no
              heartbeat and no operational status, and its configuration is checked when it runs;
            - replica VMs never alert (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"}):
              they are off by design and mirror their primary, which alerts instead;
            - the uptime grace (600 s) keeps VMs that are still booting quiet: their integration
              services answer only once the guest OS has started them;
            - series are matched on (instance, job, vm_id): vm_id is the VM's GUID, unique per host.
        |||,
        rules: [
          {
            alert: "HyperVVMHeartbeatLost",
            expr: |||
              hyperv_vm_heartbeat{status=~"lost_communication|no_contact"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              and on (instance, job, vm_id) (hyperv_vm_uptime_seconds > %(vmUptimeGraceSeconds)s)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            ||| % $._config,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "A running Hyper-V VM has lost its heartbeat.",
              description: "VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} is running but its heartbeat is {{ $labels.status }}: the guest OS is hung or crashed, or its heartbeat service stopped.",
              runbook_url: $._config.runbookURLBase + "HyperVVMHeartbeatLost.md",
            },
            threshold:: "heartbeat lost_communication|no_contact, uptime > 600 s",
          },
          {
            alert: "HyperVVMApplicationsCritical",
            expr: |||
              hyperv_vm_heartbeat{status="ok_applications_critical"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "A Hyper-V VM reports its applications as critical.",
              description: "The guest of VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} reports its applications as critical through the heartbeat service: a monitored application or service inside the VM has failed.",
              runbook_url: $._config.runbookURLBase + "HyperVVMApplicationsCritical.md",
            },
            threshold:: "heartbeat ok_applications_critical",
          },
          {
            alert: "HyperVVMCriticalState",
            expr: |||
              hyperv_vm_state{state=~".+_critical"} == 1
            |||,
            'for': "2m",
            labels: { severity: "critical" },
            annotations: {
              summary: "A Hyper-V VM is in a critical state.",
              description: "VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} is in state {{ $labels.state }}: Hyper-V has lost access to the VM's configuration or storage.",
              runbook_url: $._config.runbookURLBase + "HyperVVMCriticalState.md",
            },
            threshold:: "state *_critical (storage inaccessible)",
          },
          {
            alert: "HyperVIntegrationServiceDisabled",
            expr: |||
              hyperv_vm_integration_service_status{service=~"shutdown|time_synchronization|key_value_pair_exchange|heartbeat|vss", status="disabled"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "A default integration service is disabled for a Hyper-V VM.",
              description: "Integration service {{ $labels.service }} is disabled for VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }}, although Hyper-V enables it by default.",
              runbook_url: $._config.runbookURLBase + "HyperVIntegrationServiceDisabled.md",
            },
            threshold:: "a default-on service disabled",
          },
          {
            alert: "HyperVIntegrationServiceUnhealthy",
            expr: |||
              hyperv_vm_integration_service_status{status!~"ok|disabled"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              and on (instance, job, vm_id) (hyperv_vm_uptime_seconds > %(vmUptimeGraceSeconds)s)
              unless on (instance, job, vm_id, service) hyperv_vm_integration_service_status{service="heartbeat", status=~"lost_communication|no_contact"}
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            ||| % $._config,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "An enabled integration service of a Hyper-V VM is not OK.",
              description: "Integration service {{ $labels.service }} of VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} is enabled but its status is {{ $labels.status }}: the guest does not run its side of the service.",
              runbook_url: $._config.runbookURLBase + "HyperVIntegrationServiceUnhealthy.md",
            },
            threshold:: "enabled service not OK, uptime > 600 s",
          },
          {
            alert: "HyperVIntegrationServicesOutdated",
            expr: |||
              hyperv_vm_integration_services_up_to_date == 0
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "1h",
            labels: { severity: "warning" },
            annotations: {
              summary: "The integration services of a Hyper-V VM are outdated.",
              description: "VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }} runs integration services {{ with printf \"hyperv_vm_info{instance=%q,job=%q,vm_id=%q}\" $labels.instance $labels.job $labels.vm_id | query }}{{ . | first | label \"integration_services_version\" }}{{ else }}of an older version{{ end }}, older than the host offers.",
              runbook_url: $._config.runbookURLBase + "HyperVIntegrationServicesOutdated.md",
            },
            threshold:: "hyperv_vm_integration_services_up_to_date == 0 (2012 R2: state; 2016+: version)",
          },
          {
            alert: "HyperVGuestServiceInterfaceEnabled",
            expr: |||
              hyperv_vm_integration_service_status{service="guest_service_interface", status!="disabled"} == 1
              and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              unless on (instance, job, vm_id) (hyperv_vm_replication_mode{mode=~"replica|test_replica|extended_replica"} == 1)
            |||,
            'for': "15m",
            labels: { severity: "info" },
            annotations: {
              summary: "Guest Service Interface is enabled for a Hyper-V VM.",
              description: "Guest Service Interface is enabled for VM {{ $labels.vm }} on Hyper-V host {{ $labels.instance }}: anyone with Hyper-V administrator rights can copy files into the guest (Copy-VMFile). It is off by default; leave it on only where it is needed.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestServiceInterfaceEnabled.md",
            },
            threshold:: "guest_service_interface enabled",
          },
        ],
      },
    ],
  },
}
