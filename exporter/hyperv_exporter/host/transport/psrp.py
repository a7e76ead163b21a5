"""The PowerShell remoting (PSRP) conversation with one Hyper-V host, on pypsrp's RunspacePool.

Why PSRP rather than a WinRS ``cmd`` shell (``winrs.py``): a WinRS command starts a new
``powershell.exe`` on the host for every probe (and imports the Hyper-V module again), and WinRS
shells admit Administrators only. A PSRP runspace pool lives in one ``wsmprovhost.exe`` that stays up
between pipelines, PowerShell endpoints admit Remote Management Users, and a JEA endpoint lets a
read-only account run exactly one command.

One runspace pool per module and host, opened on the first probe and kept across probes (reopened
when the host has dropped it: idle timeout, service restart, a broken pool; and after
``shell_max_idle`` / ``shell_max_lifetime``). A probe waits for the opening at most until its
deadline; the opening itself runs in its own thread, bounded by :data:`POOL_OPEN_SECONDS`, so that a
host slower to open a pool than a scrape timeout is not asked to start over on every probe.
One probe is one pipeline: Command (CREATE_PIPELINE), Receive until the pipeline
state arrives, Signal terminate. A steady-state probe is three HTTP requests and starts no process.

What runs in the pipeline depends on the endpoint (``configuration_name``):

- PowerShell's own endpoints (names starting with ``microsoft.``, e.g. ``microsoft.powershell``) run
  in full language mode: the pipeline is ``collect.ps1``'s text as a script with ``-Collectors`` and
  ``-Gzip``.
- Any other endpoint is taken for the JEA endpoint (``HyperVExporter`` by convention): it runs in
  no-language mode, where script text is refused, so the pipeline invokes its one visible command,
  ``Get-HyperVExporterReport``, with the same parameters. Its body is ``collect.ps1``.

The HTTP layer is :class:`~hyperv_exporter.host.transport.http.HardenedHTTP` under pypsrp's
requests session: capped bodies, a hard deadline per request, no DTDs, no plaintext on an encrypted
session, no redirects, and the operating system's trust store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from pypsrp._utils import get_hostname
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import (
    AuthenticationError,
    InvalidPSRPOperation,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan, _TransportHTTP

from hyperv_exporter import logutil
from hyperv_exporter.host.script import host_filterable
from hyperv_exporter.host.transport.errors import KeptRule, ProbeError, excerpt, wsman_fault
from hyperv_exporter.host.transport.http import RESOLVER, HardenedHTTP, UnsafeResponse, system_ca_path
from hyperv_exporter.host.transport.settings import WinRMSettings
from hyperv_exporter.host.transport.winrs import Exchange, classify, return_leg_bound

log = logging.getLogger(__name__)

#: The JEA endpoint's one visible command (CONTRACTS C1); its parameters are collect.ps1's.
JEA_COMMAND = "Get-HyperVExporterReport"
WSMAN_TIMED_OUT = 2150858793  # Receive found nothing within OperationTimeout: ask again


#: How long opening a runspace pool may go on past the probe that started it.
POOL_OPEN_SECONDS = 30.0


class _StillOpening(ProbeError):
    """The probe's deadline passed while the pool was being opened; the opening goes on."""


class _PipelineTooLarge(Exception):
    """The pipeline's output passed max_output_bytes; it has been stopped."""


def uses_script_text(configuration_name: str) -> bool:
    """Whether an endpoint takes collect.ps1 as script text (PowerShell's own full-language endpoints)
    rather than the JEA command (any custom endpoint, which a JEA configuration is)."""
    return configuration_name.lower().startswith("microsoft.")


