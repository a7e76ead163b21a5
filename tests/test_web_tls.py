"""TLS: loading certificates, serving HTTPS, client certificates, the SAN allowlist, rotation.

Certificates come from the session's test CA (fixture ``pki``, see ``tests/pki.py``): server certificates
for 127.0.0.1/localhost, client certificates (good, other SAN, expired, from an untrusted CA).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import fetch, serving
from hyperv_exporter.web import Request, Response, WebConfigError, WebServer, load_web_config
from hyperv_exporter.web import reload as reload_module
from hyperv_exporter.web.config import CIPHER_SUITES, TLSServerConfig, read_web_config
from hyperv_exporter.web.tls import build_ssl_context, peer_sans, san_allowed
from pki import Issued, Pki

FIXTURES = Path(__file__).parent / "fixtures" / "web"


def echo(request: Request) -> Response:
    return Response(body=f"{request.method} {request.path} user={request.user}\n")


def client_context(
    pki: Pki, client: Issued | None = None, *, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def assert_refused(server: WebServer, ctx: ssl.SSLContext) -> None:
    # With TLS 1.3 the client finishes its side of the handshake before the server checks the client
    # certificate, so the refusal shows up on connect or on the first read.
    with pytest.raises((OSError, http.client.HTTPException)):
        fetch(server, context=ctx)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tls_config(tmp_path: Path, pki: Pki, extra: str = "") -> Path:
    return write_config(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n{extra}",
    )


# --- serving ------------------------------------------------------------------------------------------


def test_https_get(tmp_path: Path, pki: Pki) -> None:
    with serving(echo, tls_config(tmp_path, pki)) as server:
        assert server.urls[0].startswith("https://127.0.0.1:")
        assert fetch(server, "/metrics", client_context(pki)) == (200, b"GET /metrics user=None\n")


def test_plain_http_to_tls_port_fails_cleanly(tmp_path: Path, pki: Pki) -> None:
    with serving(echo, tls_config(tmp_path, pki)) as server:
        host, port = server.addresses[0]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/")
            conn.getresponse().read()
        conn.close()
        assert fetch(server, context=client_context(pki))[0] == 200  # the server is still fine


def test_min_version_tls13_refuses_tls12_clients(tmp_path: Path, pki: Pki) -> None:
    with serving(echo, tls_config(tmp_path, pki, "  min_version: TLS13\n")) as server:
        assert fetch(server, context=client_context(pki))[0] == 200
        assert_refused(server, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))


def test_cipher_suites_and_curve_apply(tmp_path: Path, pki: Pki) -> None:
    extra = (
        "  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
        "  curve_preferences: [CurveP384]\n"
    )
    with serving(echo, tls_config(tmp_path, pki, extra)) as server:
        host, port = server.addresses[0]
        ctx = client_context(pki)
        with ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host) as tls:
            cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0] == CIPHER_SUITES["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]
        assert cipher[1] == "TLSv1.2"


# --- client certificates ------------------------------------------------------------------------------


def mtls_config(tmp_path: Path, pki: Pki, auth_type: str = "RequireAndVerifyClientCert", extra: str = "") -> Path:
    return tls_config(tmp_path, pki, f"  client_ca_file: {pki.ca.cert}\n  client_auth_type: {auth_type}\n{extra}")


def test_client_cert_required_and_verified(tmp_path: Path, pki: Pki) -> None:
    with serving(echo, mtls_config(tmp_path, pki)) as server:
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200
        assert_refused(server, client_context(pki))  # no certificate
        assert_refused(server, client_context(pki, pki.stranger_client))
        assert_refused(server, client_context(pki, pki.expired_client))
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200  # still serving


def test_client_cert_verified_if_given(tmp_path: Path, pki: Pki) -> None:
    with serving(echo, mtls_config(tmp_path, pki, "VerifyClientCertIfGiven")) as server:
        assert fetch(server, context=client_context(pki))[0] == 200
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200
        assert_refused(server, client_context(pki, pki.stranger_client))


@pytest.mark.parametrize("allowed", ["client.example", "spiffe://hyperv/prometheus"])
def test_san_allowlist(tmp_path: Path, pki: Pki, allowed: str) -> None:
    extra = f"  client_allowed_sans: ['{allowed}', 'someone.else']\n"
    with serving(echo, mtls_config(tmp_path, pki, extra=extra)) as server:
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200
        status, body = fetch(server, context=client_context(pki, pki.intruder_client))
        assert status == 403
        assert b"client certificate not allowed" in body


def test_san_matching_normalises_ip_addresses() -> None:
    peer = {"subjectAltName": (("DNS", "a.example"), ("IP Address", "2001:DB8:0:0:0:0:0:1\n"), ("email", "x@y"))}
    assert peer_sans(peer) == ["a.example", "2001:db8::1", "x@y"]
    assert san_allowed(peer, ["2001:db8::1"])
    assert san_allowed(peer, ["x@y"])
    assert not san_allowed(peer, ["b.example"])
    assert not san_allowed(None, ["a.example"])
    assert not san_allowed({}, ["a.example"])


# --- loading and validation ---------------------------------------------------------------------------


def test_toolkit_sample_loads_with_its_certificates(tmp_path: Path, pki: Pki) -> None:
    shutil.copy(FIXTURES / "toolkit-web-config.yml", tmp_path / "web-config.yml")
    shutil.copy(pki.server.cert, tmp_path / "server.crt")
    shutil.copy(pki.server.key, tmp_path / "server.key")
    config = load_web_config(str(tmp_path / "web-config.yml"))
    assert config.tls is not None
    assert config.users == ("alice", "bob")


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "certs").mkdir(parents=True)
    shutil.copy(pki.server.cert, conf_dir / "certs" / "server.crt")
    shutil.copy(pki.server.key, conf_dir / "certs" / "server.key")
    shutil.copy(pki.ca.cert, conf_dir / "ca.crt")
    config = write_config(
        conf_dir / "web.yml",
        "tls_server_config:\n  cert_file: certs/server.crt\n  key_file: certs/server.key\n"
        "  client_ca_file: ./ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with serving(echo, Path(os.path.relpath(config, elsewhere))) as server:
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200


def test_missing_key_file_is_named(tmp_path: Path, pki: Pki) -> None:
    config = write_config(
        tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: nope.key\n"
    )
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(config))
    message = str(info.value)
    assert str(config) in message
    assert "tls_server_config.key_file" in message
    assert str(tmp_path / "nope.key") in message


def test_start_raises_web_config_error(tmp_path: Path, pki: Pki) -> None:
    config = write_config(tmp_path / "web.yml", "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n")
    server = WebServer(["127.0.0.1:0"], echo, web_config_file=str(config))
    with pytest.raises(WebConfigError, match="cert_file"):
        server.start()
    assert server.addresses == []
    server.stop()


def test_mismatched_key(tmp_path: Path, pki: Pki) -> None:
    config = write_config(
        tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.client.key}\n"
    )
    with pytest.raises(
        WebConfigError, match=r"tls_server_config\.cert_file: cannot load cert_file .*KEY_VALUES_MISMATCH"
    ):
        load_web_config(str(config))


def test_bad_client_ca(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    config = tls_config(tmp_path, pki, f"  client_ca_file: {garbage}\n  client_auth_type: RequireAndVerifyClientCert\n")
    with pytest.raises(WebConfigError, match=r"client_ca_file: .* contains no PEM certificate"):
        load_web_config(str(config))


def test_inline_cert_key_and_client_ca(tmp_path: Path, pki: Pki) -> None:
    def block(pem: str) -> str:
        return "|\n" + "".join(f"    {line}\n" for line in pem.splitlines())

    config = write_config(
        tmp_path / "web.yml",
        "tls_server_config:\n"
        f"  cert: {block(pki.server.cert_pem)}"
        f"  key: {block(pki.server.key_pem)}"
        f"  client_ca: {block(pki.ca.cert.read_text())}"
        "  client_auth_type: RequireAndVerifyClientCert\n",
    )
    with serving(echo, config) as server:
        assert fetch(server, context=client_context(pki, pki.client))[0] == 200
        assert_refused(server, client_context(pki))


def test_inline_key_never_appears_in_errors(tmp_path: Path, pki: Pki) -> None:
    # The key of another certificate: well-formed, but the wrong one.
    wrong_key = pki.client.key_pem
    secret_line = wrong_key.splitlines()[1]
    config = write_config(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key: |\n"
        + "".join(f"    {line}\n" for line in wrong_key.splitlines()),
    )
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(config))
    assert "the inline key" in str(info.value)
    assert secret_line not in str(info.value)
    assert secret_line not in repr(read_web_config(str(config)))


def test_encrypted_key_is_refused_without_prompting(tmp_path: Path, pki: Pki) -> None:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    config = write_config(
        tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {encrypted}\n"
    )
    with pytest.raises(WebConfigError, match="encrypted private keys are not supported"):
        load_web_config(str(config))


def test_every_go_cipher_suite_maps_to_openssl(pki: Pki) -> None:
    for name, openssl_name in CIPHER_SUITES.items():
        if openssl_name is None:
            continue
        cfg = TLSServerConfig(cert_file=str(pki.server.cert), key_file=str(pki.server.key), cipher_suites=(name,))
        ctx = build_ssl_context(cfg, "test.yml")
        assert openssl_name in {c["name"] for c in ctx.get_ciphers()}, name


# --- reload -------------------------------------------------------------------------------------------


def _bump_mtime(path: Path, seconds: int) -> None:
    # Writes within one clock tick can share an mtime; set it explicitly so a change is always seen.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def test_certificate_rotation_without_restart(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload_module, "CHECK_INTERVAL", 0.0)
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server.cert, live / "tls.crt")
    shutil.copy(pki.server.key, live / "tls.key")
    config = write_config(
        tmp_path / "web.yml", "tls_server_config:\n  cert_file: live/tls.crt\n  key_file: live/tls.key\n"
    )

    def served_cert(server: WebServer) -> bytes:
        host, port = server.addresses[0]
        raw = socket.create_connection((host, port), timeout=10)
        with client_context(pki).wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    def der(pair: Issued) -> bytes:
        return x509.load_pem_x509_certificate(pair.cert.read_bytes()).public_bytes(serialization.Encoding.DER)

    with serving(echo, config) as server:
        assert served_cert(server) == der(pki.server)
        shutil.copy(pki.server2.cert, live / "tls.crt")
        shutil.copy(pki.server2.key, live / "tls.key")
        _bump_mtime(live / "tls.crt", 10)
        _bump_mtime(live / "tls.key", 10)
        assert served_cert(server) == der(pki.server2)
        # Half a rotation (new cert, old key) does not load: the last good pair keeps being served.
        shutil.copy(pki.server.cert, live / "tls.crt")
        _bump_mtime(live / "tls.crt", 20)
        assert served_cert(server) == der(pki.server2)


def test_turning_tls_off_needs_a_restart(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reload_module, "CHECK_INTERVAL", 0.0)
    config = tls_config(tmp_path, pki)
    with serving(echo, config) as server:
        config.write_text("basic_auth_users: {}\n")
        _bump_mtime(config, 10)
        assert fetch(server, context=client_context(pki))[0] == 200
    assert "turning TLS off needs a restart" in caplog.text
