"""Guest clock vs NTP servers: an SNTP client with answer validation, min-delay selection and rate limits.

Packets are encoded and decoded with ntplib's ``NTPPacket``/``NTPStats``, but sent and received on
our own socket, because ``ntplib.NTPClient.request`` (0.4.0) cannot be used safely:

* its defaults are wrong (``port="ntp"`` needs /etc/services, ``version=2``);
* it accepts any datagram from the server's IP: it checks neither the source port nor that the
  reply's originate timestamp echoes our transmit timestamp, so a late reply to an earlier request
  or an off-path spoofed packet is taken as the answer;
* it validates nothing (kiss-o'-death, stratum, leap, mode);
* it stamps t1/t4 as floats of NTP-era seconds (ULP ~0.5 us) and packs t1 by truncation.

Here the transmit timestamp is a random 64-bit nonce (as chrony does and RFC 9109 recommends: it
reveals nothing about our clock and makes off-path spoofing hard); t1 and t4 are taken locally in
integer nanoseconds. The arithmetic is done on integers modulo 2^64 in NTP's 2^-32 s units, which
also keeps it correct across the 2036 era rollover.

Sign: NTP's theta = ((t2 - t1) + (t3 - t4)) / 2 is *server minus client*. This agent exports
**guest minus reference** (positive: the guest is ahead), so ``offset_seconds = -theta``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Final

import ntplib

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 123
NTP_PACKET_SIZE: Final = 48
# Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
NTP_UNIX_DELTA: Final = 2_208_988_800
_FRAC: Final = 1 << 32
_MOD64: Final = 1 << 64
_NS: Final = 1_000_000_000
MODE_CLIENT: Final = 3
MODE_SERVER: Final = 4
LEAP_UNSYNCHRONISED: Final = 3
MAX_STRATUM: Final = 16
# RFC 5905 MAXDISP: a server whose own error bound (root_delay/2 + root_dispersion) exceeds 16 s is
# not synchronised in any useful sense (beevik/ntp Validate uses the same limit).
MAX_ROOT_DISTANCE: Final = 16.0
# A round trip computed slightly below zero is rounding of the 32.32 timestamps, up to this much.
_DELAY_TOLERANCE: Final = _FRAC // 1_000_000  # 1 us in 2^-32 s units

# Failure reasons: a fixed set, because they become a label value.
REASONS: Final = (
    "timeout",
    "unreachable",
    "resolve",
    "kod_rate",
    "kod_deny",
    "kod_other",
    "unsynchronised",
    "bad_stratum",
    "bad_mode",
    "bad_version",
    "bogus_origin",
    "bad_timestamps",
    "root_distance",
    "short_packet",
)


# --- server addresses ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NtpServer:
    host: str
    port: int = DEFAULT_PORT

    @property
    def label(self) -> str:
        """The ``server`` label: the host as configured, with the port only when it is not 123."""
        if self.port == DEFAULT_PORT:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> NtpServer:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address (no port then)."""
    value = text.strip()
    if not value:
        raise ValueError("empty NTP server")
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{text!r}: brackets are for IPv6 addresses") from None
    elif value.count(":") == 1:
        host, port_text = value.split(":", 1)
    elif value.count(":") > 1:
        # A bare IPv6 address: the last group cannot be told apart from a port, so none is taken.
        try:
            ipaddress.IPv6Address(value.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{text!r}: not an IPv6 address (use [addr]:port)") from None
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: bad host")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: bad port {port_text!r}")
        port = int(port_text)
    return NtpServer(host, port)


