"""HTTPS listener with a test CA: server certificate validation and certificate authentication."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from winrm.exceptions import InvalidCredentialsError
from winrm.protocol import Protocol

from hyperv_exporter.sim.wsman import CommandResult, Shell, WSManEndpoint
from pki import Pki

USER, PASSWORD = "monitor", "s3cret-pw"


def echo(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
    return CommandResult(stdout=f"{shell.username}:{command}".encode())


@pytest.fixture
def https_endpoint(pki: Pki) -> Iterator[WSManEndpoint]:
    # Client certificates are optional (see Pki.server_context): Basic auth clients keep working.
    with WSManEndpoint(echo, users={USER: PASSWORD}, ssl_context=pki.server_context(client_ca=pki.ca)) as ep:
        yield ep


def run_one(p: Protocol) -> bytes:
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "hostname")
    stdout: bytes = p.get_command_output(shell_id, command_id)[0]
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)
    return stdout


def test_https_basic_auth_with_validated_server_certificate(https_endpoint: WSManEndpoint, pki: Pki) -> None:
    assert https_endpoint.url.startswith("https://127.0.0.1:")
    p = Protocol(
        https_endpoint.url,
        transport="ssl",
        username=USER,
        password=PASSWORD,
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca.cert),
    )
    assert run_one(p) == b"monitor:hostname"
    assert https_endpoint.stats["connections"] == 1  # TLS keep-alive across the conversation


def test_untrusted_server_certificate_is_rejected(https_endpoint: WSManEndpoint) -> None:
    p = Protocol(
        https_endpoint.url,
        transport="ssl",
        username=USER,
        password=PASSWORD,
        server_cert_validation="validate",
        ca_trust_path=None,  # type: ignore[arg-type]  # documented "no extra CA"; the annotation omits None
    )
    with pytest.raises(requests.exceptions.SSLError):
        p.open_shell()
    assert https_endpoint.stats["requests"] == 0
    # The failed handshake did not disturb the listener.
    ok = Protocol(
        https_endpoint.url, transport="ssl", username=USER, password=PASSWORD, server_cert_validation="ignore"
    )
    assert run_one(ok) == b"monitor:hostname"


def test_certificate_authentication_maps_the_subject_to_a_user(https_endpoint: WSManEndpoint, pki: Pki) -> None:
    p = Protocol(
        https_endpoint.url,
        transport="certificate",
        cert_pem=str(pki.client.cert),
        cert_key_pem=str(pki.client.key),
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca.cert),
    )
    shell_id = p.open_shell()
    assert https_endpoint.shells[shell_id].username == USER


def test_certificate_header_without_a_trusted_certificate_is_401(https_endpoint: WSManEndpoint, pki: Pki) -> None:
    header = {"Authorization": "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"}
    response = requests.post(https_endpoint.url, data=b"<x/>", headers=header, verify=str(pki.ca.cert), timeout=5)
    assert response.status_code == 401

    stranger = Protocol(
        https_endpoint.url,
        transport="certificate",
        cert_pem=str(pki.stranger_client.cert),
        cert_key_pem=str(pki.stranger_client.key),
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca.cert),
    )
    # CERT_OPTIONAL still fails the handshake for a certificate from an unknown CA.
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        stranger.open_shell()


def test_certificate_of_an_unknown_user_is_401(pki: Pki) -> None:
    context = pki.server_context(client_ca=pki.ca)
    with WSManEndpoint(echo, users={"someone-else": "pw"}, ssl_context=context) as ep:
        p = Protocol(
            ep.url,
            transport="certificate",
            cert_pem=str(pki.client.cert),
            cert_key_pem=str(pki.client.key),
            server_cert_validation="validate",
            ca_trust_path=str(pki.ca.cert),
        )
        with pytest.raises(InvalidCredentialsError):
            p.open_shell()
