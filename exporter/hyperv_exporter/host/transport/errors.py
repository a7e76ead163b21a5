"""How a probe fails: one exception type with a reason from a fixed list, shared by every transport."""

from __future__ import annotations

# Failure reasons, used as label values and on the landing page.
REASONS = (
    "connection", "timeout", "auth", "access_denied", "tls", "winrm_fault", "powershell", "parse", "output_too_large",
)  # fmt: skip

#: WS-Management's "Access is denied" fault (f:WSManFault Code 5, subcode w:AccessDenied): the account
#: authenticated but may not use this endpoint, e.g. a non-administrator asking for a WinRS cmd shell.
WSMAN_ACCESS_DENIED = 5
ACCESS_DENIED_HINT = (
    "the account may not open this endpoint; WinRS cmd shells (protocol: winrs) are for Administrators only: "
    "use protocol: psrp, ideally with the read-only JEA endpoint (configuration_name: HyperVExporter)"
)


class ProbeError(Exception):
    """A probe failed; ``reason`` is one of :data:`REASONS`, the message never contains a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
