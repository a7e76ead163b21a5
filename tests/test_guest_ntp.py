"""Guest vs NTP: a real UDP server in the test answers with known offsets, kiss-o'-death and bad packets.

The server encodes its answers with ntplib's own NTPPacket (not with the agent's conversion
functions), so the agent's timestamp arithmetic is checked against an independent encoder.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ntplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hyperv_exporter.guest import metrics, ntp, ntpconf
from hyperv_exporter.guest.ntp import MeasureOptions, NtpMonitor, NtpServer, Rejected
from hyperv_exporter.guest.rootfs import Root

FIXTURE_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"

# Fast options for loopback: 3 requests 50 ms apart, bounded at 1.5 s in total.
FAST = MeasureOptions(version=4, samples=3, sample_interval=0.05, request_timeout=0.3, timeout=1.5)


class FakeNtpServer:
    """An NTP server on 127.0.0.1 whose clock is ``guest clock - guest_offset`` (so the guest
    appears ``guest_offset`` seconds ahead of it), with switches for every kind of bad answer."""

    def __init__(
        self,
        guest_offset: float = 0.0,
        *,
        stratum: int = 2,
        leap: int = 0,
        mode: int = 4,
        kiss: str | None = None,
        poll: int = 6,
        wrong_origin: bool = False,
        silent: bool = False,
        root_delay: float = 0.0123,
        root_dispersion: float = 0.0456,
    ) -> None:
        self.guest_offset = guest_offset
        self.stratum, self.leap, self.mode, self.kiss, self.poll = stratum, leap, mode, kiss, poll
        self.wrong_origin, self.silent = wrong_origin, silent
        self.root_delay, self.root_dispersion = root_delay, root_dispersion
        self.packets = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def server(self) -> NtpServer:
        return NtpServer("127.0.0.1", self.port)

    def _now(self) -> float:
        """The server's clock in NTP seconds (ntplib's float convention)."""
        return float(ntplib.system_to_ntp_time(time.time() - self.guest_offset))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request, peer = self.sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            t2 = self._now()
            self.packets += 1
            if self.silent:
                continue
            reply = ntplib.NTPPacket(version=4, mode=self.mode, tx_timestamp=0)
            reply.leap = self.leap
            reply.stratum = 0 if self.kiss else self.stratum
            reply.poll = self.poll
            reply.precision = -20
            reply.root_delay = self.root_delay
            reply.root_dispersion = self.root_dispersion
            reply.ref_id = struct.unpack("!I", self.kiss.encode())[0] if self.kiss else 0x7F000001
            reply.ref_timestamp = t2 - 10
            reply.recv_timestamp = t2
            reply.tx_timestamp = self._now()
            data = bytearray(reply.to_data())
            # The originate field must echo the request's transmit field bit for bit.
            data[24:32] = request[40:48]
            if self.wrong_origin:
                data[31] ^= 0x01
            self.sock.sendto(bytes(data), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def make_server() -> Iterator[type[FakeNtpServer]]:
    servers: list[FakeNtpServer] = []

    class Tracked(FakeNtpServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            servers.append(self)

    yield Tracked
    for s in servers:
        s.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry_of(families: list[Metric]) -> CollectorRegistry:
    class Static(Collector):
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry()
    registry.register(Static())
    return registry


# --- parsing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "host", "port", "label"),
    [
        ("pool.ntp.org", "pool.ntp.org", 123, "pool.ntp.org"),
        ("127.0.0.1:1123", "127.0.0.1", 1123, "127.0.0.1:1123"),
        ("[2001:db8::1]:1123", "2001:db8::1", 1123, "[2001:db8::1]:1123"),
        ("[::1]", "::1", 123, "::1"),
        ("2001:db8::1", "2001:db8::1", 123, "2001:db8::1"),
        ("ntp1.corp.example:123", "ntp1.corp.example", 123, "ntp1.corp.example"),
    ],
)
def test_parse_server(text: str, host: str, port: int, label: str) -> None:
    server = ntp.parse_server(text)
    assert (server.host, server.port, server.label) == (host, port, label)


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:x", "[::1", "[::1]x", "[example.com]:1", "a::b::c"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        ntp.parse_server(text)


# --- measurements against the test server --------------------------------------------------------
@pytest.mark.parametrize("guest_offset", [0.25, -3.0])
def test_offset_matches_injected_offset_with_the_right_sign(
    make_server: type[FakeNtpServer], guest_offset: float
) -> None:
    srv = make_server(guest_offset)
    result = ntp.measure(srv.server, FAST)
    assert result.ok, result
    assert result.sample is not None
    # guest minus server: the guest is ahead by guest_offset.
    assert result.sample.offset_seconds == pytest.approx(guest_offset, abs=1e-3)
    assert 0 <= result.sample.delay_seconds < 0.1
    assert result.sample.uncertainty_seconds == pytest.approx(result.sample.delay_seconds / 2)
    assert result.sample.stratum == 2
    assert result.sample.root_distance_seconds == pytest.approx(
        (result.sample.delay_seconds + 0.0123) / 2 + 0.0456, abs=1e-4
    )
    assert result.sent == result.valid == 3
    assert srv.packets == 3


def test_min_delay_sample_is_kept(make_server: type[FakeNtpServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Of several exchanges, the one with the smallest round trip wins (its offset is reported)."""
    srv = make_server(0.0)
    delays = iter([0.004, 0.001, 0.003])
    real_exchange = ntp.exchange

    def slow_exchange(*args: object, **kwargs: object) -> ntp.Sample:
        sample = real_exchange(*args, **kwargs)  # type: ignore[arg-type]
        extra = next(delays)
        return ntp.Sample(sample.offset_seconds + extra, extra, sample.stratum, sample.leap, 0.0, 0.0)

    monkeypatch.setattr(ntp, "exchange", slow_exchange)
    result = ntp.measure(srv.server, FAST)
    assert result.sample is not None
    assert result.sample.delay_seconds == 0.001


