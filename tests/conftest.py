"""Shared fixtures: tool lookup, the simulated fleet, a running exporter in front of it."""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_exporter.cli import Running, build_parser, start
from hyperv_exporter.sim.host import SIM_WINRM, exporter_config

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("HYPERV_EXPORTER_CI") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from the current output")


def require_tool(name: str) -> str:
    """Path of an external tool (promtool, chronyd, ...). In CI a missing tool fails the test, never skips it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


@pytest.fixture
def demo() -> Iterator[Running]:
    """The exporter in --demo mode on a free loopback port, with its simulated fleet."""
    running = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
    try:
        yield running
    finally:
        running.stop()


class Stack:
    """A simulated fleet plus an exporter configured from a real config file in front of it."""

    def __init__(
        self,
        tmp_path: Path,
        module: str = "",
        extra_modules: str = "",
        flags: tuple[str, ...] = (),
        endpoint_placeholder: bool = False,
    ) -> None:
        """``module`` adds keys to the default module; ``extra_modules`` adds modules (with
        ``endpoint_placeholder``, ``{url}`` in it is the HV-LONDON-01 endpoint)."""
        from hyperv_exporter.sim.fleet import demo_fleet, with_password
        from hyperv_exporter.sim.host import Simulator

        self.password = "S1m-Pa55word-for-tests"
        self.fleet = with_password(demo_fleet(), self.password)
        self.sim = Simulator(self.fleet)
        self.sim.start()
        (tmp_path / "password").write_text(self.password + "\n")
        if endpoint_placeholder:
            extra_modules = extra_modules.format(url=self.sim.url("HV-LONDON-01"))
        self.config_path = tmp_path / "hyperv.yml"
        config = exporter_config(
            self.sim.urls(),
            "password",
            module_keys=f"    cache_ttl: 0s\n    timeout: 10s\n{module}\n",
            winrm=SIM_WINRM + "      max_output_bytes: 8MiB\n",
        )
        self.config_path.write_text(config + extra_modules + "\n", encoding="utf-8")
        args = ["--config.file", str(self.config_path), "--web.listen-address", "127.0.0.1:0", *flags]
        try:
            self.running = start(build_parser().parse_args(args))
        except BaseException:
            self.sim.stop()
            raise
        self.url = self.running.server.urls[0]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8")

    def probe(
        self, target: str, module: str = "default", extra: str = ""
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Probe and return {(sample name, sorted labels): value}."""
        from urllib.parse import quote

        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get(f"/probe?module={quote(module)}&target={quote(target)}{extra}")
        assert status == 200, text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> None:
        self.running.stop()
        self.sim.stop()


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    """The value of the one sample with this name whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


# -- security and resilience fixtures (issue 5) ------------------------------------------------------


class TestPki:
    """A throw-away PKI in ``directory``: a CA, server and client certificates, and bad ones on purpose.

    ``ca``/``server``/``client``: a CA and what it issued (server SAN 127.0.0.1, ::1 and localhost;
    client CN ``monitor``). ``expired``: a server certificate of the same CA that expired yesterday.
    ``other_ca``/``stranger``: another CA and a server certificate it issued. Each name ``X`` has
    ``X.pem`` and (except CAs) ``X.key`` in ``directory``.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ca = self._issue("ca", "hyperv-exporter test CA", None, kind="ca")
        self._issue("server", "127.0.0.1", ca, kind="server")
        self._issue("expired", "127.0.0.1", ca, kind="server", expired=True)
        self._issue("client", "monitor", ca, kind="client")
        other = self._issue("other_ca", "someone else's CA", None, kind="ca")
        self._issue("stranger", "127.0.0.1", other, kind="server")
        self._issue("stranger_client", "monitor", other, kind="client")

    def pem(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def server_context(self, name: str = "server", client_ca: str | None = None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pem(name), self.key(name))
        if client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(self.pem(client_ca)))
        return context

    def _issue(
        self, stem: str, subject: str, issuer: tuple[Any, Any] | None, *, kind: str, expired: bool = False
    ) -> tuple[Any, Any]:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def name(common_name: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
            if expired
            else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))
        )
        issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name(subject), key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=kind == "ca", path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        if kind == "ca":
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )  # fmt: skip
        elif kind == "server":
            sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost")]  # fmt: skip
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            ).add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        self.pem(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if kind != "ca":
            self.key(stem).write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return cert, key


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


class ConfigurableStack(Stack):
    """Like :class:`Stack`, with the WinRM block, module keys, TLS and the simulator's options chosen by the test.

    ``winrm``: the lines of the module's ``winrm:`` block (6-space indent); ``module``: extra module
    keys (4-space indent). ``{password_file}`` in either is replaced by the password file's path.
    """

    DEFAULT_WINRM = """      scheme: http
      transport: basic
      allow_unencrypted: true
      message_encryption: never
      username: monitor
      password_file: {password_file}
      max_output_bytes: 8MiB"""

    def __init__(
        self,
        tmp_path: Path,
        *,
        winrm: str = DEFAULT_WINRM,
        module: str = "    cache_ttl: 0s\n    timeout: 10s",
        flags: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        allow_unencrypted: bool = True,
        password: str = "S1m-Pa55word-for-tests",  # noqa: S107 - the simulated fleet's test password
    ) -> None:
        from hyperv_exporter.sim.fleet import demo_fleet, with_password
        from hyperv_exporter.sim.host import Simulator

        self.password = password
        self.fleet = with_password(demo_fleet(), self.password)
        self.sim = Simulator(self.fleet, ssl_context=ssl_context, allow_unencrypted=allow_unencrypted)
        self.sim.start()
        password_file = tmp_path / "password"
        password_file.write_text(self.password + "\n")
        self.config_path = tmp_path / "hyperv.yml"
        self.config_text = exporter_config(self.sim.urls(), str(password_file), module_keys=module + "\n", winrm=winrm)
        self.config_path.write_text(self.config_text, encoding="utf-8")
        args = ["--config.file", str(self.config_path), "--web.listen-address", "127.0.0.1:0", *flags]
        try:
            self.running = start(build_parser().parse_args(args))
        except BaseException:
            self.sim.stop()
            raise
        self.url = self.running.server.urls[0]
