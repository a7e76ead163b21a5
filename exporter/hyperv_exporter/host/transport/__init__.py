"""WinRM transports: how a probe's collection runs on a host and comes back as bytes.

- ``http``      pywinrm's HTTP transport, hardened: capped bodies, a watchdog deadline, no DTDs.
- ``winrs``     a WinRS ``cmd`` shell kept across probes that runs ``powershell.exe`` per probe.
- ``settings``  a module's connection settings; ``errors`` the failure type and reasons.
"""
