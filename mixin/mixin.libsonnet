// The Hyper-V monitoring mixin (monitoring-mixins layout): prometheusAlerts, prometheusRules,
// grafanaDashboards and _config. alerts/, rules/ and dashboards/ at the repository's top are
// rendered from it by scripts/render-mixin.py; tests/test_mixin.py fails when they differ.
(import 'config.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'rules/rules.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
