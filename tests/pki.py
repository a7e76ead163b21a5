"""The tests' throw-away PKI: one CA (and an unrelated one), server and client certificates, and bad ones
on purpose, written as PEM files. ``conftest.py`` makes one per session (fixture ``pki``).

Every key is EC P-256: fast to generate, and ``test_web_tls`` negotiates an ECDHE-*ECDSA* cipher suite,
which only an ECDSA server key can serve.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Validity = Literal["valid", "expired", "not_yet_valid"]

SERVER_SANS = ("127.0.0.1", "::1", "localhost")  # every address a test server listens on
CLIENT_SANS = ("client.example", "spiffe://hyperv/prometheus")  # what the web SAN allowlist tests allow


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in memory and as the PEM files ``cert`` and ``key``."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> str:
        return self.cert.read_text()

    @property
    def key_pem(self) -> str:
        return self.key.read_text()


class Pki:
    """Certificates in ``directory``; each ``X`` is ``X.pem`` and ``X.key`` there and ``pki.X`` (or ``pki["X"]``).

    ``ca``/``other_ca``: the test CA and an unrelated one. Issued by ``ca`` unless said otherwise:
    ``server``, ``server2`` (SANs 127.0.0.1, ::1, localhost; two for rotation), ``expired_server``
    (expired yesterday), ``stranger_server`` (by ``other_ca``); ``client`` (CN ``monitor``, the WinRM user
    certificate authentication maps it to; SANs DNS client.example and URI spiffe://hyperv/prometheus),
    ``expired_client``, ``stranger_client`` (the same identity, expired / by ``other_ca``) and
    ``intruder_client`` (SAN intruder.example, trusted but on no allowlist). ``server_cert`` and
    ``client_cert`` issue more, e.g. not yet valid ones.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._issued: dict[str, Issued] = {}
        self.ca = self.authority("ca", "hyperv-exporter test CA")
        self.other_ca = self.authority("other_ca", "someone else's CA")
        self.server = self.server_cert("server")
        self.server2 = self.server_cert("server2")
        self.expired_server = self.server_cert("expired_server", validity="expired")
        self.stranger_server = self.server_cert("stranger_server", ca=self.other_ca)
        self.client = self.client_cert("client", "monitor", CLIENT_SANS)
        self.expired_client = self.client_cert("expired_client", "monitor", CLIENT_SANS, validity="expired")
        self.stranger_client = self.client_cert("stranger_client", "monitor", CLIENT_SANS, ca=self.other_ca)
        self.intruder_client = self.client_cert("intruder_client", "intruder", ["intruder.example"])

    def __getitem__(self, name: str) -> Issued:
        """The certificate issued as ``name``, for tests parametrized by certificate name."""
        return self._issued[name]

    def authority(self, name: str, common_name: str) -> Issued:
        """A new self-signed CA."""
        return self._issue(name, common_name, None, "valid", _ca_extensions())

    def server_cert(self, name: str, *, ca: Issued | None = None, validity: Validity = "valid") -> Issued:
        """A server certificate for 127.0.0.1, ::1 and localhost, issued by ``ca`` (default: the test CA)."""
        extensions = _leaf_extensions(SERVER_SANS, ExtendedKeyUsageOID.SERVER_AUTH)
        return self._issue(name, SERVER_SANS[0], ca or self.ca, validity, extensions)

    def client_cert(
        self,
        name: str,
        common_name: str,
        sans: Sequence[str] = (),
        *,
        ca: Issued | None = None,
        validity: Validity = "valid",
    ) -> Issued:
        """A client certificate; ``sans`` are DNS names, IP addresses or URIs (anything with ``://``)."""
        extensions = _leaf_extensions(sans, ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._issue(name, common_name, ca or self.ca, validity, extensions)

    def server_context(self, server: Issued | None = None, *, client_ca: Issued | None = None) -> ssl.SSLContext:
        """A TLS server context presenting ``server`` (default: ``self.server``); with ``client_ca``, it also
        verifies client certificates from that CA, but optionally, so Basic auth clients keep working."""
        server = server or self.server
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server.cert, server.key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(client_ca.cert))
        return context

    def _issue(
        self,
        name: str,
        common_name: str,
        issuer: Issued | None,
        validity: Validity,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> Issued:
        if name in self._issued:
            raise ValueError(f"a certificate named {name!r} exists already")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        issuer_name, issuer_key = (issuer.certificate.subject, issuer.private_key) if issuer else (subject, key)
        not_before, not_after = _window(validity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            # Python's default client context verifies with X509_STRICT (Python 3.13+), which wants the key identifiers.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
            builder = builder.add_extension(aki, critical=False)
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        issued = Issued(
            certificate=builder.sign(issuer_key, hashes.SHA256()),
            private_key=key,
            cert=self.directory / f"{name}.pem",
            key=self.directory / f"{name}.key",
        )
        issued.cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self._issued[name] = issued
        return issued


def _window(validity: Validity) -> tuple[datetime.datetime, datetime.datetime]:
    """Not-before and not-after. Valid ones start a day back, so no clock skew makes them "not yet valid"."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    if validity == "expired":
        return now - 30 * day, now - day
    if validity == "not_yet_valid":
        return now + day, now + 30 * day
    return now - day, now + 30 * day


def _ca_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return [(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)]


def _leaf_extensions(sans: Sequence[str], usage: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if sans:  # an empty SAN extension is invalid (and X509_STRICT refuses it)
        extensions.append((x509.SubjectAlternativeName([_general_name(san) for san in sans]), False))
    return extensions


def _general_name(san: str) -> x509.GeneralName:
    if "://" in san:
        return x509.UniformResourceIdentifier(san)
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)