def test_refused_port_is_down_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = ntp.measure(NtpServer("127.0.0.1", port), FAST)
    assert not result.ok
    assert result.reason == "unreachable"
    assert result.sent == 1  # nothing listens: no point in more requests


def test_silent_server_is_down_within_the_bound(make_server: type[FakeNtpServer]) -> None:
    srv = make_server(silent=True)
    options = MeasureOptions(samples=3, sample_interval=0.05, request_timeout=0.2, timeout=0.5)
    monitor = NtpMonitor([srv.server], options, min_interval=60)
    try:
        start = time.monotonic()
        families = metrics.ntp(monitor.collect(wait_bound=options.timeout + 0.5))
        elapsed = time.monotonic() - start
    finally:
        monitor.close()
    registry = registry_of(families)
    assert registry.get_sample_value("hyperv_guest_ntp_up", {"server": srv.server.label}) == 0.0
    assert registry.get_sample_value("hyperv_guest_ntp_error_info", {"server": srv.server.label, "reason": "timeout"})
    assert (
        registry.get_sample_value("hyperv_guest_clock_offset_seconds", {"reference": "ntp", "server": srv.server.label})
        is None
    )
    assert elapsed < options.timeout + 0.5  # generous: the bound is what matters, not the exact time
    assert 1 <= srv.packets <= 3


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"leap": 3}, "unsynchronised"),
        ({"stratum": 16}, "bad_stratum"),
        ({"mode": 3}, "bad_mode"),
        ({"kiss": "DENY"}, "kod_deny"),
        ({"kiss": "RSTR"}, "kod_deny"),
        ({"kiss": "RATE"}, "kod_rate"),
        ({"kiss": "INIT"}, "kod_other"),
        ({"wrong_origin": True}, "bogus_origin"),
        ({"root_delay": 40.0}, "root_distance"),
    ],
)
def test_unusable_answers_are_rejected(
    make_server: type[FakeNtpServer], kwargs: dict[str, object], reason: str
) -> None:
    srv = make_server(**kwargs)  # type: ignore[arg-type]
    options = MeasureOptions(samples=2, sample_interval=0.02, request_timeout=0.2, timeout=0.8)
    result = ntp.measure(srv.server, options)
    assert not result.ok
    assert result.reason == reason
    if reason.startswith("kod_r") or reason == "kod_deny":
        assert srv.packets == 1  # a kiss-o'-death ends the measurement: no second request


