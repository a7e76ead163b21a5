"""No password anywhere: a realistic session (demo, a stack with faults and several transports, the real
programs as processes) is searched for the test passwords, and none is found.

Searched: /probe (with debug=true), the landing page, /config, /metrics, error answers, every log
record at debug level in logfmt and json (formatted output and raw records), exception messages,
and the ``ps``-visible command lines of the exporter, the simulator and the guest agent.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ConfigurableStack
from hyperv_exporter import logutil
from hyperv_exporter.host.cli import Running
from hyperv_exporter.sim.wsman import Fault

pytestmark = pytest.mark.slow

PASSWORD = "Sekr1t-WinRM-pa55word"
ROTATED = "R0tated-On-The-Host-only"
GUEST_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"


def variants(password: str, user: str = "monitor") -> list[str]:
    """The password as it could leak: plain, in a Basic header, URL-encoded, repr-escaped."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [password, basic, urllib.parse.quote(password), repr(password)[1:-1], password.encode().hex()]


def assert_clean(where: str, text: str, passwords: list[str]) -> None:
    for password in passwords:
        for form in variants(password):
            assert form not in text, f"{where} contains a password ({form[:4]}...)"


class LogCapture:
    """Every log record at debug level, formatted both ways, plus the raw records."""

    def __init__(self) -> None:
        self.logfmt, self.json = io.StringIO(), io.StringIO()
        self.records: list[logging.LogRecord] = []
        root = logging.getLogger()
        self._old_level = root.level
        self._handlers: list[logging.Handler] = []
        for stream, formatter in ((self.logfmt, logutil.LogfmtFormatter()), (self.json, logutil.JSONFormatter())):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter)
            self._handlers.append(handler)
        collector = logging.Handler()
        collector.emit = self.records.append  # type: ignore[method-assign]
        self._handlers.append(collector)
        for handler in self._handlers:
            root.addHandler(handler)
        root.setLevel(logging.DEBUG)

    def raw(self) -> str:
        parts = []
        for record in self.records:
            parts.append(record.getMessage())
            parts.append(repr(vars(record).get("kv", "")))
            if record.exc_info and record.exc_info[1] is not None:
                parts.append(repr(record.exc_info[1]))
        return "\n".join(parts)

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
        root.setLevel(self._old_level)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    try:
        yield capture
    finally:
        capture.close()


def _get(url: str, method: str = "GET") -> str:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


PAGES = [
    "/",
    "/config",
    "/metrics",
    "/probe?module=default&target=HV-LONDON-01",
    "/probe?module=default&target=HV-LONDON-01&debug=true",
    "/probe?module=default&target=HV-LEGACY-01&debug=true",
    "/probe?module=default&target=unlisted.example",
    "/probe?module=nope&target=HV-LONDON-01",
    "/probe?module=default&target=monitor:pw@HV-LONDON-01",
    "/-/reload",
]


def _visit(base: str) -> str:
    return "\n".join(f"== {page}\n{_get(base + page)}" for page in PAGES)


def test_demo_session(demo: Running, logs: LogCapture) -> None:
    simulator = demo.simulator
    assert simulator is not None
    password = simulator.fleet.hosts[0].password
    base = demo.server.urls[0]
    text = _visit(base)
    simulator.endpoint("HV-DUBLIN-01").fault = Fault("unauthorized")
    text += _get(base + "/probe?module=default&target=HV-DUBLIN-01&debug=true")
    text += _visit(base)
    assert "failed (auth)" in text
    for where, content in (("pages", text), ("logfmt", logs.logfmt.getvalue()), ("json", logs.json.getvalue()),
                           ("raw log records", logs.raw())):  # fmt: skip
        assert_clean(where, content, [password])
    assert "demo" in logs.logfmt.getvalue() or logs.records  # the capture did see the session


