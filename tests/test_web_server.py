"""Serving over plain HTTP with real sockets: methods, keep-alive, gzip, limits, errors, auth, reload."""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import logging
import os
import socket
import threading
from pathlib import Path

import pytest

from conftest import serving
from hyperv_exporter.web import Request, Response, WebConfigError, WebServer
from hyperv_exporter.web import auth as auth_module
from hyperv_exporter.web import reload as reload_module
from hyperv_exporter.web import server as server_module

CAROL_HASH = "$2y$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu"  # carol123 (toolkit testdata)
DAVE_HASH = "$2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq"  # dave123


class Recorder:
    """A handler that answers with a description of the request and keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler exploded")
        if request.path == "/big":
            return Response(body="metric_line 1\n" * 500)
        if request.path == "/bad-header":
            return Response(headers={"X-Evil": "a\r\nSet-Cookie: x=1"})
        return Response(body=f"{request.method} {request.path} user={request.user} body={len(request.body)}\n")


def connect(server: WebServer, index: int = 0) -> http.client.HTTPConnection:
    host, port = server.addresses[index]
    return http.client.HTTPConnection(host, port, timeout=10)


def fetch(
    server: WebServer,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = connect(server)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def raw_exchange(server: WebServer, data: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes the connection."""
    host, port = server.addresses[0]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- requests and responses ---------------------------------------------------------------------------


def test_get_with_query_and_percent_decoding() -> None:
    handler = Recorder()
    with serving(handler) as server:
        status, headers, body = fetch(server, "/probe%20x?target=h1&module=&target=h2", headers={"X-Thing": "1"})
    assert status == 200
    assert body == b"GET /probe x user=None body=0\n"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == str(len(body))
    request = handler.requests[0]
    assert request.query == {"target": ["h1", "h2"], "module": [""]}
    assert request.headers["x-thing"] == "1"
    assert request.headers["X-THING"] == "1"
    assert request.remote_addr == "127.0.0.1"
    assert request.user is None


def test_head_sends_headers_only() -> None:
    with serving(Recorder()) as server:
        conn = connect(server)
        conn.request("HEAD", "/big")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b""
        assert int(response.headers["Content-Length"]) == len("metric_line 1\n" * 500)
        # The connection is still in sync for the next request.
        conn.request("GET", "/x")
        assert conn.getresponse().read() == b"GET /x user=None body=0\n"
        conn.close()


def test_post_body_reaches_the_handler() -> None:
    handler = Recorder()
    with serving(handler) as server:
        status, _, body = fetch(server, "/-/reload", method="POST", body=b"payload")
    assert status == 200
    assert body == b"POST /-/reload user=None body=7\n"
    assert handler.requests[0].body == b"payload"


def test_keep_alive_reuses_the_connection() -> None:
    with serving(Recorder()) as server:
        conn = connect(server)
        conn.request("GET", "/one")
        assert conn.getresponse().read() == b"GET /one user=None body=0\n"
        first_socket = conn.sock
        conn.request("GET", "/two")
        assert conn.getresponse().read() == b"GET /two user=None body=0\n"
        assert conn.sock is first_socket
        conn.close()


