"""Guest vs Hyper-V host clock: ioctl layout, discovery in a fake tree, arithmetic on recorded samples."""

from __future__ import annotations

import ctypes
import errno
import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hyperv_exporter.guest import metrics, ptp
from hyperv_exporter.guest.collector import HostClockProbe
from hyperv_exporter.guest.rootfs import Root

FIXTURE_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"
S = 1_000_000_000


def registry_of(families: list[Metric]) -> CollectorRegistry:
    class Static(Collector):
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry()
    registry.register(Static())
    return registry


# --- kernel ABI ----------------------------------------------------------------------------------
def test_structure_sizes_match_the_kernel_layout() -> None:
    # include/uapi/linux/ptp_clock.h, checked against a C compile on x86_64.
    assert ctypes.sizeof(ptp.PtpClockTime) == 16
    assert ctypes.sizeof(ptp.PtpClockCaps) == 80
    assert ctypes.sizeof(ptp.PtpSysOffset) == 832
    assert ptp.PtpSysOffset.ts.offset == 16  # n_samples + rsv[3]
    assert ptp.PtpClockTime.nsec.offset == 8


def test_ioctl_numbers_come_from_ioc() -> None:
    # _IOW('=', 5, struct ptp_sys_offset) and _IOR('=', 1, struct ptp_clock_caps)
    assert ptp.PTP_SYS_OFFSET == ptp.ioc(1, "=", 5, 832) == 0x43403D05
    assert ptp.PTP_CLOCK_GETCAPS == ptp.ioc(2, "=", 1, 80) == 0x80503D01
    # The other documented values follow from the same encoding.
    assert ptp.ioc(3, "=", 8, 64) == 0xC0403D08  # PTP_SYS_OFFSET_PRECISE
    assert ptp.ioc(3, "=", 9, 1216) == 0xC4C03D09  # PTP_SYS_OFFSET_EXTENDED
    with pytest.raises(ValueError, match="14 bits"):
        ptp.ioc(1, "=", 5, 1 << 14)


def test_real_ioctl_reaches_the_kernel() -> None:
    """The real reader issues PTP_SYS_OFFSET with the right buffer: /dev/null answers ENOTTY."""
    with pytest.raises(OSError) as info:
        ptp.IoctlPhcReader().sys_offset(Path("/dev/null"), 5)
    assert info.value.errno == errno.ENOTTY
    reading = ptp.read_host_clock(Root("/"), ptp.IoctlPhcReader(), 5, device=Path("/dev/null"))
    assert not reading.available
    assert "not a PTP clock device" in reading.reason


# --- discovery -----------------------------------------------------------------------------------
def test_discovery_prefers_the_udev_symlink() -> None:
    assert ptp.find_hyperv_phc(Root(FIXTURE_ROOT)) == FIXTURE_ROOT / "dev" / "ptp_hyperv"


def test_discovery_falls_back_to_sysfs_clock_name(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_ROOT / "sys", tmp_path / "sys", symlinks=True)
    (tmp_path / "dev").mkdir()
    # ptp0 is the NIC (mlx5) clock; the Hyper-V one is ptp1 whatever the probe order.
    assert ptp.find_hyperv_phc(Root(tmp_path)) == tmp_path / "dev" / "ptp1"


def test_discovery_finds_nothing_outside_hyperv(tmp_path: Path) -> None:
    assert ptp.find_hyperv_phc(Root(tmp_path)) is None


# --- arithmetic on recorded samples ----------------------------------------------------------------
class RecordedReader:
    """The seam's test implementation: returns recorded stamps or raises a recorded errno."""

    def __init__(self, stamps: list[int] | None = None, error: int | None = None) -> None:
        self.stamps, self.error = stamps, error
        self.calls: list[tuple[Path, int]] = []

    def sys_offset(self, device: Path, n_samples: int) -> list[int]:
        self.calls.append((device, n_samples))
        if self.error is not None:
            raise OSError(self.error, "recorded error")
        assert self.stamps is not None
        return self.stamps


# A recorded-style reading of 3 samples: sys, phc, sys, phc, sys, phc, sys (ns since the epoch).
# The guest is 1.5 ms ahead of the host; sample 1 has the narrowest window (2 us).
BASE = 1_795_800_000 * S
RECORDED = [
    BASE + 0,
    BASE + 5_000 - 1_500_000,  # window 10 us
    BASE + 10_000,
    BASE + 11_000 - 1_500_000,  # window 2 us: the one to keep
    BASE + 12_000,
    BASE + 20_000 - 1_500_000,  # window 16 us
    BASE + 28_000,
]