class _HardenedTransportHTTP(_TransportHTTP):
    """pypsrp's HTTP transport with the exporter's hardened layer, counting requests."""

    http: HardenedHTTP
    requests_total: int
    last_wire: tuple[float, float] = (0.0, 0.0)  # (sent, answered) of the latest request: clock offset
    received_bytes = 0  # message bytes received since the pipeline started (the wire cap)

    def _build_session(self) -> requests.Session:
        session: requests.Session = super()._build_session()
        # Never a proxy, netrc or CA bundle from the environment: the settings say everything.
        session.trust_env = False
        session.proxies = {}
        self.http.harden(session)
        return session

    def _send_request(self, request: requests.PreparedRequest, timeout: Any = None) -> bytes:
        # pypsrp's own _send_request, with the hardened checks in their places.
        self.requests_total += 1
        session = cast(requests.Session, self.session)
        limit = timeout if timeout is not None else (self.connection_timeout, self.read_timeout)
        asked = time.time()
        # A redirect never comes back here: the hardened adapter refuses it (RedirectRefused, reason
        # "redirect") before pypsrp or an auth hook could follow it with the credentials.
        response = self.http.send(lambda: session.send(request, timeout=limit, allow_redirects=False))
        self.last_wire = (asked, time.time())
        if self.wrap_required and self.encryption is None and 200 <= response.status_code < 300:
            # The request that sets up message encryption: pypsrp then needs the negotiated context.
            contexts = getattr(session.auth, "contexts", None)
            self.http.check_negotiated(response, contexts is None or get_hostname(self.endpoint) in contexts)
        self.http.check_encrypted(response, self.encryption is not None)
        content_type = response.headers.get("content-type", "")
        if content_type.startswith(("multipart/encrypted;", "multipart/x-multi-encrypted;")):
            if self.encryption is None:
                raise UnsafeResponse("the listener answered encrypted on a session without message encryption")
            boundary = content_type.split("boundary=", 1)[-1].strip("\"'")
            content: bytes = self.encryption.unwrap_message(response.content, boundary)
        else:
            content = response.content
        self.http.check_text(content)
        self.received_bytes += len(content)
        if response.status_code == 401:
            raise AuthenticationError("the host rejected the credentials (HTTP 401)")
        if response.status_code >= 400:
            raise WinRMTransportError("http", response.status_code, content.decode("utf-8", errors="replace"))
        return content


class _Pool(RunspacePool):
    """A RunspacePool whose every Receive is bounded by the probe deadline. A Receive that found
    nothing within OperationTimeout (the host is still starting the pool) is asked again until then."""

    session: PSRPSession
    deadline = 0.0
    # Wire times of the Receive that brought a pipeline's first output (the host read its end
    # clock just before writing it); reset before each pipeline.
    first_output: tuple[float, float] | None = None

    def _parse_responses(self, responses: bytes, pipeline: PowerShell | None = None) -> list[tuple[int, Any]]:
        if pipeline is not None and responses and self.first_output is None:
            self.first_output = cast(_HardenedTransportHTTP, self.connection.transport).last_wire
        return super()._parse_responses(responses, pipeline)

    def _receive(self, id: str | None = None, timeout: int | None = None) -> list[tuple[int, Any]]:
        while True:
            self.session.arm(self.connection, self.deadline)
            try:
                return super()._receive(id, timeout)
            except WSManFaultError as exc:
                if exc.code != WSMAN_TIMED_OUT:
                    raise


