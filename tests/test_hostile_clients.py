"""Hostile clients of the HTTP front of both programs (issue 13): reloads that would weaken auth,
floods of idle connections, control bytes meant for the log, odd targets and module names, and a
hypothesis fuzz of request lines, headers and queries."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fetch, serving
from hyperv_exporter import logutil
from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.web import Request, Response, WebServer
from programs import ServedProgram

USER, PASSWORD = "prometheus", "Web-Pa55word-for-hostile-tests"
GUEST_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"
# Every character a log line must never carry raw (Cc, plus the invisible format controls).
CONTROLS = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"] + [
    "\u061c", "\u200b", "\u200e", "\u200f", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff",
]  # fmt: skip
RAW_CONTROL = re.compile("[" + "".join(re.escape(c) for c in CONTROLS) + "]")


# -- every log field escapes every control character ------------------------------------------------


def _format(fmt: str, message: str, **fields: object) -> str:
    record = logging.LogRecord("hostile", logging.WARNING, __file__, 1, "%s", (message,), None)
    record.kv = fields
    formatter = logutil.LogfmtFormatter() if fmt == "logfmt" else logutil.JSONFormatter()
    return formatter.format(record)


@pytest.mark.parametrize("fmt", logutil.FORMATS)
def test_every_control_character_is_escaped_in_every_field(fmt: str) -> None:
    text = "a" + "".join(CONTROLS) + 'b "q" \\ z'
    line = _format(fmt, text, target=text, **{"odd key\x1b": text})
    assert not RAW_CONTROL.search(line), repr(line)
    assert "\n" not in line
    # And nothing is lost: the escapes decode back to the original text.
    if fmt == "json":
        decoded = json.loads(line)
        assert decoded["msg"] == decoded["target"] == text
    else:
        value = re.search(r' msg=("(?:[^"\\]|\\.)*")', line)
        assert value is not None and json.loads(value.group(1)) == text  # logfmt escapes are JSON's


@pytest.mark.parametrize("fmt", logutil.FORMATS)
def test_control_bytes_in_a_request_line_reach_the_log_escaped(fmt: str) -> None:
    stream = io.StringIO()
    logutil.setup_logging("debug", fmt, stream)
    try:
        with serving(lambda r: Response(body="ok\n")) as server:
            raw = b"GET /\x1b[2J\x1b]0;pwned\x07\x9b31m HTTP/1.1\r\nHost: x\r\n\r\n"
            reply = raw_exchange(server, raw)
    finally:
        logging.getLogger().handlers.clear()
    assert reply.startswith(b"HTTP/1.1 ")
    log = stream.getvalue()
    assert "2J" in log  # the request was logged, escaped
    assert not RAW_CONTROL.search(log.replace("\n", "")), repr(log)


# -- a cap on connections, /-/healthy still answered ---------------------------------------------------


def test_idle_connections_are_capped_and_health_is_still_answered() -> None:
    with serving(lambda r: Response(body="Healthy\n"), max_connections=8) as server:
        idle = [socket.create_connection(server.addresses[0], timeout=10) for _ in range(60)]
        try:
            for _ in range(5):
                assert fetch(server, "/-/healthy")[0] == 200
            state = server._state
            assert state is not None
            assert state.active <= 8 + 1  # one over while a cut connection's thread ends
            threads = [t for t in threading.enumerate() if "process_request_thread" in t.name]
            assert len(threads) <= 8 + 2
        finally:
            for sock in idle:
                sock.close()


def test_connections_being_answered_are_never_cut_and_the_overflow_gets_503() -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        if request.path == "/slow":
            release.wait(20)
        return Response(body="done\n")

    with serving(slow, max_connections=3) as server:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(fetch(server, "/slow")[0])) for _ in range(3)]
        for thread in threads:
            thread.start()
        state = server._state
        assert state is not None
        deadline = time.monotonic() + 10
        while (state.active < 3 or state.waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert raw_exchange(server, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503 ")
        release.set()
        for thread in threads:
            thread.join(20)
    assert results == [200, 200, 200]


def test_clients_slowed_down_for_failing_logins_make_room_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyperv_exporter.web import auth as auth_module

    monkeypatch.setattr(auth_module.FailureThrottle, "failed", lambda self, client, now=None: 30.0)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    server = WebServer(["127.0.0.1:0"], lambda r: Response(body="Healthy\n"), name="test",
                       web_config_file=str(tmp_path / "web.yml"), max_connections=2)  # fmt: skip
    server.start()
    wrong = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    right = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    flooders = [socket.create_connection(server.addresses[0], timeout=10) for _ in range(2)]
    try:
        for sock in flooders:  # both slots now sleep in the throttle
            sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\n\r\n".encode())
        state = server._state
        assert state is not None
        deadline = time.monotonic() + 10
        while len(state.waiting) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = raw_exchange(server, f"GET /-/healthy HTTP/1.1\r\nHost: x\r\nAuthorization: {right}\r\n"
                                     "Connection: close\r\n\r\n".encode())  # fmt: skip
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        for sock in flooders:
            sock.close()
        server.stop()


def test_max_connections_flag_in_both_programs() -> None:
    from hyperv_exporter.guest.cli import build_parser as guest_parser

    assert build_parser().parse_args([]).web_max_connections == 1024
    assert guest_parser().parse_args(["--web.max-connections", "16"]).web_max_connections == 16
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--web.max-connections", "0"])


# -- input hygiene ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("hygiene")
    (directory / "password").write_text("unused-password")
    config = directory / "hyperv.yml"
    config.write_text(
        # The name maps to a loopback URL where nothing listens: a probe that gets through never leaves the machine.
        "modules:\n  default:\n    targets: [HV-NORD-07, '127.0.0.1:1']\n    timeout: 2s\n"
        "    endpoints: {HV-NORD-07: 'http://127.0.0.1:1/wsman'}\n"
        "    winrm: {scheme: http, port: 1, transport: basic, allow_unencrypted: true, message_encryption: never,\n"
        "            username: monitor, password_file: password}\n"
    )
    running = start(build_parser().parse_args(["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("target", ["%20HV-NORD-07", "HV-NORD-07%20", "%09HV-NORD-07", "HV-NORD-07%0A"])
def test_a_target_with_surrounding_whitespace_is_refused(exporter: Running, target: str) -> None:
    before = len(exporter.prober.history)
    status, body = _get(exporter, f"/probe?module=default&target={target}")
    assert status == 400 and "whitespace" in body
    assert len(exporter.prober.history) == before  # never probed


def test_module_names_are_cut_in_the_400_body_like_targets(exporter: Running) -> None:
    status, body = _get(exporter, "/probe?module=" + "m" * 10_000 + "&target=HV-NORD-07")
    assert status == 400 and len(body) < 200 and "m" * 80 in body and "m" * 81 not in body
    status, body = _get(exporter, "/probe?module=default&target=" + "h" * 10_000)
    assert status == 400 and len(body) < 200
    status, body = _get(exporter, "/probe?module=%20default&target=HV-NORD-07")
    assert status == 400 and "whitespace" in body


# -- fuzz of the HTTP front --------------------------------------------------------------------------

_TOKEN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1, max_size=12)
_ANY_BYTES = st.binary(max_size=60)
_PATHS = st.sampled_from(["/", "/probe", "/metrics", "/-/healthy", "/-/reload", "/sd", "/config", "/x"])


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"G\x00T", b""]) | _ANY_BYTES)
    query = draw(
        st.lists(
            st.tuples(st.sampled_from(["target", "module", "debug", "x"]) | st.text(max_size=8), st.text(max_size=30)),
            max_size=4,
        )
    )
    from urllib.parse import quote

    path = draw(_PATHS).encode() + (b"?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query).encode() if query else b"")
    path = draw(st.sampled_from([path, path + draw(_ANY_BYTES)]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1x", b""]))
    headers = draw(st.lists(st.tuples(_TOKEN, st.text(max_size=40)), max_size=5))
    raw_headers = b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogatepass") for k, v in headers)
    extra = draw(st.sampled_from([b"", b"Content-Length: 3\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n"]))
    return method + b" " + path + b" " + version + b"\r\nHost: x\r\n" + raw_headers + extra + b"\r\n" + draw(_ANY_BYTES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=_requests())
def test_fuzzed_requests_get_an_http_answer_never_a_500_and_never_raw_bytes_in_the_log(
    exporter: Running, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host, port = exporter.server.addresses[0]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(raw)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        with contextlib.suppress(TimeoutError, OSError):
            while chunk := sock.recv(65536):
                reply += chunk
    if reply:
        assert re.match(rb"HTTP/1\.[01] [1-5]\d\d ", reply), reply[:100]
        assert not reply.startswith((b"HTTP/1.1 500", b"HTTP/1.0 500")), reply[:300]
    for record in caplog.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        for fmt in (logutil.LogfmtFormatter(), logutil.JSONFormatter()):
            assert not RAW_CONTROL.search(fmt.format(record)), record.getMessage()
    assert _get(exporter, "/-/healthy")[0] == 200


# -- a reload never weakens security silently, in both programs -----------------------------------------


class Program(ServedProgram):
    def __init__(self, argv: list[str], directory: Path) -> None:
        super().__init__(argv, directory, "program.log")

    def get(self, path: str, auth: bool = True) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            conn.request("GET", path, headers={"Authorization": f"Basic {token}"} if auth else {})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


PROGRAMS = {
    "exporter": ([sys.executable, "-m", "hyperv_exporter", "--demo"], "hyperv_exporter"),
    "guest_agent": (
        [sys.executable, "-m", "hyperv_exporter.guest", "--root", str(GUEST_ROOT), "--no-collector.ntp"],
        "hyperv_guest",
    ),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("weaker", ["", "# auth off for debugging\n", "basic_auth_users:\n"])
def test_a_reload_that_removes_auth_is_refused(tmp_path: Path, program: str, weaker: str) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    argv, prefix = PROGRAMS[program]
    served = Program([*argv, "--web.config.file", str(web)], tmp_path)
    try:
        assert served.get("/metrics", auth=False)[0] == 401
        assert f"{prefix}_web_config_last_reload_successful 1.0" in served.get("/metrics")[1]
        web.write_text(weaker)
        stat = web.stat()
        os.utime(web, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
        gauge = f"{prefix}_web_config_last_reload_successful 0.0"
        deadline = time.monotonic() + 20
        while gauge not in served.get("/metrics")[1]:  # the file is looked at once a second
            assert time.monotonic() < deadline, "the weakening reload was not refused"
            time.sleep(0.2)
        assert served.get("/metrics", auth=False)[0] == 401
        assert served.get("/", auth=False)[0] == 401
    finally:
        served.stop()
    log = served.log.read_text()
    assert "level=error" in log and "keeping the last good one" in log
    assert "Reloaded web config" not in log


# -- helpers ----------------------------------------------------------------------------------------


def raw_exchange(server: WebServer, data: bytes) -> bytes:
    with socket.create_connection(server.addresses[0], timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def _get(running: Running, path: str) -> tuple[int, str]:
    host, port = running.server.addresses[0]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()
