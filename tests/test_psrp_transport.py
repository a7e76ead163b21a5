"""The PSRP transport for real: pypsrp against the simulator's PowerShell endpoints over HTTP(S) on
loopback. Every auth transport, message encryption, TLS validation, the runspace pool kept across
probes and reopened when the host drops it, the deadline while opening, the response caps."""

from __future__ import annotations

import threading

import pytest

from conftest import ConfigurableStack, StackFactory, basic_http_settings, https_winrm, sample
from hyperv_exporter.sim.wsman import Fault
from hyperv_exporter.sim.wsman_psrp import PoolInfo
from pki import Pki

TARGET = "HV-LONDON-01"
COLLECTORS = ("host", "vm", "integration_services", "kvp", "resources", "replication", "checkpoints")

PSRP_BASIC_HTTP = ConfigurableStack.DEFAULT_WINRM.replace("protocol: winrs", "protocol: psrp")

PSRP_NTLM_HTTP = """      protocol: psrp
      scheme: http
      transport: ntlm
      username: monitor
      password_file: {password_file}"""


def assert_complete(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], stack: ConfigurableStack) -> None:
    assert sample(samples, "hyperv_up") == 1.0, stack.debug(TARGET)
    for collector in COLLECTORS:
        assert sample(samples, "hyperv_collector_success", collector=collector) == 1.0, collector


def requests_of(stack: ConfigurableStack) -> int:
    return stack.sim.endpoint(TARGET).stats["requests"]


# -- auth transports, encryption, TLS ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["basic", "ntlm", "certificate"])
def test_every_auth_transport_over_https(make_stack: StackFactory, pki: Pki, transport: str) -> None:
    stack = make_stack(
        winrm=https_winrm(pki, transport, protocol="psrp"),
        ssl_context=pki.server_context(client_ca=pki.ca),
        allow_unencrypted=False,
    )
    assert_complete(stack.probe(TARGET), stack)
    endpoint = stack.sim.endpoint(TARGET)
    assert endpoint.pool_count == 1 and endpoint.shell_count == 0  # a runspace pool, no cmd shell
    assert endpoint.stats["encrypted_requests"] == 0  # TLS protects the messages; no SPNEGO sealing on top


def test_ntlm_message_encryption_over_http(make_stack: StackFactory) -> None:
    # allow_unencrypted=False: the listener refuses plaintext SOAP, as a default Windows listener does.
    stack = make_stack(winrm=PSRP_NTLM_HTTP, allow_unencrypted=False)
    assert_complete(stack.probe(TARGET), stack)
    stats = stack.sim.endpoint(TARGET).stats
    # Everything after the NTLM handshake (401, challenge, the empty POST that sets up the context) is sealed.
    assert stats["encrypted_requests"] == stats["requests"] - 3 >= 4


def test_a_plaintext_answer_on_an_encrypted_session_is_refused(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_NTLM_HTTP)
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    stack.sim.endpoint(TARGET).fault = Fault("plaintext")
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (winrm_fault)" in text and "plaintext" in text, text


@pytest.mark.parametrize(
    ("server_cert", "ca", "message"),
    [("stranger_server", "ca", "unable to get local issuer certificate"), ("expired_server", "ca", "expired")],
    ids=["wrong_ca", "expired"],
)
def test_certificate_problems_are_tls_errors(
    make_stack: StackFactory, pki: Pki, server_cert: str, ca: str, message: str
) -> None:
    stack = make_stack(
        winrm=https_winrm(pki, "basic", ca, protocol="psrp"), ssl_context=pki.server_context(pki[server_cert])
    )
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (tls)" in text and message in text, text
    assert requests_of(stack) == 0  # nothing was sent, credentials included


def test_wrong_password_is_an_auth_error(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_NTLM_HTTP)
    stack.fleet.host(TARGET).set(password="another-password")
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    assert "failed (auth)" in stack.debug(TARGET)


# -- the kept runspace pool -------------------------------------------------------------------------


def test_the_pool_is_kept_and_a_probe_is_one_pipeline(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP)
    endpoint = stack.sim.endpoint(TARGET)
    assert_complete(stack.probe(TARGET), stack)
    first = requests_of(stack)
    # Create, three Receives (SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE: one each,
    # as a real host answers), Command, Receive (output and pipeline state), Signal.
    assert first == 7
    for _ in range(3):
        assert_complete(stack.probe(TARGET), stack)
    assert requests_of(stack) - first == 3 * 3  # Command, Receive, Signal: nothing else
    assert endpoint.pools_opened == 1  # no new wsmprovhost.exe per probe
    assert endpoint.command_count == 0  # every pipeline was ended with Signal


