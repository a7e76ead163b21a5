"""Guest clock vs Hyper-V host clock, read from the Hyper-V PTP hardware clock (PHC).

``hv_utils`` (the Time Synchronization integration service) registers a PHC named ``hyperv``.
Reading it returns the host's UTC as of its last TimeSync sample (sent about every 5 s)
extrapolated with the partition reference counter, so ``CLOCK_REALTIME - PHC`` is the guest
clock's offset from the host clock (drivers/hv/hv_util.c, ``hv_ptp_gettime``).

How it is read: the ``PTP_SYS_OFFSET`` ioctl, which brackets each PHC read by two
``CLOCK_REALTIME`` reads inside the kernel (sys, phc, sys, phc, ..., sys). ``PTP_SYS_OFFSET_PRECISE``
and ``PTP_SYS_OFFSET_EXTENDED`` need driver callbacks the Hyper-V PHC does not implement
(``.getcrosststamp``, ``.gettimex64``) and fail with EOPNOTSUPP there, so they are not tried.

If the host has not sent a sample for 600 s the driver fails every read with ESTALE
(``HOST_TIMESYNC_DELAY_THRESH``): time synchronisation is off on the host or its channel is
broken. That is a state worth alerting on, so it is reported as such rather than as an error.

The ioctl itself sits behind :class:`PhcReader` so the arithmetic can be tested with recorded
sample arrays; :class:`IoctlPhcReader` is the real implementation.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from hyperv_exporter.guest.rootfs import Root

if sys.platform != "win32":  # POSIX only: on Windows the agent never takes these code paths
    import fcntl

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) -------------------------------------------
# x86, x86_64 and arm64 (the only architectures Hyper-V runs guests on) use the generic encoding:
# 8 bits number, 8 bits type, 14 bits size, 2 bits direction. powerpc, mips, sparc and alpha use a
# different layout, so on those the numbers are not computed and the collector reports unavailable.
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = 8
_IOC_SIZESHIFT: Final = 16
_IOC_DIRSHIFT: Final = 30
_IOC_SIZEMASK: Final = (1 << 14) - 1
_IOC_WRITE: Final = 1
_IOC_READ: Final = 2
_GENERIC_IOC_MACHINES: Final = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86", "aarch64", "arm64")


def ioc(direction: int, type_: str, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)`` from asm-generic/ioctl.h."""
    if not 0 <= size <= _IOC_SIZEMASK:
        raise ValueError(f"ioctl argument size {size} does not fit in 14 bits")
    return (
        (direction << _IOC_DIRSHIFT) | (ord(type_) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)
    )


# --- structures (include/uapi/linux/ptp_clock.h) -------------------------------------------------
PTP_MAX_SAMPLES: Final = 25
PTP_CLK_MAGIC: Final = "="


class PtpClockTime(ctypes.Structure):
    """``struct ptp_clock_time { __s64 sec; __u32 nsec; __u32 reserved; }`` (16 bytes)."""

    _fields_ = (("sec", ctypes.c_int64), ("nsec", ctypes.c_uint32), ("reserved", ctypes.c_uint32))


class PtpClockCaps(ctypes.Structure):
    """``struct ptp_clock_caps`` (80 bytes; later kernels carve new fields out of ``rsv``)."""

    _fields_ = (
        ("max_adj", ctypes.c_int),
        ("n_alarm", ctypes.c_int),
        ("n_ext_ts", ctypes.c_int),
        ("n_per_out", ctypes.c_int),
        ("pps", ctypes.c_int),
        ("n_pins", ctypes.c_int),
        ("cross_timestamping", ctypes.c_int),
        ("adjust_phase", ctypes.c_int),
        ("max_phase_adj", ctypes.c_int),
        ("rsv", ctypes.c_int * 11),
    )


class PtpSysOffset(ctypes.Structure):
    """``struct ptp_sys_offset``: ``ts`` holds 2n+1 stamps, system/PHC interleaved (832 bytes)."""

    _fields_ = (
        ("n_samples", ctypes.c_uint),
        ("rsv", ctypes.c_uint * 3),
        ("ts", PtpClockTime * (2 * PTP_MAX_SAMPLES + 1)),
    )


