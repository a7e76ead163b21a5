"""Thread-safe request counters of one simulated WinRM listener."""

from __future__ import annotations

import threading

#: Counter names, in the order :meth:`WSManStats.snapshot` lists them.
STAT_KEYS: tuple[str, ...] = (
    "requests",  # every HTTP request read from a connection (any method, path, outcome)
    "connections",  # TCP connections accepted (keep-alive reuse shows as requests >> connections)
    "auth_failures",  # 401 answers because credentials were missing or wrong (not injected ones)
    "create",  # dispatched WS-Man actions, counted once authenticated and parsed
    "command",
    "receive",
    "send",
    "signal",
    "delete",
    "timeouts",  # Receive answered with the OperationTimeout fault (pywinrm retries these)
    "soap_faults",  # every SOAP fault answered, timeouts and injected http_500 included
    "injected_faults",  # requests a configured Fault applied to
    "runner_errors",  # the CommandRunner raised or returned something that is not a CommandResult
    "encrypted_requests",  # requests that arrived with NTLM (SPNEGO) message encryption and decrypted
    "access_denied",  # Create refused by the plug-in's or endpoint's permissions ("Access is denied")
)


class WSManStats:
    """Counters shared by the listener's connection threads; read them with :meth:`snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_KEYS, 0)

    def incr(self, key: str, amount: int = 1) -> None:
        if key not in self._counts:
            raise KeyError(key)
        with self._lock:
            self._counts[key] += amount

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(STAT_KEYS, 0)

    def __repr__(self) -> str:
        return f"WSManStats({self.snapshot()})"