def classify_psrp(exc: BaseException) -> ProbeError:
    """Map a pypsrp/requests exception to a ProbeError with a reason and a short, secret-free message."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, AuthenticationError):
        return ProbeError("auth", "the host rejected the credentials (HTTP 401)")
    if isinstance(exc, WSManFaultError):
        return wsman_fault(exc.code, exc.reason)
    if isinstance(exc, WinRMTransportError):
        body = excerpt(exc.response_text) if exc.response_text else "empty body"
        return ProbeError("winrm_fault", f"HTTP {exc.code} from the WinRM listener: {body}")
    if isinstance(exc, InvalidPSRPOperation):  # e.g. a Broken runspace pool state
        return ProbeError("winrm_fault", f"PSRP: {excerpt(str(exc), 300)}")
    if isinstance(exc, WinRMError):
        return ProbeError("winrm_fault", f"unexpected WS-Management response ({type(exc).__name__})")
    return classify(exc)


_KEPT = KeptRule(
    fault=WSManFaultError,
    code=lambda exc: exc.code,
    classify=classify_psrp,
    # After a broken connection, TLS or authentication failure the pool cannot be reached to delete it.
    graceful=lambda error: error.reason not in ("connection", "tls", "auth"),
)


def error_text(records: Sequence[Any], limit: int = 500) -> str:
    """One line from PowerShell error records: each one's message and FullyQualifiedErrorId."""
    parts = []
    for record in records:
        message = " ".join(str(record).split())
        fq_error = getattr(record, "fq_error", None)
        parts.append(f"{message} ({fq_error})" if fq_error else message)
    text = "; ".join(parts)
    return text[:limit] + ("..." if len(text) > limit else "")


def _close_quietly(pool: _Pool) -> None:
    """Delete a pool on the host, off the probe's time budget (Windows limits shells per user)."""
    try:
        pool.session.arm(pool.connection, time.monotonic() + 7.0)
        pool.close()
    except Exception:
        log.debug("closing an old runspace pool failed", exc_info=True)
    finally:
        pool.connection.close()


