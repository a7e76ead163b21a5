"""KVP (Data Exchange) pool files of hv_kvp_daemon: format, locked reading, allowlist and cleaning.

Format (tools/hv/hv_kvp_daemon.c, include/uapi/linux/hyperv.h): ``/var/lib/hyperv/.kvp_pool_N``
(N = 0..4) is a flat array of 2,560-byte records, no header: a 512-byte key and a 2,048-byte
value, UTF-8, NUL-terminated. The daemon copies only ``size`` bytes into a non-zeroed buffer and
writes whole records, so bytes after the first NUL can be garbage (a real pool had ``51 F1 01``
there). Each field is therefore cut at its first NUL and decoded with replacement. The daemon
rewrites a pool by truncate + write under its lock, so a reader that does not lock can see a cut
final record, which is ignored.

Pools: 0 host->guest (admin-pushed), 1 guest->host, 2 intrinsic (unused file), 3 host->guest
auto (HostName, VirtualMachineName, VirtualMachineId, ...), 4 internal.

KVP also carries provisioning data (passwords, tokens), so only allowlisted keys ever leave this
module: non-allowlisted records are dropped while parsing and never logged.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hyperv_exporter.guest.rootfs import Root

if sys.platform != "win32":  # POSIX only: on Windows the agent never takes these code paths
    import fcntl

KEY_SIZE: Final = 512
VALUE_SIZE: Final = 2048
RECORD_SIZE: Final = KEY_SIZE + VALUE_SIZE
POOLS: Final = (0, 1, 2, 3, 4)
POOL_DIR: Final = "/var/lib/hyperv"
HOST_POOL: Final = 3  # KVP_POOL_AUTO_EXTERNAL: the host's description of itself and the VM
# A pool holds at most a few hundred records in practice; the cap bounds memory if a pool file is
# replaced by something huge.
MAX_POOL_BYTES: Final = 4 * 1024 * 1024

HOST_IDENTITY_KEYS: Final = (
    "HostName",
    "PhysicalHostName",
    "PhysicalHostNameFullyQualified",
    "VirtualMachineName",
    "VirtualMachineId",
)


# --- parsing -------------------------------------------------------------------------------------
def _field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_pool(data: bytes) -> Iterator[tuple[str, str]]:
    """All (key, value) records of a pool file; a trailing partial record is ignored.

    Records with an empty key are skipped: the daemon never writes one, so it is a hole or junk.
    """
    for offset in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE):
        key = _field(data[offset : offset + KEY_SIZE])
        if key:
            yield key, _field(data[offset + KEY_SIZE : offset + RECORD_SIZE])


def encode_record(key: str, value: str) -> bytes:
    """One record as the daemon writes it (used by tests and fixtures)."""
    k, v = key.encode(), value.encode()
    if len(k) >= KEY_SIZE or len(v) >= VALUE_SIZE:
        raise ValueError("key or value too long for a KVP record")
    return k.ljust(KEY_SIZE, b"\0") + v.ljust(VALUE_SIZE, b"\0")


# --- cleaning ------------------------------------------------------------------------------------
# C0/C1 controls, DEL, line/paragraph separators, bidi overrides/isolates, zero-width characters,
# BOM and lone surrogates: text written by the guest or the host must not be able to break a log
# line or disguise itself in a label value.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]+")


def clean_value(value: str, max_length: int) -> str:
    value = _UNSAFE.sub(" ", value).strip()
    return value[:max_length] if len(value) > max_length else value


def normalise_vm_id(value: str) -> str:
    """``{A1B2...}`` / upper case -> ``a1b2c3d4-...`` (lower-case GUID without braces), as the host
    exporter prints Get-VM's Id; anything that is not a GUID is returned cleaned, lower-cased, unbraced."""
    text = value.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.strip("{}").lower()


# --- allowlist -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeySpec:
    """An allowlist entry: a key name, optionally restricted to one pool (``3:VirtualMachineId``)."""

    key: str
    pool: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        pool_text, sep, rest = text.partition(":")
        if sep and pool_text.isdigit() and rest:
            pool = int(pool_text)
            if pool not in POOLS:
                raise ValueError(f"{text!r}: pool must be one of {POOLS}")
            return cls(rest, pool)
        if not text:
            raise ValueError("empty KVP key")
        return cls(text)

    def matches(self, pool: int, key: str) -> bool:
        return key == self.key and (self.pool is None or self.pool == pool)


DEFAULT_KEYS: Final = tuple(KeySpec(k, HOST_POOL) for k in HOST_IDENTITY_KEYS)


def pools_needed(specs: Collection[KeySpec]) -> list[int]:
    """Only pools an allowlisted key can come from are opened (plus pool 3 for host identity)."""
    if any(s.pool is None for s in specs):
        return list(POOLS)
    return sorted({s.pool for s in specs if s.pool is not None} | {HOST_POOL})


# --- locked reading ------------------------------------------------------------------------------
class PoolLockTimeout(TimeoutError):
    """Another process held a write lock on the pool for longer than the timeout."""


