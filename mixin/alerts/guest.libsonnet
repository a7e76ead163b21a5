{
  prometheusAlerts+:: {
    groups+: [
      {
        name: "hyperv-guest",
        // Comment block of the rendered rule file: before and after its table of rules.
        intro:: |||
          Alerts on hyperv-guest-agent and the guest side of the integration services.

          Thresholds and durations (the single list of all of them is docs/alerts.md; a test keeps the
          two in step). Change a value where its rule uses it:
        |||,
        notes:: |||
          Joins: a guest is tied to its VM by hyperv_guest_host_info{vm_id} (the VM's GUID from KVP pool 3),
          the same vm_id the host exporter puts on every per-VM series. Only the host running the VM
          counts: a replica of the same VM (same GUID, off) on another host is ignored.
          HyperVGuestAgentDown remembers a guest's vm_id for 1 day (last_over_time(...[1d])) so that a
          VM that has been shut down on purpose does not alert; a guest off for longer does.

          Selectors: job="hyperv-guest" is the guest agent job (examples/prometheus/prometheus.yml);
          job="node" the node_exporter that publishes the agent's file in textfile mode.
        |||,
        rules: [
          {
            alert: "HyperVGuestAgentDown",
            expr: |||
              up{%(guestSelector)s} == 0
              unless on (instance, job)
              (
                max by (instance, job, vm_id) (last_over_time(hyperv_guest_host_info[1d]))
                * on (vm_id) group_left ()
                (max by (vm_id) (hyperv_vm_state) unless on (vm_id) (hyperv_vm_state{state="running"} == 1))
              )
            ||| % $._config,
            'for': "5m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The Hyper-V guest agent cannot be scraped.",
              description: "Prometheus cannot scrape hyperv-guest-agent on {{ $labels.instance }}{{ with printf \"last_over_time(hyperv_guest_host_info{instance=%q,job=%q}[1d])\" $labels.instance $labels.job | query }} (VM {{ . | first | label \"vm_name\" }} on Hyper-V host {{ . | first | label \"host_name\" }}){{ end }}: the agent or the VM is down, or the network path to it is blocked. The guest's clock is not monitored meanwhile.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestAgentDown.md",
            },
            threshold:: "up{%(guestSelector)s} == 0, unless the VM is known to be not running" % $._config,
          },
          {
            alert: "HyperVGuestDaemonDown",
            expr: |||
              (hyperv_guest_daemon_running{service=~"key_value_pair_exchange|vss|guest_service_interface"} == 0)
              * on (instance, job) group_left (vm_id, vm_name) hyperv_guest_host_info
              and on (vm_id, service)
              max by (vm_id, service) (
                (hyperv_vm_integration_service_status{service=~"key_value_pair_exchange|vss|guest_service_interface", status!="disabled"} == 1)
                and on (instance, job, vm_id) (hyperv_vm_state{state="running"} == 1)
              )
            |||,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "An integration service daemon is not running in a Hyper-V guest.",
              description: "The guest side of integration service {{ $labels.service }} does not run in VM {{ $labels.vm_name }} (guest {{ $labels.instance }}{{ with printf \"hyperv_guest_host_info{instance=%q,job=%q}\" $labels.instance $labels.job | query }} on Hyper-V host {{ . | first | label \"host_name\" }}{{ end }}), although the host enables the service for it.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestDaemonDown.md",
            },
            threshold:: "KVP/VSS/file-copy daemon not running while the host enables the service",
          },
          {
            alert: "HyperVGuestTextfileStale",
            // node_exporter labels the file by its base name (older releases) or its full path
            // (releases that read several directories): match both.
            expr: |||
              time() - node_textfile_mtime_seconds{%(nodeExporterSelector)s, file=~"(.*/)?hyperv_guest[.]prom"} > %(textfileMaxAgeSeconds)s
            ||| % $._config,
            'for': "5m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The guest agent's textfile is not being rewritten.",
              description: "node_exporter on {{ $labels.instance }} reads {{ $labels.file }}, last rewritten {{ $value | humanizeDuration }} ago: hyperv-guest-agent in textfile mode (hyperv-guest-agent-textfile.timer) no longer runs, so the guest's clock and integration daemons are reported from old data.",
              runbook_url: $._config.runbookURLBase + "HyperVGuestTextfileStale.md",
            },
            threshold:: "node_textfile_mtime_seconds of hyperv_guest.prom older than %(textfileMaxAgeSeconds)s s" % $._config,
          },
        ],
      },
    ],
  },
}
