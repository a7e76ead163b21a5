"""HTTP(S) side of the simulated WinRM listener: connections, keep-alive, auth, injected faults.

One thread per TCP connection (``socketserver.ThreadingTCPServer``), HTTP/1.1 keep-alive with
Content-Length framing as pywinrm's single ``requests.Session`` expects (reference §4.1). TLS handshakes
run in the connection thread, never in the accept loop, so a slow or broken client cannot stall others.
Every wait (latency, ``slow``, ``hang``, Receive) is interruptible by the endpoint's stop().
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hmac
import logging
import selectors
import socket
import socketserver
import ssl
import struct
import threading
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Literal, get_args

from . import wsman_soap as soap
from .wsman_ntlm import ENCRYPTED_CONTENT_TYPE, NtlmConnection, NtlmError
from .wsman_shells import Abort, CallContext

if TYPE_CHECKING:
    from .wsman import WSManEndpoint

logger = logging.getLogger(__name__)

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
#: pywinrm's certificate transport sends this instead of credentials (reference §4.8).
CERT_AUTH_HEADER = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
#: What a Windows listener with Negotiate and Basic enabled offers on 401.
WWW_AUTHENTICATE = ("Negotiate", 'Basic realm="WSMAN"')
#: Requests larger than the listener's envelope limit are refused unread (simulator choice: 413, close).
MAX_REQUEST_BYTES = soap.SERVER_MAX_ENVELOPE
#: HTTP.sys closes idle keep-alive connections after 120 s (its default IdleConnectionTimeout).
IDLE_CONNECTION_SECONDS = 120.0
GARBAGE_BODY = b"\x89\x00 this is not XML: upstream proxy answered with something else \xff\xfe"
#: Billion laughs: a few hundred bytes that expand to gigabytes in a parser that expands entities.
DTD_BODY = (
    b'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(b'<!ENTITY %c "%s">' % (c, b"&%c;" % (c - 1) * 10) for c in range(ord("b"), ord("j")))
    + b']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&i;</s:Body></s:Envelope>'
)
DEFAULT_HUGE_BODY = 64 * 1024 * 1024

FaultKind = Literal[
    "hang", "slow", "http_500", "unauthorized", "reset", "garbage", "drip", "huge_body", "gzip_body", "dtd",
    "plaintext",
]  # fmt: skip
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    """About 64 KiB of gzip that inflates to 64 MiB."""
    return gzip.compress(b"\0" * DEFAULT_HUGE_BODY, compresslevel=9, mtime=0)


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject into the following requests of one endpoint.

    ``hang``: accept the request and never answer until ``stop()`` or until ``endpoint.fault`` is set
    again (then it is processed normally, late); ``slow``: sleep ``seconds`` first; ``http_500``: the real
    s:Receiver / w:InternalError SOAP fault with HTTP 500; ``unauthorized``: 401 even with good credentials;
    ``reset``: close the TCP connection with RST and no answer; ``garbage``: HTTP 200 with a non-XML body.
    Hostile listeners: ``drip``: process the request, then send the answer (status line, headers, body)
    one byte every ``seconds``; ``huge_body``: HTTP 200 with ``size`` bytes (default 64 MiB) of XML-looking
    text, no Content-Length, until the client hangs up; ``gzip_body``: HTTP 200 with
    ``Content-Encoding: gzip`` and 64 KiB that inflate to 64 MiB; ``dtd``: HTTP 200 with a "billion
    laughs" entity expansion; ``plaintext``: answer an encrypted (NTLM) request unencrypted.
    A refused connection is ``endpoint.stop()`` (``start()`` brings the listener back on the same port).
    ``times``: apply to the next N requests only, then clear; ``None`` = until replaced.
    """

    kind: FaultKind
    seconds: float = 0.0
    times: int | None = None
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.seconds < 0:
            raise ValueError("Fault.seconds must not be negative")
        if self.times is not None and self.times < 1:
            raise ValueError("Fault.times must be at least 1 (or None for no limit)")
        if self.size < 0:
            raise ValueError("Fault.size must not be negative")


