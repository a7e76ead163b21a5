"""The NTP offset sign against a server that packs its answers by hand (issue 13).

test_guest_ntp.py's fake server encodes with ntplib, the library the agent itself uses; a shared
misreading of the format would pass there. This server writes RFC 5905's 48-byte packet with
``struct`` from the RFC's field layout alone: 32.32 fixed-point timestamps counted from 1900, the
originate field echoing the request's transmit field, and a clock ``offset`` seconds behind the
guest's, so the guest must come out ``offset`` seconds *ahead* (guest minus server, positive).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from hyperv_exporter.guest import ntp
from hyperv_exporter.guest.ntp import MeasureOptions, NtpServer

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 5905, figure 4)
OPTIONS = MeasureOptions(version=4, samples=3, sample_interval=0.05, request_timeout=2.0, timeout=10.0)


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the low 32."""
    seconds = unix_seconds + NTP_EPOCH_OFFSET
    whole = int(seconds)
    fraction = int((seconds - whole) * 2**32)
    return ((whole % 2**32) << 32) | fraction


def short_format(seconds: float) -> int:
    """NTP short format (16.16 fixed point), used for root delay and root dispersion."""
    return int(seconds * 2**16)


class StructNtpServer:
    """A stratum-2 NTP server on 127.0.0.1 whose clock runs ``behind`` seconds behind this machine's."""

    def __init__(self, behind: float) -> None:
        self.behind = behind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # so that close() is noticed: closing does not wake recvfrom
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time() - self.behind
            if len(request) < 48:
                continue
            (client_transmit,) = struct.unpack("!Q", request[40:48])
            leap, version, mode = 0, 4, 4  # no warning, NTPv4, server
            header = struct.pack(
                "!BBbbIII",
                (leap << 6) | (version << 3) | mode,
                2,  # stratum
                6,  # poll: 2**6 s
                -20,  # precision: about a microsecond
                short_format(0.010),  # root delay
                short_format(0.005),  # root dispersion
                0x7F000001,  # reference ID (an IPv4 address for stratum 2)
            )
            transmit = time.time() - self.behind
            timestamps = struct.pack(
                "!QQQQ",
                ntp_timestamp(received - 16),  # reference: when the server last set its clock
                client_transmit,  # originate: the request's transmit field, bit for bit
                ntp_timestamp(received),
                ntp_timestamp(transmit),
            )
            self.sock.sendto(header + timestamps, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def server_behind() -> Iterator[type[StructNtpServer]]:
    started: list[StructNtpServer] = []

    class Tracked(StructNtpServer):
        def __init__(self, behind: float) -> None:
            super().__init__(behind)
            started.append(self)

    yield Tracked
    for server in started:
        server.close()


def test_the_hand_packed_encoding_is_what_the_rfc_says() -> None:
    assert ntp_timestamp(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_timestamp(0.5) == (NTP_EPOCH_OFFSET << 32) | 2**31
    assert short_format(1.5) == 0x0001_8000


@pytest.mark.parametrize("behind", [0.250, -0.125, 3.0, -42.5, 1000.0])
def test_the_guest_ahead_of_the_server_has_a_positive_offset(
    server_behind: type[StructNtpServer], behind: float
) -> None:
    server = server_behind(behind)
    result = ntp.measure(NtpServer("127.0.0.1", server.port), OPTIONS)
    assert result.ok, result
    assert result.sample is not None
    # The server's clock is `behind` seconds behind the guest's: guest minus server = +behind.
    assert result.sample.offset_seconds == pytest.approx(behind, abs=0.01)
    assert result.sample.stratum == 2
