// Settings of the Hyper-V mixin. Override any of them in your own jsonnet:
//   (import 'hyperv-exporter/mixin/mixin.libsonnet') + { _config+:: { runbookURLBase: 'https://wiki.example.com/runbooks/' } }
{
  _config+:: {
    // Selectors of the three scrape jobs (examples/prometheus/prometheus.yml names them so).
    // The /probe job: one target per Hyper-V host, instance = host name.
    hypervSelector: 'job="hyperv"',
    // The exporter's own /metrics.
    exporterSelector: 'job="hyperv-exporter"',
    // hyperv-guest-agent in the VMs.
    guestSelector: 'job="hyperv-guest"',
    // windows_exporter on the Hyper-V hosts, with its hyperv collector enabled (optional: the
    // recording rules in rules/ and the VM detail's "windows_exporter" row use it when it is scraped).
    // Its instance, without the port, must be the host name the /probe job uses as instance.
    windowsExporterSelector: 'job="windows"',
    // node_exporter on the guests that use textfile mode (deploy/systemd/hyperv-guest-agent-textfile.*).
    nodeExporterSelector: 'job="node"',

    // Where the runbooks are published; each alert links <runbookURLBase><AlertName>.md. The
    // default is the runbooks' path in this repository (docs/runbooks/), which is where someone who
    // has only this repository finds them; point it at your published copy (a wiki, your Git
    // forge's view of docs/runbooks/) so that the link opens from Alertmanager and Grafana.
    runbookURLBase: 'docs/runbooks/',

    // Labels that tell apart series from several Prometheus servers or Kubernetes clusters in one
    // query layer (Thanos, Mimir, Cortex): e.g. ['cluster'] or ['cluster', 'namespace']. They are
    // added to every on (...) and by (...) of the alert expressions so that two sites' hosts with
    // the same instance name never match each other. Empty: one Prometheus.
    // Not the Hyper-V failover cluster: that one is hyperv_host_info{cluster}.
    groupLabels: [],

    // Thresholds (docs/alerts.md explains each).
    vmUptimeGraceSeconds: 600,  // VMs booting for less than this do not raise heartbeat/service alerts
    replicationLagSeconds: 3600,  // last successful replication older than this: HyperVReplicationLagging
    checkpointMaxAgeSeconds: 7 * 86400,  // oldest checkpoint older than this: HyperVCheckpointTooOld
    textfileMaxAgeSeconds: 900,  // agent's textfile not rewritten for this long: HyperVGuestTextfileStale

    // Dashboards.
    dashboardTags: ['hyperv-mixin', 'hyperv'],  // the first one links the dashboards to each other
    dashboardRefresh: '1m',
  },
}