def test_rate_kiss_of_death_backs_off(make_server: type[FakeNtpServer]) -> None:
    srv = make_server(kiss="RATE", poll=4)  # the server asks for at least 2^4 = 16 s
    clock = FakeClock()
    monitor = NtpMonitor([srv.server], FAST, min_interval=10, clock=clock, jitter=lambda: 0.0)
    try:
        first = monitor.collect(wait_bound=2, block=True)[0]
        assert first.last is not None and first.last.reason == "kod_rate"
        assert first.interval_seconds == 20  # max(10 * 2^1, 2^4)
        assert srv.packets == 1
        clock.now += 15  # past min_interval, inside the back-off
        again = monitor.collect(wait_bound=2, block=True)[0]
        assert srv.packets == 1
        assert again.last is first.last  # the last result is served, not re-measured
        clock.now += 6  # past the back-off
        third = monitor.collect(wait_bound=2, block=True)[0]
        assert srv.packets == 2
        assert third.interval_seconds == 40  # doubled again
        srv.kiss = None  # the server is happy again: the interval resets
        clock.now += 41
        fourth = monitor.collect(wait_bound=2, block=True)[0]
        assert fourth.last is not None and fourth.last.ok
        assert fourth.interval_seconds == 10
    finally:
        monitor.close()


def test_rate_kiss_of_death_honours_the_advertised_poll(make_server: type[FakeNtpServer]) -> None:
    srv = make_server(kiss="RATE", poll=10)
    monitor = NtpMonitor([srv.server], FAST, min_interval=10, clock=FakeClock(), jitter=lambda: 0.0)
    try:
        assert monitor.collect(wait_bound=2, block=True)[0].interval_seconds == 1024
    finally:
        monitor.close()


def test_deny_stops_queries_for_a_day(make_server: type[FakeNtpServer]) -> None:
    srv = make_server(kiss="DENY")
    clock = FakeClock()
    monitor = NtpMonitor([srv.server], FAST, min_interval=10, clock=clock, jitter=lambda: 0.0)
    try:
        snap = monitor.collect(wait_bound=2, block=True)[0]
        assert snap.interval_seconds == ntp.MAX_BACKOFF_SECONDS
        clock.now += 3600
        monitor.collect(wait_bound=2, block=True)
        assert srv.packets == 1
    finally:
        monitor.close()


def test_min_interval_caching_counts_packets(make_server: type[FakeNtpServer]) -> None:
    srv = make_server(0.0)
    clock = FakeClock()
    options = MeasureOptions(samples=2, sample_interval=0.02, request_timeout=0.3, timeout=1.0)
    monitor = NtpMonitor([srv.server], options, min_interval=64, clock=clock, jitter=lambda: 0.0)
    try:
        first = monitor.collect(wait_bound=2)[0]
        assert srv.packets == 2
        for _ in range(5):  # scrapes every 15 s within the interval: served from the cache
            clock.now += 10
            assert monitor.collect(wait_bound=2)[0].last is first.last
        assert srv.packets == 2
        clock.now += 15  # 65 s after the first measurement
        monitor.collect(wait_bound=2, block=True)
        assert srv.packets == 4
    finally:
        monitor.close()


