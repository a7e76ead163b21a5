"""The HTTP(S) server shared by the exporter and the guest agent: stdlib only, one thread per connection.

At most ``max_connections`` connections are served at once (``--web.max-connections``), one
thread each. Above that, a new connection takes the place of the one that has waited longest for
its next request (idle keep-alive, or a request line or headers still trickling in): an idle
flood cannot lock out Prometheus or ``/-/healthy``, and connections whose request is being
answered are never cut. If every connection is busy answering, the new one gets a 503.

Per connection: TLS handshake with the current SSLContext (so certificates rotate without a
restart), then HTTP/1.1 keep-alive. Per request, in this order: client SAN allowlist (403), rate
limit (429), body size (413 above 1 MiB), basic auth (401), the handler (500 if it fails), then
the configured headers, gzip and HEAD handling. Reads are bounded by deadlines, not just per-recv timeouts, so a client
that dribbles bytes (slowloris) cannot hold a thread for longer than ``IDLE_TIMEOUT`` +
``READ_TIMEOUT`` per request.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import io
import ipaddress
import logging
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry, Gauge

from .auth import BasicAuthenticator, FailureThrottle, parse_basic_auth
from .config import WebConfig
from .listen import ListenAddress, open_listener, parse_listen_address
from .messages import Handler, Headers, Request, Response
from .reload import ConfigWatcher, Runtime
from .tls import san_allowed

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
GZIP_MIN_SIZE = 1024
IDLE_TIMEOUT = 60.0  # waiting for the next request on a kept-alive connection (or the first one)
READ_TIMEOUT = 30.0  # TLS handshake; request line, headers and body once a request has started
WRITE_TIMEOUT = 60.0  # sending one response
MAX_QUERY_FIELDS = 1000
DEFAULT_MAX_CONNECTIONS = 1024  # each is a thread (~40 KiB resident); Prometheus keeps one per target
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
    b"Connection: close\r\n\r\ntoo many connections\n"
)

# The server owns framing; a handler's own values for these would corrupt the response.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


class _DeadlineReader(io.RawIOBase):
    """Socket reads bounded by one deadline for a whole phase, however the bytes trickle in."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + IDLE_TIMEOUT

    def arm(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request read deadline exceeded")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _ServerState:
    """What every connection of one WebServer shares."""

    def __init__(
        self, name: str, handler: Handler, watcher: ConfigWatcher | None, tls: bool, max_connections: int
    ) -> None:
        self.name = name
        self.handler = handler
        self.watcher = watcher
        self.tls = tls
        self.max_connections = max_connections
        self.active = 0  # connection threads started and not finished
        self.waiting: dict[socket.socket, float] = {}  # connections waiting for (the rest of) a request
        self.static = Runtime(config=WebConfig())
        self.authenticator = BasicAuthenticator()
        self.throttle = FailureThrottle()
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def runtime(self) -> Runtime:
        return self.watcher.current() if self.watcher is not None else self.static

    def admit(self) -> bool:
        """Take a connection slot, if need be by cutting the connection that waited longest for a request."""
        with self.lock:
            if self.active < self.max_connections:
                self.active += 1
                return True
            if not self.waiting:
                return False
            victim = min(self.waiting, key=self.waiting.__getitem__)
            del self.waiting[victim]
            self.active += 1  # briefly one over: the victim's thread ends as soon as its socket is shut
        with contextlib.suppress(OSError):
            socket.socket.shutdown(victim, socket.SHUT_RDWR)
        return True

    def release(self) -> None:
        with self.lock:
            self.active -= 1

    def set_waiting(self, sock: socket.socket, waiting: bool) -> None:
        with self.lock:
            if waiting:
                self.waiting[sock] = time.monotonic()
            else:
                self.waiting.pop(sock, None)


class _Listener(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """One listening socket; WebServer runs the accept loop, this supplies the per-connection threads."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, state: _ServerState) -> None:
        # BaseServer directly: TCPServer.__init__ would create and bind a socket of its own.
        socketserver.BaseServer.__init__(self, sock.getsockname(), _ConnectionHandler)
        self.socket = sock
        self.address_family = sock.family
        self.state = state

    def shutdown_request(self, request: Any) -> None:
        # The handler closes its connection (which may be a TLS wrapper around this socket).
        self.close_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.state.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Client misbehaviour is handled in the connection handler; what reaches here is our bug.
        # (socketserver's default would print to stderr.)
        logger.error("Unexpected error serving %s", client_address[0], exc_info=True)


class _ConnectionHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Errors for HTTP/0.9-style request lines still get a status line and headers.
    default_request_version = "HTTP/1.1"

    # Set in setup().
    state: _ServerState
    _reader: _DeadlineReader
    _usable: bool
    _peer_cert: dict[str, Any] | None
    _unread_body: bool

    # --- connection ---------------------------------------------------------------------------

    def setup(self) -> None:
        self.state = cast(_Listener, self.server).state
        self._usable = False
        self._peer_cert = None
        self._unread_body = False
        sock: socket.socket = self.request
        self._track(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(READ_TIMEOUT)
            if self.state.tls:
                context = self.state.runtime().ssl_context
                assert context is not None
                # Wrapping detaches the plain socket; track the wrapper so stop() can still reach it.
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self._track(sock, replaces=self.request)
                self.request = sock
                sock.do_handshake()
                self._peer_cert = sock.getpeercert()
        except (OSError, ValueError) as exc:
            logger.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
            self._untrack(sock)
            sock.close()
            return
        self.connection = sock
        self._reader = _DeadlineReader(sock)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile = sock.makefile("wb")
        self._usable = True

    def handle(self) -> None:
        if not self._usable:
            return
        try:
            super().handle()
        except (OSError, ValueError) as exc:
            # Resets, TLS errors and deadlines: the client is gone or misbehaving; nothing to answer.
            logger.debug("Connection from %s closed: %s", self.client_address[0], exc)

    def finish(self) -> None:
        if not self._usable:
            return
        sock: socket.socket = self.connection
        with contextlib.suppress(OSError, ValueError):
            self.wfile.flush()
        if self._unread_body:
            self._drain(sock)
        with contextlib.suppress(OSError, ValueError):
            self.wfile.close()
            self.rfile.close()
        self._untrack(sock)
        sock.close()

    def _track(self, sock: socket.socket, replaces: socket.socket | None = None) -> None:
        with self.state.lock:
            if replaces is not None:
                self.state.connections.discard(replaces)
                self.state.waiting.pop(replaces, None)
            self.state.connections.add(sock)
            self.state.waiting[sock] = time.monotonic()  # the TLS handshake and first request are still to come

    def _untrack(self, sock: socket.socket) -> None:
        with self.state.lock:
            self.state.connections.discard(sock)
            self.state.waiting.pop(sock, None)

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        # We answered (413, 401, ...) without reading a request body. Closing with unread bytes makes
        # the kernel send RST, which can destroy the response before the client reads it; so stop
        # sending, then swallow a bounded amount of what the client is still sending.
        with contextlib.suppress(OSError, ValueError):
            socket.socket.shutdown(sock, socket.SHUT_WR)
            sock.settimeout(1.0)
            for _ in range(64):
                if not sock.recv(65536):
                    break

    # --- request loop ---------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        # BaseHTTPRequestHandler's version, except that every method goes to _serve() (no do_GET & co)
        # and the read deadlines are armed per phase. parse_request() may fail before it sets
        # command/path/version, and send_error() reads them.
        self.command, self.path, self.request_version = "", "", self.default_request_version
        self.state.set_waiting(self.connection, True)
        self._reader.arm(IDLE_TIMEOUT)
        self.raw_requestline = self.rfile.readline(65537)
        self._reader.arm(READ_TIMEOUT)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self._unread_body = True
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        if self.request_version == "HTTP/0.9":
            # http.server would answer "GET /" without a status line or headers (the configured
            # security headers included); nothing legitimate speaks HTTP/0.9 any more.
            self.request_version = self.default_request_version
            self.close_connection = True
            self.send_error(400, "HTTP/0.9 is not supported")
            return
        # Headers complete: from here on this connection is being answered and is never cut for a new one.
        self.state.set_waiting(self.connection, False)
        self._serve()
        self.wfile.flush()

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client starts sending it.
        length = self._content_length()
        if length is None:
            return False
        return super().handle_expect_100()

    def _content_length(self) -> int | None:
        """The request body's length, or None after answering an error (which closes the connection)."""
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            self._fail_early(411, "chunked request bodies are not supported; send Content-Length")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len({v.strip() for v in values}) != 1 or not values[0].strip().isdigit():
            self._fail_early(400, "invalid Content-Length")
            return None
        length = int(values[0])
        if length > MAX_BODY:
            self._fail_early(413, f"request body larger than {MAX_BODY} bytes")
            return None
        return length

    def _fail_early(self, status: int, message: str, config_headers: Mapping[str, str] | None = None) -> None:
        """Answer without reading the request body, then close the connection."""
        self._unread_body = True
        self._send(Response(status=status, body=message + "\n"), config_headers or {}, close=True)

    def _serve(self) -> None:
        runtime = self.state.runtime()
        config = runtime.config
        config_headers = config.http.headers
        sans = config.tls.client_allowed_sans if config.tls is not None else ()
        if sans and not san_allowed(self._peer_cert, sans):
            self._fail_early(403, "client certificate not allowed", config_headers)
            return
        if runtime.limiter is not None and not runtime.limiter.allow():
            self._fail_early(429, "too many requests", config_headers)
            return
        length = self._content_length()
        if length is None:
            return
        user: str | None = None
        if config.basic_auth_users:
            credentials = parse_basic_auth(self.headers.get("Authorization"))
            if credentials is None or not self.state.authenticator.check(config.basic_auth_users, *credentials):
                if credentials is not None:
                    # Slows the flood's own connection down; its thread sleeps, the CPU stays free,
                    # and meanwhile it may be cut to make room for a new connection (at the cap).
                    self.state.set_waiting(self.connection, True)
                    self.state.stopping.wait(self.state.throttle.failed(_client_ip(self.client_address[0])))
                    self.state.set_waiting(self.connection, False)
                realm = self.state.name.replace("\\", "\\\\").replace('"', '\\"')
                denied = Response(
                    status=401, body="Unauthorized\n", headers={"WWW-Authenticate": f'Basic realm="{realm}"'}
                )
                if length:
                    self._unread_body = True
                self._send(denied, config_headers, close=bool(length))
                return
            user = credentials[0]
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return
        target = urlsplit(self.path)
        try:
            query = parse_qs(target.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            self._send(Response(status=400, body="too many query parameters\n"), config_headers)
            return
        request = Request(
            method=self.command,
            path=unquote(target.path),
            query=query,
            headers=Headers(self.headers.items()),
            body=body,
            remote_addr=_client_ip(self.client_address[0]),
            user=user,
        )
        try:
            response = self.state.handler(request)
            if not isinstance(response, Response):
                raise TypeError(f"handler returned {type(response).__name__}, not Response")
            self._send(response, config_headers, validate_only=True)
        except Exception:
            logger.error("Handler failed for %s %s", request.method, request.path, exc_info=True)
            response = Response(status=500, body="internal error\n")
        self._send(response, config_headers)

    # --- responses ------------------------------------------------------------------------------

    def _send(
        self, response: Response, config_headers: Mapping[str, str], *, close: bool = False, validate_only: bool = False
    ) -> None:
        """Write ``response``; with ``validate_only``, just raise if it could not be written."""
        status = response.status
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"invalid status {status!r}")
        # Later entries win: config headers, then Content-Type, then the handler's (as in the toolkit,
        # where the handler may overwrite what the config set).
        headers: dict[str, tuple[str, str]] = {}
        for name, value in (
            *config_headers.items(),
            ("Content-Type", response.content_type),
            *response.headers.items(),
        ):
            _check_header(name, value)
            if name.lower() not in _FRAMING_HEADERS:
                headers[name.lower()] = (name, value)
        body = response.body_bytes()
        if validate_only:
            return
        if status in (204, 304):
            body = b""
        elif len(body) > GZIP_MIN_SIZE:
            headers.setdefault("vary", ("Vary", "Accept-Encoding"))
            if "content-encoding" not in headers and _accepts_gzip(self.headers.get("Accept-Encoding", "")):
                # Level 1: a third of level 6's CPU (24 vs 66 ms for a 1,000-VM host's 8 MiB) for a body
                # about 12 % larger; docs/performance.md.
                body = gzip.compress(body, compresslevel=1, mtime=0)
                headers["content-encoding"] = ("Content-Encoding", "gzip")
        self.connection.settimeout(WRITE_TIMEOUT)
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers.values():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.log_request(status, len(body))

    # --- BaseHTTPRequestHandler hooks ---------------------------------------------------------

    def send_response_only(self, code: int, message: str | None = None) -> None:
        # A request line that merely *ends* in "HTTP/0.9" sets request_version before it is found
        # malformed; http.server would then send its error without a status line or headers.
        if self.request_version == "HTTP/0.9":
            self.request_version = self.default_request_version
            self.close_connection = True
        super().send_response_only(code, message)

    def version_string(self) -> str:
        return self.state.name

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s %s %s", self.client_address[0], self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: " + format, self.client_address[0], *args)


def _check_header(name: str, value: str) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError("header names and values must be str")
    if not name or any(c in name for c in " \t\r\n:\0") or any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid response header {name!r}")


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _client_ip(host: str) -> str:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


def web_config_reload_gauge(prefix: str, registry: CollectorRegistry) -> Gauge:
    """``{prefix}_web_config_last_reload_successful``, the same in both programs."""
    return Gauge(
        f"{prefix}_web_config_last_reload_successful",
        "0 after a change to --web.config.file was refused (invalid, empty, or weakening auth or TLS); "
        "the previous web config stays in force.",
        registry=registry,
    )


class WebServer:
    """Serves ``handler`` on every listen address, with the TLS, auth and limits of a toolkit web config.

    The handler is called for every method, HEAD included (answer it as GET: the server sends the
    headers, with the Content-Length of the body, and drops the body). It may be called from many
    threads at once. Listen addresses are checked here (ValueError); the web config in start().
    """

    def __init__(
        self,
        listen_addresses: Sequence[str],
        handler: Handler,
        *,
        web_config_file: str | None = None,
        name: str = "hyperv-exporter",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if isinstance(listen_addresses, str):
            raise TypeError("listen_addresses must be a sequence of strings, not a string")
        if not listen_addresses:
            raise ValueError("no listen address given")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._addresses: list[ListenAddress] = [parse_listen_address(a) for a in listen_addresses]
        self._handler = handler
        self._web_config_file = web_config_file or None
        self._name = name
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []
        self._state: _ServerState | None = None
        self._stopping = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None  # wakes the accept loops on stop()
        self._started = False
        self._bound: list[tuple[str, int]] = []

    def start(self) -> None:
        """Validate the web config, bind every address, and serve in daemon threads.

        Raises WebConfigError for a bad config and OSError when an address cannot be bound (in
        which case nothing stays bound).
        """
        if self._started or self._stopping.is_set():
            raise RuntimeError("a WebServer can be started only once")
        self._started = True
        watcher = ConfigWatcher(self._web_config_file) if self._web_config_file else None
        tls = watcher is not None and watcher.current().ssl_context is not None
        state = _ServerState(self._name, self._handler, watcher, tls, self._max_connections)
        sockets: list[socket.socket] = []
        try:
            for address in self._addresses:
                sockets.append(open_listener(address))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._state = state
        self._wake = socket.socketpair()
        self._bound = [cast(tuple[str, int], tuple(sock.getsockname()[:2])) for sock in sockets]
        for sock in sockets:
            sock.setblocking(False)
            listener = _Listener(sock, state)
            self._listeners.append(listener)
            thread = threading.Thread(
                target=self._accept_loop, args=(listener,), name=f"{self._name}-listener", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        for url in self.urls:
            logger.info("Listening on %s (TLS %s)", url, "enabled" if tls else "disabled")

    def _accept_loop(self, listener: _Listener) -> None:
        # Our own loop instead of serve_forever(), whose shutdown() waits for a poll interval.
        with selectors.DefaultSelector() as selector:
            selector.register(listener.socket, selectors.EVENT_READ)
            assert self._wake is not None
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is not listener.socket or self._stopping.is_set():
                        continue
                    try:
                        conn, client_address = listener.socket.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        continue  # the client gave up between select() and accept()
                    except OSError as exc:
                        # Out of descriptors, typically: back off instead of spinning on a readable socket.
                        logger.warning("Cannot accept connections: %s", exc)
                        self._stopping.wait(0.5)
                        continue
                    if not listener.state.admit():
                        self._refuse(conn, listener.state.tls)
                        continue
                    conn.setblocking(True)
                    try:
                        listener.process_request(conn, client_address)
                    except RuntimeError:  # no thread could be started
                        listener.state.release()
                        conn.close()

    @staticmethod
    def _refuse(conn: socket.socket, tls: bool) -> None:
        """Every slot is answering a request: a 503 without reading (plain HTTP only), then close."""
        if not tls:
            with contextlib.suppress(OSError):
                conn.send(_BUSY)  # non-blocking: a client that does not read gets nothing
        with contextlib.suppress(OSError):
            conn.close()

    def stop(self) -> None:
        """Stop listening and close every socket, including kept-alive connections; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._state is not None:
            self._state.stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        for listener in self._listeners:
            listener.socket.close()
        if self._state is not None:
            with self._state.lock:
                connections = list(self._state.connections)
            for conn in connections:
                # The socket-level shutdown wakes the connection's thread, which then closes it itself.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
        if self._wake is not None:
            for end in self._wake:
                end.close()

    @property
    def web_config_reload_successful(self) -> bool:
        """False after a change to the web config was refused (invalid, or weakening security)."""
        watcher = self._state.watcher if self._state is not None else None
        return watcher is None or watcher.last_reload_successful

    def bind_reload_gauge(self, gauge: Gauge) -> None:
        """Make ``gauge`` (from :func:`web_config_reload_gauge`) report :attr:`web_config_reload_successful`."""
        gauge.set_function(lambda: 1.0 if self.web_config_reload_successful else 0.0)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs, with port 0 resolved; empty before start()."""
        return list(self._bound)

    @property
    def urls(self) -> list[str]:
        scheme = "https" if self._state is not None and self._state.tls else "http"
        return [
            f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
            for host, port in self.addresses
        ]
