"""A real Prometheus scrapes the demo fleet and two guest agents; the shipped rules and dashboards run on it.

The stack (started once for this module):

- ``hyperv-exporter --demo`` in-process: four simulated Hyper-V hosts behind WS-Management;
- two ``hyperv-guest-agent`` instances in-process, each with a fake root (``--root``) whose KVP
  pool 3 names a demo VM, the Hyper-V PTP clock replaced by a fake :class:`PhcReader` (the
  sanctioned seam: no PTP device can exist here), ``adjtimex`` replaced likewise, and NTP
  measured against small NTP servers in this process (one deliberately skewed, one port closed);
- a third guest target where nothing listens;
- Prometheus, configured from ``examples/prometheus/prometheus.yml`` (its relabelling as shipped,
  the targets pointed here, 1 s intervals) with the shipped rule files, ``for:`` set to 0 so that
  every condition of the demo fleet fires at once.

Then: every rule expression runs without error, the alerts the demo fleet must raise are exactly
the ones firing (and the replica, off and saved VMs raise none), every annotation template
expands, every dashboard variable resolves, and every dashboard query parses and returns data.
"""

from __future__ import annotations

import errno
import http.server
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hyperv_exporter.guest import cli as guest_cli
from hyperv_exporter.guest import kvp_pool, timex
from hyperv_exporter.guest.handler import make_handler
from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.web import WebServer
from promstack import (
    GRAFANA_BUILTINS,
    REPO,
    Prometheus,
    alerting_rules,
    dashboard_files,
    load_dashboard,
    panel_targets,
    prometheus_config_for_test,
    substitute,
    wait_for,
    write_rules_with_for,
)

pytestmark = pytest.mark.slow

NTP_UNIX_DELTA = 2_208_988_800


# --- an NTP server with a chosen error -----------------------------------------------------------
class SkewedNtpServer:
    """Answers SNTP requests on 127.0.0.1 with the system time plus ``skew`` seconds (stratum 2).

    A guest measuring it sees an offset of ``-skew`` (offset = guest minus server).
    """

    def __init__(self, skew: float) -> None:
        self.skew = skew
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"ntp-{self.port}", daemon=True)
        self._thread.start()

    def _now(self) -> int:
        return int((time.time() + self.skew + NTP_UNIX_DELTA) * 2**32)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 48:
                continue
            received = self._now()
            version = (data[0] >> 3) & 0x7
            header = struct.pack(
                "!BBbbII4s",
                (version << 3) | 4,  # leap 0, mode 4 (server)
                2,  # stratum
                6,  # poll
                -20,  # precision
                int(0.001 * 65536),  # root delay
                int(0.002 * 65536),  # root dispersion
                b"GPS\0",
            )
            reply = header + struct.pack("!Q", received) + data[40:48] + struct.pack("!QQ", received, self._now())
            self.sock.sendto(reply, client)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)