class _Opening:
    """A runspace pool being opened in its own thread (Create, then Receives until it is Opened)."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self) -> None:
        try:
            self.pool.session.arm(self.pool.connection, self.pool.deadline)
            self.pool.open()
        except BaseException as exc:  # handed to the probe that takes the result
            self.error = exc
        with self._lock:
            self.done.set()
            abandoned = self._abandoned
        if abandoned:
            _close_quietly(self.pool)

    def abandon(self) -> None:
        """The session closed while opening: delete the pool on the host once the opening ends."""
        with self._lock:
            self._abandoned = True
            finished = self.done.is_set()
        if finished:
            threading.Thread(target=_close_quietly, args=(self.pool,), daemon=True).start()


class PSRPSession:
    """One host's runspace pool, reused across probes. Not thread-safe: the caller serialises use."""

    def __init__(self, url: str, settings: WinRMSettings, script: str) -> None:
        self.url = url
        self.settings = settings
        self.script = script
        self._pool: _Pool | None = None
        self._opening: _Opening | None = None
        self._opened = 0.0
        self._used = 0.0
        self.shells_opened = 0  # runspace pools: a pool is a WS-Management shell of the PowerShell plug-in
        self.requests_total = 0
        self.lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------------
    def _make_wsman(self) -> WSMan:
        s = self.settings
        certificate = s.transport == "certificate"
        validation: bool | str = False
        if s.server_cert_validation != "ignore":
            # The operating system's trust store when no ca_file is given (see http.system_ca_path).
            validation = s.ca_file or system_ca_path() or True
        # pywinrm's rule, which the configuration was validated against: only NTLM and Kerberos
        # encrypt messages; Basic and certificate rely on TLS (or allow_unencrypted).
        encryption = s.message_encryption if s.transport in ("ntlm", "kerberos") else "never"
        wsman = WSMan(
            "placeholder",  # the endpoint URL is set below, whole: it may carry any path
            username=s.username,
            password=s.password.get() if s.password is not None else None,
            ssl=s.scheme == "https",
            auth=s.transport,
            cert_validation=cast(bool, validation),  # requests' verify: a bool or a CA path
            encryption=encryption,
            no_proxy=True,
            reconnection_retries=0,
            reconnection_backoff=0.0,  # pypsrp sleeps before retrying a read timeout; the deadline rules here
            certificate_pem=s.client_cert_file if certificate else None,
            certificate_key_pem=s.client_key_file if certificate else None,
            negotiate_hostname_override=s.kerberos_hostname_override,
        )
        transport = wsman.transport
        transport.__class__ = _HardenedTransportHTTP
        hardened = cast(_HardenedTransportHTTP, transport)
        hardened.http = HardenedHTTP(s.max_response_bytes)
        hardened.requests_total = 0
        hardened.endpoint = self.url
        return wsman

    def arm(self, wsman: WSMan, deadline: float) -> None:
        """Bound the next HTTP request by the time left; the server long-polls for at most that."""
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            raise ProbeError("timeout", "the probe deadline passed before the host finished")
        transport = cast(_HardenedTransportHTTP, wsman.transport)
        transport.connection_timeout = transport.read_timeout = remaining  # type: ignore[assignment]  # float s
        transport.http.deadline = deadline
        # OperationTimeout is whole seconds and must leave the server time to answer with the
        # TimedOut fault before our read timeout fires.
        wsman.operation_timeout = max(1, min(20, int(remaining - 1.0)))

    def _count(self, wsman: WSMan) -> None:
        transport = cast(_HardenedTransportHTTP, wsman.transport)
        self.requests_total += transport.requests_total
        transport.requests_total = 0

    def _drop_pool(self, graceful: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self._count(pool.connection)
        if graceful:
            threading.Thread(target=_close_quietly, args=(pool,), daemon=True).start()
        else:
            pool.connection.close()

    def close(self) -> None:
        with self.lock:
            self._drop_pool(graceful=True)
            opening, self._opening = self._opening, None
            if opening is not None:
                opening.abandon()

    def _runspace_pool(self, deadline: float) -> tuple[_Pool, bool]:
        now = time.monotonic()
        if self._pool is not None and (
            now - self._used > self.settings.shell_max_idle or now - self._opened > self.settings.shell_max_lifetime
        ):
            self._drop_pool(graceful=True)
        if self._pool is not None:
            return self._pool, False
        if self._opening is None:
            # The host's name first, in this probe and within its deadline: a lookup that hangs is
            # reason "dns" at the deadline, as on winrs, rather than an opening that goes on in the
            # background and a "timeout". The lookup itself is shared (one per name at a time).
            url = urlsplit(self.url)
            RESOLVER.resolve(url.hostname or "", url.port or (443 if url.scheme == "https" else 80), deadline)
            pool = _Pool(self._make_wsman(), configuration_name=self.settings.configuration_name)
            # The opening may outlive the probe that started it (a host starting wsmprovhost.exe and
            # importing the Hyper-V module can take longer than a scrape timeout): the next probe
            # then finds the pool open instead of starting over. It is bounded all the same.
            pool.session, pool.deadline = self, max(deadline, now + POOL_OPEN_SECONDS)
            self._opening = _Opening(pool)
            threading.Thread(target=self._opening.run, name="psrp-open", daemon=True).start()
        opening = self._opening
        if not opening.done.wait(max(0.0, deadline - time.monotonic())):
            raise _StillOpening("timeout", "the probe deadline passed while the host was opening the runspace pool")
        self._opening = None
        self._pool = opening.pool  # also when it failed: a dropped pool is deleted on the host
        if opening.error is not None:
            raise opening.error
        self._opened = self._used = time.monotonic()
        self.shells_opened += 1
        return opening.pool, True

    # -- one run -------------------------------------------------------------------------------
    def collect(self, sections: Sequence[str], gzip: bool, deadline: float, kvp_keys: Sequence[str] = ()) -> Exchange:
        """Run the collection for ``sections`` as one pipeline; raises :class:`ProbeError`."""
        requests_before = self.requests_total
        attempts = 2  # a kept pool may have gone on the host: open a new one once
        while True:
            attempts -= 1
            new_pool = False
            try:
                pool, new_pool = self._runspace_pool(deadline)
                exchange = self._run_on(pool, sections, gzip, kvp_keys, deadline, new_pool)
                self._count(pool.connection)
                return replace(exchange, requests=self.requests_total - requests_before)
            except _StillOpening:
                raise  # the opening goes on in the background; the next probe waits for it again
            except _PipelineTooLarge:
                # The pool is fine: only this pipeline's output was refused.
                self._count(pool.connection)
                raise ProbeError("output_too_large", f"output exceeds {self.settings.max_output_bytes} bytes") from None
            except Exception as exc:
                # Raises, unless the host had deleted the reused pool: then one more run on a new one.
                _KEPT.fail(exc, reused=not new_pool, again=attempts > 0, drop=self._drop_pool)
                log.debug("runspace pool gone on the host; opening a new one", extra=logutil.fields(url=self.url))

    def _pipeline(self, pool: _Pool, sections: Sequence[str], gzip: bool, kvp_keys: Sequence[str]) -> PowerShell:
        ps = PowerShell(pool)
        if uses_script_text(self.settings.configuration_name):
            ps.add_script(self.script)
        else:
            ps.add_cmdlet(JEA_COMMAND)
        ps.add_parameter("Collectors", ",".join(sections))
        if "kvp" in sections and host_filterable(kvp_keys):
            # The module's KVP allowlist, filtered on the host (no command line to fit here).
            ps.add_parameter("KvpKeys", list(kvp_keys))
        if gzip:
            ps.add_parameter("Gzip", True)
        return ps

    def _run_on(
        self,
        pool: _Pool,
        sections: Sequence[str],
        gzip: bool,
        kvp_keys: Sequence[str],
        deadline: float,
        new_pool: bool,
    ) -> Exchange:
        pool.deadline = deadline
        ps = self._pipeline(pool, sections, gzip, kvp_keys)
        self.arm(pool.connection, deadline)
        transport = cast(_HardenedTransportHTTP, pool.connection.transport)
        pool.first_output = None
        ps.begin_invoke()
        sent, answered = transport.last_wire  # the Command that created the pipeline
        round_trip = answered - sent
        transport.received_bytes = 0
        limit = self.settings.max_output_bytes
        while ps.state == PSInvocationState.RUNNING:
            ps.poll_invoke()  # Receive: bounded by the deadline through _Pool._receive
            # Two caps. The output's characters, as on winrs. And everything the host sent for this
            # pipeline, whatever the stream (error, warning, verbose, progress records are kept by
            # pypsrp too) and however it is cut into objects (pypsrp holds the fragments of an object
            # until it is whole, so one endless object would never show up in ps.output): the bytes
            # on the wire, with room for base64 (4/3) and XML escaping of real output.
            size = sum(len(str(item)) for item in ps.output)
            if size > limit or transport.received_bytes > 2 * limit:
                self.arm(pool.connection, deadline + 1.0)
                if ps.state == PSInvocationState.RUNNING:
                    ps.stop()  # Signal ctrl_c: the host stops producing
                else:
                    ps.close()  # Signal terminate: release what it produced
                self._used = time.monotonic()
                raise _PipelineTooLarge
        asked, received = pool.first_output or (sent, time.time())
        # Signal terminate releases the pipeline on the host; the pool stays open. It may use a
        # second past the deadline: skipping it would leak the pipeline on the host.
        self.arm(pool.connection, deadline + 1.0)
        ps.close()
        round_trip = min(round_trip, transport.last_wire[1] - transport.last_wire[0])
        self._used = time.monotonic()
        failed = ps.state != PSInvocationState.COMPLETED
        errors = error_text(ps.streams.error) if failed else ""
        return Exchange(
            stdout="".join(str(item) for item in ps.output).encode("utf-8"),
            stderr=errors.encode("utf-8"),
            exit_code=1 if failed else 0,
            sent=sent,
            received=received,
            requests=0,  # counted by collect()
            new_shell=new_pool,
            return_leg=return_leg_bound(round_trip, received - asked),
            failure=f"PowerShell pipeline {_STATE_NAMES.get(ps.state, ps.state)}: {errors or 'no error text'}"
            if failed
            else None,
        )


_STATE_NAMES = {
    PSInvocationState.STOPPED: "Stopped",
    PSInvocationState.FAILED: "Failed",
    PSInvocationState.DISCONNECTED: "Disconnected",
}
