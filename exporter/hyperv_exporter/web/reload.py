"""Loading the web config into what the server uses, and reloading it when its files change.

The toolkit re-reads its file on every request. Here the file, and the certificate files it names,
are stat()ed at most once per ``CHECK_INTERVAL`` seconds and reloaded when their mtime, size or
inode changed, so certificates and users rotate without a restart at no per-request cost. A change
that does not load (a half-written file, a key that no longer matches) keeps the last good config
and is logged once, not on every request.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import WebConfig, WebConfigError, read_web_config
from .ratelimit import TokenBucket
from .tls import build_ssl_context

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0

_Fingerprint = tuple[tuple[str, tuple[int, int, int] | None], ...]


@dataclass(frozen=True)
class Runtime:
    """One loaded config and what was built from it; swapped as a whole on reload."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None = None
    limiter: TokenBucket | None = None


def load_runtime(path: str, previous: Runtime | None = None) -> Runtime:
    config = read_web_config(path)
    context = build_ssl_context(config.tls, path) if config.tls is not None else None
    limiter = None
    if config.rate_limit is not None:
        # An unchanged limit keeps its bucket: a fresh one would hand out a new burst on every reload.
        if previous is not None and previous.config.rate_limit == config.rate_limit:
            limiter = previous.limiter
        else:
            limiter = TokenBucket(config.rate_limit.interval, config.rate_limit.burst)
    return Runtime(config=config, ssl_context=context, limiter=limiter)


def load_web_config(path: str) -> WebConfig:
    """Parse and fully validate a web config file, including the certificates and keys it names.

    Raises :class:`WebConfigError` with a message naming the file and the key.
    """
    return load_runtime(path).config


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = Path(path).stat()
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ConfigWatcher:
    """Holds the current :class:`Runtime` for a config file and reloads it when its files change."""

    def __init__(
        self,
        path: str,
        *,
        check_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._interval = CHECK_INTERVAL if check_interval is None else check_interval
        self._clock = clock
        self._lock = threading.Lock()
        # Fingerprint before loading, so that a change made while loading is seen on the next check.
        fingerprint = self._fingerprint(read_web_config(path))
        self._runtime = load_runtime(path)
        self._fingerprint_seen = fingerprint
        self._tls = self._runtime.ssl_context is not None
        self._next_check = clock() + self._interval

    @property
    def path(self) -> str:
        return self._path

    def _files(self, config: WebConfig) -> tuple[str, ...]:
        return (self._path, *(config.tls.files if config.tls else ()))

    def _fingerprint(self, config: WebConfig) -> _Fingerprint:
        return tuple((f, _stat(f)) for f in self._files(config))

    def current(self) -> Runtime:
        """The runtime to use for this request or connection; cheap unless a check is due."""
        now = self._clock()
        if now < self._next_check:
            return self._runtime
        with self._lock:
            if now < self._next_check:
                return self._runtime
            self._next_check = now + self._interval
            fingerprint = self._fingerprint(self._runtime.config)
            if fingerprint == self._fingerprint_seen:
                return self._runtime
            # Remembered even if the load fails, so a broken file is reported once and not retried
            # until it changes again.
            self._fingerprint_seen = fingerprint
            try:
                runtime = load_runtime(self._path, self._runtime)
                if (runtime.ssl_context is not None) != self._tls:
                    raise WebConfigError(
                        f"web config {self._path}: tls_server_config: turning TLS "
                        f"{'on' if not self._tls else 'off'} needs a restart"
                    )
            except WebConfigError as exc:
                logger.error("Invalid web config, keeping the last good one: %s", exc)
                return self._runtime
            if self._files(runtime.config) != self._files(self._runtime.config):
                # A small race (a named file changing right now) beats not watching the new files at all.
                self._fingerprint_seen = self._fingerprint(runtime.config)
            self._runtime = runtime
            logger.info("Reloaded web config %s", self._path)
            return runtime
