"""The HTTP layer under both WinRM protocols (pywinrm for WinRS, pypsrp for PSRP), hardened against
hostile or broken WinRM listeners.

:class:`HardenedHTTP` holds what both share; :class:`HardenedTransport` puts it under pywinrm and
``psrp.py`` puts it under pypsrp. Both libraries are fine against a well-behaved Windows host, but a
listener that misbehaves (or something impersonating one) can hurt the exporter in four ways,
which :class:`HardenedHTTP` closes:

- **Unbounded bodies.** ``requests`` reads every response whole (``response.content``), so a
  listener could send gigabytes. Bodies are streamed and cut at ``max_response_bytes``
  (:class:`ResponseTooLarge`); compressed bodies are never inflated (``Accept-Encoding: identity``,
  and content decoding off): WinRM does not compress, so a ``Content-Encoding`` can only be an attack.
- **Slow drip.** ``requests`` timeouts are per socket read, so a listener that sends one byte per
  second never times out. A shared :class:`Watchdog` shuts the transport's sockets down at the
  probe's deadline, whatever phase the request is in (connect, TLS handshake, headers, body);
  the request then fails with :class:`DeadlineExceeded`.
- **DTDs.** pywinrm parses responses with ``xml.etree``, which expands internal entities. SOAP
  forbids document type declarations, so any response carrying one is refused before parsing.
- **Encryption downgrade.** With NTLM or Kerberos message encryption, pywinrm accepts a response
  that is *not* encrypted as if it were; an active attacker on plain HTTP could feed the exporter
  data that way. A 2xx answer that is not encrypted while encryption is on is refused.
- **Redirects.** ``requests`` follows redirects, and requests_ntlm authenticates wherever it lands:
  a listed host answering ``302 Location: http://elsewhere/`` would get the module's credentials
  sent to an unlisted address. The adapter refuses every redirect (:class:`RedirectRefused`)
  before anything is sent to the new location, whatever session, protocol or auth hook sent the
  request: WinRM and PSRP never redirect.
- **Name lookups that hang.** ``getaddrinfo`` has no timeout and no socket to shut down, so the
  watchdog cannot reach it. Names are resolved by :data:`RESOLVER` in daemon threads, waited for
  at most until the request's deadline (:class:`NameLookupError`), and one lookup per name runs
  at a time: a stuck resolver costs one thread per name, not one per probe.
- **No authentication.** An NTLM listener that answers 200 to the authentication request never
  set up the session keys; pywinrm would then fail with ``AttributeError``. It is refused with
  :class:`AuthenticationSkipped`.

Server certificates are checked against the operating system's trust store when a module gives no
``ca_file`` (:func:`system_ca_path`), not against certifi's bundle: WinRM listeners carry
certificates from an internal CA that administrators add to the OS store, and certifi never has.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Generator
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.response import HTTPResponse
from urllib3.util.connection import allowed_gai_family
from winrm.encryption import Encryption
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError
from winrm.transport import HAVE_KERBEROS, Transport

from hyperv_exporter.host.transport.errors import excerpt

log = logging.getLogger(__name__)

__all__ = [
    "HAVE_KERBEROS",
    "RESOLVER",
    "AuthenticationSkipped",
    "BoundedResolver",
    "DeadlineExceeded",
    "HardenedAdapter",
    "HardenedHTTP",
    "HardenedTransport",
    "NameLookupError",
    "RedirectRefused",
    "ResponseTooLarge",
    "UnsafeResponse",
]

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # pywinrm asks for 150 KiB envelopes; 4 MiB is ample headroom
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
_ENCRYPTED_PROTOCOLS = ("application/HTTP-SPNEGO-session-encrypted", "application/HTTP-CredSSP-session-encrypted")


class ResponseTooLarge(requests.exceptions.RequestException):
    """A WinRM HTTP response body exceeded ``max_response_bytes``."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """The probe deadline passed while an HTTP request was in progress; its sockets were shut down."""


class UnsafeResponse(requests.exceptions.RequestException):
    """A response the exporter refuses to parse (a DTD, or plaintext where encryption was agreed)."""


class RedirectRefused(requests.exceptions.RequestException):
    """The listener answered with a redirect; nothing was sent to the location it names."""

    def __init__(self, status: int, location: str) -> None:
        shown = location or "(no Location)"
        super().__init__(f"the listener answered HTTP {status} redirecting to {shown}; not followed")
        self.status = status
        self.location = location


class AuthenticationSkipped(requests.exceptions.RequestException):
    """An authentication that must negotiate keys (NTLM) got an answer without any negotiation."""


class NameLookupError(Exception):
    """Resolving the host's name failed or did not finish by the deadline.

    Not an ``OSError`` on purpose: urllib3 wraps those into retries and connection errors, and
    this one must reach the transport unchanged.
    """

    def __init__(self, host: str, detail: str, *, timed_out: bool) -> None:
        super().__init__(f"cannot resolve {excerpt(host, 80)!r}: {detail}")
        self.timed_out = timed_out


# -- name resolution bounded by the deadline --------------------------------------------------------


class _Lookup:
    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.addresses: list[str] = []
        self.error: str | None = None


GetAddrInfo = Callable[..., list[tuple[Any, ...]]]
MAX_LOOKUP_WAIT = 60.0  # a request without a deadline still does not wait forever for a name


class BoundedResolver:
    """``getaddrinfo`` in daemon threads, waited for at most until a deadline; one lookup per name at a time.

    ``getaddrinfo`` is the seam tests replace (with one that hangs, or one that answers other
    addresses). IP literals are returned as they are, without a thread.
    """

    def __init__(self, getaddrinfo: GetAddrInfo = socket.getaddrinfo) -> None:
        self.getaddrinfo = getaddrinfo
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], _Lookup] = {}

    def pending(self) -> int:
        """Lookups started and not finished (stuck ones included)."""
        with self._lock:
            return len(self._pending)

    def resolve(self, host: str, port: int, deadline: float | None) -> list[str]:
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        key = (host.lower(), port)
        with self._lock:
            lookup = self._pending.get(key)
            if lookup is None:
                lookup = self._pending[key] = _Lookup()
                threading.Thread(
                    target=self._run, args=(key, host, port, lookup), name=f"resolve-{host[:40]}", daemon=True
                ).start()
        wait = MAX_LOOKUP_WAIT if deadline is None else min(MAX_LOOKUP_WAIT, deadline - time.monotonic())
        if not lookup.done.wait(max(0.0, wait)):
            raise NameLookupError(host, "the name lookup did not finish before the probe deadline", timed_out=True)
        if lookup.error is not None:
            raise NameLookupError(host, lookup.error, timed_out=False)
        return lookup.addresses

    def _run(self, key: tuple[str, int], host: str, port: int, lookup: _Lookup) -> None:
        try:
            infos = self.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
            addresses = [str(info[4][0]) for info in infos]
            lookup.addresses = list(dict.fromkeys(addresses))
            if not lookup.addresses:
                lookup.error = "no addresses"
        except (OSError, UnicodeError) as exc:
            lookup.error = excerpt(str(exc), 120)
        except Exception as exc:  # a broken seam must not leave waiters hanging
            lookup.error = type(exc).__name__
        finally:
            with self._lock:
                if self._pending.get(key) is lookup:
                    del self._pending[key]
            lookup.done.set()


RESOLVER = BoundedResolver()


# -- watchdog -------------------------------------------------------------------------------------


class Alarm:
    """One scheduled action; :meth:`cancel` before it fires makes it a no-op."""

    __slots__ = ("_action", "_lock", "cancelled", "fired")

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._lock = threading.Lock()
        self.cancelled = False
        self.fired = False

    def cancel(self) -> bool:
        """Cancel; returns True if the action already ran."""
        with self._lock:
            self.cancelled = True
            return self.fired

    def fire(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.fired = True
        try:
            self._action()
        except Exception:  # a failing abort must not kill the shared watchdog thread
            log.debug("watchdog action failed", exc_info=True)


class Watchdog:
    """Runs actions at monotonic times on one shared daemon thread.

    One thread for the whole process instead of a ``threading.Timer`` per HTTP request: a probe
    makes three requests, and hundreds of hosts are probed concurrently.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, action: Callable[[], None]) -> Alarm:
        alarm = Alarm(action)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), alarm))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="winrm-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return alarm

    def pending(self) -> int:
        with self._cond:
            return sum(1 for _, _, alarm in self._heap if not alarm.cancelled)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        alarm = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            alarm.fire()


