"""Hostile WinRM listeners, for every protocol and auth transport (issue 13): redirects are never
followed (an NTLM trap on another loopback address sees no connection at all), a name lookup that
hangs is bounded by the deadline and runs once per name, answers without authentication and
garbage error bodies get clear reasons, and the exporter shuts down in time whatever is stuck."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostile import (
    PASSWORD,
    PROTOCOLS,
    Answer,
    HangingResolver,
    HostileServer,
    hostile,
    ntlm_trap,
    probe,
    settings_for,
)
from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.host.transport import http
from pki import Pki

REDIRECTS = (301, 302, 303, 307, 308)
# (auth transport, scheme): every transport the exporter can run here (Kerberos needs its libraries).
TRANSPORTS = (("basic", "http"), ("basic", "https"), ("ntlm", "http"), ("ntlm", "https"), ("certificate", "https"))


def _tls_extra(pki: Pki, transport: str) -> dict[str, object]:
    extra: dict[str, object] = {"ca_file": str(pki.ca.cert)}
    if transport == "certificate":
        extra |= {"client_cert_file": str(pki.client.cert), "client_key_file": str(pki.client.key)}
    return extra


@pytest.fixture
def trap_for(pki: Pki) -> Iterator[dict[str, HostileServer]]:
    traps = {"http": ntlm_trap(), "https": ntlm_trap(pki.server_context(client_ca=pki.ca))}
    try:
        yield traps
    finally:
        for trap in traps.values():
            trap.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("transport", "scheme"), TRANSPORTS)
@pytest.mark.parametrize("status", REDIRECTS)
def test_a_redirect_is_never_followed(
    pki: Pki, trap_for: dict[str, HostileServer], protocol: str, transport: str, scheme: str, status: int
) -> None:
    trap = trap_for[scheme]
    context = pki.server_context(client_ca=pki.ca) if scheme == "https" else None
    with hostile(Answer(status, {"Location": trap.url}), context) as redirector:
        extra = _tls_extra(pki, transport) if scheme == "https" else {}
        error = probe(protocol, redirector.url, settings_for(transport, scheme, **extra))
    assert error.reason == "redirect", error
    assert f"HTTP {status}" in str(error) and trap.url in str(error)
    assert trap.connections == 0 and trap.requests == []
    assert len(redirector.requests) == 1  # refused at once, not retried
    assert PASSWORD not in str(error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_redirect_through_the_exporter_is_a_probe_failure(tmp_path: Path, protocol: str) -> None:
    """End to end: an allowlisted target that redirects gets hyperv_up 0, reason redirect, and the
    unlisted trap address sees nothing."""
    trap = ntlm_trap()
    with hostile(Answer(302, {"Location": trap.url})) as redirector:
        running = _exporter(tmp_path, f"127.0.0.1:{redirector.port}", "ntlm", protocol=protocol)
        try:
            body = _get(running.server.urls[0] + f"/probe?module=m&target=127.0.0.1:{redirector.port}")
            metrics = _get(running.server.urls[0] + "/metrics")
        finally:
            running.stop()
            trap.stop()
    assert "hyperv_up 0" in body
    assert f'reason="redirect",target="127.0.0.1:{redirector.port}"' in metrics.replace('module="m",', "")
    assert trap.connections == 0


# -- answers that skip authentication or are garbage ----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ntlm_answered_without_authentication_is_an_auth_error(protocol: str) -> None:
    with hostile(Answer(200, {"Content-Type": "text/plain"}, b"hello\x1b[2J")) as server:
        error = probe(protocol, server.url, settings_for("ntlm", "http"))
    assert error.reason == "auth", error
    assert "HTTP 200 without an NTLM authentication step" in str(error)
    assert "AttributeError" not in str(error) and "\x1b" not in str(error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("transport", "scheme"), [("basic", "http"), ("basic", "https")])
def test_an_error_body_that_is_not_utf8_gets_status_and_a_clean_excerpt(
    pki: Pki, protocol: str, transport: str, scheme: str
) -> None:
    garbage = b"\xff\xfe\x00Internal\x1b[2J error \xc3(" + b"\x9b" * 500
    context = pki.server_context() if scheme == "https" else None
    with hostile(Answer(500, {"Content-Type": "text/html"}, garbage), context) as server:
        extra = _tls_extra(pki, transport) if scheme == "https" else {}
        error = probe(protocol, server.url, settings_for(transport, scheme, **extra))
    message = str(error)
    assert error.reason == "winrm_fault" and "HTTP 500" in message, message
    assert "Internal" in message and "error" in message
    assert "UnicodeDecodeError" not in message
    assert message.isprintable() and len(message) < 300


# -- name resolution ----------------------------------------------------------------------------------


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingResolver]:
    resolver = HangingResolver()
    monkeypatch.setattr(http.RESOLVER, "getaddrinfo", resolver)
    try:
        yield resolver
    finally:
        resolver.release.set()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_name_lookup_ends_at_the_deadline_once_per_name(
    hanging_resolver: HangingResolver, protocol: str
) -> None:
    errors = [
        probe(protocol, "http://hv-hang.corp.example:5985/wsman", settings_for("basic", "http"), 0.3)
        for _ in range(4)
    ]
    assert {e.reason for e in errors} == {"dns"}
    assert "did not finish before the probe deadline" in str(errors[0])
    assert hanging_resolver.calls == 1  # later probes wait for the same lookup instead of starting more
    assert http.RESOLVER.pending() == 1
    hanging_resolver.release.set()
    deadline = time.monotonic() + 10
    while http.RESOLVER.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert http.RESOLVER.pending() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_name_that_does_not_resolve_is_a_dns_error(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    def nxdomain(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(http.RESOLVER, "getaddrinfo", nxdomain)
    error = probe(protocol, "http://hv-none.corp.example:5985/wsman", settings_for("basic", "http"))
    assert error.reason == "dns" and "Name or service not known" in str(error), error


def test_the_resolver_is_used_with_the_addresses_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam is the only resolver: a name it maps to the redirector's address reaches that address."""
    with hostile(Answer(307, {"Location": "http://127.0.0.2:1/wsman"})) as server:
        answer = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port))]
        monkeypatch.setattr(http.RESOLVER, "getaddrinfo", lambda *a: answer)
        error = probe("winrs", f"http://hv-seam.corp.example:{server.port}/wsman", settings_for("basic", "http"))
    assert error.reason == "redirect" and server.connections == 1
    assert server.requests[0][2]["Host"] == f"hv-seam.corp.example:{server.port}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_lookup_is_counted_at_the_deadline(
    tmp_path: Path, hanging_resolver: HangingResolver, protocol: str
) -> None:
    running = _exporter(tmp_path, "hv-hang.corp.example", "basic", timeout="1s", protocol=protocol)
    try:
        body = _get(running.server.urls[0] + "/probe?module=m&target=hv-hang.corp.example")
        metrics = _get(running.server.urls[0] + "/metrics")
    finally:
        hanging_resolver.release.set()
        running.stop()
    assert "hyperv_up 0" in body
    assert 'reason="dns",target="hv-hang.corp.example"} 1.0' in metrics.replace('module="m",', "")


