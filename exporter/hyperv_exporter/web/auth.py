"""HTTP basic authentication against bcrypt hashes, with the exporter-toolkit's defences.

- Unknown users are checked against a fixed decoy hash, so a wrong user name costs as much bcrypt
  time as a wrong password and user names cannot be enumerated by timing.
- Results are cached on (user, hash, sha256(password)): Prometheus sends the same credentials on
  every scrape and bcrypt is deliberately slow. The hash is part of the key, so a rotated password
  invalidates its entries without any bookkeeping; a tuple key cannot be forged by clever
  separators (CVE-2022-46146 was a concatenated key).
- Valid users stay fast under a flood of failures. Successes and failures are cached apart: only
  a correct password can enter the success cache, so a flood of unique wrong passwords cannot
  evict a valid user's entry (one shared LRU let 32 such clients delay valid scrapes by seconds).
  bcrypt work is bounded (:data:`MAX_CONCURRENT_BCRYPT` at a time, released GIL, and a request
  waits at most :data:`BCRYPT_QUEUE_TIMEOUT` for a slot before it fails), and a client whose
  logins fail is slowed down (:class:`FailureThrottle`), which costs it a sleeping thread, no CPU.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

# bcrypt("fakepassword"), the decoy hash the exporter-toolkit uses for the same purpose.
DUMMY_HASH = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

# $2a$, $2b$ and $2y$ (htpasswd) are what the bcrypt package verifies; cost is two digits.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_MIN_COST, _MAX_COST = 4, 31

CACHE_SIZE = 100  # successes: valid users and their current passwords
FAILURE_CACHE_SIZE = 1000
MAX_CONCURRENT_BCRYPT = 1  # of two cores: the other stays free for scrapes
BCRYPT_QUEUE_TIMEOUT = 5.0


def is_bcrypt_hash(value: str) -> bool:
    match = _BCRYPT_RE.fullmatch(value)
    return match is not None and _MIN_COST <= int(match.group(1)) <= _MAX_COST


def parse_basic_auth(header: str | None) -> tuple[str, bytes] | None:
    """``Authorization: Basic base64(user:password)`` -> (user, password), or None if absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _checkpw(password: bytes, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password, hashed.encode("ascii"))
    except ValueError:
        # bcrypt >= 5 refuses passwords over 72 bytes; Go's bcrypt fails those logins too.
        return False


class BasicAuthenticator:
    """Checks credentials against a user -> bcrypt hash mapping; one instance lives as long as the server."""

    def __init__(self, cache_size: int = CACHE_SIZE, max_concurrent: int = MAX_CONCURRENT_BCRYPT) -> None:
        self._good: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._bad: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_slots = threading.BoundedSemaphore(max_concurrent)

    def check(self, users: Mapping[str, str], user: str, password: bytes) -> bool:
        hashed = users.get(user)
        known = hashed is not None
        if hashed is None:
            hashed = DUMMY_HASH
        key = (user, hashed, hashlib.sha256(password).digest())
        with self._cache_lock:
            if key in self._good:
                self._good.move_to_end(key)
                return known
            if key in self._bad:
                return False
        if not self._bcrypt_slots.acquire(timeout=BCRYPT_QUEUE_TIMEOUT):
            return False  # a flood is queueing for bcrypt: fail fast rather than hold threads for minutes
        try:
            ok = _checkpw(password, hashed) and known
        finally:
            self._bcrypt_slots.release()
        with self._cache_lock:
            cache, size = (self._good, self._cache_size) if ok else (self._bad, FAILURE_CACHE_SIZE)
            cache[key] = None
            while len(cache) > size:
                cache.popitem(last=False)
        return ok


class FailureThrottle:
    """Slows down clients whose logins fail: each failure within :attr:`window` seconds adds
    :attr:`step` seconds to the delay of that client's next refusals, up to :attr:`max_delay`.

    Keyed by client address, bounded in size; a success does not reset it (an attacker can hold a
    valid login too, but then the flood is not anonymous).
    """

    def __init__(self, step: float = 0.1, max_delay: float = 2.0, window: float = 60.0, size: int = 10_000) -> None:
        self.step, self.max_delay, self.window, self.size = step, max_delay, window, size
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, client: str, now: float | None = None) -> float:
        """Record a failure; returns how long to wait before answering it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            count, last = self._failures.pop(client, (0, now))
            count = count + 1 if now - last < self.window else 1
            self._failures[client] = (count, now)
            while len(self._failures) > self.size:
                self._failures.popitem(last=False)
        return min(self.max_delay, self.step * (count - 1))
