"""What a probe costs a simulated host (sim.cost), the simulator's /metrics, and a host clock offset
that a new process's start-up does not bias (collectors.host.host_clock_offset)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Samples, Stack, basic_http_settings, samples_of
from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.cli import build_parser, start
from hyperv_exporter.host.collectors import DEFAULT_COLLECTORS, sections_for
from hyperv_exporter.host.collectors.host import HOST_TAIL_SECONDS, host_clock_offset
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.winrs import WinRMSession, return_leg_bound
from hyperv_exporter.sim.cost import NO_COST, POWERSHELL, WINDOWS, WSMPROVHOST, HostCounters, ProcessCost
from hyperv_exporter.sim.fleet import parse_fleet
from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import HostRunner, Simulator
from hyperv_exporter.sim.metrics import make_handler
from hyperv_exporter.sim.wsman import Shell
from hyperv_exporter.web import WebServer

PASSWORD = "cost-test-password"  # the simulated hosts' test password


# --- the model and its counters ------------------------------------------------------------------


def test_the_windows_model_is_of_real_magnitude_and_the_default_is_free() -> None:
    assert 1.0 <= WINDOWS.total <= 2.0
    assert NO_COST.total == 0.0
    with pytest.raises(ValueError, match="negative"):
        ProcessCost(start_seconds=-1.0)


def test_counters_count_processes_by_image_and_model_cpu() -> None:
    counters = HostCounters()
    cost = ProcessCost(start_seconds=0.5, import_seconds=1.0)
    assert counters.start_process(POWERSHELL, cost) is cost
    counters.start_process(POWERSHELL, cost)
    counters.start_process(WSMPROVHOST, cost)
    counters.module_imported(cost)  # one of them loaded the Hyper-V module
    counters.script_ran(0.25)
    snapshot = counters.snapshot()
    assert snapshot.processes == {POWERSHELL: 2, WSMPROVHOST: 1}
    assert snapshot.cpu_seconds == pytest.approx(3 * 0.5 + 1.0 + 0.25)
    counters.reset()
    assert counters.snapshot().processes == {POWERSHELL: 0, WSMPROVHOST: 0}


def test_a_fleet_file_sets_a_hosts_process_cost() -> None:
    fleet = parse_fleet(
        "hosts:\n"
        "  - ComputerName: SLOW\n"
        "    Simulator: {ProcessStartSeconds: 0.8, ModuleImportSeconds: 1.2}\n"
        "  - ComputerName: HALF\n"
        "    Simulator: {ModuleImportSeconds: 0.5}\n"
        "  - ComputerName: UNSET\n",
        "fleet.yml",
    )
    assert [h.process_cost for h in fleet.hosts] == [ProcessCost(0.8, 1.2), ProcessCost(0.0, 0.5), None]
    simulator = Simulator(fleet, process_cost=WINDOWS)
    try:
        simulator.start()
        assert fleet.host("UNSET").process_cost == WINDOWS  # the Simulator's default fills the gap
        assert fleet.host("SLOW").process_cost == ProcessCost(0.8, 1.2)  # the fleet file wins
    finally:
        simulator.stop()


def test_demo_charges_a_real_hosts_process_cost() -> None:
    running = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
    try:
        assert running.simulator is not None
        assert {h.process_cost for h in running.simulator.fleet.hosts} == {WINDOWS}
        # The simulated hosts' counters are on the demo exporter's own /metrics.
        metrics = _metrics(running.server.urls[0] + "/metrics")
        for host in running.simulator.fleet.hosts:
            assert metrics[("hyperv_sim_processes_started_total", (("host", host.computer_name), ("image", POWERSHELL)))] == 0
    finally:
        running.stop()


def test_a_new_process_delays_the_output_and_the_first_clock_reading() -> None:
    """The runner's timing, without HTTP: start-up before ClockStart, import + run before the output."""
    (host,) = generate_fleet(1, 3, run_seconds=0.05, password=PASSWORD).hosts
    host.clock_offset = 10.0
    host.process_cost = ProcessCost(start_seconds=0.6, import_seconds=1.0)
    runner = HostRunner(host)
    shell = Shell("S", {script.SCRIPT_ENV: script.script_text()}, 65001, True, "monitor")
    command, arguments = script.command_line(sections_for(DEFAULT_COLLECTORS), True)
    before = time.time()
    result = runner(shell, command, [" ".join(arguments)])
    after = time.time()
    assert result.exit_code == 0
    assert result.run_seconds == pytest.approx(1.65)
    doc = json.loads(gzip.decompress(base64.b64decode(result.stdout)))
    to_unix = report.ticks_to_unix
    clock_start, clock_end = to_unix(doc["ClockStartTicks"]), to_unix(doc["ClockEndTicks"])
    assert clock_start is not None and clock_end is not None
    assert before + 10.6 <= clock_start <= after + 10.6
    assert before + 11.65 <= clock_end <= after + 11.65
    assert runner.counters.snapshot().processes[POWERSHELL] == 1
    # Any powershell command is a new process, even one the simulated host then refuses.
    assert runner(shell, "powershell", ["-Command", "Get-Date"]).exit_code == 1
    assert runner(shell, "hostname", []).exit_code == 1  # cmd.exe only: not a PowerShell process
    assert runner.counters.snapshot().processes[POWERSHELL] == 2
    # That refused process started, but never ran a Hyper-V cmdlet: no module import charged.
    assert runner.counters.snapshot().cpu_seconds == pytest.approx(1.65 + 0.6)


