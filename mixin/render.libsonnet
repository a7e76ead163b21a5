// render.libsonnet(mixin): what scripts/render-mixin.py writes: the rule files (one per alert group, with the hidden
// comment fields of each group and the threshold of each rule for the file's header), the
// recording rules and the dashboards.
function(mixin) {
  runbookURLBase: mixin._config.runbookURLBase,
  ruleFiles: [
    {
      name: group.name,
      intro: group.intro,
      notes: group.notes,
      table: [
        { alert: rule.alert, severity: rule.labels.severity, 'for': rule['for'], threshold: rule.threshold }
        for rule in group.rules
      ],
      doc: { groups: [group] },
    }
    for group in mixin.prometheusAlerts.groups
  ],
  recordingRules: mixin.prometheusRules,
  dashboards: mixin.grafanaDashboards,
}