# -- shutdown ---------------------------------------------------------------------------------------

_STUCK_EXPORTER = """
import socket, sys, threading
forever = threading.Event()
real_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):  # the system resolver hangs for the target's domain
    if str(host).endswith(".corp.example"):
        forever.wait()
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
from hyperv_exporter.host import cli
from hyperv_exporter.host.transport import psrp, winrs
if {stuck_worker!r}:  # stuck where no deadline or socket shutdown reaches, whichever protocol runs
    winrs.WinRMSession.collect = psrp.PSRPSession.collect = lambda *args: forever.wait()
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stuck", ["name_lookup", "worker"])
def test_sigterm_ends_the_exporter_within_5s_whatever_a_worker_is_stuck_on(
    tmp_path: Path, stuck: str, protocol: str
) -> None:
    config = _config(tmp_path, "hv-hang.corp.example", "basic", timeout="30s", protocol=protocol)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = _STUCK_EXPORTER.format(stuck_worker=stuck == "worker")
    args = [sys.executable, "-c", code, "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                _get(url + "/-/healthy")
                break
            except OSError:
                time.sleep(0.05)
        # A probe that will be stuck; its requester gives up at the scrape timeout, the work does not.
        def stuck_probe() -> None:
            with contextlib.suppress(OSError):  # the exporter goes away mid-answer
                _get(url + "/probe?module=m&target=hv-hang.corp.example", timeout=35)

        threading.Thread(target=stuck_probe, daemon=True).start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # The guarantee is 5 s; the bound here is generous for a busy machine, and far below "never".
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""


# -- helpers ----------------------------------------------------------------------------------------


def _config(tmp_path: Path, target: str, transport: str, timeout: str = "5s", protocol: str = "winrs") -> Path:
    (tmp_path / "password").write_text(PASSWORD)
    config = tmp_path / "hyperv.yml"
    config.write_text(
        textwrap.dedent(f"""\
        modules:
          m:
            targets: ["{target}"]
            timeout: {timeout}
            cache_ttl: 0s
            winrm:
              protocol: {protocol}
              scheme: http
              transport: {transport}
              allow_unencrypted: true
              message_encryption: {"never" if transport == "basic" else "auto"}
              username: monitor
              password_file: password
        """)
    )
    return config


def _exporter(tmp_path: Path, target: str, transport: str, timeout: str = "5s", protocol: str = "winrs") -> Running:
    config = _config(tmp_path, target, transport, timeout, protocol)
    return start(build_parser().parse_args(["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]))


def _get(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())

