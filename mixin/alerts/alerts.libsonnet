local utils = import '../lib/utils.libsonnet';

(import 'exporter.libsonnet')
+ (import 'guest.libsonnet')
+ (import 'replication.libsonnet')
+ (import 'time.libsonnet')
+ (import 'vms.libsonnet')
+ {
  // Every alert expression gets the multi-site labels of _config.groupLabels.
  prometheusAlerts+:: {
    groups: [
      group { rules: [rule { expr: utils.addGroupLabels(super.expr, $._config.groupLabels) } for rule in group.rules] }
      for group in super.groups
    ],
  },
}
