"""A loopback NTP server whose clock is the system clock minus a known offset, in a process of its own.

    python -m benchmarks.ntpserver --offset 0.1234567

Prints ``{"port": N}`` when it listens on 127.0.0.1, and answers until stdin closes. The guest then
appears ``offset`` seconds *ahead* of this server, which is what the agent's NTP client should
measure. Receive and transmit timestamps are taken right after ``recvfrom`` and right before
``sendto``, from ``time.time_ns()`` with integer arithmetic (no float rounding); it is its own
process so that the client's interpreter lock never delays an answer.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

NTP_UNIX_DELTA = 2_208_988_800
_NS = 1_000_000_000


def ntp_timestamp(unix_ns: int) -> bytes:
    """Unix nanoseconds -> the 64-bit NTP timestamp (32.32 fixed point, era 0), rounded to nearest."""
    value = (((unix_ns + NTP_UNIX_DELTA * _NS) << 32) + _NS // 2) // _NS
    return (value % (1 << 64)).to_bytes(8, "big")


def serve(sock: socket.socket, offset_ns: int) -> None:
    now = time.time_ns
    while True:
        try:
            request, peer = sock.recvfrom(512)
        except OSError:
            return
        t2 = now() - offset_ns
        if len(request) < 48:
            continue
        version = (request[0] >> 3) & 0x7
        header = struct.pack(
            "!BBbbII4s",
            (0 << 6) | (version << 3) | 4,  # leap 0, the client's version, mode 4 (server)
            2,  # stratum
            6,  # poll
            -20,  # precision ~1 us
            0,  # root delay
            0,  # root dispersion
            b"LOCL",
        )
        reference = ntp_timestamp(t2 - 16 * _NS)
        origin = request[40:48]
        packet = header + reference + origin + ntp_timestamp(t2)
        t3 = now() - offset_ns
        sock.sendto(packet + ntp_timestamp(t3), peer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--offset", type=float, required=True, help="seconds the guest is ahead of this server")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(sock, round(args.offset * _NS)), daemon=True).start()
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    sys.stdin.read()  # until the driver closes our stdin
    sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