PTP_CLOCK_GETCAPS: Final = ioc(_IOC_READ, PTP_CLK_MAGIC, 1, ctypes.sizeof(PtpClockCaps))
PTP_SYS_OFFSET: Final = ioc(_IOC_WRITE, PTP_CLK_MAGIC, 5, ctypes.sizeof(PtpSysOffset))

HYPERV_CLOCK_NAME: Final = "hyperv"
_NS: Final = 1_000_000_000


# --- discovery -----------------------------------------------------------------------------------
def find_hyperv_phc(root: Root) -> Path | None:
    """The Hyper-V PHC character device, or None.

    ``/dev/ptp_hyperv`` is the udev symlink systemd ships (50-udev-default.rules). It matters
    because with Accelerated Networking the mlx5 driver also creates a ``/dev/ptpN`` and the probe
    order changes between boots. Without the symlink (no systemd-udev, old systemd) the
    ``/sys/class/ptp/ptpN`` whose ``clock_name`` is ``hyperv`` names the device.
    """
    link = root.join("/dev/ptp_hyperv")
    if link.exists():
        return link
    class_dir = root.join("/sys/class/ptp")
    try:
        entries = sorted(class_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        name = root.read_text(f"/sys/class/ptp/{entry.name}/clock_name", limit=256)
        if name is not None and name.strip() == HYPERV_CLOCK_NAME:
            return root.join(f"/dev/{entry.name}")
    return None


# --- the seam ------------------------------------------------------------------------------------
class PhcReader(Protocol):
    """Reads ``n`` PTP_SYS_OFFSET samples from a PHC device.

    Returns the 2n+1 stamps in nanoseconds since the Unix epoch, in kernel order
    ``sys0, phc0, sys1, phc1, ..., sys_n``. Raises OSError (errno preserved: ESTALE, EACCES, ...).
    """

    def sys_offset(self, device: Path, n_samples: int) -> list[int]: ...


class IoctlPhcReader:
    """The real reader: ``open(O_RDONLY)`` + ``ioctl(PTP_SYS_OFFSET)``, as chrony does.

    Read-only access is enough for PTP_SYS_OFFSET, so a udev rule granting a group read access
    (mode 0640) lets the agent run without root.
    """

    def sys_offset(self, device: Path, n_samples: int) -> list[int]:
        if not 1 <= n_samples <= PTP_MAX_SAMPLES:
            raise ValueError(f"n_samples must be 1..{PTP_MAX_SAMPLES}")
        if platform.machine().lower() not in _GENERIC_IOC_MACHINES:
            raise OSError(errno.ENOTSUP, f"PTP ioctl numbers not known for {platform.machine()}")
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            request = PtpSysOffset()
            request.n_samples = n_samples
            # A ctypes structure is a mutable buffer: the kernel writes the stamps straight into it
            # (an immutable bytes argument would be copied and limited to 1024 bytes).
            fcntl.ioctl(fd, PTP_SYS_OFFSET, request, True)
            return [request.ts[i].sec * _NS + request.ts[i].nsec for i in range(2 * n_samples + 1)]
        finally:
            os.close(fd)


# --- arithmetic ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PhcMeasurement:
    """The minimum-delay sample of one PTP_SYS_OFFSET reading.

    ``offset_seconds`` = guest CLOCK_REALTIME minus host clock (positive: the guest is ahead).
    ``uncertainty_seconds`` = half the system-clock window bracketing the PHC read: the PHC read
    happened somewhere inside it, so the midpoint is off by at most that much.
    """

    offset_seconds: float
    uncertainty_seconds: float
    delay_seconds: float
    samples: int


class NoValidSample(ValueError):
    """Every sample had a negative window (the system clock stepped during the reading)."""


def best_offset(stamps: list[int]) -> PhcMeasurement:
    """Pick the sample with the smallest bracketing window and return its offset.

    For sample i: ``t1 = stamps[2i]`` (system), ``tp = stamps[2i+1]`` (PHC), ``t2 = stamps[2i+2]``
    (system). The PHC was read between t1 and t2, so the system time at that instant is estimated
    by the midpoint and ``offset = (t1 + t2)/2 - tp`` (system minus PHC: guest minus host, the same
    sign as testptp's output). The smallest window gives the tightest bound, as chrony and phc2sys
    do. Samples with a negative window mean the system clock was stepped mid-reading and are
    dropped (chrony's ``HCL_ProcessReadings`` does the same). Integer nanoseconds until the end, so
    no precision is lost on 1.7e18-sized values.
    """
    if len(stamps) < 3 or len(stamps) % 2 == 0:
        raise ValueError(f"expected 2n+1 stamps (n >= 1), got {len(stamps)}")
    best: tuple[int, int] | None = None  # (delay_ns, twice_offset_ns)
    valid = 0
    for i in range(len(stamps) // 2):
        t1, tp, t2 = stamps[2 * i], stamps[2 * i + 1], stamps[2 * i + 2]
        delay = t2 - t1
        if delay < 0:
            continue
        valid += 1
        twice_offset = t1 + t2 - 2 * tp
        if best is None or delay < best[0]:
            best = (delay, twice_offset)
    if best is None:
        raise NoValidSample("no sample with a non-negative window (system clock stepped during the reading)")
    delay_ns, twice_offset_ns = best
    return PhcMeasurement(
        offset_seconds=twice_offset_ns / (2 * _NS),
        uncertainty_seconds=delay_ns / (2 * _NS),
        delay_seconds=delay_ns / _NS,
        samples=valid,
    )


# --- one probe -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HostClockReading:
    """What one probe of the host clock found.

    ``available`` is False when there is no readable Hyper-V PHC (not a Hyper-V guest, hv_utils not
    loaded, no permission); ``reason`` then says why. ``stale`` is True when the driver answered
    ESTALE: the host has not sent time for 10 minutes. ``measurement`` is set only when neither.
    """

    available: bool
    stale: bool = False
    device: str = ""
    reason: str = ""
    measurement: PhcMeasurement | None = None


class HostClockError(RuntimeError):
    """The device exists and is readable but the reading failed in an unexpected way."""


_UNAVAILABLE_ERRNOS: Final = {
    errno.ENOENT: "device vanished",
    errno.ENODEV: "no such device",
    errno.ENXIO: "no such device",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTTY: "not a PTP clock device",
    errno.ENOTSUP: "not supported on this architecture",
    errno.EOPNOTSUPP: "PTP_SYS_OFFSET not supported by the driver",
}


def read_host_clock(root: Root, reader: PhcReader, n_samples: int, device: Path | None = None) -> HostClockReading:
    """Find the Hyper-V PHC (unless ``device`` is given) and measure the guest-minus-host offset."""
    path = device if device is not None else find_hyperv_phc(root)
    if path is None:
        return HostClockReading(
            available=False,
            reason="no Hyper-V PTP clock (no /dev/ptp_hyperv and no /sys/class/ptp/*/clock_name 'hyperv'): "
            "not a Hyper-V guest, or hv_utils is not loaded",
        )
    try:
        stamps = reader.sys_offset(path, n_samples)
    except OSError as exc:
        if exc.errno == errno.ESTALE:
            return HostClockReading(available=True, stale=True, device=str(path))
        why = _UNAVAILABLE_ERRNOS.get(exc.errno or 0)
        if why is not None:
            return HostClockReading(available=False, device=str(path), reason=f"{path}: {why}")
        raise HostClockError(f"{path}: PTP_SYS_OFFSET failed: {exc.strerror or exc}") from None
    try:
        return HostClockReading(available=True, device=str(path), measurement=best_offset(stamps))
    except ValueError as exc:
        raise HostClockError(f"{path}: {exc}") from None
