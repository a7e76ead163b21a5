{
  prometheusAlerts+:: {
    groups+: [
      {
        name: "hyperv-time",
        // Comment block of the rendered rule file: before and after its table of rules.
        intro:: |||
          Alerts on clocks: Hyper-V hosts (host exporter) and guests (hyperv-guest-agent).

          Thresholds and durations (the single list of all of them is docs/alerts.md; a test keeps the
          two in step). Change a value where its rule uses it:
        |||,
        notes:: |||
          Why these numbers (docs/alerts.md has the sources): Kerberos refuses tickets at 5 minutes of
          skew, so every page comes far earlier. 50 ms is node-mixin's NodeClockSkewDetected level; 100 ms
          and 1 s are the usual warn/page levels for a VM against its host; 5 s is where Hyper-V itself
          steps guests to the host clock (a host that far off drags its guests with it). Offsets are
          compared minus their measurement uncertainty, so a slow network path cannot raise an alert.

          Selectors: the guest agent's metrics are hyperv_guest_*; guests are joined to the host
          exporter's series by the VM's GUID (vm_id) through hyperv_guest_host_info.
        |||,
        rules: [
          {
            alert: "HyperVHostClockDrift",
            expr: |||
              hyperv_host_time_offset_seconds
              and
              abs(hyperv_host_time_offset_seconds) - hyperv_host_time_offset_uncertainty_seconds > 1
            |||,
            'for': "10m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The clock of a Hyper-V host is off.",
              description: "The clock of Hyper-V host {{ $labels.instance }} is {{ printf \"%+.3f\" $value }} s off the exporter's clock. VMs that take their time from the host follow it. If every host shows about the same offset, the exporter's own clock is the one that is wrong.",
              runbook_url: $._config.runbookURLBase + "HyperVHostClockDrift.md",
            },
            threshold:: "|host - exporter clock| - uncertainty > 1 s",
          },
          {
            alert: "HyperVHostClockDrift",
            expr: |||
              hyperv_host_time_offset_seconds
              and
              abs(hyperv_host_time_offset_seconds) - hyperv_host_time_offset_uncertainty_seconds > 5
            |||,
            'for': "10m",
            labels: { severity: "critical" },
            annotations: {
              summary: "The clock of a Hyper-V host is far off.",
              description: "The clock of Hyper-V host {{ $labels.instance }} is {{ printf \"%+.3f\" $value }} s off the exporter's clock: Hyper-V steps guests that are 5 s or more behind it to the host's wrong time. If every host shows about the same offset, the exporter's own clock is the one that is wrong.",
              runbook_url: $._config.runbookURLBase + "HyperVHostClockDrift.md",
            },
            threshold:: "|host - exporter clock| - uncertainty > 5 s",
          },
          {
            alert: "HyperVGuestClockSkew",
            expr: |||
              min without (server) (
                abs(hyperv_guest_clock_offset_seconds{reference="ntp"})
                - hyperv_guest_clock_offset_uncertainty_seconds{reference="ntp"}
              ) > 0.05
            |||,
            'for': "10m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The clock of a Hyper-V guest is off.",
              description: "The clock of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} is at least {{ printf \"%.3f\" $value }} s off every NTP server it can reach.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestClockSkew.md",
            },
            threshold:: "|guest - NTP| - uncertainty > 0.05 s for every reachable server",
          },
          {
            alert: "HyperVGuestClockSkew",
            expr: |||
              min without (server) (
                abs(hyperv_guest_clock_offset_seconds{reference="ntp"})
                - hyperv_guest_clock_offset_uncertainty_seconds{reference="ntp"}
              ) > 1
            |||,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "The clock of a Hyper-V guest is far off.",
              description: "The clock of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} is at least {{ printf \"%.3f\" $value }} s off every NTP server it can reach; at 300 s Kerberos authentication fails.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestClockSkew.md",
            },
            threshold:: "|guest - NTP| - uncertainty > 1 s for every reachable server",
          },
          {
            alert: "HyperVGuestHostClockSkew",
            expr: |||
              hyperv_guest_clock_offset_seconds{reference="host"}
              and
              abs(hyperv_guest_clock_offset_seconds{reference="host"})
              - hyperv_guest_clock_offset_uncertainty_seconds{reference="host"} > 0.1
            |||,
            'for': "10m",
            labels: { severity: "warning" },
            annotations: {
              summary: "A Hyper-V guest's clock disagrees with its host.",
              description: "The clock of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} is {{ printf \"%+.3f\" $value }} s off its Hyper-V host's clock (positive: the guest is ahead).",
              runbook_url: $._config.runbookURLBase + "HyperVGuestHostClockSkew.md",
            },
            threshold:: "|guest - host (PTP)| - uncertainty > 0.1 s",
          },
          {
            alert: "HyperVGuestHostClockSkew",
            expr: |||
              hyperv_guest_clock_offset_seconds{reference="host"}
              and
              abs(hyperv_guest_clock_offset_seconds{reference="host"})
              - hyperv_guest_clock_offset_uncertainty_seconds{reference="host"} > 1
            |||,
            'for': "10m",
            labels: { severity: "critical" },
            annotations: {
              summary: "A Hyper-V guest's clock is far off its host.",
              description: "The clock of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} is {{ printf \"%+.3f\" $value }} s off its Hyper-V host's clock (positive: the guest is ahead). If all VMs of one host show about the same offset, the host's clock is the one that is wrong.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestHostClockSkew.md",
            },
            threshold:: "|guest - host (PTP)| - uncertainty > 1 s",
          },
          {
            alert: "HyperVGuestTimeSyncStale",
            expr: |||
              hyperv_guest_host_clock_stale == 1
              unless on (instance, job)
              (
                hyperv_guest_host_info
                * on (vm_id) group_left ()
                max by (vm_id) (
                  (hyperv_vm_integration_service_status{service="time_synchronization", status="disabled"} == 1)
                  and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
                )
              )
            |||,
            'for': "5m",
            labels: { severity: "warning" },
            annotations: {
              summary: "A Hyper-V guest receives no time from its host.",
              description: "The Hyper-V clock of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} is stale: the host has sent no time sample for over 10 minutes although time synchronization is not disabled for the VM.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestTimeSyncStale.md",
            },
            threshold:: "the host's PTP clock is stale (ESTALE) while the host enables time sync",
          },
          {
            alert: "HyperVGuestNTPUnreachable",
            expr: |||
              hyperv_guest_ntp_up == 0
            |||,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "A Hyper-V guest cannot use an NTP server.",
              description: "Guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} gets no usable answer from NTP server {{ $labels.server }} ({{ with printf \"hyperv_guest_ntp_error_info{instance=%q,job=%q,server=%q}\" $labels.instance $labels.job $labels.server | query }}{{ . | first | label \"reason\" }}{{ else }}no reason reported{{ end }}).",
              runbook_url: $._config.runbookURLBase + "HyperVGuestNTPUnreachable.md",
            },
            threshold:: "hyperv_guest_ntp_up == 0",
          },
          {
            alert: "HyperVGuestClockNotSynchronising",
            expr: |||
              min_over_time(hyperv_guest_timex_sync_status[5m]) == 0
              and
              hyperv_guest_timex_maxerror_seconds >= 16
            |||,
            'for': "10m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The kernel clock of a Hyper-V guest is not synchronised.",
              description: "The kernel of guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }} considers its clock unsynchronised: no time daemon (chrony, ntpd, systemd-timesyncd) disciplines it.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestClockNotSynchronising.md",
            },
            threshold:: "kernel unsynchronised for 5m and maxerror >= 16 s",
          },
        ],
      },
    ],
  },
}
