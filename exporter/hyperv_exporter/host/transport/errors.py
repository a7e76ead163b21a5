"""How a probe fails: one exception type with a reason from a fixed list, shared by every transport."""

from __future__ import annotations

# Failure reasons, used as label values and on the landing page.
REASONS = (
    "connection",
    "dns",
    "timeout",
    "auth",
    "access_denied",
    "tls",
    "redirect",
    "winrm_fault",
    "powershell",
    "parse",
    "output_too_large",
)

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


def excerpt(data: bytes | str, limit: int = 120) -> str:
    """A short, printable excerpt of text a host sent (an error body, a Location header).

    Decoded as UTF-8 with replacement, every character that is not printable (controls, escape
    sequences, bidi overrides) shown as ``?``, whitespace runs collapsed, cut at ``limit``: the
    text goes into error messages, logs and the landing page, where a host must not be able to
    write raw bytes or unbounded text.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit] + ("..." if len(text) > limit else "")
