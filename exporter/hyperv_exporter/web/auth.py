"""HTTP basic authentication against bcrypt hashes, with the exporter-toolkit's defences.

- Unknown users are checked against a fixed decoy hash, so a wrong user name costs as much bcrypt
  time as a wrong password and user names cannot be enumerated by timing.
- Results are cached on (user, hash, sha256(password)): Prometheus sends the same credentials on
  every scrape and bcrypt is deliberately slow. The hash is part of the key, so a rotated password
  invalidates its entries without any bookkeeping; a tuple key cannot be forged by clever
  separators (CVE-2022-46146 was a concatenated key).
- bcrypt runs under one lock: it is CPU-bound, and a burst of bad logins must not take every core.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

# bcrypt("fakepassword"), the decoy hash the exporter-toolkit uses for the same purpose.
DUMMY_HASH = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

# $2a$, $2b$ and $2y$ (htpasswd) are what the bcrypt package verifies; cost is two digits.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_MIN_COST, _MAX_COST = 4, 31

CACHE_SIZE = 100


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

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, str, bytes], bool] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def check(self, users: Mapping[str, str], user: str, password: bytes) -> bool:
        hashed = users.get(user)
        known = hashed is not None
        if hashed is None:
            hashed = DUMMY_HASH
        key = (user, hashed, hashlib.sha256(password).digest())
        with self._cache_lock:
            ok = self._cache.get(key)
            if ok is not None:
                self._cache.move_to_end(key)
        if ok is None:
            with self._bcrypt_lock:
                ok = _checkpw(password, hashed) and known
            with self._cache_lock:
                self._cache[key] = ok
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return ok and known
