"""Kernel clock discipline state, read with ``adjtimex(2)`` in read-only mode.

``modes = 0`` asks for nothing to be changed, and the kernel only demands CAP_SYS_TIME when
``modes`` is non-zero (``timekeeping_validate_timex``), so any user may call it. Some container
seccomp profiles still block the syscall with EPERM; that is reported as unavailable, the way
node_exporter's timex collector treats it.

The facts and conversions follow node_exporter's ``collector/timex.go`` so dashboards can be
compared, with one deliberate difference: the offset's sign (see :attr:`TimexState.offset_seconds`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

# Status bits and states from include/uapi/linux/timex.h.
STA_PLL: Final = 0x0001
STA_UNSYNC: Final = 0x0040
STA_NANO: Final = 0x2000
TIME_ERROR: Final = 5
STATES: Final = {0: "ok", 1: "ins", 2: "del", 3: "oop", 4: "wait", 5: "error"}


class Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class Timex(ctypes.Structure):
    """``struct timex`` as glibc declares it (208 bytes on x86_64 and arm64).

    ctypes applies the C alignment rules, so the padding after the ``int`` fields (``modes``,
    ``status``, ``shift``) comes out as in C; the 11 trailing ``int :32`` are glibc's reserve.
    """

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


AdjtimexFn = Callable[[Timex], int]


@functools.lru_cache(maxsize=1)
def _libc_adjtimex() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    func = libc.adjtimex
    func.argtypes = (ctypes.POINTER(Timex),)
    func.restype = ctypes.c_int
    return func


def libc_adjtimex(buf: Timex) -> int:
    """Call glibc/musl ``adjtimex``; raises OSError with the errno on failure."""
    state = int(_libc_adjtimex()(ctypes.byref(buf)))
    if state == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return state


@dataclass(frozen=True, slots=True)
class TimexState:
    """The kernel's view of its own clock discipline.

    ``offset_seconds`` is the phase correction the kernel still has to apply, with this agent's sign
    convention: **guest clock minus reference, positive = guest ahead**. The kernel's ``offset``
    field is the opposite (the amount it will *add* to the clock, as a daemon such as ntpd passes
    it), so it is negated here; node_timex_offset_seconds exports the kernel's sign.
    """

    state: int
    status: int
    sync_status: bool
    offset_seconds: float
    frequency_adjustment_ratio: float
    maxerror_seconds: float
    estimated_error_seconds: float
    tai_offset_seconds: int
    loop_time_constant: int
    tick_seconds: float


def interpret(buf: Timex, state: int) -> TimexState:
    """Raw ``struct timex`` + return value -> units and signs (node_exporter's conversions)."""
    # offset is in ns with STA_NANO (chrony, ntpd set it), else in us.
    divisor = 1e9 if buf.status & STA_NANO else 1e6
    return TimexState(
        state=state,
        status=buf.status,
        # The kernel returns TIME_ERROR while STA_UNSYNC (or STA_CLOCKERR) is set: nobody has told it
        # the clock is synchronised. node_exporter's sync_status is exactly this.
        sync_status=state != TIME_ERROR,
        offset_seconds=-buf.offset / divisor,
        # freq is a ppm value scaled by 2^16: ratio = 1 + freq / (65536 * 1e6).
        frequency_adjustment_ratio=1.0 + buf.freq / 65536e6,
        maxerror_seconds=buf.maxerror / 1e6,  # always microseconds
        estimated_error_seconds=buf.esterror / 1e6,  # always microseconds
        tai_offset_seconds=buf.tai,
        loop_time_constant=buf.constant,
        tick_seconds=buf.tick / 1e6,  # microseconds per tick
    )


class TimexUnavailable(RuntimeError):
    """adjtimex is blocked (seccomp EPERM) or does not exist on this platform."""


def read_timex(adjtimex: AdjtimexFn | None = None) -> TimexState:
    """One read-only adjtimex call (``modes = 0``)."""
    buf = Timex()
    buf.modes = 0  # read-only: never change anything
    call = adjtimex or libc_adjtimex
    try:
        state = call(buf)
    except AttributeError:
        raise TimexUnavailable("adjtimex is not available in this C library") from None
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            raise TimexUnavailable(f"adjtimex: {exc.strerror or exc} (seccomp or container policy?)") from None
        raise
    return interpret(buf, state)
