"""Injected faults, authentication failures and listener lifecycle, seen through real pywinrm."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import pytest
import requests
import winrm
from winrm.exceptions import InvalidCredentialsError, WSManFaultError
from winrm.protocol import Protocol

from hyperv_exporter.sim.wsman import CommandResult, Fault, Shell, WSManEndpoint

USER, PASSWORD = "monitor", "s3cret-pw"


def echo(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
    return CommandResult(stdout=" ".join([command, *arguments]).encode())


@pytest.fixture
def endpoint() -> Iterator[WSManEndpoint]:
    with WSManEndpoint(echo, users={USER: PASSWORD}, name="hv-faults") as ep:
        yield ep


def protocol(ep: WSManEndpoint, *, password: str = PASSWORD, read_timeout: float | None = None) -> Protocol:
    p = Protocol(ep.url, transport="basic", username=USER, password=password, server_cert_validation="ignore")
    if read_timeout is not None:
        # Protocol wants whole seconds >= 2 for the read timeout; the transport passes any float to requests.
        setattr(p.transport, "read_timeout_sec", read_timeout)  # noqa: B010 - typed int in pywinrm
    return p


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition the test needs before acting (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def run_one(p: Protocol) -> bytes:
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "hostname")
    stdout: bytes = p.get_command_output(shell_id, command_id)[0]
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)
    return stdout


# --- authentication -----------------------------------------------------------------------------------


def test_wrong_password_is_invalid_credentials(endpoint: WSManEndpoint) -> None:
    with pytest.raises(InvalidCredentialsError):
        protocol(endpoint, password="wrong").open_shell()
    with pytest.raises(InvalidCredentialsError):
        winrm.Session(
            endpoint.url, auth=("nobody", PASSWORD), transport="basic", server_cert_validation="ignore"
        ).run_cmd("x")
    assert endpoint.stats["auth_failures"] == 2
    assert endpoint.stats["create"] == 0


def test_401_offers_negotiate_and_basic(endpoint: WSManEndpoint) -> None:
    response = requests.post(endpoint.url, data=b"<x/>", headers={"Content-Type": "application/soap+xml"}, timeout=5)
    assert response.status_code == 401
    offered = response.raw.headers.getlist("WWW-Authenticate")
    assert offered == ["Negotiate", 'Basic realm="WSMAN"']
    assert response.content == b""


def test_no_users_means_no_auth() -> None:
    with WSManEndpoint(echo) as ep:
        p = Protocol(ep.url, transport="basic", username="anyone", password="", server_cert_validation="ignore")
        shell_id = p.open_shell()
        assert ep.shells[shell_id].username == "anyone"
        response = requests.post(ep.url, data=b"<x/>", headers={"Content-Type": "application/soap+xml"}, timeout=5)
        assert response.status_code == 500  # no 401: parsed (and refused) as SOAP


# --- injected faults ----------------------------------------------------------------------------------


def test_http_500_is_a_wsman_fault(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("http_500")
    with pytest.raises(WSManFaultError) as info:
        protocol(endpoint).open_shell()
    error = info.value
    assert (error.code, error.fault_code, error.fault_subcode) == (500, "s:Receiver", "w:InternalError")
    assert error.wsman_fault_code == 2148007941
    assert error.reason.startswith("Server execution failed")
    assert endpoint.stats["create"] == 0  # the request was not processed


def test_unauthorized_even_with_good_credentials(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("unauthorized")
    with pytest.raises(InvalidCredentialsError):
        protocol(endpoint).open_shell()
    assert endpoint.stats["auth_failures"] == 0  # injected, not a credential failure
    assert endpoint.stats["injected_faults"] == 1


def test_reset_drops_the_connection(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    endpoint.fault = Fault("reset", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        p.run_command(shell_id, "hostname")
    # The shell survived; the client reconnects on its next request.
    command_id = p.run_command(shell_id, "hostname")
    assert p.get_command_output(shell_id, command_id)[0] == b"hostname"
    assert endpoint.stats["connections"] == 2


def test_garbage_is_not_xml(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("garbage")
    with pytest.raises(ET.ParseError):
        protocol(endpoint).open_shell()


def test_slow_still_answers(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("slow", seconds=0.05, times=2)
    assert run_one(protocol(endpoint)) == b"hostname"
    assert endpoint.stats["injected_faults"] == 2
    assert endpoint.fault is None


def test_times_limits_a_fault_to_the_next_requests(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("http_500", times=2)
    for _ in range(2):
        with pytest.raises(WSManFaultError):
            protocol(endpoint).open_shell()
    assert endpoint.fault is None
    assert run_one(protocol(endpoint)) == b"hostname"
    assert endpoint.stats["injected_faults"] == 2


def test_hang_until_the_client_read_timeout(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint, read_timeout=0.3)
    shell_id = p.open_shell()
    endpoint.fault = Fault("hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        p.run_command(shell_id, "hostname")
    endpoint.fault = None  # releases the hung request; new requests are served again
    assert run_one(protocol(endpoint)) == b"hostname"


def test_stop_with_a_hanging_request_does_not_hang(endpoint: WSManEndpoint) -> None:
    endpoint.fault = Fault("hang")
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            protocol(endpoint).open_shell()  # read timeout 30 s: only stop() can end this quickly
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: endpoint.stats["injected_faults"] == 1, "the request to hang")

    stopper = threading.Thread(target=endpoint.stop)
    stopper.start()
    stopper.join(10)
    thread.join(10)
    assert not stopper.is_alive()
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)


def test_invalid_fault_kinds_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("refuse")  # type: ignore[arg-type]  # refusing connections is endpoint.stop()
    with pytest.raises(ValueError):
        Fault("slow", seconds=-1)
    with pytest.raises(ValueError):
        Fault("hang", times=0)


# --- lifecycle ----------------------------------------------------------------------------------------


def test_stop_refuses_connections_and_restart_forgets_shells(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    port = endpoint.port

    endpoint.stop()
    endpoint.stop()  # idempotent
    assert not endpoint.running
    with pytest.raises(requests.exceptions.ConnectionError):
        protocol(endpoint).open_shell()

    endpoint.start()  # a WinRM service restart, same port
    assert endpoint.port == port
    with pytest.raises(WSManFaultError) as info:
        protocol(endpoint).run_command(shell_id, "hostname")
    assert info.value.wsman_fault_code == 2150858843
    assert run_one(protocol(endpoint)) == b"hostname"


def test_stop_interrupts_a_waiting_receive() -> None:
    def slow(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stdout=b"late", run_seconds=60)

    with WSManEndpoint(slow) as ep:
        p = Protocol(ep.url, transport="basic", username="u", password="p", server_cert_validation="ignore")
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "Get-VM")
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                p.get_command_output_raw(shell_id, command_id)  # PT20S wait on the server
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=receive)
        thread.start()
        wait_until(lambda: ep.stats["receive"] == 1, "the Receive to arrive")
        ep.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)


def test_latency_applies_to_every_request(endpoint: WSManEndpoint) -> None:
    endpoint.latency_seconds = 0.01
    assert run_one(protocol(endpoint)) == b"hostname"
    assert endpoint.stats["requests"] == 5
