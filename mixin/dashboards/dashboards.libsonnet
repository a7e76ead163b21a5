// The dashboards: Grafana JSON as exported (dashboards/*.json here are the sources), with the
// settings of _config applied and what the mixin adds: links from every VM cell of the fleet
// overview's tables to the VM detail (that VM selected) and to Time drift, and the exporter's own
// health row. Rendered to dashboards/hyperv-<name>.json at the repository's top.
local panels = import '../lib/panels.libsonnet';

local withConfig(dashboard, config) = dashboard {
  tags: config.dashboardTags,
  refresh: config.dashboardRefresh,
  links: [
    link + (if link.type == 'dashboards' then { tags: [config.dashboardTags[0]] } else {})
    for link in super.links
  ],
};

// The column a table's organize transformation renames `label` to, or null.
local column(panel, label) =
  local names = [
    t.options.renameByName[label]
    for t in std.get(panel, 'transformations', [])
    if t.id == 'organize' && std.objectHas(std.get(t.options, 'renameByName', {}), label)
  ];
  if std.length(names) > 0 then names[0] else null;

// Data links on the VM column: the VM's detail page (job, host and VM selected) and Time drift
// (the guest of that VM selected), both keeping the time range.
local vmLinks(hostColumn) = [
  {
    title: 'VM detail: ${__value.raw}',
    url: '/d/hyperv-vm-detail/hyperv-vm-detail?var-job=${job}&var-host=${__data.fields["%s"]}&var-vm=${__value.raw}&${__url_time_range}' % hostColumn,
  },
  {
    title: 'Time drift: ${__value.raw}',
    url: '/d/hyperv-time-drift/hyperv-time-drift?var-vm=${__value.raw}&${__url_time_range}',
  },
];

local withVmLinks(panel) =
  local vm = column(panel, 'vm');
  local host = column(panel, 'instance');
  if panel.type == 'table' && vm != null && host != null then
    panel {
      fieldConfig+: {
        overrides+: [{ matcher: { id: 'byName', options: vm }, properties: [{ id: 'links', value: vmLinks(host) }] }],
      },
    }
  else panel;

local maxY(dashboard) = std.foldl(function(m, p) std.max(m, p.gridPos.y + p.gridPos.h), dashboard.panels, 0);
local maxId(dashboard) = std.foldl(function(m, p) std.max(m, p.id), dashboard.panels, 0);

// The exporter's own health: is it up, which hosts' probes fail and why, how long probes take,
// which collectors fail, how many VMs lost data in the last probe.
local exporterHealth(dashboard, config) =
  local y = maxY(dashboard);
  local id = maxId(dashboard);
  local hosts = 'job=~"$job", instance=~"$host"';
  [
    panels.row(id + 1, 'Exporter health', y),
    panels.stat(
      id + 2, 'Exporter up',
      "Whether Prometheus can scrape the exporter's own /metrics (up of the exporter job; the lowest of several exporters).",
      'min(up{%s})' % config.exporterSelector,
      { h: 4, w: 4, x: 0, y: y + 1 },
      mappings={ '0': ['down', 'red'], '1': ['up', 'green'] },
      steps=[[null, 'red'], [1, 'green']],
    ),
    panels.stat(
      id + 3, 'Collectors failing',
      'Collectors whose part of the last probe failed on a host that answered (hyperv_collector_success 0).',
      'count(hyperv_collector_success{%s} == 0) or vector(0)' % hosts,
      { h: 4, w: 4, x: 4, y: y + 1 },
      steps=[[null, 'green'], [0.5, 'orange']],
    ),
    panels.stat(
      id + 4, 'VMs that lost data',
      "VMs that lost a collector's data in the last probe (vanished mid-probe, no integration components): hyperv_collector_vm_problems.",
      'sum(hyperv_collector_vm_problems{%s}) or vector(0)' % hosts,
      { h: 4, w: 4, x: 8, y: y + 1 },
      steps=[[null, 'green'], [0.5, 'orange']],
    ),
    panels.timeseries(
      id + 5, 'Probe errors by reason',
      'Failed WinRM conversations per second, by reason (hyperv_exporter_probe_errors_total; docs/troubleshooting.md explains each reason).',
      [panels.target('sum by (reason) (rate(hyperv_exporter_probe_errors_total{%s}[$__rate_interval])) or vector(0)' % config.exporterSelector, legend='{{reason}}')],
      { h: 8, w: 12, x: 12, y: y + 1 },
      unit='reqps',
    ),
    panels.timeseries(
      id + 6, 'Probe duration',
      'How long the WinRM conversation of each probe took (hyperv_probe_duration_seconds), per host.',
      [panels.target('hyperv_probe_duration_seconds{%s}' % hosts, legend='{{instance}}')],
      { h: 8, w: 12, x: 0, y: y + 5 },
      unit='s',
    ),
    panels.timeseries(
      id + 7, 'Collector success',
      'Lowest hyperv_collector_success over the selected hosts, per collector (1: every host OK).',
      [panels.target('min by (collector) (hyperv_collector_success{%s})' % hosts, legend='{{collector}}')],
      { h: 8, w: 12, x: 12, y: y + 9 },
    ),
  ];

