"""HTTPS listener with a test CA: server certificate validation and certificate authentication."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from winrm.exceptions import InvalidCredentialsError
from winrm.protocol import Protocol

from hyperv_exporter.sim.wsman import CommandResult, Shell, WSManEndpoint

USER, PASSWORD = "monitor", "s3cret-pw"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{stem}.key")
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", "hyperv-exporter test CA", None, ca=True)
    _issue(d, "server", "127.0.0.1", ca, server=True)
    _issue(d, "client", USER, ca)
    other_ca = _issue(d, "other-ca", "someone else's CA", None, ca=True)
    _issue(d, "stranger", USER, other_ca)
    return Pki(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        stranger_cert=d / "stranger.pem",
        stranger_key=d / "stranger.key",
    )


def server_context(pki: Pki, *, client_certs: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certs:
        context.verify_mode = ssl.CERT_OPTIONAL  # Basic auth clients keep working without a certificate
        context.load_verify_locations(cafile=str(pki.ca))
    return context


def echo(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
    return CommandResult(stdout=f"{shell.username}:{command}".encode())


@pytest.fixture
def https_endpoint(pki: Pki) -> Iterator[WSManEndpoint]:
    with WSManEndpoint(echo, users={USER: PASSWORD}, ssl_context=server_context(pki, client_certs=True)) as ep:
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
        ca_trust_path=str(pki.ca),
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
        cert_pem=str(pki.client_cert),
        cert_key_pem=str(pki.client_key),
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca),
    )
    shell_id = p.open_shell()
    assert https_endpoint.shells[shell_id].username == USER


def test_certificate_header_without_a_trusted_certificate_is_401(https_endpoint: WSManEndpoint, pki: Pki) -> None:
    header = {"Authorization": "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"}
    response = requests.post(https_endpoint.url, data=b"<x/>", headers=header, verify=str(pki.ca), timeout=5)
    assert response.status_code == 401

    stranger = Protocol(
        https_endpoint.url,
        transport="certificate",
        cert_pem=str(pki.stranger_cert),
        cert_key_pem=str(pki.stranger_key),
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca),
    )
    # CERT_OPTIONAL still fails the handshake for a certificate from an unknown CA.
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        stranger.open_shell()


def test_certificate_of_an_unknown_user_is_401(pki: Pki) -> None:
    context = server_context(pki, client_certs=True)
    with WSManEndpoint(echo, users={"someone-else": "pw"}, ssl_context=context) as ep:
        p = Protocol(
            ep.url,
            transport="certificate",
            cert_pem=str(pki.client_cert),
            cert_key_pem=str(pki.client_key),
            server_cert_validation="validate",
            ca_trust_path=str(pki.ca),
        )
        with pytest.raises(InvalidCredentialsError):
            p.open_shell()