WATCHDOG = Watchdog()


# -- connections that can be aborted from another thread ------------------------------------------


class _SocketSet:
    """The sockets one transport has opened (weakly held: urllib3 owns and closes them), and the
    deadline of the request in progress, which bounds its name lookup."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.deadline: float | None = None

    def add(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.add(sock)

    def shutdown_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # The plain-socket shutdown, also for TLS sockets: it wakes a thread blocked in recv
            # without touching the SSL object that thread is using.
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _tracked_connection(base: type[HTTPConnection], sockets: _SocketSet) -> type[HTTPConnection]:
    class Tracked(base):  # type: ignore[valid-type,misc]  # a class built per transport
        def _new_conn(self) -> socket.socket:
            name: str = self._dns_host  # type: ignore[has-type]  # set by urllib3 (host setter)
            error: Exception | None = None
            # Resolved here, bounded by the deadline; urllib3 then only sees IP literals.
            for address in RESOLVER.resolve(name, self.port, sockets.deadline):
                self._dns_host = address
                try:
                    sock: socket.socket = super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    error = exc
                    continue
                finally:
                    self._dns_host = name
                sockets.add(sock)  # before the TLS handshake, so a stalled handshake can be aborted too
                return sock
            assert error is not None  # resolve() returns at least one address
            raise error

        def connect(self) -> None:
            super().connect()
            sockets.add(self.sock)  # the TLS wrapper, once there is one

    return Tracked


def _tracked_pool(base: type[HTTPConnectionPool], connection: type[HTTPConnection]) -> type[HTTPConnectionPool]:
    return type(f"Tracked{base.__name__}", (base,), {"ConnectionCls": connection})


def _close_pool(pool: HTTPConnectionPool) -> None:
    pool.close()


class _CappedResponse(HTTPResponse):
    """urllib3's response, streaming at most ``cap`` body bytes and never inflating them."""

    cap: int = DEFAULT_MAX_RESPONSE_BYTES

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Generator[bytes]:
        received = 0
        for chunk in super().stream(amt, decode_content=False):
            received += len(chunk)
            if received > self.cap:
                # Unread bytes follow: this connection cannot be reused.
                with contextlib.suppress(Exception):
                    self.close()
                raise ResponseTooLarge(f"WinRM response body exceeds {self.cap} bytes")
            yield chunk


