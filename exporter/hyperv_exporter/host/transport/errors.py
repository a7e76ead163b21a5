"""How a probe fails: one exception type with a reason from a fixed list, shared by every transport."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

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

#: WS-Management's "invalid selectors" fault: the shell or command no longer exists on the host
#: (idle timeout, service restart).
WSMAN_INVALID_SELECTORS = 2150858843


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


def wsman_fault(code: int | str | None, reason: str | None) -> ProbeError:
    """The probe's error for a WS-Management fault of either protocol: ``access_denied`` with its hint
    for fault 5, else ``winrm_fault``; the host's text as an :func:`excerpt`."""
    text = excerpt(reason or "", 300)
    if code == WSMAN_ACCESS_DENIED:
        return ProbeError("access_denied", f"WS-Management fault 5: {text} ({ACCESS_DENIED_HINT})")
    return ProbeError("winrm_fault", f"WS-Management fault {code}: {text}")


F = TypeVar("F", bound=Exception)


@dataclass(frozen=True)
class KeptRule(Generic[F]):
    """What a transport does when a run on its kept WinRS shell or PSRP runspace pool fails.

    ``fault`` is the client library's WS-Management fault and ``code`` reads its fault code;
    ``graceful`` says, after any other failure, whether the host may still hold the shell and so
    it is deleted there in the background (else it is only forgotten: the connection is gone).
    """

    fault: type[F]
    code: Callable[[F], int | None]
    classify: Callable[[BaseException], ProbeError]
    graceful: Callable[[ProbeError], bool]

    def fail(self, exc: Exception, *, reused: bool, again: bool, drop: Callable[[bool], None]) -> None:
        """Drop the kept shell (``drop(graceful)``) and raise the probe's error for ``exc``.

        Returns, for one more run on a new shell, only when the host no longer had the ``reused``
        shell and ``again`` allows another run.
        """
        if isinstance(exc, ProbeError):
            drop(True)
            raise exc
        if isinstance(exc, self.fault):
            stale = self.code(exc) == WSMAN_INVALID_SELECTORS and reused
            drop(not stale)
            if stale and again:
                return
            raise self.classify(exc) from None
        error = self.classify(exc)
        drop(self.graceful(error))
        raise error from None