# --- counted through the real exporter ------------------------------------------------------------


def test_each_winrs_probe_starts_one_powershell_process(tmp_path: Path) -> None:
    stack = Stack(tmp_path, winrm=Stack.DEFAULT_WINRM)
    try:
        counters = stack.sim.counters["HV-LONDON-01"]
        for probes in (1, 2, 3):
            assert stack.probe("HV-LONDON-01")[("hyperv_up", ())] == 1.0
            snapshot = counters.snapshot()
            assert snapshot.processes == {POWERSHELL: probes, WSMPROVHOST: 0}
        host = stack.fleet.host("HV-LONDON-01")
        assert snapshot.cpu_seconds == pytest.approx(3 * host.run_seconds)  # no process cost in tests
        assert stack.sim.counters["HV-BERLIN-01"].snapshot().processes[POWERSHELL] == 0
    finally:
        stack.running.stop()
        stack.sim.stop()


def test_psrp_starts_one_wsmprovhost_and_no_process_per_probe(tmp_path: Path) -> None:
    stack = Stack(tmp_path, winrm=Stack.DEFAULT_WINRM.replace("protocol: winrs", "protocol: psrp"))
    try:
        counters = stack.sim.counters["HV-LONDON-01"]
        cost = ProcessCost(start_seconds=0.05, import_seconds=0.05)
        stack.sim.set_process_cost(cost)
        for _ in range(3):
            assert stack.probe("HV-LONDON-01")[("hyperv_up", ())] == 1.0
            # The runspace pool's wsmprovhost.exe, opened by the first probe, runs every pipeline.
            assert counters.snapshot().processes == {POWERSHELL: 0, WSMPROVHOST: 1}
        host = stack.fleet.host("HV-LONDON-01")
        assert counters.snapshot().cpu_seconds == pytest.approx(cost.total + 3 * host.run_seconds)
    finally:
        stack.running.stop()
        stack.sim.stop()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    fleet = generate_fleet(2, 3, password=PASSWORD)
    sim = Simulator(fleet, process_cost=ProcessCost(start_seconds=0.02, import_seconds=0.03))
    sim.start()
    yield sim
    sim.stop()