class HardenedAdapter(HTTPAdapter):
    """The requests adapter under every protocol's session: capped bodies, abortable sockets, name
    lookups bounded by :attr:`deadline`, no redirects. Mount it for ``http://`` and ``https://``."""

    def __init__(self, cap: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.cap = cap
        self.sockets = _SocketSet()
        # One host, one conversation at a time: one pooled connection is all a transport needs.
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    @property
    def deadline(self) -> float | None:
        return self.sockets.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.sockets.deadline = value

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().send(request, *args, **kwargs)
        # Refused here rather than with allow_redirects=False: auth hooks (requests_ntlm) resend
        # through the adapter themselves, and any session mounting it is covered.
        if 300 <= response.status_code < 400:
            location = excerpt(response.headers.get("Location", ""), 200)
            response.close()
            raise RedirectRefused(response.status_code, location)
        return response

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _tracked_pool(HTTPConnectionPool, _tracked_connection(HTTPConnection, self.sockets)),
            "https": _tracked_pool(HTTPSConnectionPool, _tracked_connection(HTTPSConnection, self.sockets)),
        }
        # urllib3 2.x drops a pool on clear() or eviction and leaves its connections to a finalizer
        # that runs when the pool is freed. Requests' objects form reference cycles, so that is the
        # cyclic garbage collector, seconds later: meanwhile every dropped runspace pool or shell
        # keeps its socket open here and its connection open on the host (the soak test saw 70
        # extra sockets among 20 hosts). Closed at once instead; a connection still checked out is
        # closed when it comes back (urllib3 closes connections returned to a closed pool).
        self.poolmanager.pools.dispose_func = _close_pool

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        if isinstance(resp, HTTPResponse) and not isinstance(resp, _CappedResponse):
            # Swapping the class keeps the object requests_ntlm inspects (it reads the peer
            # certificate through resp._fp) while bounding what requests reads from it.
            resp.__class__ = _CappedResponse
            resp.cap = self.cap  # type: ignore[attr-defined]
        return super().build_response(req, resp)


# -- the hardening every protocol shares ------------------------------------------------------------