def test_gzip_when_asked_and_large() -> None:
    plain = ("metric_line 1\n" * 500).encode()
    with serving(Recorder()) as server:
        status, headers, body = fetch(server, "/big", headers={"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(body) < len(plain)
        assert gzip.decompress(body) == plain

        _, headers, body = fetch(server, "/big")
        assert "Content-Encoding" not in headers
        assert headers["Vary"] == "Accept-Encoding"
        assert body == plain

        _, headers, body = fetch(server, "/big", headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert body == plain

        _, headers, body = fetch(server, "/small", headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in headers
        assert body == b"GET /small user=None body=0\n"


def test_oversized_body_is_refused_with_413() -> None:
    with serving(Recorder()) as server:
        reply = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in reply


def test_oversized_body_refused_before_100_continue() -> None:
    with serving(Recorder()) as server:
        reply = raw_exchange(
            server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\nExpect: 100-continue\r\n\r\n"
        )
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply


def test_body_of_exactly_one_mib_is_accepted() -> None:
    handler = Recorder()
    with serving(handler) as server:
        status, _, _ = fetch(server, "/", method="POST", body=b"x" * (1 << 20))
    assert status == 200
    assert len(handler.requests[0].body) == 1 << 20


def test_chunked_and_malformed_lengths() -> None:
    with serving(Recorder()) as server:
        chunked = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        bad = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        garbage = raw_exchange(server, b"NONSENSE\r\n\r\n")
        too_long = raw_exchange(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
        too_many_headers = raw_exchange(server, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n")
    assert too_long.startswith(b"HTTP/1.1 414 ")
    assert too_many_headers.startswith(b"HTTP/1.1 431 ")
    assert chunked.startswith(b"HTTP/1.1 411 ")
    assert bad.startswith(b"HTTP/1.1 400 ")
    assert garbage.startswith(b"HTTP/1.1 400 ")


def test_handler_exception_is_a_500_and_one_error_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hyperv_exporter.web")
    with serving(Recorder()) as server:
        caplog.clear()
        status, _, body = fetch(server, "/boom", headers={"Authorization": "Bearer sekrit-token-123"})
        assert (status, body) == (500, b"internal error\n")
        # The connection is still usable.
        assert fetch(server, "/ok")[0] == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "handler exploded" in caplog.text
    assert "sekrit-token-123" not in caplog.text


def test_invalid_response_header_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    with serving(Recorder()) as server:
        status, headers, _ = fetch(server, "/bad-header")
    assert status == 500
    assert "Set-Cookie" not in headers
    assert "invalid response header" in caplog.text


def test_no_request_logging_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hyperv_exporter.web")
    with serving(Recorder()) as server:
        caplog.clear()
        for path in ("/a", "/big", "/missing?x=1"):
            fetch(server, path)
        raw_exchange(server, b"GARBAGE\r\n\r\n")
    assert caplog.records  # debug lines exist...
    assert all(r.levelno == logging.DEBUG for r in caplog.records)  # ...and nothing louder


def test_request_repr_hides_credentials() -> None:
    request = Request(
        method="GET",
        path="/",
        query={},
        headers={"Authorization": "Basic c2VjcmV0", "Accept": "*/*"},
        body=b"",
        remote_addr="127.0.0.1",
    )
    assert "c2VjcmV0" not in repr(request)
    assert request.headers["authorization"] == "Basic c2VjcmV0"  # a plain dict becomes case-insensitive


def test_slow_client_is_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "READ_TIMEOUT", 0.2)
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", 0.2)
    with serving(Recorder()) as server:
        host, port = server.addresses[0]
        with socket.create_connection((host, port), timeout=10) as sock:
            # Slowloris: a request line and then nothing, never finishing the headers.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            assert sock.recv(1024) == b""  # the server hung up instead of waiting forever
        with socket.create_connection((host, port), timeout=10) as sock:
            assert sock.recv(1024) == b""  # an idle connection too
        assert fetch(server, "/")[0] == 200


# --- lifecycle and addresses --------------------------------------------------------------------------


def test_multiple_listen_addresses() -> None:
    addresses = ["127.0.0.1:0", "localhost:0"]
    if socket.has_ipv6:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            addresses.append("[::1]:0")
    with serving(Recorder(), addresses=tuple(addresses)) as server:
        assert len(server.addresses) == len(addresses)
        for i, (host, port) in enumerate(server.addresses):
            assert port != 0
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", f"/{i}")
            assert conn.getresponse().read() == f"GET /{i} user=None body=0\n".encode()
            conn.close()
        assert server.addresses[1][0] == "127.0.0.1"  # localhost binds its IPv4 address, as in Go
        if "[::1]:0" in addresses:
            assert server.urls[2] == f"http://[::1]:{server.addresses[2][1]}"


def test_all_interfaces_address() -> None:
    with serving(Recorder(), addresses=(":0",)) as server:
        host, port = server.addresses[0]
        assert host in ("::", "0.0.0.0")  # dual-stack where IPv6 exists
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()


def test_bind_failure_releases_every_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = WebServer(["127.0.0.1:0", f"127.0.0.1:{busy}"], Recorder())
        with pytest.raises(OSError):
            server.start()
        assert server.addresses == []
        server.stop()


def test_stop_is_idempotent_and_closes_kept_alive_connections() -> None:
    server = WebServer(["127.0.0.1:0"], Recorder())
    server.start()
    host, port = server.addresses[0]
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    server.stop()
    server.stop()
    assert sock.recv(1024) == b""
    sock.close()
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass
    with pytest.raises(RuntimeError):
        server.start()


# --- web config: headers, basic auth, rate limit, reload ----------------------------------------------


def write(path: Path, text: str, bump: int = 0) -> Path:
    path.write_text(text)
    if bump:
        # Writes within one clock tick can share an mtime; move it so the change is always seen.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))
    return path


def test_configured_headers_are_added(tmp_path: Path) -> None:
    config = Path(__file__).parent / "fixtures" / "web" / "toolkit-headers.yml"
    with serving(Recorder(), config) as server:
        _, headers, _ = fetch(server)
    assert headers["X-Frame-Options"] == "deny"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-XSS-Protection"] == "1"
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["Content-Security-Policy"] == "default-src 'self' *.test.example.net"


def test_basic_auth(tmp_path: Path) -> None:
    handler = Recorder()
    config = write(tmp_path / "web.yml", f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n")
    with serving(handler, config) as server:
        status, headers, _ = fetch(server, "/metrics")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="test"'
        assert fetch(server, "/metrics", headers=basic("carol", "wrong"))[0] == 401
        assert fetch(server, "/metrics", headers=basic("mallory", "carol123"))[0] == 401
        assert fetch(server, "/metrics", headers={"Authorization": "Basic !!!"})[0] == 401
        status, _, body = fetch(server, "/metrics", headers=basic("carol", "carol123"))
        assert status == 200
        assert body == b"GET /metrics user=carol body=0\n"
    assert [r.user for r in handler.requests] == ["carol"]  # the handler never saw the refused ones


def test_unknown_user_costs_one_dummy_bcrypt_and_results_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real_checkpw = auth_module.bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(auth_module.bcrypt, "checkpw", counting_checkpw)
    config = write(tmp_path / "web.yml", f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n")
    with serving(Recorder(), config) as server:
        assert fetch(server, headers=basic("mallory", "guess"))[0] == 401
        assert calls == [auth_module.DUMMY_HASH.encode()]  # as much work as for a real user
        assert fetch(server, headers=basic("carol", "carol123"))[0] == 200
        assert calls[1:] == [CAROL_HASH.encode()]
        for _ in range(3):  # every scrape after the first comes from the cache
            assert fetch(server, headers=basic("carol", "carol123"))[0] == 200
            assert fetch(server, headers=basic("mallory", "guess"))[0] == 401
        assert len(calls) == 2
        # The dummy hash's password does not log anyone in.
        assert fetch(server, headers=basic("mallory", "fakepassword"))[0] == 401


def test_unauthenticated_body_is_not_read(tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml", f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n")
    with serving(Recorder(), config) as server:
        reply = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert reply.startswith(b"HTTP/1.1 401 ")
    assert b"Connection: close" in reply


def test_rate_limit(tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml", "rate_limit:\n  interval: 1h\n  burst: 2\n")
    with serving(Recorder(), config) as server:
        assert [fetch(server)[0] for _ in range(3)] == [200, 200, 429]


def test_reload_users_and_keep_last_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reload_module, "CHECK_INTERVAL", 0.0)
    config = write(tmp_path / "web.yml", f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n")
    with serving(Recorder(), config) as server:
        assert fetch(server, headers=basic("carol", "carol123"))[0] == 200

        write(config, f"basic_auth_users:\n  dave: '{DAVE_HASH}'\n", bump=10)
        assert fetch(server, headers=basic("carol", "carol123"))[0] == 401
        assert fetch(server, headers=basic("dave", "dave123"))[0] == 200

        caplog.clear()
        write(config, "basic_auth_users:\n  dave: not-a-hash\n", bump=20)
        for _ in range(3):
            assert fetch(server, headers=basic("dave", "dave123"))[0] == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1  # logged once, not per request
        assert "basic_auth_users.dave" in errors[0].getMessage()

        write(config, f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n", bump=30)  # fixed
        assert fetch(server, headers=basic("carol", "carol123"))[0] == 200
        assert fetch(server, headers=basic("dave", "dave123"))[0] == 401


def test_invalid_config_fails_start(tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml", "http_server_config:\n  http2: true\n")
    server = WebServer(["127.0.0.1:0"], Recorder(), web_config_file=str(config))
    with pytest.raises(WebConfigError, match="HTTP/2 not supported"):
        server.start()


def test_concurrent_requests() -> None:
    gate = threading.Barrier(4, timeout=10)

    def handler(request: Request) -> Response:
        gate.wait()  # only returns once four requests are being handled at the same time
        return Response(body="ok")

    with serving(handler) as server:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(fetch(server)[0])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert results == [200] * 4