def closed_udp_port() -> int:
    """A UDP port nothing listens on: an NTP request there fails at once (ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_tcp_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# --- the seams of the guest agent ----------------------------------------------------------------
class FakePhcReader:
    """A Hyper-V PTP clock ``offset`` seconds behind the guest (guest − host = offset), or stale (ESTALE)."""

    def __init__(self, offset: float | None) -> None:
        self.offset = offset

    def sys_offset(self, device: Path, n_samples: int) -> list[int]:
        if self.offset is None:
            raise OSError(errno.ESTALE, "Stale file handle")
        stamps: list[int] = []
        for _ in range(n_samples):
            now = time.time_ns()
            stamps += [now, now + 500 - round(self.offset * 1e9)]
        stamps.append(time.time_ns() + 1000)
        return stamps


def fake_adjtimex(synchronised: bool) -> timex.AdjtimexFn:
    def adjtimex(buf: timex.Timex) -> int:
        buf.tick = 10000
        buf.constant = 2
        if synchronised:
            buf.status = timex.STA_PLL
            buf.maxerror, buf.esterror = 2000, 150  # microseconds
            return 0  # TIME_OK
        buf.status = timex.STA_UNSYNC
        buf.maxerror = buf.esterror = 16_000_000
        return timex.TIME_ERROR

    return adjtimex


@dataclass(frozen=True)
class GuestSpec:
    vm_name: str
    host: str
    vm_id: str
    ptp_offset: float | None  # None: the host's time samples are stale (ESTALE)
    ntp_skew: float  # the guest's error against NTP (guest − server)
    unreachable_ntp: bool
    daemons: tuple[str, ...]
    synchronised: bool


# Datenbank-01: 250 ms ahead of its host, 80 ms ahead of NTP, one NTP server unreachable, no VSS
# daemon although the host enables VSS. Web-Proxy: no time from the host (ESTALE), kernel clock
# not disciplined, every daemon running (it has Guest Service Interface enabled).
GUESTS = (
    GuestSpec("Datenbank-01", "HV-BERLIN-01", "4f6f1c3e-2b7a-4c1d-9e0f-8a1b2c3d4e02", 0.25, 0.08, True,
              ("hv_kvp_daemon",), True),
    GuestSpec("Web-Proxy", "HV-BERLIN-01", "4f6f1c3e-2b7a-4c1d-9e0f-8a1b2c3d4e05", None, 0.0, False,
              ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_uio_daemon"), False),
)  # fmt: skip


def build_root(root: Path, spec: GuestSpec) -> None:
    """A Linux Hyper-V guest as the agent sees it under ``--root``."""

    def put(path: str, data: str | bytes) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data, encoding="utf-8")

    identity = {
        "HostName": spec.host,
        "PhysicalHostName": spec.host,
        "PhysicalHostNameFullyQualified": f"{spec.host.lower()}.example.com",
        "VirtualMachineName": spec.vm_name,
        "VirtualMachineId": spec.vm_id.upper(),  # Hyper-V writes it upper-case; the agent lower-cases it
    }
    put("/var/lib/hyperv/.kvp_pool_3", b"".join(kvp_pool.encode_record(k, v) for k, v in identity.items()))
    put("/dev/ptp_hyperv", b"")
    (root / "sys/bus/vmbus").mkdir(parents=True, exist_ok=True)
    put("/sys/class/dmi/id/sys_vendor", "Microsoft Corporation\n")
    put("/sys/class/dmi/id/product_name", "Virtual Machine\n")
    put("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu hypervisor\n")
    put("/proc/sys/kernel/osrelease", "6.1.0-18-cloud-amd64\n")
    put(
        "/proc/modules",
        "".join(f"{m} 40960 0 - Live 0x0\n" for m in ("hv_vmbus", "hv_utils", "hv_netvsc", "hv_storvsc")),
    )
    for pid, daemon in enumerate(spec.daemons, start=400):
        put(f"/proc/{pid}/comm", daemon[:15] + "\n")
        put(f"/proc/{pid}/cmdline", f"/usr/sbin/{daemon}\0-n\0")
    put("/proc/1/comm", "systemd\n")
    put("/proc/1/cmdline", "/sbin/init\0")


@dataclass
class Guest:
    spec: GuestSpec
    server: WebServer
    agent: guest_cli.Agent

    @property
    def address(self) -> str:
        return self.server.urls[0].removeprefix("http://")

    def stop(self) -> None:
        self.server.stop()
        self.agent.close()


def start_guest(root: Path, spec: GuestSpec, ntp_servers: list[str]) -> Guest:
    build_root(root, spec)
    argv = ["--web.listen-address", "127.0.0.1:0", "--root", str(root)]
    for ntp_server in ntp_servers:
        argv += ["--ntp.server", ntp_server]
    argv += ["--ntp.samples", "1", "--ntp.min-interval", "2s", "--ntp.request-timeout", "0.3s",
             "--ntp.timeout", "0.5s", "--probe.timeout", "0.8s", "--log.level", "error"]  # fmt: skip
    args = guest_cli.build_parser().parse_args(argv)
    # The two seams to what cannot exist here: a Hyper-V PTP device and a disciplined kernel clock.
    agent = guest_cli.build_agent(
        args, platform="linux", phc_reader=FakePhcReader(spec.ptp_offset), adjtimex=fake_adjtimex(spec.synchronised)
    )
    assert {"ptp", "timex"} <= set(agent.collectors), agent.collectors
    server = WebServer(args.web_listen_address, make_handler(agent.registry, agent.collectors), name="guest-agent")
    try:
        server.start()
    except BaseException:
        agent.close()
        raise
    return Guest(spec, server, agent)


# --- windows_exporter --------------------------------------------------------------------------------
WINDOWS_FIXTURE = REPO / "tests" / "fixtures" / "windows_exporter" / "hv-berlin-01.prom"
RECORDING_RULES = REPO / "rules" / "hyperv-recording.yml"


class FixtureServer:
    """Serves one exposition file on /metrics, as the exporter it was taken from would."""

    def __init__(self, path: Path) -> None:
        body = path.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_windows_exporter_series_join_the_exporters_vms(stack: DemoStack) -> None:
    """The recording rules give windows_exporter's per-VM series this exporter's instance and vm."""
    for record in ("cpu_usage_cores", "network_receive_bytes", "network_transmit_bytes", "disk_read_bytes",
                   "disk_write_bytes"):  # fmt: skip
        joined = stack.prometheus.query(
            f"instance_vm:windows_hyperv_vm_{record}:rate5m"
            ' * on (instance, vm) group_left () max by (instance, vm) (hyperv_vm_info{job="hyperv"})'
        )
        assert {(s["metric"]["instance"], s["metric"]["vm"]) for s in joined} >= {
            ("HV-BERLIN-01", "Datenbank-01"), ("HV-BERLIN-01", "Büro-Server")
        }, record


# --- the stack -----------------------------------------------------------------------------------
@dataclass
class DemoStack:
    prometheus: Prometheus
    exporter: Running
    hosts: list[str]
    guests: list[Guest]
    dead_guest: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    work = tmp_path_factory.mktemp("pipeline-demo")
    stops: list[Callable[[], None]] = []
    try:
        exporter = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
        stops.append(exporter.stop)
        hosts = [h.computer_name for h in exporter.simulator.fleet.hosts]
        guests: list[Guest] = []
        for spec in GUESTS:
            ntp = SkewedNtpServer(-spec.ntp_skew)
            stops.append(ntp.stop)
            servers = [f"127.0.0.1:{ntp.port}"]
            if spec.unreachable_ntp:
                servers.append(f"127.0.0.1:{closed_udp_port()}")
            guest = start_guest(work / f"root-{spec.vm_name}", spec, servers)
            stops.append(guest.stop)
            guests.append(guest)
        dead_guest = closed_tcp_address()
        rules = [*write_rules_with_for(work / "rules", "0s"), RECORDING_RULES]
        config = prometheus_config_for_test(
            exporter=exporter.server.urls[0].removeprefix("http://"),
            hosts=hosts,
            guests=[g.address for g in guests] + [dead_guest],
            rule_paths=rules,
        )
        # windows_exporter on HV-BERLIN-01 (a fixture exposition of its hyperv collector), scraped the
        # way docs/deployment.md#windows_exporter shows: its instance is the host name plus its port.
        windows = FixtureServer(WINDOWS_FIXTURE)
        stops.append(windows.stop)
        config["scrape_configs"].append(
            {
                "job_name": "windows",
                "static_configs": [{"targets": [windows.address]}],
                "relabel_configs": [{"target_label": "instance", "replacement": "HV-BERLIN-01:9182"}],
            }
        )
        prometheus = Prometheus(work / "prometheus", config)
        prometheus.start()
        stops.append(prometheus.stop)
        demo = DemoStack(prometheus, exporter, hosts, guests, dead_guest)

        def ready() -> bool:
            hosts_up = len(prometheus.query("hyperv_up == 1")) == len(hosts)
            guests_up = len(prometheus.query('up{job="hyperv-guest"} == 1')) == len(guests)
            ntp_seen = len(prometheus.query('hyperv_guest_clock_offset_seconds{reference="ntp"}')) == len(guests)
            evaluated = bool(prometheus.query("ALERTS"))
            return hosts_up and guests_up and ntp_seen and evaluated

        wait_for(ready, 60, "the demo fleet and the guests to be scraped", on_timeout=prometheus.log_tail)

        def history() -> bool:
            """Range queries (and rate()) need a few samples of every target."""
            samples = prometheus.query("min(count_over_time(up[1m]))")
            return bool(samples) and float(samples[0]["value"][1]) >= 4

        wait_for(history, 30, "a few scrapes of every target", on_timeout=prometheus.log_tail)
        yield demo
    finally:
        for stop in reversed(stops):
            stop()


# --- scraping -------------------------------------------------------------------------------------
def test_probe_relabelling_from_the_example_config(stack: DemoStack) -> None:
    targets = {t["labels"]["instance"]: t for t in stack.prometheus.targets() if t["labels"]["job"] == "hyperv"}
    assert sorted(targets) == sorted(stack.hosts)
    exporter = stack.exporter.server.urls[0]
    for host, target in targets.items():
        assert target["health"] == "up", target
        assert target["scrapeUrl"] == f"{exporter}/probe?module=default&target={host}"
    vm_info = stack.prometheus.query('hyperv_vm_info{vm="sql-prod"}')
    assert {s["metric"]["instance"] for s in vm_info} == {"HV-LONDON-01", "HV-DUBLIN-01"}


# --- rules ----------------------------------------------------------------------------------------
def test_every_rule_expression_runs(stack: DemoStack) -> None:
    errors = []
    for path, rule in alerting_rules():
        try:
            stack.prometheus.query(rule["expr"])
        except Exception as exc:  # collect them all
            errors.append(f"{path.name} {rule['alert']}: {exc}")
    assert not errors, "\n".join(errors)
    for group in stack.prometheus.rule_groups():
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{group['file']} {rule['name']}: {rule.get('lastError')}"


def alert_key(labels: dict[str, str]) -> tuple[str, ...]:
    """What identifies an alert for the comparison below (the guest's address is replaced by its VM)."""
    subject = labels.get("vm") or labels.get("vm_name") or ""
    return (labels["alertname"], labels["severity"], labels.get("instance", ""), subject, labels.get("service", ""))


def test_demo_fleet_raises_exactly_the_expected_alerts(stack: DemoStack) -> None:
    db, proxy = stack.guests
    expected = {
        ("HyperVVMHeartbeatLost", "critical", "HV-LONDON-01", "web02", ""),
        ("HyperVVMApplicationsCritical", "critical", "HV-LONDON-01", "app-critical", ""),
        ("HyperVIntegrationServiceDisabled", "warning", "HV-DUBLIN-01", "file-sync", "time_synchronization"),
        ("HyperVIntegrationServiceUnhealthy", "warning", "HV-DUBLIN-01", "file-sync", "vss"),
        # From hyperv_vm_integration_services_up_to_date: on 2012 R2 the (German) host judges by
        # the state; legacy-app on the 2019 host by its guest's reported version (docs/alerts.md).
        ("HyperVIntegrationServicesOutdated", "warning", "HV-MUENCHEN-01", "Altsystem", ""),
        ("HyperVIntegrationServicesOutdated", "warning", "HV-LONDON-01", "legacy-app", ""),
        # No integration components: the heartbeat service never hears from the guest.
        ("HyperVVMHeartbeatLost", "critical", "HV-MUENCHEN-01", "Firewall-Appliance", ""),
        ("HyperVGuestServiceInterfaceEnabled", "info", "HV-BERLIN-01", "Web-Proxy", "guest_service_interface"),
        ("HyperVReplicationUnhealthy", "warning", "HV-DUBLIN-01", "crm-app", ""),
        ("HyperVReplicationLagging", "warning", "HV-DUBLIN-01", "crm-app", ""),
        ("HyperVCheckpointTooOld", "warning", "HV-LONDON-01", "build-agent", ""),
        ("HyperVHostClockDrift", "warning", "HV-DUBLIN-01", "", ""),
        ("HyperVGuestClockSkew", "warning", db.address, "", ""),
        ("HyperVGuestHostClockSkew", "warning", db.address, "", ""),
        ("HyperVGuestNTPUnreachable", "warning", db.address, "", ""),
        ("HyperVGuestDaemonDown", "warning", db.address, "Datenbank-01", "vss"),
        ("HyperVGuestTimeSyncStale", "warning", proxy.address, "", ""),
        ("HyperVGuestClockNotSynchronising", "warning", proxy.address, "", ""),
        ("HyperVGuestAgentDown", "warning", stack.dead_guest, "", ""),
    }

    def settled() -> set[tuple[str, ...]] | None:
        firing = {alert_key(labels) for labels in stack.prometheus.firing()}
        return firing if firing == expected else None

    try:
        wait_for(settled, 30, "the demo fleet's alerts")
    except AssertionError:
        firing = {alert_key(labels) for labels in stack.prometheus.firing()}
        pytest.fail(f"missing: {sorted(expected - firing)}\nunexpected: {sorted(firing - expected)}")

    # The replica (sql-prod on Dublin, off by design), the saved jumpbox and the off Dateiablage
    # raise nothing at all.
    for labels in stack.prometheus.firing():
        assert (labels.get("instance"), labels.get("vm")) not in {
            ("HV-DUBLIN-01", "sql-prod"),
            ("HV-LONDON-01", "jumpbox"),
            ("HV-BERLIN-01", "Dateiablage"),
        }, labels


def test_annotation_templates_expand_on_real_data(stack: DemoStack) -> None:
    alerts = stack.prometheus.api("alerts")["alerts"]
    assert alerts
    by_name: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
        for name, text in alert["annotations"].items():
            assert "<no value>" not in text and "error expanding" not in text and "{{" not in text, (name, text)
    # Descriptions that look up other series found them.
    (unhealthy,) = by_name["HyperVIntegrationServiceUnhealthy"]
    assert "its status is no_contact" in unhealthy["annotations"]["description"]
    outdated = {a["labels"]["vm"]: a["annotations"]["description"] for a in by_name["HyperVIntegrationServicesOutdated"]}
    assert "runs integration services 6.1.7601.17514" in outdated["Altsystem"]
    (daemon,) = by_name["HyperVGuestDaemonDown"]
    assert "VM Datenbank-01" in daemon["annotations"]["description"]
    assert "on Hyper-V host HV-BERLIN-01" in daemon["annotations"]["description"]
    (ntp,) = by_name["HyperVGuestNTPUnreachable"]
    assert "(unreachable)" in ntp["annotations"]["description"]
    (checkpoint,) = by_name["HyperVCheckpointTooOld"]
    assert "The oldest of the 2 checkpoints of VM build-agent" in checkpoint["annotations"]["description"]


# --- dashboards -----------------------------------------------------------------------------------
# The value a dashboard in the test selects for each single-value variable (All for the others).
PREFERRED = {"job": "hyperv", "guest_job": "hyperv-guest", "host": "HV-BERLIN-01", "vm": "Datenbank-01"}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$", re.DOTALL)


def resolve_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Evaluate the dashboard's template variables in order, as Grafana does on load."""
    values = dict(GRAFANA_BUILTINS)
    for var in dashboard["templating"]["list"]:
        name = var["name"]
        if var["type"] == "datasource":
            values[name] = "prometheus"
            continue
        assert var["type"] == "query", var
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = LABEL_VALUES.match(query)
        assert match, f"variable {name}: only label_values(selector, label) is used, got {query!r}"
        selector = substitute(match["selector"], values)
        found = sorted(
            {s["metric"][match["label"]] for s in prometheus.query(selector) if match["label"] in s["metric"]}
        )
        assert found, f"variable ${name} ({query}) has no values"
        if var.get("includeAll") and var.get("multi"):
            values[name] = var["allValue"]
        else:
            values[name] = PREFERRED[name] if PREFERRED.get(name) in found else found[0]
    return values


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_queries_parse_and_return_data(stack: DemoStack, path: Path) -> None:
    dashboard = load_dashboard(path)
    variables = resolve_variables(stack.prometheus, dashboard)
    problems = []
    now = time.time()
    checked = 0
    for panel, target in panel_targets(dashboard):
        expr = substitute(target["expr"], variables)
        where = f"{panel['title']!r} {target['refId']}"
        try:
            if target.get("instant") or target.get("format") == "table":
                result = stack.prometheus.query(expr)
            else:
                result = stack.prometheus.query_range(expr, now - 20, now, 1)
        except Exception as exc:  # collect them all
            problems.append(f"{where}: {exc}\n    {expr}")
            continue
        checked += 1
        if not result:
            problems.append(f"{where}: no data\n    {expr}")
    assert checked, "no panel queries found"
    assert not problems, f"{path.name} with {variables}:\n" + "\n".join(problems)
