"""Safe WinRM, for real: HTTPS with certificate validation, NTLM with message encryption, client
certificates, Basic only where allowed, the system trust store, and the hardened transport."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from conftest import StackFactory, basic_http_settings, https_winrm, sample
from hyperv_exporter.host.config import ConfigError, parse_config
from hyperv_exporter.host.transport import http as winrm_transport
from hyperv_exporter.host.transport.errors import ProbeError
from hyperv_exporter.host.transport.http import HardenedTransport, Watchdog
from hyperv_exporter.host.transport.winrs import WinRMSession
from hyperv_exporter.sim.wsman import CommandResult, Fault, Shell, WSManEndpoint
from pki import Pki

TARGET = "HV-LONDON-01"


# -- HTTPS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["basic", "ntlm", "certificate"])
def test_https_with_a_validated_certificate(make_stack: StackFactory, pki: Pki, transport: str) -> None:
    stack = make_stack(
        winrm=https_winrm(pki, transport),
        ssl_context=pki.server_context(client_ca=pki.ca),
        allow_unencrypted=False,
    )
    samples = stack.probe(TARGET)
    assert sample(samples, "hyperv_up") == 1.0, stack.debug(TARGET)
    endpoint = stack.sim.endpoint(TARGET)
    assert endpoint.stats["encrypted_requests"] == 0  # TLS protects the messages; no SPNEGO sealing on top
    shell = next(iter(endpoint.shells.values()))
    assert shell.username == "monitor"


@pytest.mark.parametrize(
    ("server_cert", "ca", "message"),
    [
        ("stranger_server", "ca", "unable to get local issuer certificate"),
        ("expired_server", "ca", "certificate has expired"),
        ("server", None, "certificate verify failed"),  # the test CA is not in the system store
    ],
    ids=["wrong_ca", "expired", "not_in_system_store"],
)
def test_certificate_problems_are_tls_errors(
    make_stack: StackFactory, pki: Pki, server_cert: str, ca: str | None, message: str
) -> None:
    stack = make_stack(winrm=https_winrm(pki, ca=ca), ssl_context=pki.server_context(pki[server_cert]))
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (tls)" in text and message in text, text
    _, metrics = stack.get("/metrics")
    assert f'hyperv_exporter_probe_errors_total{{module="default",reason="tls",target="{TARGET}"}}' in metrics
    assert stack.sim.endpoint(TARGET).stats["requests"] == 0  # nothing was sent, credentials included


def test_without_ca_file_the_system_trust_store_is_used(
    make_stack: StackFactory, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not certifi: SSL_CERT_FILE (how OpenSSL locates the system store) decides what is trusted."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca.cert))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    winrm_transport.system_ca_path.cache_clear()
    try:
        assert winrm_transport.system_ca_path() == str(pki.ca.cert)
        stack = make_stack(winrm=https_winrm(pki, ca=None), ssl_context=pki.server_context())
        assert sample(stack.probe(TARGET), "hyperv_up") == 1.0, stack.debug(TARGET)
    finally:
        winrm_transport.system_ca_path.cache_clear()


def test_requests_ca_bundle_from_the_environment_is_ignored(
    make_stack: StackFactory, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca.cert))  # pywinrm's "legacy_requests" would use it
    stack = make_stack(winrm=https_winrm(pki, ca="other_ca"), ssl_context=pki.server_context())
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    assert "failed (tls)" in stack.debug(TARGET)


# -- NTLM and message encryption over HTTP ----------------------------------------------------------

NTLM_HTTP = """      protocol: winrs
      scheme: http
      transport: ntlm
      username: monitor
      password_file: {password_file}"""


def test_ntlm_over_http_encrypts_every_message(make_stack: StackFactory) -> None:
    """The simulator runs pyspnego's NTLM acceptor and refuses plaintext, as a default Windows listener."""
    stack = make_stack(winrm=NTLM_HTTP, allow_unencrypted=False)
    for _ in range(2):
        assert sample(stack.probe(TARGET), "hyperv_up") == 1.0, stack.debug(TARGET)
    stats = stack.sim.endpoint(TARGET).stats.snapshot()
    # Create + 2 x (Command, Receive, Signal), every one sealed; plus the handshakes (401s).
    assert stats["encrypted_requests"] == 7 and stats["command"] == 2
    assert stats["auth_failures"] == 1  # the first, unauthenticated request; then the NTLM handshake


