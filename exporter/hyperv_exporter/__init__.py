"""hyperv-exporter: Prometheus exporter for Hyper-V integration services.

Package layout (one module per concern):

- ``host``       the host exporter (``hyperv-exporter``): configuration, probing over WinRM, report
                 parsing, collectors, HTTP endpoints. Its ``__init__`` lists its modules in probe order.
- ``guest``      the guest agent (``hyperv-guest-agent``): clock drift, integration components, KVP pools.
- ``sim``        the Hyper-V host simulator (``hyperv-sim``): fleet file, WS-Management server, generator.
- ``web``        HTTP serving shared by both programs, with the exporter-toolkit web config (TLS, basic auth).
- ``enums``      Hyper-V enum names and integration-service GUIDs, shared by host and guest side.
- ``logutil``, ``yamlutil``, ``allocator``  logging, strict YAML reading, glibc malloc settings.
- ``metricsdoc`` generates docs/metrics.md from the code (``python -m hyperv_exporter.metricsdoc``).
"""

__version__ = "0.1.0"