def test_scrape_does_not_wait_once_a_result_exists() -> None:
    """Stale-while-revalidate: a due re-measurement runs in the background; the scrape gets the last one."""
    release = threading.Event()
    calls: list[int] = []

    def slow_measure(server: NtpServer, options: MeasureOptions) -> ntp.Measurement:
        calls.append(1)
        if len(calls) > 1:
            release.wait(5)
        sample = ntp.Sample(0.001 * len(calls), 0.0002, 2, 0, 0.0, 0.0)
        return ntp.Measurement(server, sample, 1, 1, finished_unix=float(len(calls)))

    clock = FakeClock()
    server = NtpServer("192.0.2.1")
    monitor = NtpMonitor([server], FAST, min_interval=10, measure_fn=slow_measure, clock=clock, jitter=lambda: 0.0)
    try:
        first = monitor.collect(wait_bound=2)[0]
        assert first.last is not None and first.last.finished_unix == 1.0
        clock.now += 11
        start = time.monotonic()
        second = monitor.collect(wait_bound=2)[0]
        assert time.monotonic() - start < 1.0  # did not wait for the slow measurement
        assert second.last is first.last
        release.set()
        third = monitor.collect(wait_bound=2, block=True)[0]
        assert third.last is not None and third.last.finished_unix == 2.0
    finally:
        release.set()
        monitor.close()


# --- validator and arithmetic --------------------------------------------------------------------
def _packet(first: int, stratum: int, origin: int, recv: int, xmit: int, root: int = 0, ref_id: int = 0) -> bytes:
    return struct.pack("!BBbbIII", first, stratum, 6, -20, root, root, ref_id) + struct.pack(
        "!QQQQ", recv - (1 << 32), origin, recv, xmit
    )


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=120), nonce=st.integers(0, 2**64 - 1))
def test_decode_and_validate_never_crash(data: bytes, nonce: int) -> None:
    try:
        reply = ntp.decode(data)
        ntp.validate(reply, nonce)
        ntp.compute(reply, 1_700_000_000 * 10**9, 1_700_000_000 * 10**9 + 1000)
    except Rejected as exc:
        assert exc.reason in ntp.REASONS


@settings(max_examples=300, deadline=None)
@given(
    t1_ns=st.integers(1_000_000_000 * 10**9, 4_000_000_000 * 10**9),  # 2001 .. 2096: across the 2036 rollover
    offset_ns=st.integers(-(10**15), 10**15),  # guest minus server, up to ~11.6 days either way
    forward_ns=st.integers(0, 10**8),
    back_ns=st.integers(0, 10**8),
    hold_ns=st.integers(0, 10**7),
    nonce=st.integers(1, 2**64 - 1),
)
def test_valid_answers_round_trip(
    t1_ns: int, offset_ns: int, forward_ns: int, back_ns: int, hold_ns: int, nonce: int
) -> None:
    """A consistent exchange is accepted, and offset/delay come out as constructed (to 2^-32 s)."""
    t2 = ntp.unix_ns_to_ntp(t1_ns + forward_ns - offset_ns)  # server clock = guest clock - offset
    t3 = ntp.unix_ns_to_ntp(t1_ns + forward_ns + hold_ns - offset_ns)
    t4_ns = t1_ns + forward_ns + hold_ns + back_ns
    reply = ntp.decode(_packet(0 << 6 | 4 << 3 | 4, 2, nonce, t2, t3))
    ntp.validate(reply, nonce)
    sample = ntp.compute(reply, t1_ns, t4_ns)
    # Asymmetric paths bias the offset by (forward - back)/2: that is NTP's inherent error.
    expected = (offset_ns - (forward_ns - back_ns) / 2) / 1e9
    assert sample.offset_seconds == pytest.approx(expected, abs=3e-9)
    assert sample.delay_seconds == pytest.approx((forward_ns + back_ns) / 1e9, abs=3e-9)
    assert abs(sample.offset_seconds - offset_ns / 1e9) <= sample.uncertainty_seconds + 3e-9