class _Reset(Exception):
    """Drop the connection with a TCP reset."""


class WSManServer(socketserver.ThreadingTCPServer):
    """Accept loop; hands each connection to its own thread, which the endpoint can find and close."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, endpoint: WSManEndpoint, address: tuple[str, int]) -> None:
        self.endpoint = endpoint
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, WSManHandler)
        self._wake_r, self._wake_w = socket.socketpair()

    def serve(self) -> None:
        """Accept loop until :meth:`wake`. Unlike ``serve_forever`` it does not poll, so stop() is
        immediate and idle endpoints cost nothing."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self.handle_request()  # the socket is readable: accepts without waiting

    def wake(self) -> None:
        """Make :meth:`serve` return."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # Responses go out in one write (see WSManHandler.wbufsize); no Nagle delay for small answers.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.endpoint.ssl_context
        if context is not None:
            # Handshake later, in the connection thread (see module docstring).
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"{self.endpoint.name}-conn",
            daemon=True,
        )
        if not self.endpoint.track_connection(request, thread):
            self.shutdown_request(request)
            return
        self.endpoint.stats.incr("connections")
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.endpoint.untrack_connection(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("%s: connection from %s failed", self.endpoint.name, client_address, exc_info=True)


class WSManHandler(BaseHTTPRequestHandler):
    """One connection; ``handle()`` loops over its keep-alive requests."""

    server: WSManServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS
    # Buffer the response so status line, headers and body leave in one send (handle_one_request
    # flushes after each request). Unbuffered, headers and body are two small segments, and the client's
    # delayed ACK stalls every keep-alive round trip by ~40 ms.
    wbufsize = 1 << 16
    # Per connection: NTLM authenticates connections, not requests. Per request: "drip" and "plaintext".
    _ntlm: NtlmConnection | None = None
    _drip: float | None = None
    _plaintext: bool = False

    # --- connection -------------------------------------------------------------------------------

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()
            super().handle()
        except _Reset:
            self._reset()
        except Abort:
            logger.debug("%s: dropping connection, listener stopping", self.server.endpoint.name)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; ValueError: I/O on closed file
            logger.debug("%s: connection ended: %s", self.server.endpoint.name, exc)

    def _reset(self) -> None:
        # SO_LINGER 0 turns close() into a RST. The makefile()s hold references to the socket, so
        # close them first or the descriptor stays open.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError):
                stream.close()
        self.connection.close()

    def version_string(self) -> str:
        return "Microsoft-HTTPAPI/2.0"  # what a Windows WinRM listener sends as Server

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines and status codes only: the stdlib never logs headers, so no Authorization here.
        logger.debug("%s: %s %s", self.server.endpoint.name, self.address_string(), format % args)

    # --- methods ----------------------------------------------------------------------------------

    def _not_allowed(self) -> None:
        endpoint = self.server.endpoint
        endpoint.stats.incr("requests")
        self._discard_body()
        endpoint.pause(endpoint.latency_seconds / 2)  # the request's leg; _respond waits the answer's
        self._respond(405, b"", "text/plain", [("Allow", "POST")])

    do_GET = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _not_allowed

    def do_POST(self) -> None:
        endpoint = self.server.endpoint
        endpoint.stats.incr("requests")
        self._drip, self._plaintext = None, False
        body = self._read_body()
        if body is None:
            return
        # Latency is a round trip: half on the way in (here), half on the way out (_respond), so
        # that an NTP-style clock measurement over this listener sees symmetric legs.
        endpoint.pause(endpoint.latency_seconds / 2)
        if self.path.split("?", 1)[0].rstrip("/").lower() != "/wsman":
            self._respond(404, b"", "text/plain")
            return
        fault = endpoint.take_fault()
        if fault is not None and self._inject(fault, body):
            return
        username = self._authenticate()
        if username is None:
            endpoint.stats.incr("auth_failures")
            self._unauthorized()
            return
        if isinstance(username, bytes):  # an NTLM CHALLENGE: the handshake goes on
            token = base64.b64encode(username).decode("ascii")
            self._respond(401, b"", "text/plain", [("WWW-Authenticate", f"Negotiate {token}")])
            return
        content_type = self.headers.get("Content-Type", "").lower()
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            try:
                body = self._connection_ntlm().unwrap(body)
            except NtlmError as exc:
                logger.debug("%s: refusing an encrypted message: %s", endpoint.name, exc)
                self.close_connection = True
                self._respond(400, b"", "text/plain")
                return
            endpoint.stats.incr("encrypted_requests")
        elif not body and self._ntlm is not None and self._ntlm.authenticated:
            self._respond(200, b"", "text/plain")  # pywinrm's empty POST that sets up encryption
            return
        elif not endpoint.allow_unencrypted and not isinstance(self.connection, ssl.SSLSocket):
            # AllowUnencrypted=false, as on a default Windows listener: plaintext SOAP over HTTP is refused.
            endpoint.stats.incr("auth_failures")
            self._unauthorized()
            return
        elif not content_type.startswith("application/soap+xml"):
            self._respond(415, b"", "text/plain")
            return
        status, text = self._dispatch(body, username)
        if encrypted and not self._plaintext:
            self._respond(status, self._connection_ntlm().wrap(text.encode("utf-8")), ENCRYPTED_CONTENT_TYPE)
        else:
            self._respond(status, text.encode("utf-8"))

    def _connection_ntlm(self) -> NtlmConnection:
        if self._ntlm is None:
            self._ntlm = NtlmConnection(self.server.endpoint.name)
        return self._ntlm

    def _dispatch(self, body: bytes, username: str) -> tuple[int, str]:
        endpoint = self.server.endpoint
        ctx = CallContext(username=username, client_ip=self.client_address[0], address=endpoint.url)
        try:
            request = soap.parse_request(body)
            return 200, endpoint.service.dispatch(request, ctx)
        except soap.RequestError as exc:
            endpoint.stats.incr("soap_faults")
            logger.debug("%s: fault %s (%s)", endpoint.name, exc.fault.subcode, exc.fault.wsman_code)
            return 500, soap.fault_envelope(exc.fault, exc.message_id, endpoint.host)

    # --- request body -----------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an unreadable request (and closing the connection)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._respond(411, b"", "text/plain")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._respond(400, b"", "text/plain")
            return None
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._respond(413, b"", "text/plain")
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= MAX_REQUEST_BYTES:
            self.rfile.read(length)
        elif length or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # --- auth ---------------------------------------------------------------------------------------

    def _authenticate(self) -> str | bytes | None:
        """The authenticated user name ("" when the listener has no users), an NTLM challenge to send
        with a 401 (bytes), or None = answer 401."""
        endpoint = self.server.endpoint
        users = endpoint.users
        header = self.headers.get("Authorization", "")
        if header.strip() == CERT_AUTH_HEADER:
            return self._certificate_user()
        scheme, _, token = header.partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and endpoint.ntlm and users is not None:
            try:
                raw = base64.b64decode(token.strip(), validate=True)
                ntlm = self._connection_ntlm()
                challenge = ntlm.step(raw, users)
                return challenge if challenge is not None else ntlm.user
            except (binascii.Error, NtlmError) as exc:
                logger.debug("%s: NTLM refused: %s", endpoint.name, exc)
                return None
        if not header and self._ntlm is not None and self._ntlm.user is not None:
            return self._ntlm.user  # a connection NTLM authenticated earlier
        credentials: tuple[str, str] | None = None
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if sep:
                credentials = (user, password)
        if users is None:
            return credentials[0] if credentials else ""
        if credentials is None:
            return None
        user, password = credentials
        expected = users.get(user)
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(password.encode("utf-8"), (expected or "\x00").encode("utf-8"))
        return user if ok and expected is not None else None

    def _certificate_user(self) -> str | None:
        """Certificate auth: HTTPS with a client certificate the ssl_context verified; its subject CN is the
        user name (standing in for WinRM's certificate-to-account mapping) and must be one of ``users``."""
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        cert = self.connection.getpeercert()
        if not cert:  # empty unless the context asked for and verified a client certificate
            return None
        subject: Any = cert.get("subject", ())
        common_names = [str(attr[1]) for rdn in subject for attr in rdn if attr[0] == "commonName"]
        if not common_names:
            return None
        users = self.server.endpoint.users
        name = common_names[0]
        return name if users is None or name in users else None

    def _unauthorized(self) -> None:
        self._respond(401, b"", "text/plain", [("WWW-Authenticate", value) for value in WWW_AUTHENTICATE])

    # --- injected faults --------------------------------------------------------------------------

    def _inject(self, fault: Fault, body: bytes) -> bool:
        """Apply ``fault``; True if it answered (or dropped) the request, False to continue normally."""
        endpoint = self.server.endpoint
        endpoint.stats.incr("injected_faults")
        logger.debug("%s: injecting %s", endpoint.name, fault.kind)
        if fault.kind == "hang":
            endpoint.wait_for_fault_change()
            return False
        if fault.kind == "slow":
            endpoint.pause(fault.seconds)
            return False
        if fault.kind == "reset":
            raise _Reset
        if fault.kind in ("drip", "plaintext"):
            self._drip = fault.seconds if fault.kind == "drip" else None
            self._plaintext = fault.kind == "plaintext"
            return False
        if fault.kind == "huge_body":
            self._send_huge(fault.size or DEFAULT_HUGE_BODY)
        elif fault.kind == "gzip_body":
            self._respond(200, _gzip_bomb(), headers=[("Content-Encoding", "gzip")])
        elif fault.kind == "dtd":
            self._respond(200, DTD_BODY)
        elif fault.kind == "unauthorized":
            self._unauthorized()
        elif fault.kind == "garbage":
            self._respond(200, GARBAGE_BODY, "text/plain")
        else:  # http_500
            endpoint.stats.incr("soap_faults")
            text = soap.fault_envelope(soap.fault_internal_error(), soap.message_id_of(body), endpoint.host)
            self._respond(500, text.encode("utf-8"))
        return True

    def _send_huge(self, size: int) -> None:
        """``size`` bytes of SOAP-looking text, delimited by closing the connection (no Content-Length)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", SOAP_CONTENT_TYPE)
        self.send_header("Connection", "close")
        self.end_headers()
        piece = b"<s:Envelope>" + b"x" * (64 * 1024 - 12)
        sent = 0
        while sent < size:
            chunk = piece[: size - sent]
            self.wfile.write(chunk)  # raises once the client hangs up, which ends the connection
            sent += len(chunk)

    # --- response ---------------------------------------------------------------------------------

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str = SOAP_CONTENT_TYPE,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        endpoint = self.server.endpoint
        endpoint.pause(endpoint.latency_seconds / 2)
        if self._drip is not None:
            self._respond_dripping(status, body, content_type, headers or [])
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _respond_dripping(self, status: int, body: bytes, content_type: str, headers: list[tuple[str, str]]) -> None:
        """The whole answer, status line first, one byte every ``_drip`` seconds: each read a client
        makes succeeds quickly, so only a deadline for the whole request ends it."""
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}", f"Content-Type: {content_type}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        seconds = self._drip or 0.0
        self._drip = None
        for index in range(len(raw)):
            self.wfile.write(raw[index : index + 1])
            self.wfile.flush()
            self.server.endpoint.pause(seconds)
