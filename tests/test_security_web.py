"""``--web.config.file`` end to end through the real command lines of the exporter and the guest agent:
TLS with client-certificate verification, bcrypt basic auth and extra headers on every endpoint."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from hyperv_exporter.host.cli import build_parser, start
from hyperv_exporter.sim.fleet import demo_fleet, with_password
from hyperv_exporter.sim.host import Simulator
from hyperv_exporter.web import auth
from pki import Pki
from programs import ServedProgram

pytestmark = pytest.mark.slow

USER, PASSWORD = "prometheus", "Scrape-Pa55word"
WINRM_PASSWORD = "WinRM-Pa55word-behind-TLS"
GUEST_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "deny",
    "Strict-Transport-Security": "max-age=31536000",
    "Content-Security-Policy": "default-src 'self'",
}


def _web_config(directory: Path, pki: Pki, *, tls: bool = True) -> Path:
    for name in ("server", "ca"):
        shutil.copy(pki[name].cert, directory / f"{name}.pem")
    shutil.copy(pki.server.key, directory / "server.key")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    tls_block = (
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    )
    headers = "".join(f'    {k}: "{v}"\n' for k, v in HEADERS.items())
    path = directory / "web.yml"
    path.write_text(
        (tls_block if tls else "")
        + f"http_server_config:\n  headers:\n{headers}basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    return path


class Served(ServedProgram):
    """A program started from its command line, serving HTTPS on ``url``."""

    def __init__(self, argv: list[str], directory: Path, pki: Pki) -> None:
        super().__init__(argv, directory, f"{argv[2]}.log")
        self.pki = pki
        self.url = f"https://127.0.0.1:{self.port}"

    def request(self, path: str, *, method: str = "GET", cert: str | None = "client",
                auth: tuple[str, str] | None = (USER, PASSWORD)) -> requests.Response:  # fmt: skip
        client = (str(self.pki[cert].cert), str(self.pki[cert].key)) if cert else None
        return requests.request(
            method, self.url + path, verify=str(self.pki.ca.cert), cert=client, auth=auth, timeout=30
        )


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("exporter")
    sim = Simulator(with_password(demo_fleet(), WINRM_PASSWORD))
    sim.start()
    (directory / "password").write_text(WINRM_PASSWORD)
    endpoints = "".join(f"      {name}: {url}\n" for name, url in sim.urls().items())
    (directory / "hyperv.yml").write_text(
        f"""modules:
  default:
    targets: [{", ".join(sim.urls())}]
    endpoints:
{endpoints}    discovery:
      networks: [10.0.0.0/8]
    winrm: {{scheme: http, transport: basic, allow_unencrypted: true, message_encryption: never,
             username: monitor, password_file: password}}