def test_era_rollover_arithmetic() -> None:
    rollover_ns = (2**32 - ntp.NTP_UNIX_DELTA) * 10**9  # 2036-02-07 06:28:16 UTC
    assert ntp.unix_ns_to_ntp(rollover_ns) == 0
    before = ntp.unix_ns_to_ntp(rollover_ns - 10**9)
    after = ntp.unix_ns_to_ntp(rollover_ns + 10**9)
    assert ntp.ntp_diff(after, before) == 2 << 32
    assert ntp.ntp_diff(before, after) == -(2 << 32)


def test_request_carries_nonce_and_ntplib_header() -> None:
    data = ntp.build_request(4, 0x0123456789ABCDEF)
    assert len(data) == 48
    assert data[0] == (4 << 3 | 3)  # LI 0, version 4, mode 3 (client)
    assert data[40:48] == bytes.fromhex("0123456789abcdef")
    assert data[1:40] == bytes(39)  # nothing else about us is revealed


def test_metrics_mapping_for_ntp() -> None:
    good = NtpServer("ntp1.corp.example")
    bad = NtpServer("127.0.0.1", 1123)
    sample = ntp.Sample(-0.003, 0.0004, 3, 0, 0.01, 0.02)
    snaps = [
        ntp.ServerSnapshot(good, ntp.Measurement(good, sample, 3, 3, finished_unix=1.7e9), 64.0),
        ntp.ServerSnapshot(bad, ntp.Measurement(bad, None, 1, 0, reason="kod_rate", finished_unix=1.7e9), 128.0),
        ntp.ServerSnapshot(NtpServer("192.0.2.9"), None, 64.0),
    ]
    registry = registry_of(metrics.merge(metrics.ntp(snaps)))
    g = {"server": "ntp1.corp.example"}
    assert registry.get_sample_value("hyperv_guest_ntp_up", g) == 1.0
    assert registry.get_sample_value("hyperv_guest_clock_offset_seconds", {**g, "reference": "ntp"}) == -0.003
    assert (
        registry.get_sample_value("hyperv_guest_clock_offset_uncertainty_seconds", {**g, "reference": "ntp"}) == 0.0002
    )
    assert registry.get_sample_value("hyperv_guest_ntp_delay_seconds", g) == 0.0004
    assert registry.get_sample_value("hyperv_guest_ntp_stratum", g) == 3
    assert registry.get_sample_value("hyperv_guest_ntp_root_distance_seconds", g) == pytest.approx(0.0052 + 0.02)
    b = {"server": "127.0.0.1:1123"}
    assert registry.get_sample_value("hyperv_guest_ntp_up", b) == 0.0
    assert registry.get_sample_value("hyperv_guest_ntp_error_info", {**b, "reason": "kod_rate"}) == 1.0
    assert registry.get_sample_value("hyperv_guest_ntp_poll_interval_seconds", b) == 128.0
    # Never measured yet: no up sample (no false 0), but the interval is known.
    assert registry.get_sample_value("hyperv_guest_ntp_up", {"server": "192.0.2.9"}) is None


# --- servers from the system configuration -------------------------------------------------------
def test_servers_from_chrony_configuration() -> None:
    servers = ntpconf.system_servers(Root(FIXTURE_ROOT), limit=8)
    assert [s.label for s in servers] == ["2.debian.pool.ntp.org", "ntp1.corp.example", "[2001:db8::123]:1123"]