@pytest.mark.parametrize(
    "winrm",
    [
        ConfigurableStack.DEFAULT_WINRM,  # Basic over HTTP: the password is in every request
        "      scheme: http\n      transport: ntlm\n      username: monitor\n      password_file: {password_file}",
    ],
    ids=["basic", "ntlm"],
)
def test_stack_session_with_faults(tmp_path: Path, logs: LogCapture, winrm: str) -> None:
    stack = ConfigurableStack(tmp_path, winrm=winrm, password=PASSWORD)
    try:
        stack.fleet.host("HV-LEGACY-01").set(password=ROTATED)  # an auth failure in the session
        text = _visit(stack.url)
        endpoint = stack.sim.endpoint("HV-LONDON-01")
        for fault in (Fault("http_500"), Fault("garbage"), Fault("unauthorized"), Fault("reset"), Fault("dtd")):
            endpoint.fault = fault
            text += _get(stack.url + "/probe?module=default&target=HV-LONDON-01&debug=true")
        endpoint.fault = None
        stack.fleet.host("HV-LONDON-01").set(output_fault="powershell_error")
        text += _visit(stack.url)
        # A reload that fails (password file gone) and one that works.
        password_file = tmp_path / "password"
        password_file.rename(tmp_path / "password.bak")
        text += _get(stack.url + "/-/reload", "POST")
        (tmp_path / "password.bak").rename(password_file)
        text += _get(stack.url + "/-/reload", "POST")
        assert "failed (auth)" in text and "cannot read password file" in text
    finally:
        stack.stop()
    for where, content in (("pages", text), ("logfmt", logs.logfmt.getvalue()), ("json", logs.json.getvalue()),
                           ("raw log records", logs.raw())):  # fmt: skip
        assert_clean(where, content, [PASSWORD, ROTATED])


def test_secret_objects_do_not_show_themselves() -> None:
    from hyperv_exporter.host.transport.settings import Secret, WinRMSettings

    secret = Secret(PASSWORD)
    settings = WinRMSettings(username="u", password=secret)
    for text in (repr(secret), str(secret), f"{secret}", repr(settings), str(settings.redacted())):
        assert_clean("repr", text, [PASSWORD])


# -- the real programs: command lines and their own logs ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ps() -> str:
    result = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True, check=False)
    return result.stdout


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "did not start"
            time.sleep(0.1)


def test_processes_never_carry_passwords_on_their_command_lines(tmp_path: Path) -> None:
    (tmp_path / "sim-password").write_text(PASSWORD + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYPERV_ENV_PASSWORD": PASSWORD}
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        procs.append((name, proc, log))
        return proc

    try:
        hyperv_sim = str(Path(sys.executable).parent / "hyperv-sim")
        sim = spawn("sim", [hyperv_sim, "--password-file", "sim-password", "--log.level", "debug"])
        deadline = time.monotonic() + 30

        def listed() -> dict[str, str]:
            # "HOST URL" lines on stdout, after the debug log lines about the same listeners.
            return dict(re.findall(r"^(HV-\S+) (http://\S+)$", (tmp_path / "sim.log").read_text(), re.MULTILINE))

        while len(listed()) < 7:
            assert sim.poll() is None and time.monotonic() < deadline, (tmp_path / "sim.log").read_text()
            time.sleep(0.1)
        urls = listed()
        assert len(urls) == 7  # the demo fleet's hosts
        endpoints = "".join(f"      {name}: {url}\n" for name, url in urls.items())
        for index, (source, log_format) in enumerate((("password_file: password", "json"),
                                                      ("password_env: HYPERV_ENV_PASSWORD", "logfmt"))):  # fmt: skip
            (tmp_path / f"hyperv{index}.yml").write_text(
                f"modules:\n  default:\n    targets: [{', '.join(urls)}]\n    endpoints:\n{endpoints}"
                # hyperv-sim's built-in fleet has the least-privilege account: the JEA endpoint only.
                f"    winrm: {{configuration_name: HyperVExporter, scheme: http, transport: ntlm, username: monitor, "
                f"{source}}}\n"
            )
            port = _free_port()
            exporter = spawn(f"exporter{index}", [
                sys.executable, "-m", "hyperv_exporter", "--config.file", f"hyperv{index}.yml",
                "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "debug", "--log.format", log_format,
            ])  # fmt: skip
            _wait_for(f"http://127.0.0.1:{port}/-/healthy", exporter, tmp_path / f"exporter{index}.log")
            text = _visit(f"http://127.0.0.1:{port}")
            assert "hyperv_up 1.0" in text
            assert_clean(f"exporter{index} pages", text, [PASSWORD])
        guest_port = _free_port()
        guest = spawn("guest", [sys.executable, "-m", "hyperv_exporter.guest", "--root", str(GUEST_ROOT),
                                "--no-collector.ntp", "--web.listen-address", f"127.0.0.1:{guest_port}",
                                "--log.level", "debug"])  # fmt: skip
        _wait_for(f"http://127.0.0.1:{guest_port}/metrics", guest, tmp_path / "guest.log")

        listing = _ps()
        for name, proc, _ in procs:
            assert str(proc.pid) in listing, name
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert_clean(f"{name} command line", cmdline, [PASSWORD])
        assert_clean("ps", listing, [PASSWORD])
    finally:
        for _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    for name, _, log in procs:
        assert_clean(f"{name} output", log.read_text(), [PASSWORD])