class PoolNotAFile(OSError):
    """The pool path is not a regular file (a FIFO, device, socket or directory): the pool is invalid."""


_FILE_TYPES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}  # fmt: skip


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_TYPES.get(stat.S_IFMT(mode), "not a regular file")
        raise PoolNotAFile(errno.EINVAL, f"{path}: {kind}, not a KVP pool file; the pool is invalid")


def _open_pool(path: Path) -> int:
    """Open a pool for reading without ever blocking or touching a special file.

    Opening a FIFO for reading blocks until a writer appears (forever, for a FIFO planted where a
    pool belongs), and opening a device can have side effects. So the type is checked with
    ``lstat`` before opening, and again with ``fstat`` on a descriptor opened ``O_NONBLOCK`` and
    ``O_NOFOLLOW``, in case the path was swapped between the two.
    """
    _require_regular(path, os.lstat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_pool_file(
    path: Path,
    lock_timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """Read a whole pool under a shared POSIX record lock, retrying a non-blocking lock until a deadline.

    The daemon takes ``fcntl(F_SETLKW, F_WRLCK)`` on the whole file for both its reads and its
    rewrites, so a shared lock (F_RDLCK, allowed on an O_RDONLY descriptor) is enough to never see
    a half-written pool. ``F_SETLKW`` would block without bound; instead ``F_SETLK`` is retried with
    a short back-off until ``lock_timeout``. The daemon holds the lock for microseconds; a lock held
    longer is a stuck or hostile holder and the read fails (for this collector only).

    Raises FileNotFoundError if the pool does not exist, :class:`PoolNotAFile` if it is not a
    regular file, and :class:`PoolLockTimeout` on timeout.
    """
    fd = _open_pool(path)
    try:
        deadline = clock() + lock_timeout
        pause = 0.005
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if clock() >= deadline:
                    raise PoolLockTimeout(
                        f"{path}: locked by another process for more than {lock_timeout:g}s"
                    ) from None
                sleep(min(pause, max(0.0, deadline - clock())))
                pause = min(pause * 2, 0.1)
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_POOL_BYTES:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_POOL_BYTES:
                raise OSError(errno.EFBIG, f"{path}: larger than {MAX_POOL_BYTES} bytes")
            return b"".join(chunks)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class PoolRead:
    pool: int
    records: int | None  # None when the source cannot count records (the Windows registry)
    items: list[tuple[str, str]]  # allowlisted (key, cleaned value) only


@dataclass(frozen=True, slots=True)
class HostInfo:
    host_name: str
    physical_host_name: str
    vm_name: str
    vm_id: str


@dataclass(frozen=True, slots=True)
class KvpResult:
    available: bool  # False when the pool directory does not exist (no KVP daemon / not Hyper-V)
    pools: list[PoolRead]
    host: HostInfo | None
    reason: str = ""


def host_info_from(items: dict[str, str]) -> HostInfo | None:
    """``hyperv_guest_host_info`` labels from the host-identity keys (None when none is present)."""
    if not any(items.get(k) for k in HOST_IDENTITY_KEYS):
        return None
    return HostInfo(
        host_name=items.get("HostName", ""),
        physical_host_name=items.get("PhysicalHostName", ""),
        vm_name=items.get("VirtualMachineName", ""),
        vm_id=normalise_vm_id(items.get("VirtualMachineId", "")),
    )


def read_pools(root: Root, specs: Collection[KeySpec], lock_timeout: float, max_value_length: int) -> KvpResult:
    """Read the needed pools and keep allowlisted keys plus pool 3's host identity.

    The host-identity keys of pool 3 are always read for ``hyperv_guest_host_info``: they describe
    the host and the VM (names and the VM GUID) and carry no guest secrets.
    """
    directory = root.join(POOL_DIR)
    if not directory.is_dir():
        return KvpResult(False, [], None, reason=f"{directory} does not exist (hv_kvp_daemon not running?)")
    pools: list[PoolRead] = []
    host_items: dict[str, str] = {}
    # One deadline for all pools, so five locked pools cost lock_timeout, not five times it.
    deadline = time.monotonic() + lock_timeout
    for pool in pools_needed(specs):
        try:
            data = read_pool_file(directory / f".kvp_pool_{pool}", max(0.0, deadline - time.monotonic()))
        except FileNotFoundError:
            continue
        # A dict: a key repeated in one pool (junk, or a rewrite seen mid-way) must not become two
        # series with the same labels; the later record wins, as in the daemon's own lookups.
        items: dict[str, str] = {}
        records = 0
        for key, value in parse_pool(data):
            records += 1
            if pool == HOST_POOL and key in HOST_IDENTITY_KEYS:
                host_items[key] = clean_value(value, max_value_length)
            if any(s.matches(pool, key) for s in specs):
                items[clean_value(key, max_value_length)] = clean_value(value, max_value_length)
        pools.append(PoolRead(pool, records, list(items.items())))
    return KvpResult(True, pools, host_info_from(host_items))