def _metrics(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        return samples_of(response.read().decode())


def _session(url: str, protocol: str = "winrs") -> WinRMSession | PSRPSession:
    settings = basic_http_settings("monitor", PASSWORD, protocol=protocol)
    kind = PSRPSession if protocol == "psrp" else WinRMSession
    return kind(url, settings, script.script_text())


def test_the_simulators_metrics_show_what_probes_cost_each_host(simulator: Simulator) -> None:
    server = WebServer(["127.0.0.1:0"], make_handler(simulator), name="hyperv-sim")
    server.start()
    try:
        busy, idle = (h.computer_name for h in simulator.fleet.hosts)
        session = _session(simulator.url(busy))
        try:
            for _ in range(2):
                session.collect(sections_for(DEFAULT_COLLECTORS), True, time.monotonic() + 30)
        finally:
            session.close()
        metrics = _metrics(server.urls[0] + "/metrics")
        started = "hyperv_sim_processes_started_total"
        assert metrics[(started, (("host", busy), ("image", POWERSHELL)))] == 2
        assert metrics[(started, (("host", busy), ("image", WSMPROVHOST)))] == 0
        assert metrics[(started, (("host", idle), ("image", POWERSHELL)))] == 0
        # Shell open, then Command, Receive, Signal per probe (close() may still be on its way).
        assert metrics[("hyperv_sim_requests_total", (("host", busy),))] >= 7
        assert metrics[("hyperv_sim_requests_total", (("host", idle),))] == 0
        run_seconds = simulator.fleet.hosts[0].run_seconds
        cpu = metrics[("hyperv_sim_host_cpu_seconds_total", (("host", busy),))]
        assert cpu == pytest.approx(2 * (0.05 + run_seconds))
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_hyperv_sim_serves_its_counters_with_the_flag() -> None:
    port = _free_port()
    env = {**os.environ, "HYPERV_SIM_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())",
         "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        hosts = [proc.stdout.readline().split()[0] for _ in range(4)]  # printed once everything listens
        metrics = _metrics(f"http://127.0.0.1:{port}/metrics")
        for host in hosts:
            assert metrics[("hyperv_sim_requests_total", (("host", host),))] == 0
            assert metrics[("hyperv_sim_processes_started_total", (("host", host), ("image", POWERSHELL)))] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- the host clock offset ---------------------------------------------------------------------------


def test_the_offset_rests_on_the_return_leg_when_the_host_held_the_answer() -> None:
    """Synthetic times: offset 0.7 s, 25 ms each way, 1.6 s of process start-up before T2."""
    offset, leg, start_up, run = 0.7, 0.025, 1.6, 0.05
    t1 = 1000.0
    t2 = t1 + leg + start_up + offset  # host clock at the script's first line
    t3 = t2 + run  # host clock just before printing
    t4 = t3 - offset + leg  # our clock when the output arrived
    ntp, ntp_width = host_clock_offset(t1, t2, t3, t4)
    assert ntp - offset == pytest.approx(start_up / 2)  # the start-up biases the midpoint...
    assert ntp_width >= abs(ntp - offset)  # ...and the NTP interval still contains the truth
    measured, width = host_clock_offset(t1, t2, t3, t4, return_leg=2 * leg)
    assert measured == pytest.approx(offset)
    assert width == pytest.approx(leg + HOST_TAIL_SECONDS)  # the host's work after its reading: unseen
    # A return leg longer than the NTP interval allows changes nothing.
    assert host_clock_offset(t1, t2, t3, t4, return_leg=10.0) == (ntp, ntp_width)


def test_the_return_leg_is_bounded_only_when_the_host_held_the_receive() -> None:
    assert return_leg_bound(0.05, 1.7) == 0.05  # held for the command's run: one leg at most
    assert return_leg_bound(0.05, 0.06) is None  # answered at once: the output may have waited
    assert return_leg_bound(0.0, 1.0) is None


@pytest.mark.parametrize("protocol", ["winrs", "psrp"])
def test_the_host_clock_offset_is_unbiased_by_the_process_start_up(protocol: str) -> None:
    """Simulated: 50 ms round trip, 0.4 s start-up of every new process (powershell.exe per winrs
    command, wsmprovhost.exe per psrp runspace pool), a collection that runs 0.2 s (longer than a
    round trip, as on any real host). Two probes: the first opens the shell or the pool."""
    fleet = generate_fleet(1, 20, latency=0.05, run_seconds=0.2, password=PASSWORD)
    (host,) = fleet.hosts
    host.clock_offset = 0.7
    cost = ProcessCost(start_seconds=0.4, import_seconds=0.1)
    sim = Simulator(fleet, process_cost=cost)
    sim.start()
    session = _session(sim.url(host.computer_name), protocol)
    sections = sections_for(DEFAULT_COLLECTORS)
    try:
        exchanges = [session.collect(sections, True, time.monotonic() + 30) for _ in range(2)]
    finally:
        session.close()
        sim.stop()
    for exchange in exchanges:
        text = report.decode_output(exchange.stdout, 1 << 24)
        parsed = report.parse_report(text, cimxml.allowlist(("OSName",), 100), frozenset({"guest_intrinsic"}))
        assert parsed.clock_start is not None and parsed.clock_end is not None
        assert exchange.return_leg is not None  # the host held the Receive while the script ran
        offset, uncertainty = host_clock_offset(
            exchange.sent, parsed.clock_start, parsed.clock_end, exchange.received, exchange.return_leg
        )
        error = offset - host.clock_offset
        assert abs(error) <= uncertainty  # honest
        assert uncertainty < 0.1  # half a round trip plus scheduling, not the start-up
    exchange = exchanges[-1]
    ntp, _ = host_clock_offset(exchange.sent, parsed.clock_start, parsed.clock_end, exchange.received)
    if protocol == "winrs":  # what the midpoint alone would have said: half the start-up off
        assert ntp - host.clock_offset > cost.start_seconds / 4


def test_without_gzip_the_offset_takes_the_last_output_and_stays_honest() -> None:
    """Without -Gzip the script may print its document in parts before its end clock: the exporter
    then bounds that reading by the output's last arrival, not its first (the NTP interval only)."""
    fleet = generate_fleet(1, 5, latency=0.02, run_seconds=0.1, password=PASSWORD)
    (host,) = fleet.hosts
    host.clock_offset = -1.5
    sim = Simulator(fleet, process_cost=ProcessCost(start_seconds=0.2))
    sim.start()
    session = _session(sim.url(host.computer_name), "winrs")
    try:
        exchange = session.collect(sections_for(DEFAULT_COLLECTORS), False, time.monotonic() + 30)
    finally:
        session.close()
        sim.stop()
    parsed = report.parse_report(
        report.decode_output(exchange.stdout, 1 << 24), cimxml.allowlist(("OSName",), 100), frozenset()
    )
    assert parsed.clock_start is not None and parsed.clock_end is not None
    assert exchange.return_leg is None
    offset, uncertainty = host_clock_offset(exchange.sent, parsed.clock_start, parsed.clock_end, exchange.received)
    assert abs(offset - host.clock_offset) <= uncertainty
