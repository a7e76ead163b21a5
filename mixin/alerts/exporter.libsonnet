{
  prometheusAlerts+:: {
    groups+: [
      {
        name: "hyperv-exporter",
        // Comment block of the rendered rule file: before and after its table of rules.
        intro:: |||
          Alerts on the exporter and its probes of the Hyper-V hosts.

          Thresholds and durations (the single list of all of them is docs/alerts.md; a test keeps the
          two in step). Change a value where its rule uses it:
        |||,
        notes:: |||
          Selectors: job="hyperv" is the /probe job (one target per Hyper-V host, instance = host name),
          job="hyperv-exporter" the exporter's own /metrics (examples/prometheus/prometheus.yml). The
          hyperv_* metric names are unique to this exporter, so they carry no job selector.
        |||,
        rules: [
          {
            alert: "HyperVExporterDown",
            // The exporter's address also as label `exporter`: the probe job's series carry it
            // (examples/prometheus/prometheus.yml), so Alertmanager can inhibit the per-host alerts
            // of this exporter (inhibit_rules in examples/alertmanager/alertmanager.yml).
            expr: |||
              label_replace(up{%(exporterSelector)s} == 0, "exporter", "$1", "instance", "(.*)")
            ||| % $._config,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "The Hyper-V exporter cannot be scraped.",
              description: "Prometheus cannot scrape the exporter's own metrics at {{ $labels.instance }} (job {{ $labels.job }}): the exporter process is down or unreachable, so no Hyper-V host it serves is monitored.",
              runbook_url: $._config.runbookURLBase + "HyperVExporterDown.md",
            },
            threshold:: "up{%(exporterSelector)s} == 0" % $._config,
          },
          {
            alert: "HyperVExporterTargetDown",
            // Not while this host's exporter is down (HyperVExporterDown pages for that): Prometheus
            // scrapes the two jobs at independent offsets, so a dead exporter's /probe targets can go
            // pending a scrape interval before its own job does, and fire (and page, past
            // Alertmanager's group_wait) before the inhibit rule has a source. With `unless`, the
            // pending targets are dropped as soon as the exporter's own scrape fails.
            expr: |||
              (
                hyperv_up == 0
                or
                up{%(hypervSelector)s} == 0
              )
              unless on (exporter)
              label_replace(up{%(exporterSelector)s} == 0, "exporter", "$1", "instance", "(.*)")
            ||| % $._config,
            'for': "5m",
            labels: { severity: "critical" },
            annotations: {
              summary: "A Hyper-V host cannot be probed.",
              description: "Hyper-V host {{ $labels.instance }} has not been probed successfully: {{ if eq $labels.__name__ \"up\" }}Prometheus cannot scrape the exporter's /probe endpoint for it{{ else }}the exporter cannot collect from it over WinRM (see hyperv_exporter_probe_errors_total{target=\"{{ $labels.instance }}\"} for the reason){{ end }}. None of its VMs is monitored.",
              runbook_url: $._config.runbookURLBase + "HyperVExporterTargetDown.md",
            },
            threshold:: "hyperv_up == 0 or up{%(hypervSelector)s} == 0" % $._config,
          },
          {
            alert: "HyperVCollectorFailing",
            expr: |||
              hyperv_collector_success == 0
              unless on (instance, job)
              (hyperv_up == 0)
            |||,
            'for': "15m",
            labels: { severity: "warning" },
            annotations: {
              summary: "A collector of the Hyper-V exporter fails on a host.",
              description: "The {{ $labels.collector }} collector fails on Hyper-V host {{ $labels.instance }} while the host itself answers: its metrics are missing for every VM on that host.",
              runbook_url: $._config.runbookURLBase + "HyperVCollectorFailing.md",
            },
            threshold:: "hyperv_collector_success == 0 (host reachable)",
          },
          {
            alert: "HyperVExporterConfigReloadFailed",
            expr: |||
              hyperv_exporter_config_last_reload_successful == 0
            |||,
            'for': "5m",
            labels: { severity: "warning" },
            annotations: {
              summary: "The Hyper-V exporter could not reload its configuration.",
              description: "The exporter at {{ $labels.instance }} rejected its changed configuration file and keeps running with the previous one; the next restart will fail.",
              runbook_url: $._config.runbookURLBase + "HyperVExporterConfigReloadFailed.md",
            },
            threshold:: "hyperv_exporter_config_last_reload_successful == 0",
          },
        ],
      },
    ],
  },
}