def test_ntlm_wrong_password_is_an_auth_error(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=NTLM_HTTP, allow_unencrypted=False)
    stack.fleet.host(TARGET).set(password="Another-Pa55word")
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    assert "failed (auth)" in stack.debug(TARGET)


def test_plaintext_to_a_listener_that_requires_encryption_is_refused(make_stack: StackFactory) -> None:
    winrm = NTLM_HTTP + "\n      message_encryption: never\n      allow_unencrypted: true"
    stack = make_stack(winrm=winrm, allow_unencrypted=False)
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    assert "failed (auth)" in stack.debug(TARGET)


def test_a_plaintext_answer_on_an_encrypted_session_is_refused(make_stack: StackFactory) -> None:
    """pywinrm would take it as the answer; an attacker on the path could forge host data that way."""
    stack = make_stack(winrm=NTLM_HTTP)
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    stack.sim.endpoint(TARGET).fault = Fault("plaintext")
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (winrm_fault)" in text and "plaintext although message encryption is on" in text


def test_kerberos_without_its_libraries_is_refused_at_start(tmp_path: Path) -> None:
    if winrm_transport.HAVE_KERBEROS:  # pragma: no cover - a host with the kerberos extra installed
        pytest.skip("pywinrm[kerberos] is installed; testing Kerberos needs a KDC")
    with pytest.raises(ConfigError, match=r"pip install 'hyperv-exporter\[kerberos\]'"):
        _config(tmp_path, "      {transport: kerberos}")


# -- configuration rules ----------------------------------------------------------------------------


def _config(tmp_path: Path, winrm: str) -> None:
    (tmp_path / "pw").write_text("secret-value\n")
    parse_config(f"modules:\n  m:\n    targets: [h]\n    winrm:\n{winrm}\n", "inline.yml", tmp_path)


