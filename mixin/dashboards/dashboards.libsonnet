// The dashboards: Grafana JSON as exported (dashboards/*.json here are the sources), with the
// settings of _config applied. Rendered to dashboards/hyperv-<name>.json at the repository's top.
local withConfig(dashboard, config) = dashboard {
  tags: config.dashboardTags,
  refresh: config.dashboardRefresh,
  links: [
    link + (if link.type == 'dashboards' then { tags: [config.dashboardTags[0]] } else {})
    for link in super.links
  ],
};

{
  grafanaDashboards+:: {
    'hyperv-fleet-overview.json': withConfig(import 'fleet-overview.json', $._config),
    'hyperv-time-drift.json': withConfig(import 'time-drift.json', $._config),
    'hyperv-vm-detail.json': withConfig(import 'vm-detail.json', $._config),
  },
}
