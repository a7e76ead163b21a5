"""The standing hostile-host harness: small HTTP(S) servers that behave as no WinRM listener should
(redirectors, a trap that counts every connection, answers without authentication, garbage error
bodies), a name resolver that hangs, and the ways each protocol's client is driven against them.

Every test in ``test_hostile_hosts.py`` runs once per entry of :data:`PROTOCOLS` (winrs and psrp,
and per auth transport): a new protocol adds its session class here and inherits every case.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from hyperv_exporter.host.transport.errors import ProbeError
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.host.transport.winrs import WinRMSession

PASSWORD = "Hostile-Pa55word-never-sent"
TRAP_HOST = "127.0.0.2"  # another loopback address: what an allowlist bypass would reach


@dataclass
class Answer:
    """What a hostile server answers to every request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HostileServer:
    """An HTTP(S) server on a loopback address that answers every request with one :class:`Answer`,
    counting TCP connections and recording request headers."""

    def __init__(self, answer: Answer, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                outer.connections += 1
                if ssl_context is not None:
                    try:
                        self.request = ssl_context.wrap_socket(self.request, server_side=True)
                    except (OSError, ssl.SSLError):
                        self.request.close()
                        self.rfile = self.wfile = None  # type: ignore[assignment]
                        return
                super().setup()

            def handle(self) -> None:
                if self.rfile is not None:
                    super().handle()

            def finish(self) -> None:
                if self.rfile is not None:
                    super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers.items())))
                a = outer.answer
                self.send_response(a.status)
                for name, value in a.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(a.body)))
                self.end_headers()
                self.wfile.write(a.body)

            do_GET = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "https" if ssl_context is not None else "http"
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/wsman"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ntlm_trap(ssl_context: ssl.SSLContext | None = None) -> HostileServer:
    """An unlisted "WinRM listener" on :data:`TRAP_HOST` that challenges for NTLM and counts connections."""
    challenge = Answer(401, {"WWW-Authenticate": "Negotiate", "Content-Type": "text/plain"}, b"")
    return HostileServer(challenge, TRAP_HOST, ssl_context)


@contextmanager
def hostile(answer: Answer, ssl_context: ssl.SSLContext | None = None) -> Iterator[HostileServer]:
    server = HostileServer(answer, ssl_context=ssl_context)
    try:
        yield server
    finally:
        server.stop()


class HangingResolver:
    """A ``getaddrinfo`` seam that blocks until released, counting calls (for ``RESOLVER.getaddrinfo``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        self.calls += 1
        self.release.wait(60)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# -- driving each protocol ------------------------------------------------------------------------


def settings_for(transport: str, scheme: str, protocol: str = "winrs", **extra: object) -> WinRMSettings:
    """The settings of a module using ``transport`` over ``scheme`` (certificates via ``extra``)."""
    return WinRMSettings(
        protocol=protocol,
        scheme=scheme,
        transport=transport,
        username="monitor",
        password=Secret(PASSWORD) if transport != "certificate" else None,
        allow_unencrypted=True,
        message_encryption="auto",
        **extra,  # type: ignore[arg-type]
    )


# Every protocol the exporter speaks; each hostile case runs once per entry.
SESSIONS: dict[str, type[WinRMSession] | type[PSRPSession]] = {"winrs": WinRMSession, "psrp": PSRPSession}
PROTOCOLS = sorted(SESSIONS)


def probe(protocol: str, url: str, settings: WinRMSettings, timeout: float = 5.0) -> ProbeError:
    """One collection with ``protocol`` against ``url``; the ProbeError it must end with."""
    session = SESSIONS[protocol](url, replace(settings, protocol=protocol), "script")
    try:
        session.collect(["host"], False, time.monotonic() + timeout)
    except ProbeError as exc:
        return exc
    raise AssertionError("the collection from a hostile listener succeeded")
