"""How a probe fails: one exception type with a reason from a fixed list, shared by every transport."""

from __future__ import annotations

# Failure reasons, used as label values and on the landing page.
REASONS = ("connection", "timeout", "auth", "tls", "winrm_fault", "powershell", "parse", "output_too_large")


class ProbeError(Exception):
    """A probe failed; ``reason`` is one of :data:`REASONS`, the message never contains a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
