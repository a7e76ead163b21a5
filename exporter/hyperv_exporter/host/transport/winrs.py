"""The WinRM conversation with one Hyper-V host, on pywinrm's low-level ``Protocol``.

Why not ``winrm.Session.run_ps``: it opens a new shell per call (five HTTP requests and a fresh
``powershell.exe`` start), uses code page 437 (non-ASCII VM names arrive as ``?``), puts the whole
script on a cmd.exe command line (8,191-character limit) and loops on output without a deadline.
Here the shell is opened once with code page 65001 and the script in its environment, kept across
probes (re-created after a fault, after ``shell_max_idle`` without use or ``shell_max_lifetime``),
and every HTTP request is bounded by the probe's deadline. A steady-state probe is three requests:
Command, Receive, Signal. The HTTP layer is :class:`~hyperv_exporter.host.transport.http.HardenedTransport`
(capped bodies, a hard deadline per request, no DTDs, no plaintext on an encrypted session).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import requests
from defusedxml.ElementTree import fromstring as safe_fromstring
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from hyperv_exporter import logutil
from hyperv_exporter.host.script import SCRIPT_ENV, probe_command
from hyperv_exporter.host.transport.errors import KeptRule, ProbeError, excerpt, wsman_fault
from hyperv_exporter.host.transport.http import (
    AuthenticationSkipped,
    DeadlineExceeded,
    HardenedTransport,
    NameLookupError,
    RedirectRefused,
    ResponseTooLarge,
    UnsafeResponse,
    system_ca_path,
)
from hyperv_exporter.host.transport.settings import WinRMSettings

log = logging.getLogger(__name__)

UTF8_CODEPAGE = 65001
TransportName = Literal["basic", "certificate", "ntlm", "kerberos"]


@dataclass(frozen=True, slots=True)
class Exchange:
    stdout: bytes
    stderr: bytes
    exit_code: int
    sent: float  # wall clock just before the Command request
    received: float  # wall clock just after the first Receive that carried stdout (or the end)
    requests: int  # HTTP requests this run made (including shell set-up)
    new_shell: bool
    failure: str | None = None  # psrp: the pipeline did not complete (state and error records)
    # Upper bound on the one-way time from the host's last clock reading to ``received``, when the
    # conversation shows it (see return_leg_bound); None: only the NTP interval bounds the offset.
    return_leg: float | None = None


def return_leg_bound(round_trip: float, output_wait: float) -> float | None:
    """How long the output can have taken from the host to us, or None when the exchange cannot say.

    ``round_trip`` is the shortest round trip of a request the host answers without waiting for the
    command (Command, Signal); ``output_wait`` the round trip of the Receive that brought the first
    stdout. When that Receive took at least twice ``round_trip``, the host held it while the command
    ran: it answered when the output appeared, so the output's way back is one leg of a round trip,
    at most ``round_trip``. Otherwise the output may have waited for that Receive, and nothing
    narrows where the host's reading lies between our send and receive times.
    """
    if round_trip <= 0 or output_wait < 2 * round_trip:
        return None
    return round_trip


class _CountingProtocol(Protocol):
    """pywinrm's Protocol on a :class:`HardenedTransport`, counting HTTP requests into its session."""

    session: WinRMSession
    transport: HardenedTransport

    def send_message(self, message: str) -> bytes:
        self.session.requests_total += 1
        # The wire times of the request, without pywinrm's building and parsing of the XML: the
        # host clock offset is bounded by them.
        asked = time.time()
        result: bytes = super().send_message(message)
        self.session.last_wire = (asked, time.time())
        return result


# The console host wraps an error row after 78 characters: the row ends in a blank and continues on
# the next row indented by three blanks, in the middle of a word ("...Contac " + "   t"). The
# simulator reproduces it (sim/wsman_clixml.py) from pywinrm's recorded fixture.
_CONSOLE_ROW = 78
_CONTINUATION = "   "
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _clixml_decode(text: str) -> str:
    """PowerShell's CLIXML string escapes (``_x000D_``, ``_x005F_`` for a literal ``_``) decoded."""
    return _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _unwrap_console_rows(rows: list[str]) -> list[str]:
    """Rows as PowerShell formatted them, with the console's wrapping undone."""
    out: list[str] = []
    wrapped = False
    for row in rows:
        if wrapped and out and row.startswith(_CONTINUATION):
            out[-1] = out[-1][:-1] + row[len(_CONTINUATION) :]
        else:
            out.append(row)
        wrapped = len(row) == _CONSOLE_ROW + 1 and row.endswith(" ")
    return out