def test_offset_is_guest_minus_host_from_the_min_delay_sample() -> None:
    m = ptp.best_offset(RECORDED)
    assert m.offset_seconds == pytest.approx(0.0015, abs=1e-12)  # positive: the guest is ahead
    assert m.delay_seconds == pytest.approx(2e-6, abs=1e-12)
    assert m.uncertainty_seconds == pytest.approx(1e-6, abs=1e-12)
    assert m.samples == 3


def test_guest_behind_host_is_negative() -> None:
    stamps = [BASE, BASE + 500 + 2 * S, BASE + 1000]  # the PHC reads 2 s later than the guest clock
    assert ptp.best_offset(stamps).offset_seconds == pytest.approx(-2.0, abs=1e-12)


def test_half_nanosecond_midpoints_are_not_lost() -> None:
    stamps = [BASE, BASE, BASE + 1]  # midpoint BASE + 0.5 ns
    assert ptp.best_offset(stamps).offset_seconds == pytest.approx(0.5e-9, abs=1e-15)


def test_samples_with_a_clock_step_inside_are_dropped() -> None:
    stamps = [BASE + 100, BASE, BASE + 50, BASE + 60, BASE + 90]  # first window negative (step)
    m = ptp.best_offset(stamps)
    assert m.samples == 1
    assert m.offset_seconds == pytest.approx((50 + 90) / 2e9 - 60e-9, abs=1e-15)
    with pytest.raises(ptp.NoValidSample):
        ptp.best_offset([BASE + 100, BASE, BASE])
    with pytest.raises(ValueError, match="2n"):
        ptp.best_offset([BASE, BASE])


# --- probe states --------------------------------------------------------------------------------
def test_reading_through_the_seam_exports_offset_and_uncertainty() -> None:
    reader = RecordedReader(RECORDED)
    families = HostClockProbe(Root(FIXTURE_ROOT), reader, samples=3).collect()
    assert reader.calls == [(FIXTURE_ROOT / "dev" / "ptp_hyperv", 3)]
    registry = registry_of(metrics.merge(families))
    host = {"reference": "host", "server": ""}
    assert registry.get_sample_value("hyperv_guest_host_clock_available") == 1.0
    assert registry.get_sample_value("hyperv_guest_host_clock_stale") == 0.0
    assert registry.get_sample_value("hyperv_guest_clock_offset_seconds", host) == pytest.approx(0.0015)
    assert registry.get_sample_value("hyperv_guest_clock_offset_uncertainty_seconds", host) == pytest.approx(1e-6)


def test_estale_is_exported_as_stale_not_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    probe = HostClockProbe(Root(FIXTURE_ROOT), RecordedReader(error=errno.ESTALE), samples=5)
    with caplog.at_level(logging.INFO):
        families = probe.collect()
        probe.collect()
    registry = registry_of(metrics.merge(families))
    assert registry.get_sample_value("hyperv_guest_host_clock_available") == 1.0
    assert registry.get_sample_value("hyperv_guest_host_clock_stale") == 1.0
    assert registry.get_sample_value("hyperv_guest_clock_offset_seconds", {"reference": "host", "server": ""}) is None
    assert [r.message for r in caplog.records].count(
        "Hyper-V PTP clock is stale (ESTALE): the host sent no time for 10 minutes"
    ) == 1


@pytest.mark.parametrize(("error", "reason"), [(errno.EACCES, "permission denied"), (errno.ENOENT, "vanished")])
def test_unreadable_device_is_unavailable_and_logged_once(
    error: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe = HostClockProbe(Root(FIXTURE_ROOT), RecordedReader(error=error), samples=5)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            families = probe.collect()
    registry = registry_of(metrics.merge(families))
    assert registry.get_sample_value("hyperv_guest_host_clock_available") == 0.0
    assert registry.get_sample_value("hyperv_guest_host_clock_stale") is None
    unavailable = [r for r in caplog.records if r.message == "host clock unavailable"]
    assert len(unavailable) == 1
    assert reason in unavailable[0].reason  # type: ignore[attr-defined]


def test_no_device_is_unavailable(tmp_path: Path) -> None:
    reader = RecordedReader(RECORDED)
    reading = ptp.read_host_clock(Root(tmp_path), reader, 5)
    assert not reading.available
    assert "not a Hyper-V guest" in reading.reason
    assert reader.calls == []


def test_unexpected_errno_is_a_collector_error() -> None:
    with pytest.raises(ptp.HostClockError, match="PTP_SYS_OFFSET failed"):
        ptp.read_host_clock(Root(FIXTURE_ROOT), RecordedReader(error=errno.EIO), 5)