"""
    )
    web = _web_config(directory, pki)
    served = Served(
        [sys.executable, "-m", "hyperv_exporter", "--config.file", "hyperv.yml", "--web.config.file", str(web)],
        directory,
        pki,
    )
    try:
        yield served
    finally:
        served.stop()
        sim.stop()


@pytest.fixture(scope="module")
def guest_agent(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("guest")
    web = _web_config(directory, pki)
    served = Served(
        [sys.executable, "-m", "hyperv_exporter.guest", "--root", str(GUEST_ROOT), "--no-collector.ntp",
         "--web.config.file", str(web)],
        directory,
        pki,
    )  # fmt: skip
    try:
        yield served
    finally:
        served.stop()


EXPORTER_ENDPOINTS = [
    ("GET", "/", 200),
    ("GET", "/probe?module=default&target=HV-LONDON-01", 200),
    ("GET", "/probe?module=default&target=HV-LONDON-01&debug=true", 200),
    ("GET", "/metrics", 200),
    ("GET", "/config", 200),
    ("GET", "/sd", 200),
    ("GET", "/-/healthy", 200),
    ("GET", "/-/ready", 200),
    ("POST", "/-/reload", 200),
    ("GET", "/no-such-page", 404),
]
GUEST_ENDPOINTS = [("GET", "/", 200), ("GET", "/metrics", 200), ("GET", "/no-such-page", 404)]


def _check_endpoint(served: Served, method: str, path: str, status: int) -> None:
    ok = served.request(path, method=method)
    assert ok.status_code == status, ok.text
    for name, value in HEADERS.items():
        assert ok.headers.get(name) == value, name

    for credentials in (None, (USER, "wrong"), ("nobody", PASSWORD), (USER.upper(), PASSWORD), (USER, "")):
        denied = served.request(path, method=method, auth=credentials)
        assert denied.status_code == 401, (path, credentials)
        assert denied.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert denied.headers.get("X-Content-Type-Options") == "nosniff"
        assert "hyperv" not in denied.text.lower() or denied.text == "Unauthorized\n"

    for cert in (None, "stranger_client"):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            served.request(path, method=method, cert=cert)


@pytest.mark.parametrize(("method", "path", "status"), EXPORTER_ENDPOINTS)
def test_exporter_endpoints_need_a_client_certificate_and_a_password(
    exporter: Served, method: str, path: str, status: int
) -> None:
    _check_endpoint(exporter, method, path, status)


@pytest.mark.parametrize(("method", "path", "status"), GUEST_ENDPOINTS)
def test_guest_agent_endpoints_need_a_client_certificate_and_a_password(
    guest_agent: Served, method: str, path: str, status: int
) -> None:
    _check_endpoint(guest_agent, method, path, status)


@pytest.mark.parametrize("name", ["exporter", "guest_agent"])
def test_plain_http_is_refused(name: str, request: pytest.FixtureRequest) -> None:
    served: Served = request.getfixturevalue(name)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{served.port}/metrics", timeout=10)


def test_the_winrm_password_stays_behind_the_exporter(exporter: Served) -> None:
    for path in ("/", "/config", "/probe?module=default&target=HV-LONDON-01&debug=true", "/metrics"):
        assert WINRM_PASSWORD not in exporter.request(path).text
    assert WINRM_PASSWORD not in exporter.log.read_text()


# -- timing safety: count bcrypt, do not time it -----------------------------------------------------


@pytest.fixture
def counted_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    original: Callable[..., Any] = auth.bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bool(original(password, hashed))

    monkeypatch.setattr(auth.bcrypt, "checkpw", checkpw)
    return calls


def test_unknown_users_cost_one_bcrypt_check_like_known_ones(
    tmp_path: Path, pki: Pki, counted_bcrypt: list[bytes]
) -> None:
    web = _web_config(tmp_path, pki, tls=False)
    (tmp_path / "hyperv.yml").write_text(
        "modules:\n  default:\n    targets: [h]\n    winrm: {username: u, password_file: pw}\n"
    )
    (tmp_path / "pw").write_text("x-password")
    args = ["--config.file", str(tmp_path / "hyperv.yml"), "--web.listen-address", "127.0.0.1:0",
            "--web.config.file", str(web)]  # fmt: skip
    running = start(build_parser().parse_args(args))
    try:
        url = running.server.urls[0] + "/metrics"

        def attempt(user: str, password: str) -> int:
            return requests.get(url, auth=(user, password), timeout=10).status_code

        costs = {}
        for label, user, password in [
            ("known user, wrong password", USER, "wrong-1"),
            ("unknown user", "mallory", "wrong-2"),
            ("unknown user, other password", "eve", PASSWORD),
            ("known user, right password", USER, PASSWORD),
        ]:
            before = len(counted_bcrypt)
            attempt(user, password)
            costs[label] = len(counted_bcrypt) - before
        assert set(costs.values()) == {1}, costs
        # The decoy hash is what an unknown user is checked against.
        assert counted_bcrypt[1].decode() == auth.DUMMY_HASH
        before = len(counted_bcrypt)
        assert attempt(USER, PASSWORD) == 200 and attempt("mallory", "wrong-2") == 401
        assert len(counted_bcrypt) == before  # repeated credentials are answered from the cache
    finally:
        running.stop()