@pytest.mark.parametrize("drop", ["idle_timeout", "service_restart"])
def test_the_pool_is_reopened_when_the_host_drops_it(make_stack: StackFactory, drop: str) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP)
    endpoint = stack.sim.endpoint(TARGET)
    assert_complete(stack.probe(TARGET), stack)
    if drop == "idle_timeout":
        endpoint.expire_shells()
    else:
        endpoint.stop()
        endpoint.start()  # the same port; the WinRM service forgot every shell
    assert_complete(stack.probe(TARGET), stack)  # the stale pool's fault is answered by opening a new one
    assert endpoint.pools_opened == 2 and endpoint.pool_count == 1


def test_a_broken_connection_drops_the_pool_and_the_next_probe_reopens_it(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP)
    endpoint = stack.sim.endpoint(TARGET)
    assert_complete(stack.probe(TARGET), stack)
    endpoint.fault = Fault("reset", times=1)
    text = stack.debug(TARGET)
    assert "failed (connection)" in text, text
    assert_complete(stack.probe(TARGET), stack)
    assert endpoint.pools_opened == 2


def test_a_deadline_that_expires_while_opening_the_pool(make_stack: StackFactory) -> None:
    """The probe answers timeout by its deadline; the opening goes on (bounded) and the next probe uses
    that pool instead of starting over, so a host slower to open a pool than a scrape timeout converges."""
    stack = make_stack(winrm=PSRP_BASIC_HTTP, module="    cache_ttl: 0s\n    timeout: 1s")
    endpoint = stack.sim.endpoint(TARGET)
    psrp = endpoint.service.psrp
    assert psrp is not None
    release = threading.Event()

    def slow_start(pool: PoolInfo) -> None:
        release.wait(10)  # the host takes longer to start wsmprovhost.exe than the probe may last

    psrp.pool_opened = slow_start
    try:
        text = stack.debug(TARGET)
        assert "failed (timeout)" in text and "opening the runspace pool" in text, text
    finally:
        release.set()
    assert_complete(stack.probe(TARGET), stack)
    assert endpoint.pools_opened == 1 and endpoint.pool_count == 1


def test_a_hanging_host_is_a_timeout(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP, module="    cache_ttl: 0s\n    timeout: 1s")
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    stack.sim.endpoint(TARGET).fault = Fault("hang")
    text = stack.debug(TARGET)
    stack.sim.endpoint(TARGET).fault = None
    assert "failed (timeout)" in text, text


# -- caps -------------------------------------------------------------------------------------------


def test_a_huge_http_response_is_cut_at_the_response_cap(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP)
    stack.sim.endpoint(TARGET).fault = Fault("huge_body", size=32 * 1024 * 1024)
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (output_too_large)" in text and "exceeds 4194304 bytes" in text, text


def test_the_output_cap_stops_the_pipeline(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP.replace("max_output_bytes: 8MiB", "max_output_bytes: 1KiB"))
    text = stack.debug(TARGET)
    assert "failed (output_too_large)" in text, text
    endpoint = stack.sim.endpoint(TARGET)
    assert endpoint.command_count == 0 and endpoint.pool_count == 1  # pipeline ended; the pool stays


def test_an_unknown_endpoint_is_a_winrm_fault(make_stack: StackFactory) -> None:
    stack = make_stack(winrm=PSRP_BASIC_HTTP + "\n      configuration_name: NoSuchEndpoint")
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (winrm_fault)" in text and "Cannot find the NoSuchEndpoint session configuration" in text, text


def test_a_redirect_is_never_followed() -> None:
    """A listener answering 307 to another address: the credentials never reach it."""
    import http.server
    import time

    from hyperv_exporter.host import script
    from hyperv_exporter.host.transport.errors import ProbeError
    from hyperv_exporter.host.transport.psrp import PSRPSession

    reached: list[str] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            reached.append(self.headers.get("Authorization", ""))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = http.server.HTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_port}/wsman")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    redirecting = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (elsewhere, redirecting)]
    for thread in threads:
        thread.start()
    try:
        settings = basic_http_settings("monitor", "redirect-test-password")
        session = PSRPSession(f"http://127.0.0.1:{redirecting.server_port}/wsman", settings, script.script_text())
        with pytest.raises(ProbeError, match="redirect") as raised:
            session.collect(["vm"], True, time.monotonic() + 5)
        # The hardened adapter's refusal, as on winrs (tests/test_hostile_hosts.py).
        assert raised.value.reason == "redirect"
        assert f"127.0.0.1:{elsewhere.server_port}" in str(raised.value)
        assert reached == []
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()


def test_without_ca_file_the_system_trust_store_is_used_and_requests_ca_bundle_is_not(
    make_stack: StackFactory, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyperv_exporter.host.transport import http

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca.cert))  # requests would use it; the exporter must not
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca.cert))  # how OpenSSL locates the system store
    http.system_ca_path.cache_clear()
    try:
        winrm = https_winrm(pki, "basic", ca=None, protocol="psrp")
        stack = make_stack(winrm=winrm, ssl_context=pki.server_context())
        assert_complete(stack.probe(TARGET), stack)
    finally:
        http.system_ca_path.cache_clear()