# --- timestamps ----------------------------------------------------------------------------------
def unix_ns_to_ntp(unix_ns: int) -> int:
    """Unix nanoseconds -> 64-bit NTP timestamp (32.32 fixed point, era folded modulo 2^64)."""
    return (((unix_ns + NTP_UNIX_DELTA * _NS) << 32) // _NS) % _MOD64


def ntp_diff(a: int, b: int) -> int:
    """``a - b`` for two 64-bit NTP timestamps, in 2^-32 s, valid while |a - b| < 68 years (era-safe)."""
    return (a - b + (1 << 63)) % _MOD64 - (1 << 63)


# --- one answer ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded server answer plus our own stamps; only :func:`validate` decides if it is usable."""

    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    root_delay: float
    root_dispersion: float
    ref_id: int
    origin: int
    receive: int  # t2, server clock, NTP 64-bit
    transmit: int  # t3, server clock, NTP 64-bit

    @property
    def kiss_code(self) -> str:
        """The four ASCII characters of the reference id, meaningful when stratum is 0."""
        raw = self.ref_id.to_bytes(4, "big")
        return "".join(chr(b) if 0x20 < b < 0x7F else "?" for b in raw).rstrip("?")


class Rejected(Exception):
    """An answer that must not be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "", poll: int = 0) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.poll = poll  # the server's poll exponent, for a RATE kiss-o'-death


def decode(data: bytes) -> Reply:
    """Raw datagram -> :class:`Reply` (ntplib decodes the header; timestamps are kept as raw integers)."""
    if len(data) < NTP_PACKET_SIZE:
        raise Rejected("short_packet", f"{len(data)} bytes")
    stats = ntplib.NTPStats()
    try:
        stats.from_data(data)
    except ntplib.NTPException:
        raise Rejected("short_packet", "undecodable") from None
    return Reply(
        leap=int(stats.leap),
        version=int(stats.version),
        mode=int(stats.mode),
        stratum=int(stats.stratum),
        poll=int(stats.poll),
        root_delay=float(stats.root_delay),
        root_dispersion=float(stats.root_dispersion),
        ref_id=int(stats.ref_id),
        origin=int.from_bytes(data[24:32], "big"),
        receive=int.from_bytes(data[32:40], "big"),
        transmit=int.from_bytes(data[40:48], "big"),
    )


def validate(reply: Reply, nonce: int) -> None:
    """Raise :class:`Rejected` unless the answer is a usable server reply to the request carrying ``nonce``.

    Order matters: the origin check comes first, so a forged or stale packet cannot trigger a
    kiss-o'-death back-off (RFC 5905 7.4: KoD packets are only believed if they match a request).
    """
    if reply.origin != nonce:
        raise Rejected("bogus_origin", "originate timestamp does not echo our transmit timestamp")
    if reply.mode != MODE_SERVER:
        raise Rejected("bad_mode", f"mode {reply.mode}")
    if not 1 <= reply.version <= 4:
        raise Rejected("bad_version", f"version {reply.version}")
    if reply.stratum == 0:
        code = reply.kiss_code
        if code == "RATE":
            raise Rejected("kod_rate", code, poll=reply.poll)
        if code in ("DENY", "RSTR"):
            raise Rejected("kod_deny", code)
        raise Rejected("kod_other", code or "stratum 0")
    if reply.stratum >= MAX_STRATUM:
        raise Rejected("bad_stratum", f"stratum {reply.stratum}")
    if reply.leap == LEAP_UNSYNCHRONISED:
        raise Rejected("unsynchronised", "leap indicator 3 (clock not synchronised)")
    if reply.receive == 0 or reply.transmit == 0:
        raise Rejected("bad_timestamps", "zero receive or transmit timestamp")
    if ntp_diff(reply.transmit, reply.receive) < 0:
        raise Rejected("bad_timestamps", "server transmit before receive")
    if reply.root_delay / 2 + reply.root_dispersion > MAX_ROOT_DISTANCE:
        raise Rejected("root_distance", f"root delay {reply.root_delay:g}s, dispersion {reply.root_dispersion:g}s")


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated exchange. ``offset_seconds`` = guest minus server (positive: guest ahead)."""

    offset_seconds: float
    delay_seconds: float
    stratum: int
    leap: int
    root_delay_seconds: float
    root_dispersion_seconds: float

    @property
    def root_distance_seconds(self) -> float:
        """Error bound to the server's reference: (delay + root_delay)/2 + root_dispersion (RFC 5905 A.5.5.2)."""
        return (self.delay_seconds + self.root_delay_seconds) / 2 + self.root_dispersion_seconds

    @property
    def uncertainty_seconds(self) -> float:
        """Bound on the offset's error against the server clock: |theta - theta_true| <= delay/2."""
        return self.delay_seconds / 2


def compute(reply: Reply, t1_unix_ns: int, t4_unix_ns: int) -> Sample:
    """Offset and delay from the four timestamps (``reply`` must have passed :func:`validate`)."""
    t1 = unix_ns_to_ntp(t1_unix_ns)
    t4 = unix_ns_to_ntp(t4_unix_ns)
    server_time = ntp_diff(reply.transmit, reply.receive)  # t3 - t2, >= 0 after validate
    client_time = ntp_diff(t4, t1)  # t4 - t1
    delay = client_time - server_time
    if delay < -_DELAY_TOLERANCE:
        # The server claims to have held the packet longer than the round trip took: its clock runs
        # fast against ours or the answer is bogus. Either way the offset bound is meaningless.
        raise Rejected("bad_timestamps", "negative round-trip delay")
    # Within the tolerance it is timestamp quantisation (and servers randomise bits below their
    # precision), not a real negative delay.
    delay = max(delay, 0)
    theta_twice = ntp_diff(reply.receive, t1) + ntp_diff(reply.transmit, t4)  # 2*(server - client)
    return Sample(
        offset_seconds=-theta_twice / (2 * _FRAC),
        delay_seconds=delay / _FRAC,
        stratum=reply.stratum,
        leap=reply.leap,
        root_delay_seconds=reply.root_delay,
        root_dispersion_seconds=reply.root_dispersion,
    )


# --- one exchange on the wire --------------------------------------------------------------------
def build_request(version: int, nonce: int) -> bytes:
    """A client-mode request whose transmit timestamp is ``nonce`` (all other fields zero)."""
    header = ntplib.NTPPacket(version=version, mode=MODE_CLIENT, tx_timestamp=0).to_data()
    return bytes(header[:40]) + nonce.to_bytes(8, "big")


Clock = Callable[[], int]  # wall clock in Unix ns (time.time_ns); injectable for tests


def exchange(
    sockaddr: tuple[object, ...],
    family: int,
    version: int,
    timeout: float,
    wall_ns: Clock = time.time_ns,
) -> Sample:
    """Send one request and wait up to ``timeout`` for its matching answer.

    The socket is connected, so the kernel drops datagrams from any other address or port, and an
    ICMP port-unreachable surfaces as ECONNREFUSED at once instead of a timeout. A fresh socket (and
    so a fresh ephemeral port) per request, as RFC 9109 recommends. Datagrams whose originate field
    does not match are skipped while waiting (a late answer to a previous request is not an error by
    itself); if only such datagrams arrived, the exchange fails as ``bogus_origin``.
    """
    nonce = secrets.randbits(64) or 1
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(sockaddr)
            request = build_request(version, nonce)
            t1 = wall_ns()
            sock.send(request)
            bogus: Rejected | None = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise bogus or Rejected("timeout", f"no answer within {timeout:g}s")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(1024)
                except TimeoutError:
                    raise bogus or Rejected("timeout", f"no answer within {timeout:g}s") from None
                t4 = wall_ns()
                try:
                    reply = decode(data)
                    validate(reply, nonce)
                except Rejected as exc:
                    if exc.reason in ("bogus_origin", "short_packet"):
                        bogus = exc
                        continue
                    raise
                return compute(reply, t1, t4)
        except ConnectionRefusedError:
            raise Rejected("unreachable", "connection refused (ICMP port unreachable)") from None
        except OSError as exc:
            raise Rejected("unreachable", exc.strerror or str(exc)) from None


# --- one measurement -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measurement:
    """The result of measuring one server: the minimum-delay valid sample, or why there is none."""

    server: NtpServer
    sample: Sample | None
    sent: int
    valid: int
    reason: str = ""  # of the last failure; empty when sample is set and nothing failed
    detail: str = ""
    kod_poll: int = 0  # poll exponent from a RATE kiss-o'-death
    finished_unix: float = 0.0
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sample is not None


@dataclass(frozen=True, slots=True)
class MeasureOptions:
    version: int = 4
    samples: int = 3
    # Spacing between requests to one server. ntpd's default guard time ("discard minimum") is 2 s
    # and a server with "limited kod" drops or KoDs packets closer than that, so 2 s is the polite
    # default; chrony's iburst uses the same spacing.
    sample_interval: float = 2.0
    request_timeout: float = 1.0
    # Upper bound on one whole measurement (all requests, waits and spacing).
    timeout: float = 5.0


def measure(
    server: NtpServer,
    options: MeasureOptions,
    wall_ns: Clock = time.time_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> Measurement:
    """Up to ``options.samples`` exchanges within ``options.timeout``; keep the minimum-delay sample.

    The minimum-delay sample has the smallest error bound (delay/2) and is the least disturbed by
    queueing (RFC 5905's clock filter, chrony and phc2sys make the same choice). A RATE or DENY
    kiss-o'-death ends the measurement at once: the server asked us to stop.
    """
    start = time.monotonic()
    deadline = start + options.timeout
    sent = 0
    best: Sample | None = None
    valid = 0
    last: Rejected | None = None

    def finish() -> Measurement:
        return Measurement(
            server=server,
            sample=best,
            sent=sent,
            valid=valid,
            reason=last.reason if last else "",
            detail=last.detail if last else "",
            kod_poll=last.poll if last and last.reason == "kod_rate" else 0,
            finished_unix=wall_ns() / _NS,
            duration_seconds=time.monotonic() - start,
        )

    try:
        # getaddrinfo has no timeout of its own; measurements run on worker threads and callers wait
        # on them with a deadline, so a hung resolver delays this server's result, never the scrape.
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        last = Rejected("resolve", str(exc))
        return finish()
    family, _, _, _, sockaddr = infos[0]
    for i in range(options.samples):
        if i > 0:
            # Only space out another request if it can still get a fair wait after the pause.
            if deadline - time.monotonic() < options.sample_interval + min(0.1, options.request_timeout):
                break
            sleep(options.sample_interval)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sent += 1
        try:
            sample = exchange(sockaddr, family, options.version, min(options.request_timeout, remaining), wall_ns)
        except Rejected as exc:
            last = exc
            # The server asked us to stop (KoD), or nothing listens there: more requests cannot help.
            # Timeouts and bad answers are retried, since UDP loses packets.
            if exc.reason in ("kod_rate", "kod_deny", "unreachable"):
                break
            continue
        valid += 1
        if best is None or sample.delay_seconds < best.delay_seconds:
            best = sample
    return finish()


# --- scheduling, caching and back-off ------------------------------------------------------------
# A DENY/RSTR kiss-o'-death means "stop sending" (RFC 5905 7.4); we retry after this long, in case
# the server's policy changes, and RATE back-off doubles up to the same cap.
MAX_BACKOFF_SECONDS: Final = 86_400.0
# After a failed measurement (timeout, unreachable: not a kiss-o'-death) the next one comes sooner
# than min_interval: 4 s, then 8, 16, 32 ... up to min_interval, so one lost first answer costs
# seconds of ntp_up 0, not a whole minute.
RETRY_START_SECONDS: Final = 4.0


@dataclass(slots=True)
class ServerState:
    server: NtpServer
    last: Measurement | None = None
    next_due: float = 0.0  # monotonic
    interval: float = 0.0  # current effective interval between measurements (grows under back-off)
    backoff_level: int = 0
    failures: int = 0  # consecutive failed measurements (not kiss-o'-death): quick retries
    inflight: Future[Measurement] | None = None


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    server: NtpServer
    last: Measurement | None
    interval_seconds: float


@dataclass
class NtpMonitor:
    """Measures each server at most once per ``min_interval`` and serves the last result in between.

    Why this design (stale-while-revalidate, measured on demand in worker threads):

    * NTP servers rate-limit clients, and a fleet of agents scraped every 15 s must not send 15 s
      bursts. Measurements are triggered by collections but never more often than ``min_interval``
      per server (plus up to 10 % jitter, so agents started together drift apart), and no traffic
      at all is sent while nobody collects.
    * A polite measurement (several requests 2 s apart) takes seconds. It runs on a worker thread;
      a scrape waits for it only when there is no result yet at all (the first scrape after start),
      and never longer than ``wait_bound``. Otherwise the scrape returns at once with the previous
      result, and the fresh one is served from the next scrape on. The textfile loop can afford to
      wait (``block=True``) so each file carries the measurement made for it.
    * Servers are measured concurrently, so N servers cost the time of one.
    * RATE kiss-o'-death doubles the interval (at least the server's advertised poll interval),
      up to a day; DENY/RSTR jump straight to a day; a good answer resets it. Any other failure is
      retried after ``retry_start`` seconds, doubling up to ``min_interval``.

    With :meth:`start` (the HTTP server), a scheduler thread measures every server on that schedule
    from start-up on, as chrony_exporter serves chronyd's state: a scrape never waits for NTP and
    always gets the latest result. Without it (textfile mode, tests) measurements are triggered by
    collections as described above.
    """

    servers: Sequence[NtpServer]
    options: MeasureOptions = field(default_factory=MeasureOptions)
    min_interval: float = 64.0
    measure_fn: Callable[[NtpServer, MeasureOptions], Measurement] = measure
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random
    retry_start: float = RETRY_START_SECONDS

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._states = {s: ServerState(s, interval=self.min_interval) for s in self.servers}
        self._executor = ThreadPoolExecutor(max_workers=max(1, min(len(self._states), 8)), thread_name_prefix="ntp")
        self._stopped = threading.Event()
        self._scheduler: threading.Thread | None = None

    def start(self) -> None:
        """Measure in the background from now on; collections then never wait (see the class docstring)."""
        if self._scheduler is None and self._states:
            self._scheduler = threading.Thread(target=self._schedule, name="ntp-scheduler", daemon=True)
            self._scheduler.start()

    def _schedule(self) -> None:
        while not self._stopped.is_set():
            self._start_due()
            with self._lock:
                due = [s.next_due for s in self._states.values() if s.inflight is None]
            # Woken at the next due time, and at least every second to pick up finished measurements.
            delay = (min(due) - self.clock()) if due else 1.0
            self._stopped.wait(min(max(delay, 0.05), 1.0))

    def close(self) -> None:
        self._stopped.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _start_due(self) -> None:
        now = self.clock()
        started: list[tuple[ServerState, Future[Measurement]]] = []
        with self._lock:
            for state in self._states.values():
                if state.inflight is None and now >= state.next_due:
                    state.inflight = self._executor.submit(self.measure_fn, state.server, self.options)
                    started.append((state, state.inflight))
        # Registered outside the lock: a future that is already done runs its callback right here.
        for state, future in started:
            future.add_done_callback(functools.partial(self._apply, state))

    def _apply(self, state: ServerState, future: Future[Measurement]) -> None:
        """Record a finished measurement (idempotent: called by the future's callback and by collect).

        ``collect`` also calls it because ``concurrent.futures.wait`` can return before the done
        callbacks have run, and the scrape that waited should see the result it waited for.
        """
        try:
            result = future.result()
        except Exception as exc:  # a bug in measure must not wedge the server forever
            if state.inflight is future:
                log.error("NTP measurement crashed", extra={"server": state.server.label, "err": repr(exc)})
            result = Measurement(state.server, None, 0, 0, reason="timeout", detail=repr(exc))
        now = self.clock()
        with self._lock:
            if state.inflight is not future:
                return
            previous = state.last
            state.last = result
            state.inflight = None
            if result.reason == "kod_deny":
                state.backoff_level += 1
                state.interval = MAX_BACKOFF_SECONDS
            elif result.reason == "kod_rate":
                state.backoff_level += 1
                advertised = 2.0 ** max(0, min(result.kod_poll, 17))
                state.interval = min(MAX_BACKOFF_SECONDS, max(self.min_interval * 2.0**state.backoff_level, advertised))
            elif not result.ok:
                state.backoff_level = 0
                state.failures += 1
                state.interval = min(self.min_interval, self.retry_start * 2.0 ** (state.failures - 1))
            else:
                state.backoff_level = state.failures = 0
                state.interval = self.min_interval
            state.next_due = now + state.interval * (1.0 + 0.1 * self.jitter())
            interval = state.interval
        self._log_transition(previous, result, interval)

    @staticmethod
    def _log_transition(previous: Measurement | None, result: Measurement, interval: float) -> None:
        # Logged when a server's state changes, not on every measurement, so a dead server does not
        # fill the log every minute.
        before = (previous.ok, previous.reason) if previous else None
        after = (result.ok, result.reason)
        if before == after:
            return
        extra = {"server": result.server.label, "reason": result.reason, "detail": result.detail}
        if result.reason in ("kod_rate", "kod_deny"):
            log.warning("NTP server sent kiss-o'-death; backing off", extra={**extra, "interval_seconds": interval})
        elif not result.ok:
            log.warning("NTP server unusable", extra=extra)
        else:
            log.info("NTP server usable", extra={"server": result.server.label, "samples": result.valid})

    def collect(self, wait_bound: float, block: bool = False) -> list[ServerSnapshot]:
        """Start due measurements; wait (bounded) as described in the class docstring; snapshot."""
        self._start_due()
        background = self._scheduler is not None and not block  # the scheduler measures; serve the latest
        with self._lock:
            pending = [
                (s, s.inflight)
                for s in self._states.values()
                if s.inflight is not None and not background and (block or s.last is None)
            ]
        if pending and wait_bound > 0:
            wait_futures([f for _, f in pending], timeout=wait_bound)
            for state, future in pending:
                if future.done():
                    self._apply(state, future)
        with self._lock:
            return [ServerSnapshot(s.server, s.last, s.interval) for s in self._states.values()]