@pytest.mark.parametrize(
    ("winrm", "error"),
    [
        ("      {scheme: http, transport: basic, username: u, password_file: pw}", "clear text"),
        (
            "      {scheme: http, transport: ntlm, message_encryption: never, username: u, password_file: pw}",
            "allow_unencrypted",
        ),
        ("      {transport: ntlm, username: u, password: hunter2}", "never written into the config"),
        ("      {scheme: http, transport: certificate}", "scheme: https"),
        ("      {transport: ntlm, username: u}", "password_file or password_env"),
    ],
)
def test_unsafe_winrm_settings_are_refused(tmp_path: Path, winrm: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as info:
        _config(tmp_path, winrm)
    assert "hunter2" not in str(info.value)


def test_basic_over_http_only_with_explicit_consent(tmp_path: Path) -> None:
    _config(tmp_path, "      {scheme: http, transport: basic, allow_unencrypted: true, username: u, password_file: pw}")


def test_defaults_are_https_ntlm_validated(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret-value\n")
    config = parse_config(
        "modules:\n  m:\n    targets: [h]\n    winrm: {username: u, password_file: pw}\n", "inline.yml", tmp_path
    )
    winrm = config.modules["m"].winrm
    assert (winrm.scheme, winrm.port, winrm.transport, winrm.server_cert_validation) == (
        "https",
        5986,
        "ntlm",
        "validate",
    )
    assert winrm.message_encryption == "auto" and not winrm.allow_unencrypted
    assert winrm.max_response_bytes == 4 * 1024 * 1024


# -- the hardened transport on its own --------------------------------------------------------------


def _echo(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
    return CommandResult(stdout=b"x" * 20_000)


def _session(url: str, **settings: object) -> WinRMSession:
    return WinRMSession(url, basic_http_settings("u", "pw-for-the-transport", **settings), "script")


def _transport(url: str) -> HardenedTransport:
    """The hardened transport alone, Basic auth over plain HTTP to a test endpoint."""
    return HardenedTransport(
        endpoint=url, auth_method="basic", username="u", password="pw-for-the-transport", proxy=None, ca_trust_path=None
    )


def test_response_cap_applies_to_every_http_response() -> None:
    with WSManEndpoint(_echo, users={"u": "pw-for-the-transport"}) as endpoint:
        assert _session(endpoint.url).run("cmd", [], time.monotonic() + 5).stdout == b"x" * 20_000
        with pytest.raises(ProbeError) as info:
            _session(endpoint.url, max_response_bytes=16 * 1024).run("cmd", [], time.monotonic() + 5)
        assert info.value.reason == "output_too_large" and "16384" in str(info.value)


def test_compressed_answers_are_never_inflated() -> None:
    with WSManEndpoint(_echo, users={"u": "pw-for-the-transport"}) as endpoint:
        endpoint.fault = Fault("gzip_body")
        transport = _transport(endpoint.url)
        transport.deadline = time.monotonic() + 5
        session = transport.build_session()
        assert session.headers["Accept-Encoding"] == "identity"
        body = transport.send_message("<x/>")
        assert body.startswith(b"\x1f\x8b") and len(body) < 1024 * 1024  # the gzip bytes, as sent


def test_a_hung_request_is_aborted_at_the_deadline() -> None:
    with WSManEndpoint(_echo, users={"u": "pw-for-the-transport"}) as endpoint:
        endpoint.fault = Fault("hang")
        transport = _transport(endpoint.url)
        transport.read_timeout_sec = 60
        started = time.monotonic()
        transport.deadline = started + 0.5
        with pytest.raises(requests.exceptions.Timeout):
            transport.send_message("<x/>")
        assert time.monotonic() - started < 5  # the 60 s read timeout did not apply
        endpoint.fault = None


def test_watchdog_runs_due_actions_and_skips_cancelled_ones() -> None:
    dog = Watchdog()
    fired: list[str] = []
    dog.schedule(time.monotonic() + 0.05, lambda: fired.append("a"))
    dog.schedule(time.monotonic() + 0.05, lambda: fired.append("b")).cancel()
    dog.schedule(time.monotonic() + 0.01, lambda: fired.append("c"))
    end = time.monotonic() + 5
    while len(fired) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.1)
    assert fired == ["c", "a"]
    assert dog.pending() == 0


# -- the simulator's NTLM acceptor on its own -------------------------------------------------------


def _sealed(context: object, plaintext: bytes) -> bytes:
    """A request body exactly as pywinrm builds it (MS-WSMV 2.2.9.1.1)."""
    import struct

    wrapped = context.wrap_winrm(plaintext)  # type: ignore[attr-defined]
    boundary = b"--Encrypted Boundary"
    return (
        boundary + b"\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(plaintext)).encode() + b"\r\n"
        + boundary + b"\r\n\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<I", len(wrapped.header)) + wrapped.header + wrapped.data + boundary + b"--\r\n"
    )  # fmt: skip


def test_sim_ntlm_acceptor_authenticates_and_checks_every_message() -> None:
    import spnego

    from hyperv_exporter.sim.wsman_ntlm import NtlmConnection, NtlmError

    users = {"monitor": "Ntlm-Pa55word"}
    client = spnego.client("monitor", "Ntlm-Pa55word", protocol="ntlm")
    server = NtlmConnection("HV-TEST")
    challenge = server.step(client.step() or b"", users)
    assert challenge is not None and not server.authenticated
    assert server.step(client.step(challenge) or b"", users) is None
    assert server.user == "monitor"

    assert server.unwrap(_sealed(client, b"<s:Envelope/>")) == b"<s:Envelope/>"
    answer = server.wrap(b"<s:Envelope>answer</s:Envelope>")
    assert b"answer" not in answer  # sealed, not just signed
    tampered = bytearray(_sealed(client, b"<s:Envelope>two</s:Envelope>"))
    tampered[-30] ^= 0x01
    with pytest.raises(NtlmError):
        server.unwrap(bytes(tampered))
    with pytest.raises(NtlmError):
        server.unwrap(b"<s:Envelope>plaintext</s:Envelope>")

    wrong = spnego.client("monitor", "Wrong-Pa55word", protocol="ntlm")
    other = NtlmConnection("HV-TEST")
    challenge = other.step(wrong.step() or b"", users)
    with pytest.raises(NtlmError):
        other.step(wrong.step(challenge) or b"", users)
    assert not other.authenticated