// windows_exporter's view of the VM (when it runs on the hosts with its hyperv collector): CPU,
// network and disk from the recording rules in rules/, matched to this VM by host and name.
local windowsExporterRow(dashboard) =
  local y = maxY(dashboard);
  local id = maxId(dashboard);
  local sel = 'instance="$host", vm="$vm"';
  [
    panels.row(id + 1, 'Resource use (windows_exporter)', y),
    panels.timeseries(
      id + 2, 'CPU (windows_exporter)',
      "Virtual processors' run time in cores, from windows_exporter's hyperv collector on the host (instance_vm:windows_hyperv_vm_cpu_usage_cores:rate5m). No data: windows_exporter is not scraped (docs/deployment.md#windows_exporter).",
      [panels.target('instance_vm:windows_hyperv_vm_cpu_usage_cores:rate5m{%s}' % sel, legend='cores')],
      { h: 8, w: 8, x: 0, y: y + 1 },
    ),
    panels.timeseries(
      id + 3, 'Network (windows_exporter)',
      "Bytes per second through the VM's virtual network adapters, from windows_exporter on the host.",
      [
        panels.target('instance_vm:windows_hyperv_vm_network_receive_bytes:rate5m{%s}' % sel, legend='received'),
        panels.target('instance_vm:windows_hyperv_vm_network_transmit_bytes:rate5m{%s}' % sel, 'B', legend='sent'),
      ],
      { h: 8, w: 8, x: 8, y: y + 1 },
      unit='Bps',
    ),
    panels.timeseries(
      id + 4, 'Disk (windows_exporter)',
      "Bytes per second read from and written to the VM's virtual hard disks (checkpoints included), from windows_exporter on the host.",
      [
        panels.target('instance_vm:windows_hyperv_vm_disk_read_bytes:rate5m{%s}' % sel, legend='read'),
        panels.target('instance_vm:windows_hyperv_vm_disk_write_bytes:rate5m{%s}' % sel, 'B', legend='written'),
      ],
      { h: 8, w: 8, x: 16, y: y + 1 },
      unit='Bps',
    ),
  ];

{
  grafanaDashboards+:: {
    'hyperv-fleet-overview.json':
      local base = withConfig(import 'fleet-overview.json', $._config);
      base {
        panels: [withVmLinks(p) for p in super.panels] + exporterHealth(base, $._config),
      },
    'hyperv-time-drift.json': withConfig(import 'time-drift.json', $._config),
    'hyperv-vm-detail.json':
      local base = withConfig(import 'vm-detail.json', $._config);
      base { panels+: windowsExporterRow(base) },
  },
}
