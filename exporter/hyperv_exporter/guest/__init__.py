"""The Hyper-V guest agent (``hyperv-guest-agent``), one module per concern.

- ``ptp``          guest vs Hyper-V host clock via the hv_utils PTP clock (PTP_SYS_OFFSET ioctl).
- ``ntp``          guest vs NTP servers: SNTP exchange, validation, min-delay choice, rate limiting.
- ``ntpconf``      the NTP servers chrony, timesyncd and ntpd are configured with.
- ``timex``        kernel clock discipline via read-only adjtimex(2).
- ``components``   Hyper-V detection, kernel modules and integration daemons (Linux).
- ``kvp_pool``     KVP pool files: format, locked reading, allowlist, cleaning.
- ``windows``      vmic* services, VMICTimeProvider and registry KVP behind a thin seam.
- ``metrics``      results -> metric families; ``collector`` runs the probes; ``cli`` the program.
- ``handler``      /metrics and the landing page; ``textfile`` atomic .prom files.
- ``rootfs``       the ``--root`` prefix for every path read.
"""
