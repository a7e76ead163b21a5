"""The ``rate_limit`` token bucket: ``burst`` requests at once, then one per ``interval``.

It is one bucket for the whole server (not per client), as in the exporter-toolkit, whose
``golang.org/x/time/rate`` limiter this mirrors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be positive and burst at least 1")
        self._rate = 1.0 / interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take one token if there is one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
