"""The host exporter: probes Hyper-V hosts over WinRM and renders their VMs' metrics.

One probe reads top to bottom through these modules (none imports a module listed after it,
except for types):

- ``http_app``   /probe, /metrics, /sd, landing page (``landing``); served by :mod:`hyperv_exporter.web`.
- ``probe``      one probe of one target: deadline, single flight, caching, error reasons.
- ``transport``  the WinRM conversation: ``winrs`` (a WinRS shell running PowerShell), the shared hardened
                 HTTP layer ``http``, connection ``settings`` and failure ``errors``.
- ``script``     builds the command that runs ``collect.ps1``, the collection script shipped to hosts.
- ``report``     raw output -> ``model.HostReport`` records (``cimxml`` parses KVP items).
- ``collectors`` records -> metric families, one module per collector; ``exposition`` renders them.

Around them: ``cli`` (command line), ``config`` (the YAML configuration, strictly validated),
``selfmetrics`` (the exporter's own /metrics), ``discovery`` and ``sd`` (/sd service discovery of
guest agents from the hosts' KVP addresses).
"""