def clixml_errors(stderr: bytes, limit: int = 500) -> str:
    """The error text from PowerShell's CLIXML stderr (``#< CLIXML`` + ``<Objs>``), or the raw text.

    Parsed with defusedxml: stderr comes from the host. Progress records (module loading) carry no
    error text and yield an empty string.
    """
    text = stderr.decode("utf-8", errors="replace")
    if text.startswith("#< CLIXML"):
        body = text.split("\n", 1)[1] if "\n" in text else ""
        body = re.sub(r'\sxmlns="[^"]*"', "", body, count=1)
        try:
            root = safe_fromstring(body)
            rows = [
                _clixml_decode(s.text or "").removesuffix("\r\n") for s in root.findall("S") if s.get("S") == "Error"
            ]
            text = "\n".join(_unwrap_console_rows(rows))
        except Exception:  # any parse failure: fall back to the raw text, never raise from error handling
            log.debug("stderr CLIXML could not be parsed", exc_info=True)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def classify(exc: BaseException) -> ProbeError:
    """Map a pywinrm/requests exception to a ProbeError with a reason and a short, secret-free message."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, ResponseTooLarge):
        return ProbeError("output_too_large", str(exc))
    if isinstance(exc, DeadlineExceeded):
        return ProbeError("timeout", "the host did not answer before the probe deadline")
    if isinstance(exc, UnsafeResponse):
        return ProbeError("winrm_fault", f"refused the host's answer: {exc}")
    if isinstance(exc, RedirectRefused):
        return ProbeError("redirect", str(exc))
    if isinstance(exc, NameLookupError):
        return ProbeError("dns", str(exc))
    if isinstance(exc, AuthenticationSkipped):
        return ProbeError("auth", str(exc))
    if isinstance(exc, InvalidCredentialsError):
        return ProbeError("auth", "the host rejected the credentials (HTTP 401)")
    if isinstance(exc, PermissionError) and "NTLM" in str(exc):
        # requests_ntlm: the 401 carried no NTLM challenge (Negotiate disabled, or not Windows at all).
        return ProbeError("auth", "the host did not offer NTLM authentication")
    if isinstance(exc, requests.exceptions.SSLError):
        return ProbeError("tls", f"TLS handshake failed: {_short(exc)}")
    if isinstance(exc, requests.exceptions.Timeout):
        return ProbeError("timeout", "the host did not answer before the probe deadline")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ProbeError("connection", f"cannot connect: {_short(exc)}")
    if isinstance(exc, WSManFaultError):
        return wsman_fault(exc.wsman_fault_code or exc.code, exc.reason)
    if isinstance(exc, WinRMTransportError):
        body = excerpt(exc.response_text) if exc.response_text else "empty body"
        return ProbeError("winrm_fault", f"HTTP {exc.code} from the WinRM listener: {body}")
    if type(exc) is WinRMError:  # pywinrm's own checks; their messages name no secret
        return ProbeError("winrm_fault", f"pywinrm: {_short(exc)}")
    if isinstance(exc, WinRMError | ET.ParseError | StopIteration | AssertionError | ValueError | KeyError):
        return ProbeError("winrm_fault", f"unexpected WS-Management response ({type(exc).__name__})")
    return ProbeError("winrm_fault", f"{type(exc).__name__}: {_short(exc)}")


_KEPT = KeptRule(
    fault=WSManFaultError,
    code=lambda exc: exc.wsman_fault_code,
    classify=classify,
    # After a timeout or a broken connection the host may still hold the shell.
    graceful=lambda error: error.reason in ("timeout", "winrm_fault", "powershell"),
)


# requests/urllib3 messages nest the whole chain; the innermost reason is what helps. Most
# specific first: OpenSSL's "certificate verify failed: certificate has expired" says more than
# the CERTIFICATE_VERIFY_FAILED code before it.
_REASONS = (
    re.compile(r"certificate verify failed: [^'\")(]*"),
    re.compile(r"\[Errno -?\d+\] [^'\")]*"),
    re.compile(r"Connection refused|Name or service not known|CERTIFICATE_VERIFY_FAILED|timed out"),
)


def _short(exc: BaseException) -> str:
    text = str(exc)
    for pattern in _REASONS:
        match = pattern.search(text)
        if match:
            return match.group(0)[:200].strip()
    return text[:200].strip()


def _close_quietly(protocol: _CountingProtocol, shell_id: str) -> None:
    try:
        protocol.transport.deadline = time.monotonic() + 7.0  # a host that hangs here costs 7 s of a daemon thread
        protocol.transport.read_timeout_sec = 5
        protocol.operation_timeout_sec = 2
        protocol.close_shell(shell_id, close_session=True)
    except Exception:
        log.debug("deleting an old WinRM shell failed", exc_info=True)
        protocol.transport.close_session()


class WinRMSession:
    """One host's WinRM shell, reused across probes. Not thread-safe: the caller serialises use."""

    def __init__(self, url: str, settings: WinRMSettings, script: str) -> None:
        self.url = url
        self.settings = settings
        self.script = script
        self._protocol: _CountingProtocol | None = None
        self._shell_id: str | None = None
        self._shell_opened = 0.0
        self._shell_used = 0.0
        self.shells_opened = 0
        self.requests_total = 0
        self.last_wire = (0.0, 0.0)  # (sent, answered) of the latest HTTP request, wall clock
        self.lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------------
    def _make_protocol(self) -> _CountingProtocol:
        s = self.settings
        password = s.password.get() if s.password is not None else None
        certificate = s.transport == "certificate"
        # No ca_file: the operating system's trust store (where an internal CA is installed), not
        # certifi's bundle and never REQUESTS_CA_BUNDLE from the environment by accident.
        ca_trust_path = s.ca_file or system_ca_path()
        options = {
            "endpoint": self.url,
            "username": s.username,
            "password": password,
            "server_cert_validation": cast(Literal["validate", "ignore"], s.server_cert_validation),
            "ca_trust_path": cast(str, ca_trust_path),  # None: certifi, when the OS has no bundle
            "cert_pem": s.client_cert_file if certificate else None,
            "cert_key_pem": s.client_key_file if certificate else None,
            "message_encryption": cast(Literal["auto", "always", "never"], s.message_encryption),
            "kerberos_hostname_override": s.kerberos_hostname_override,
            "proxy": None,  # WinRM to a Hyper-V host never goes through an HTTP proxy from the environment
        }
        protocol = _CountingProtocol(
            transport=cast(TransportName, s.transport),
            read_timeout_sec=30,
            operation_timeout_sec=20,
            **options,  # type: ignore[arg-type]
        )
        # Same arguments as Protocol gives its own Transport, plus the response cap.
        protocol.transport = HardenedTransport(
            auth_method=cast(TransportName, s.transport),
            read_timeout_sec=protocol.read_timeout_sec,
            service="HTTP",
            max_response_bytes=s.max_response_bytes,
            **options,
        )
        protocol.session = self
        return protocol

    def _arm(self, protocol: _CountingProtocol, deadline: float) -> None:
        """Bound the next HTTP request by the time left; the server long-polls for at most that."""
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            raise ProbeError("timeout", "the probe deadline passed before the host finished")
        protocol.transport.read_timeout_sec = remaining  # type: ignore[assignment]  # requests takes float seconds
        # Read timeouts are per socket read; the transport's deadline bounds the whole request
        # even when the host drips its answer one byte at a time.
        protocol.transport.deadline = deadline
        # OperationTimeout is whole seconds (pywinrm formats PT{int}S) and must leave the server
        # time to answer with the TimedOut fault before our read timeout fires.
        protocol.operation_timeout_sec = max(1, min(20, int(remaining - 1.0)))

    def _drop_shell(self, graceful: bool) -> None:
        """Forget the shell. ``graceful``: also delete it on the host, off the probe's time budget.

        Windows allows a user only a few shells (MaxShellsPerUser, 30 by default); shells abandoned
        after every failed probe would exhaust that, so they are deleted in the background.
        """
        protocol, shell_id = self._protocol, self._shell_id
        self._shell_id = None
        self._protocol = None
        if protocol is None:
            return
        if graceful and shell_id is not None:
            threading.Thread(target=_close_quietly, args=(protocol, shell_id), daemon=True).start()
        else:
            protocol.transport.close_session()

    def close(self, wait: float = 2.0) -> None:
        """Delete the shell in the background; gives up after ``wait`` seconds if a run holds the
        session (the host then ends the shell at its idle timeout): shutdown must not wait for a
        run that is stuck."""
        if not self.lock.acquire(timeout=wait):
            log.debug("WinRM session busy; not deleting its shell", extra=logutil.fields(url=self.url))
            return
        try:
            self._drop_shell(graceful=True)
        finally:
            self.lock.release()

    def _shell(self, deadline: float) -> tuple[_CountingProtocol, str, bool]:
        now = time.monotonic()
        if self._shell_id is not None and (
            now - self._shell_used > self.settings.shell_max_idle
            or now - self._shell_opened > self.settings.shell_max_lifetime
        ):
            self._drop_shell(graceful=True)
        if self._protocol is None:
            self._protocol = self._make_protocol()
        if self._shell_id is not None:
            return self._protocol, self._shell_id, False
        self._arm(self._protocol, deadline)
        self._shell_id = self._protocol.open_shell(
            codepage=UTF8_CODEPAGE, noprofile=True, env_vars={SCRIPT_ENV: self.script}
        )
        self._shell_opened = self._shell_used = time.monotonic()
        self.shells_opened += 1
        return self._protocol, self._shell_id, True

    # -- one run -------------------------------------------------------------------------------
    def collect(self, sections: Sequence[str], gzip: bool, deadline: float, kvp_keys: Sequence[str] = ()) -> Exchange:
        """Run the collection script for ``sections`` (the prober's entry point, as on ``psrp.PSRPSession``);
        ``kvp_keys`` go to the host as ``-KvpKeys`` when they fit (``script.probe_command``)."""
        command, args = probe_command(sections, gzip, kvp_keys)
        # With -Gzip the script writes its document in one piece after its end clock; without, it
        # may write it in parts as they are serialised, before that clock is read.
        return self.run(command, args, deadline, one_write=gzip)

    def run(self, command: str, arguments: Sequence[str], deadline: float, *, one_write: bool = True) -> Exchange:
        """Run one command on the kept shell; raises :class:`ProbeError`. ``one_write``: the command
        prints its output in one piece after its last clock reading, so its first output bounds that
        reading (else its last output does)."""
        requests_before = self.requests_total
        attempts = 2  # a reused shell may have expired on the host: re-create it once
        while True:
            attempts -= 1
            new_shell = False
            try:
                protocol, shell_id, new_shell = self._shell(deadline)
                return self._run_on(
                    protocol, shell_id, command, arguments, deadline, requests_before, new_shell, one_write
                )
            except Exception as exc:
                # Raises, unless the host had deleted the reused shell: then one more run on a new one.
                _KEPT.fail(exc, reused=not new_shell, again=attempts > 0, drop=self._drop_shell)
                log.debug("WinRM shell expired on the host; opening a new one", extra=logutil.fields(url=self.url))

    def _run_on(
        self,
        protocol: _CountingProtocol,
        shell_id: str,
        command: str,
        arguments: Sequence[str],
        deadline: float,
        requests_before: int,
        new_shell: bool,
        one_write: bool,
    ) -> Exchange:
        self._arm(protocol, deadline)
        command_id = protocol.run_command(shell_id, command, list(arguments))
        sent, answered = self.last_wire
        round_trip = answered - sent
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        size = 0
        received: float | None = None  # the host's last clock reading precedes this output's arrival
        output_wait: float | None = None
        while True:
            self._arm(protocol, deadline)
            try:
                out, err, exit_code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                continue  # the host is still working; Receive again until our deadline
            if (out or done) and (received is None or not one_write):
                asked, received = self.last_wire
                output_wait = received - asked if one_write else None
            size += len(out) + len(err)
            if size > self.settings.max_output_bytes:
                self._signal(protocol, shell_id, command_id, deadline)
                raise ProbeError("output_too_large", f"output exceeds {self.settings.max_output_bytes} bytes")
            stdout.append(out)
            stderr.append(err)
            if done:
                break
        assert received is not None  # set at the latest by the Receive that said done (the loop ends only there)
        round_trip = min(round_trip, self._signal(protocol, shell_id, command_id, deadline))
        self._shell_used = time.monotonic()
        return Exchange(
            stdout=b"".join(stdout),
            stderr=b"".join(stderr),
            exit_code=exit_code,
            sent=sent,
            received=received,
            requests=self.requests_total - requests_before,
            new_shell=new_shell,
            return_leg=None if output_wait is None else return_leg_bound(round_trip, output_wait),
        )

    def _signal(self, protocol: _CountingProtocol, shell_id: str, command_id: str, deadline: float) -> float:
        """Signal terminate; returns its round trip (the host answers it at once)."""
        # Signal terminate releases the command's resources on the host; the shell stays open.
        # It may use a second past the deadline: skipping it would leak the command on the host.
        self._arm(protocol, deadline + 1.0)
        protocol.cleanup_command(shell_id, command_id)
        asked, answered = self.last_wire
        return answered - asked
