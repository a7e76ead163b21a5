{
  // expr with `labels` added to every `on (...)` and `by (...)` list (see _config.groupLabels).
  addGroupLabels(expr, labels)::
    if std.length(labels) == 0 then expr
    else
      local head = std.join(', ', labels);
      local withOn = std.strReplace(std.strReplace(expr, 'on ()', 'on (' + head + ')'), 'on (', 'on (' + head + ', ');
      local fixed = std.strReplace(withOn, 'on (' + head + ', ' + head + ')', 'on (' + head + ')');
      std.strReplace(fixed, 'by (', 'by (' + head + ', '),
}
