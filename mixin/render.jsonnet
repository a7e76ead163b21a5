// The shipped files: the mixin with its default _config.
(import 'render.libsonnet')(import 'mixin.libsonnet')
