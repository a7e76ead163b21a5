"""Kernel clock discipline via read-only adjtimex: the real syscall, the struct layout, units and sign."""

from __future__ import annotations

import ctypes
import errno
import logging

import pytest

from hyperv_exporter.guest import timex
from hyperv_exporter.guest.collector import TimexProbe


def test_struct_timex_layout() -> None:
    # glibc's struct timex on x86_64/arm64 (checked with a C compile: size 208, status at 40, tai at 160).
    if ctypes.sizeof(ctypes.c_long) != 8:
        pytest.skip("layout numbers are for LP64")
    assert ctypes.sizeof(timex.Timex) == 208
    assert timex.Timex.offset.offset == 8
    assert timex.Timex.status.offset == 40
    assert timex.Timex.tick.offset == 88
    assert timex.Timex.tai.offset == 160


def test_real_adjtimex_returns_plausible_values() -> None:
    state = timex.read_timex()  # the real syscall, unprivileged-safe (modes = 0)
    assert state.state in timex.STATES
    assert state.sync_status == (state.state != timex.TIME_ERROR)
    assert 0 <= state.maxerror_seconds <= 16.1  # the kernel caps maxerror at NTP_PHASE_LIMIT-ish 16 s
    assert 0 <= state.estimated_error_seconds <= 16.1
    assert 0.999 < state.frequency_adjustment_ratio < 1.001  # the kernel allows +-500 ppm
    assert abs(state.offset_seconds) < 1.0  # the kernel clamps the PLL offset to +-0.5 s
    assert 0.001 <= state.tick_seconds <= 0.011  # USER_HZ ticks (10 ms nominal, +-10 %)
    assert 0 <= state.tai_offset_seconds < 100


def test_read_only_call_leaves_modes_zero() -> None:
    seen: list[int] = []

    def fake(buf: timex.Timex) -> int:
        seen.append(buf.modes)
        return 0

    timex.read_timex(fake)
    assert seen == [0]


def test_units_and_sign() -> None:
    buf = timex.Timex()
    buf.status = timex.STA_NANO | timex.STA_PLL
    buf.offset = 2_500_000  # the kernel will *add* 2.5 ms: the clock is 2.5 ms behind
    buf.freq = -65536 * 12  # -12 ppm
    buf.maxerror = 1_500  # us
    buf.esterror = 250  # us
    buf.tai = 37
    buf.tick = 10_000
    buf.constant = 6
    state = timex.interpret(buf, 0)
    assert state.offset_seconds == pytest.approx(-0.0025)  # guest minus reference: behind -> negative
    assert state.frequency_adjustment_ratio == pytest.approx(1 - 12e-6)
    assert state.maxerror_seconds == pytest.approx(0.0015)
    assert state.estimated_error_seconds == pytest.approx(0.00025)
    assert state.tai_offset_seconds == 37
    assert state.tick_seconds == pytest.approx(0.01)
    assert state.sync_status is True
    buf.status = timex.STA_UNSYNC  # microsecond offsets without STA_NANO
    buf.offset = -300
    state = timex.interpret(buf, timex.TIME_ERROR)
    assert state.offset_seconds == pytest.approx(0.0003)
    assert state.sync_status is False


def test_eperm_is_unavailable_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def blocked(buf: timex.Timex) -> int:
        raise OSError(errno.EPERM, "Operation not permitted")

    probe = TimexProbe(blocked)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            families = probe.collect()
    assert [(f.name, f.samples[0].value) for f in families] == [("hyperv_guest_timex_available", 0.0)]
    assert [r.message for r in caplog.records].count("adjtimex unavailable") == 1
