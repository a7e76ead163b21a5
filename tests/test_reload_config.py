"""Config changes: SIGHUP (a real process) and POST /-/reload apply a good config; a bad one is
rejected with its reason while the old one keeps serving."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Stack, sample
from hyperv_exporter.sim.fleet import demo_fleet, with_password
from hyperv_exporter.sim.host import Simulator, exporter_config
from programs import ServedProgram

PASSWORD = "Reload-Pa55word-one"
NEW_PASSWORD = "Reload-Pa55word-two"
TARGET = "HV-LONDON-01"


def _http(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _config(sim: Simulator, modules: tuple[str, ...] = ("default",)) -> str:
    return exporter_config(sim.urls(), "password", modules=modules)


# -- POST /-/reload, in process --------------------------------------------------------------------


def test_post_reload_applies_a_good_config_and_rejects_a_bad_one(stack: Stack) -> None:
    assert _http(stack.url + "/-/reload")[0] == 405
    original = stack.config_path.read_text()
    stack.config_path.write_text(original.replace("  default:", "  second:", 1) + original.split("\n", 1)[1])
    status, body = _http(stack.url + "/-/reload", "POST")
    assert status == 200, body
    assert sample(stack.probe(TARGET, module="second"), "hyperv_up") == 1.0

    for broken, reason in [
        ("modules: [", "invalid YAML"),
        (original.replace("cache_ttl: 0s", "cache_ttl: soon"), "cache_ttl"),
        (original.replace("password_file: password", "password_file: missing"), "cannot read password file"),
        (original.replace("transport: basic", "transport: carrier-pigeon"), "transport"),
        (original + "    unknown_key: 1\n", "unknown_key"),
    ]:
        stack.config_path.write_text(broken)
        status, body = _http(stack.url + "/-/reload", "POST")
        assert status == 500 and reason in body, body
        assert stack.password not in body
        # The previous configuration keeps serving, both of its modules.
        assert sample(stack.probe(TARGET, module="second"), "hyperv_up") == 1.0
        _, metrics = stack.get("/metrics")
        assert "hyperv_exporter_config_last_reload_successful 0.0" in metrics

    stack.config_path.write_text(original)
    assert _http(stack.url + "/-/reload", "POST")[0] == 200
    assert stack.get("/probe?module=second&target=" + TARGET)[0] == 400  # gone again
    _, metrics = stack.get("/metrics")
    assert "hyperv_exporter_config_last_reload_successful 1.0" in metrics


def test_reload_with_new_credentials_drops_the_old_sessions(stack: Stack) -> None:
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    stack.fleet.host(TARGET).set(password=NEW_PASSWORD)  # rotated on the host first
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    (stack.config_path.parent / "password").write_text(NEW_PASSWORD + "\n")
    assert _http(stack.url + "/-/reload", "POST")[0] == 200
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0


# -- SIGHUP, a real process --------------------------------------------------------------------------


class Process(ServedProgram):
    def __init__(self, tmp_path: Path, sim: Simulator) -> None:
        self.config = tmp_path / "hyperv.yml"
        self.config.write_text(_config(sim))
        super().__init__(
            [sys.executable, "-m", "hyperv_exporter", "--config.file", str(self.config),
             "--log.format", "json", "--log.level", "debug"],
            tmp_path, "exporter.log",
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if _http(self.url + "/-/healthy")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the exporter did not start"
            time.sleep(0.1)

    def logs(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def hup_and_wait(self, message: str) -> dict[str, object]:
        before = len(self.logs())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for entry in self.logs()[before:]:
                if message in str(entry.get("msg", "")):
                    return entry
            time.sleep(0.05)
        raise AssertionError(f"no log line with {message!r} after SIGHUP:\n{self.log.read_text()}")


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(with_password(demo_fleet(), PASSWORD))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.mark.slow
def test_sighup_reloads_and_a_bad_config_keeps_the_old_one(tmp_path: Path, simulator: Simulator) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    process = Process(tmp_path, simulator)
    try:
        probe = f"{process.url}/probe?module=default&target={TARGET}"
        assert "hyperv_up 1.0" in _http(probe)[1]

        process.config.write_text(_config(simulator, ("default", "extra")))
        process.hup_and_wait("configuration reloaded")
        assert "hyperv_up 1.0" in _http(f"{process.url}/probe?module=extra&target={TARGET}")[1]

        process.config.write_text("modules:\n  default:\n    targets: []\n")
        failure = process.hup_and_wait("configuration reload failed")
        assert failure["level"] == "error" and "missing required key 'winrm'" in str(failure["msg"])
        assert process.proc.poll() is None
        assert "hyperv_up 1.0" in _http(f"{process.url}/probe?module=extra&target={TARGET}")[1]
        assert "hyperv_exporter_config_last_reload_successful 0.0" in _http(f"{process.url}/metrics")[1]

        # Credentials rotate with a reload: new password on the host and in the file.
        simulator.fleet.host(TARGET).set(password=NEW_PASSWORD)
        (tmp_path / "password").write_text(NEW_PASSWORD + "\n")
        process.config.write_text(_config(simulator))
        process.hup_and_wait("configuration reloaded")
        assert "hyperv_up 1.0" in _http(probe)[1]
        assert _http(f"{process.url}/probe?module=extra&target={TARGET}")[0] == 400
        log_text = process.log.read_text()
        assert PASSWORD not in log_text and NEW_PASSWORD not in log_text
    finally:
        process.stop()
    assert process.proc.returncode == 0