def test_servers_from_timesyncd_and_ntpd(tmp_path: Path) -> None:
    (tmp_path / "etc/systemd/timesyncd.conf.d").mkdir(parents=True)
    (tmp_path / "etc/systemd/timesyncd.conf").write_text("[Time]\nNTP=a.example b.example\nFallbackNTP=fb.example\n")
    # A drop-in: the empty assignment resets the list, then sets a new one.
    (tmp_path / "etc/systemd/timesyncd.conf.d/10-corp.conf").write_text("[Time]\nNTP=\nNTP=ntp.corp.example\n")
    (tmp_path / "etc/ntp.conf").write_text(
        "server 127.127.1.0  # local clock\nfudge 127.127.1.0 stratum 10\npool 0.pool.ntp.org iburst\n"
        "server ntp.corp.example\n"
    )
    servers = ntpconf.system_servers(Root(tmp_path), limit=8)
    assert [s.label for s in servers] == ["ntp.corp.example", "0.pool.ntp.org"]


def test_timesyncd_fallback_and_cap(tmp_path: Path) -> None:
    (tmp_path / "etc/systemd").mkdir(parents=True)
    (tmp_path / "etc/systemd/timesyncd.conf").write_text("[Time]\n#NTP=\nFallbackNTP=a b c d\n")
    assert [s.label for s in ntpconf.system_servers(Root(tmp_path), limit=2)] == ["a", "b"]


def test_no_configuration_means_no_servers(tmp_path: Path) -> None:
    assert ntpconf.system_servers(Root(tmp_path), limit=8) == []


# --- background measurement and quick retries (issue 14: first /metrics took 4 s, a failed first
# query kept ntp_up 0 for 64 s) ------------------------------------------------------------------
class ScriptedMeasure:
    """measure_fn that answers from a script of outcomes (True: a valid sample) and counts calls."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def __call__(self, server: NtpServer, options: MeasureOptions) -> ntp.Measurement:
        ok = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        sample = ntp.Sample(0.001, 0.002, 2, 0, 0.0, 0.0) if ok else None
        return ntp.Measurement(server, sample, 1, 1 if ok else 0, reason="" if ok else "timeout")


def test_failed_measurement_is_retried_soon_with_doubling_back_off() -> None:
    server = NtpServer("ntp.example", 123)
    clock = FakeClock()
    measure = ScriptedMeasure([False, False, True, False])
    monitor = NtpMonitor([server], FAST, min_interval=64, measure_fn=measure, clock=clock, jitter=lambda: 0.0)
    try:
        assert monitor.collect(wait_bound=2, block=True)[0].interval_seconds == ntp.RETRY_START_SECONDS
        clock.now += 4.5
        assert monitor.collect(wait_bound=2, block=True)[0].interval_seconds == 2 * ntp.RETRY_START_SECONDS
        clock.now += 8.5
        good = monitor.collect(wait_bound=2, block=True)[0]
        assert good.last is not None and good.last.ok and good.interval_seconds == 64
        clock.now += 65
        assert monitor.collect(wait_bound=2, block=True)[0].interval_seconds == ntp.RETRY_START_SECONDS
        assert measure.calls == 4
    finally:
        monitor.close()


def test_background_monitor_never_makes_a_scrape_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    server = NtpServer("ntp.example", 123)
    release = threading.Event()
    measure = ScriptedMeasure([False, True])

    def slow_measure(srv: NtpServer, options: MeasureOptions) -> ntp.Measurement:
        release.wait(30)
        return measure(srv, options)

    def no_waiting(*args: object, **kwargs: object) -> None:
        raise AssertionError("a scrape waited for NTP")

    monkeypatch.setattr(ntp, "wait_futures", no_waiting)
    monitor = NtpMonitor([server], FAST, min_interval=3600, measure_fn=slow_measure, retry_start=0.05)
    try:
        monitor.start()
        first = monitor.collect(wait_bound=600)[0]  # the measurement is still running: served at once
        assert first.last is None
        release.set()
        # The first measurement fails; the scheduler retries after retry_start, not after min_interval.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = monitor.collect(wait_bound=600)[0]
            if snap.last is not None and snap.last.ok:
                break
            time.sleep(0.02)
        assert snap.last is not None and snap.last.ok, snap
        assert measure.calls == 2
    finally:
        monitor.close()