class HardenedHTTP:
    """What every WinRM HTTP transport of the exporter (pywinrm's for WinRS, pypsrp's for PSRP) goes
    through: the capped, abortable adapter, a hard deadline per request, and the checks on each answer.

    Set :attr:`deadline` (``time.monotonic()`` based) before each request; ``None`` means no deadline.
    """

    def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes
        self.adapter = HardenedAdapter(max_response_bytes)

    @property
    def deadline(self) -> float | None:
        """Kept on the adapter: its connections bound their name lookups by it."""
        return self.adapter.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.adapter.deadline = value

    def harden(self, session: requests.Session) -> None:
        """Route every request of ``session`` through the hardened adapter (idempotent)."""
        if session.get_adapter("http://") is not self.adapter:
            session.mount("http://", self.adapter)
            session.mount("https://", self.adapter)
            session.headers["Accept-Encoding"] = "identity"

    def abort(self) -> None:
        """Shut down every connection of this transport (from any thread)."""
        self.adapter.sockets.shutdown_all()

    def send(self, request: Callable[[], requests.Response]) -> requests.Response:
        """Run one HTTP request, shutting its sockets down if it is still running at :attr:`deadline`."""
        deadline = self.deadline
        if deadline is None:
            return request()
        if deadline - time.monotonic() <= 0:
            raise DeadlineExceeded("the probe deadline passed before the request was sent")
        alarm = WATCHDOG.schedule(deadline, self.abort)
        try:
            response = request()
        except (requests.exceptions.RequestException, OSError) as exc:
            if alarm.cancel():
                raise DeadlineExceeded("the probe deadline passed during the request") from exc
            raise
        finally:
            fired = alarm.cancel()
        if fired:
            # A connection shut down mid-answer can look complete: http.client takes end of file
            # in the headers for their end, and then reads a body of unknown length up to it.
            raise DeadlineExceeded("the probe deadline passed during the request")
        return response

    @staticmethod
    def check_encrypted(response: requests.Response, encrypted: bool) -> None:
        """Refuse a 2xx answer in plaintext on a session that agreed on message encryption."""
        if encrypted and 200 <= response.status_code < 300:
            content_type = response.headers.get("Content-Type", "")
            if not any(f'protocol="{p}"' in content_type for p in _ENCRYPTED_PROTOCOLS):
                raise UnsafeResponse("the listener answered in plaintext although message encryption is on")

    @staticmethod
    def check_negotiated(response: requests.Response, negotiated: bool) -> None:
        """Refuse the answer to the authentication request of an encrypted session if no keys were
        negotiated: the NTLM/Negotiate libraries only negotiate when challenged with a 401, and a
        listener answering 200 straight away would leave them without a context (AttributeError in
        pywinrm, KeyError in pypsrp)."""
        if not negotiated:
            body = excerpt(response.content) if response.content else "empty body"
            raise AuthenticationSkipped(
                f"the listener answered HTTP {response.status_code} without an NTLM authentication step ({body})"
            )

    @staticmethod
    def check_text(text: bytes) -> None:
        """Refuse a (decrypted) SOAP body that declares a DTD, before any XML parser sees it."""
        if any(marker in text for marker in _DTD_MARKERS):
            raise UnsafeResponse("the response carries a document type declaration, which SOAP forbids")


# -- the WinRS transport (pywinrm) ------------------------------------------------------------------


class HardenedTransport(Transport):
    """pywinrm's Transport with capped bodies, a hard deadline per request and no DTDs or downgrades.

    Built with the same keyword arguments as :class:`winrm.transport.Transport`. Set
    :attr:`deadline` (``time.monotonic()`` based) before each request; ``None`` means no deadline.
    """

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_response_bytes = max_response_bytes
        self.http = HardenedHTTP(max_response_bytes)

    @property
    def deadline(self) -> float | None:
        return self.http.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.http.deadline = value

    def build_session(self) -> requests.Session:
        session = super().build_session()
        self.http.harden(session)
        return session

    def setup_encryption(self, session: requests.Session) -> None:
        # Called from inside build_session, before it returns: the set-up request needs the
        # hardened adapter too. pywinrm's own version, plus the check that keys were negotiated.
        self.http.harden(session)
        prepared = session.prepare_request(requests.Request("POST", self.endpoint, data=None))
        response = self._send_message_request(session, prepared)
        self.http.check_negotiated(response, getattr(session.auth, "session_security", True) is not None)
        self.encryption = Encryption(session, self.auth_method)

    def abort(self) -> None:
        """Shut down every connection of this transport (from any thread)."""
        self.http.abort()

    def _send_message_request(
        self, session: requests.Session, prepared_request: requests.PreparedRequest
    ) -> requests.Response:
        return self.http.send(lambda: self._send_checked(session, prepared_request))

    def _send_checked(self, session: requests.Session, prepared_request: requests.PreparedRequest) -> requests.Response:
        """pywinrm's request, except that an error body that is not UTF-8 is still an HTTP error
        (pywinrm decodes it strictly and fails with ``UnicodeDecodeError``)."""
        try:
            response = session.send(prepared_request, timeout=self.read_timeout_sec)
            response.raise_for_status()
            return response
        except requests.HTTPError as ex:
            if ex.response.status_code == 401:
                raise InvalidCredentialsError("the specified credentials were rejected by the server") from None
            text = self._get_message_response_text(ex.response) if ex.response.content else b""
            raise WinRMTransportError("http", ex.response.status_code, text.decode("utf-8", errors="replace")) from None

    def _get_message_response_text(self, response: requests.Response) -> bytes:
        self.http.check_encrypted(response, self.encryption is not None)
        text: bytes = super()._get_message_response_text(response)
        self.http.check_text(text)
        return text


@lru_cache(maxsize=1)
def system_ca_path() -> str | None:
    """The operating system's CA bundle (file or hashed directory), or None to fall back to certifi."""
    paths = ssl.get_default_verify_paths()  # honours SSL_CERT_FILE / SSL_CERT_DIR, as OpenSSL does
    candidates = (
        paths.cafile,
        "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
        "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora
        paths.capath,
    )
    for candidate in candidates:
        if candidate and (Path(candidate).is_file() or Path(candidate).is_dir()):
            return candidate
    return None
