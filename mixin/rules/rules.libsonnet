{
  prometheusRules+:: {
    groups+: [],
  },
}
