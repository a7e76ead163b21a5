"""Loading the web config into what the server uses, and reloading it when its files change.

The toolkit re-reads its file on every request. Here the file, and the certificate files it names,
are stat()ed at most once per ``CHECK_INTERVAL`` seconds and reloaded when their mtime, size or
inode changed, so certificates and users rotate without a restart at no per-request cost. A change
that does not load (a half-written file, a key that no longer matches) keeps the last good config
and is logged once, not on every request.

A reload never weakens security: a file that is empty (a truncation, a comment left alone), or
that removes basic auth, TLS, a client-certificate requirement or the client SAN allowlist
compared with the running config is refused like a broken one; those changes need a restart, where
they are deliberate. :attr:`ConfigWatcher.last_reload_successful` says how the last attempt went
(``..._web_config_last_reload_successful`` in both programs).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

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


# Client certificate requirements, weakest first.
_CLIENT_AUTH_STRENGTH = {"NoClientCert": 0, "VerifyClientCertIfGiven": 1, "RequireAndVerifyClientCert": 2}


def weakening(old: WebConfig, new: WebConfig) -> str | None:
    """What ``new`` takes away from ``old``'s protection, or None if nothing."""
    if old.basic_auth_users and not new.basic_auth_users:
        return "it removes basic authentication (no basic_auth_users)"
    if old.tls is not None and new.tls is None:
        return "it turns TLS off"
    if old.tls is not None and new.tls is not None:
        before = _CLIENT_AUTH_STRENGTH.get(old.tls.client_auth_type, 0)
        if _CLIENT_AUTH_STRENGTH.get(new.tls.client_auth_type, 0) < before:
            return f"it weakens client_auth_type from {old.tls.client_auth_type} to {new.tls.client_auth_type}"
        if old.tls.client_allowed_sans and not new.tls.client_allowed_sans:
            return "it removes client_allowed_sans"
    return None


def _is_empty(path: str) -> bool:
    """True for a file without any YAML document (empty, blank or comments only)."""
    try:
        return yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader) is None
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return False  # read_web_config reports these


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
        self.last_reload_successful = True

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
                if _is_empty(self._path):
                    raise WebConfigError(f"web config {self._path}: the file is empty, which needs a restart")
                runtime = load_runtime(self._path, self._runtime)
                if (runtime.ssl_context is not None) != self._tls:
                    raise WebConfigError(
                        f"web config {self._path}: tls_server_config: turning TLS "
                        f"{'on' if not self._tls else 'off'} needs a restart"
                    )
                weaker = weakening(self._runtime.config, runtime.config)
                if weaker is not None:
                    raise WebConfigError(f"web config {self._path}: {weaker}, which needs a restart")
            except WebConfigError as exc:
                self.last_reload_successful = False
                logger.error("Invalid web config, keeping the last good one: %s", exc)
                return self._runtime
            if self._files(runtime.config) != self._files(self._runtime.config):
                # A small race (a named file changing right now) beats not watching the new files at all.
                self._fingerprint_seen = self._fingerprint(runtime.config)
            self._runtime = runtime
            self.last_reload_successful = True
            logger.info("Reloaded web config %s", self._path)
            return runtime
