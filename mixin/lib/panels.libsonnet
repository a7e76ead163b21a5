// Small builders for the panels the mixin adds to the exported dashboards (same shape as Grafana's
// own export, so the dashboards stay importable as they are).
local ds = { type: 'prometheus', uid: '${datasource}' };

{
  datasource:: ds,

  target(expr, refId='A', legend='__auto', instant=false):: {
    datasource: ds,
    editorMode: 'code',
    expr: expr,
    instant: instant,
    range: !instant,
    legendFormat: legend,
    refId: refId,
  },

  row(id, title, y):: {
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: y },
    id: id,
    panels: [],
    title: title,
    type: 'row',
  },

  // A single number; mappings: {'0': ['down', 'red'], ...}; steps: [[null, 'green'], [0.5, 'red']].
  stat(id, title, description, expr, gridPos, mappings={}, steps=[[null, 'green']], unit='none'):: {
    datasource: ds,
    description: description,
    fieldConfig: {
      defaults: {
        color: { mode: 'thresholds' },
        mappings: if std.length(mappings) == 0 then [] else [{
          type: 'value',
          options: {
            [value]: { text: mappings[value][0], color: mappings[value][1], index: i }
            for i in std.range(0, std.length(std.objectFields(mappings)) - 1)
            for value in [std.objectFields(mappings)[i]]
          },
        }],
        thresholds: { mode: 'absolute', steps: [{ value: s[0], color: s[1] } for s in steps] },
        unit: unit,
      },
      overrides: [],
    },
    gridPos: gridPos,
    id: id,
    options: {
      colorMode: 'value',
      graphMode: 'none',
      justifyMode: 'auto',
      orientation: 'auto',
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      showPercentChange: false,
      textMode: 'value',
      wideLayout: true,
    },
    targets: [$.target(expr, instant=true)],
    title: title,
    type: 'stat',
  },

  timeseries(id, title, description, targets, gridPos, unit='none'):: {
    datasource: ds,
    description: description,
    fieldConfig: {
      defaults: {
        color: { mode: 'palette-classic' },
        custom: { drawStyle: 'line', fillOpacity: 0, lineWidth: 1, showPoints: 'never', spanNulls: false },
        unit: unit,
      },
      overrides: [],
    },
    gridPos: gridPos,
    id: id,
    options: {
      legend: { calcs: [], displayMode: 'list', placement: 'bottom', showLegend: true },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    targets: targets,
    title: title,
    type: 'timeseries',
  },
}
