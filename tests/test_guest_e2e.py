"""End to end: a real chronyd on loopback, the agent as a subprocess over HTTP, textfile mode, promtool.

chronyd runs with ``-x`` (never touches the system clock) and serves the system time on a free
loopback port, so the agent's NTP offset against it must be ~0. As root it keeps root (``-u
root``: its default would drop to _chrony, which cannot write the test's temp directory); as
any other user ``-U`` skips its superuser check. Where AppArmor confines /usr/sbin/chronyd (Ubuntu)
the binary is copied into the temp directory, where the profile does not apply, so it may read
its configuration from there.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import ntplib
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyperv_exporter.guest import ntp
from hyperv_exporter.guest.cli import main
from hyperv_exporter.guest.ntp import MeasureOptions, NtpServer
from hyperv_exporter.guest.textfile import write_atomic

REPO = Path(__file__).resolve().parent.parent
FIXTURE_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"
IN_CI = os.environ.get("HYPERV_EXPORTER_CI") == "1"

pytestmark = pytest.mark.slow


def tool(name: str) -> str:
    """An external tool; skipped when absent locally, a failure in CI (which installs them)."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


@pytest.fixture(scope="module")
def chronyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = tool("chronyd")
    work = tmp_path_factory.mktemp("chronyd")
    if _apparmor_enabled():
        binary = str(shutil.copy2(binary, work / "chronyd"))
    port = free_udp_port()
    conf = work / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n"
        f"pidfile {work}/chronyd.pid\ndriftfile {work}/drift\ncmdport 0\nbindcmdaddress /\n"
    )
    user = ["-u", "root"] if os.geteuid() == 0 else ["-U"]
    log = (work / "chronyd.log").open("wb")
    proc = subprocess.Popen([binary, "-d", "-x", *user, "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chronyd exited: {(work / 'chronyd.log').read_text()}")
            try:
                ntplib.NTPClient().request("127.0.0.1", version=4, port=port, timeout=0.2)
                break
            except ntplib.NTPException:
                if time.monotonic() > deadline:
                    pytest.fail(f"chronyd does not answer: {(work / 'chronyd.log').read_text()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def promtool_check(text: str) -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text.encode(), capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


# --- NTP against a real chronyd ------------------------------------------------------------------
def test_offset_against_chronyd_is_near_zero(chronyd: int) -> None:
    options = MeasureOptions(samples=4, sample_interval=0.1, request_timeout=1.0, timeout=3.0)
    result = ntp.measure(NtpServer("127.0.0.1", chronyd), options)
    assert result.ok, result
    assert result.sample is not None
    # Same machine, same clock: the offset is within the measurement's own error bound (delay/2),
    # and that bound is small on loopback.
    assert abs(result.sample.offset_seconds) <= result.sample.uncertainty_seconds + 200e-6
    assert 0 < result.sample.delay_seconds < 0.01
    assert result.sample.stratum == 8
    assert result.valid == 4


# --- the agent over HTTP -------------------------------------------------------------------------
@pytest.fixture
def agent(chronyd: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperv_exporter.guest", "--ntp.server", f"127.0.0.1:{chronyd}",
         "--web.listen-address", "127.0.0.1:0", "--ntp.sample-interval", "100ms"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 20
    lines: list[str] = []
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        lines.append(line)
        match = re.search(r"Listening on (http://[0-9.]+:\d+)", line)
        if match:
            url = match.group(1)
    if url is None:
        proc.kill()
        pytest.fail("agent did not start:\n" + "".join(lines))
    # Keep draining stderr so the agent never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_agent_serves_metrics_over_http(agent: tuple[str, subprocess.Popen[bytes]], chronyd: int) -> None:
    url, proc = agent
    status, content_type, text = get(url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    promtool_check(text)
    parsed = samples(text)
    server = f"127.0.0.1:{chronyd}"
    assert value(parsed, "hyperv_guest_build_info", version="0.1.0") == 1.0
    for collector in ("ptp", "ntp", "timex", "components", "kvp"):
        assert value(parsed, "hyperv_guest_collector_success", collector=collector) == 1.0, collector
        assert value(parsed, "hyperv_guest_collector_duration_seconds", collector=collector) is not None
    # NTP against chronyd: measured in the background from start-up on (a scrape never waits for
    # it), served from the first scrape after the measurement: up, offset near zero.
    deadline = time.monotonic() + 30
    while value(parsed, "hyperv_guest_ntp_up", server=server) is None and time.monotonic() < deadline:
        time.sleep(0.2)
        parsed = samples(get(url + "/metrics")[2])
    assert value(parsed, "hyperv_guest_ntp_up", server=server) == 1.0
    offset = value(parsed, "hyperv_guest_clock_offset_seconds", reference="ntp", server=server)
    assert offset is not None and abs(offset) < 0.001
    delay = value(parsed, "hyperv_guest_ntp_delay_seconds", server=server)
    assert delay is not None and 0 < delay < 0.01
    assert value(parsed, "hyperv_guest_ntp_stratum", server=server) == 8
    assert value(parsed, "hyperv_guest_ntp_root_distance_seconds", server=server) is not None
    # This machine is no Hyper-V guest: the host clock is unavailable, not an error, and has no offset.
    assert value(parsed, "hyperv_guest_host_clock_available") == 0.0
    assert value(parsed, "hyperv_guest_clock_offset_seconds", reference="host", server="") is None
    assert value(parsed, "hyperv_guest_hyperv_detected") == 0.0
    assert value(parsed, "hyperv_guest_timex_available") == 1.0
    assert value(parsed, "hyperv_guest_timex_sync_status") in (0.0, 1.0)
    assert value(parsed, "hyperv_guest_module_loaded", module="hv_utils") == 0.0
    assert value(parsed, "hyperv_guest_daemon_running", service="key_value_pair_exchange") == 0.0
    assert value(parsed, "hyperv_guest_kvp_available") == 0.0

    # A second scrape inside the min interval is served from the cache: same measurement.
    again = samples(get(url + "/metrics")[2])
    assert value(again, "hyperv_guest_ntp_last_measurement_timestamp_seconds", server=server) == value(
        parsed, "hyperv_guest_ntp_last_measurement_timestamp_seconds", server=server
    )

    status, content_type, page = get(url + "/")
    assert status == 200 and content_type.startswith("text/html")
    assert 'href="/metrics"' in page
    assert get(url + "/nope")[0] == 404

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


# --- textfile mode -------------------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures the root logger (as a program should); put it back for the other tests."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_textfile_once_with_fixture_root(tmp_path: Path, chronyd: int) -> None:
    out = tmp_path / "hyperv_guest.prom"
    args = ["--root", str(FIXTURE_ROOT), "--textfile", str(out), "--once", "--ntp.server", f"127.0.0.1:{chronyd}",
            "--ntp.samples", "1", "--log.level", "warn"]  # fmt: skip
    assert main(args) == 0
    text = out.read_text()
    promtool_check(text)
    parsed = samples(text)
    assert value(parsed, "hyperv_guest_host_info", host_name="HV-NODE-07", physical_host_name="HV-NODE-07",
                 vm_name="web01", vm_id="8e3f2b1a-4c5d-4e6f-9a0b-1c2d3e4f5a6b") == 1.0  # fmt: skip
    assert value(parsed, "hyperv_guest_hyperv_detected") == 1.0
    assert value(parsed, "hyperv_guest_module_loaded", module="hv_balloon") == 1.0
    assert value(parsed, "hyperv_guest_daemon_running", service="vss") == 1.0
    # The fixture's /dev/ptp1 is a plain file: the real ioctl says ENOTTY -> unavailable.
    assert value(parsed, "hyperv_guest_host_clock_available") == 0.0
    assert value(parsed, "hyperv_guest_ntp_up", server=f"127.0.0.1:{chronyd}") == 1.0
    assert " # " not in text and not re.search(r"\} \S+ \d+$", text, re.M)  # no sample timestamps
    assert [p.name for p in tmp_path.iterdir()] == ["hyperv_guest.prom"]  # no temporary file left


def test_textfile_is_complete_whenever_it_exists(tmp_path: Path) -> None:
    out = tmp_path / "agent.prom"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperv_exporter.guest", "--textfile", str(out), "--textfile.interval", "10ms",
         "--no-collector.ntp", "--root", str(FIXTURE_ROOT), "--log.level", "error"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reads = 0
    try:
        deadline = time.monotonic() + 20
        while reads < 300 and time.monotonic() < deadline:
            try:
                text = out.read_text()
            except FileNotFoundError:
                continue
            reads += 1
            # Complete: it parses, and the last family (collector meta) has every collector.
            assert text.endswith("\n")
            collectors = {
                s.labels["collector"]
                for f in text_string_to_metric_families(text)
                if f.name == "hyperv_guest_collector_duration_seconds"
                for s in f.samples
            }
            assert collectors == {"ptp", "timex", "components", "kvp"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert reads >= 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.prom"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "agent.prom"
    write_atomic(out, b"old 1\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_atomic(out, b"new 2\n")
    assert out.read_bytes() == b"old 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["agent.prom"]


@pytest.mark.usefixtures("restore_logging")
def test_once_needs_textfile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--once"])
    assert info.value.code == 2
    assert "--once needs --textfile" in capsys.readouterr().err
