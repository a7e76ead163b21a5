"""hyperv-exporter: Prometheus exporter for Hyper-V integration services.

Package layout (one module per concern):

- ``enums``            Hyper-V enum names and integration-service GUIDs, shared by host and guest side.
- ``model``            typed records for one host's collection report.
- ``collect.ps1``      the PowerShell collection script shipped to hosts; ``script`` builds its command line.
- ``report``           raw WinRM output -> ``model.HostReport`` (decoding, caps, JSON -> records).
- ``cimxml``           KVP CIM-XML items -> key/value pairs (defusedxml, allowlist, cleaning).
- ``collectors``       records -> metric families, one module per collector; ``base`` renders the text directly.
- ``winrm_client``     the WinRM conversation (pywinrm's Protocol, shell reuse, deadlines).
- ``winrm_transport``  pywinrm's HTTP transport, hardened: capped bodies, a watchdog deadline, no DTDs.
- ``probe``            one probe of one target: deadline, single flight, caching, error reasons.
- ``config``           the exporter's YAML configuration, strictly validated.
- ``http_app``         /probe, /metrics, landing page; ``web`` serves it (TLS, basic auth).
- ``discovery``        /sd: Prometheus HTTP service discovery of guest agents, from the hosts' KVP addresses.
- ``metricsdoc``       generates docs/metrics.md from the code (``python -m hyperv_exporter.metricsdoc``).
- ``allocator``        glibc malloc settings that keep a many-threaded exporter's memory bounded.
- ``sim``              the Hyper-V host simulator (fleet file, WS-Management server, large-fleet ``generator``).
- ``guest``            the guest agent (clock drift, integration components, KVP pools).
"""

__version__ = "0.1.0"
