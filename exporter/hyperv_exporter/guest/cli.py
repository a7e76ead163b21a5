"""``hyperv-guest-agent``: serve /metrics (default port 10021) or write a textfile-collector file.

Flags follow the Prometheus exporter conventions: ``--web.listen-address`` / ``--web.config.file``
(exporter-toolkit), ``--log.level`` / ``--log.format``, and ``--collector.NAME`` /
``--no-collector.NAME`` switches as in node_exporter.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest

from hyperv_exporter import __version__
from hyperv_exporter.guest import ntpconf, ptp, timex, windows
from hyperv_exporter.guest.collector import (
    ComponentsProbe,
    GuestCollector,
    HostClockProbe,
    KvpProbe,
    NtpProbe,
    Probe,
    TimeProviderProbe,
    TimexProbe,
    WindowsComponentsProbe,
    WindowsKvpProbe,
)
from hyperv_exporter.guest.handler import make_handler
from hyperv_exporter.guest.kvp_pool import DEFAULT_KEYS, KeySpec
from hyperv_exporter.guest.ntp import MeasureOptions, NtpMonitor, NtpServer, parse_server
from hyperv_exporter.guest.rootfs import Root
from hyperv_exporter.guest.textfile import write_atomic
from hyperv_exporter.logutil import FORMATS, LEVELS, setup_logging
from hyperv_exporter.web import WebConfigError, WebServer, add_web_flags, positive_int, web_config_reload_gauge

log = logging.getLogger("hyperv_guest_agent")

DEFAULT_PORT = 10021
LINUX_COLLECTORS = ("ptp", "ntp", "timex", "components", "kvp")
WINDOWS_COLLECTORS = ("ntp", "components", "kvp", "time_provider")
COLLECTOR_HELP = {
    "ptp": "guest vs Hyper-V host clock via the hv_utils PTP clock (Linux)",
    "ntp": "guest vs NTP servers (SNTP, rate-limited)",
    "timex": "kernel clock discipline via adjtimex (Linux)",
    "components": "Hyper-V detection, kernel modules and daemons (Linux) / vmic* services (Windows)",
    "kvp": "host identity and allowlisted KVP items (Linux pool files / Windows registry)",
    "time_provider": "VMICTimeProvider and W32Time type (Windows)",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """``5s``, ``500ms``, ``1m``, ``1.5`` (seconds) -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 5s, 500ms, 1m)")
    return float(match.group(1)) * _UNIT[match.group(2)]


def _server(text: str) -> NtpServer:
    try:
        return parse_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kvp_key(text: str) -> KeySpec:
    try:
        return KeySpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperv-guest-agent",
        description="Prometheus agent for Hyper-V guests: clock offset vs host and NTP, integration components, KVP.",
    )
    parser.add_argument("--version", action="version", version=f"hyperv-guest-agent {__version__}")
    add_web_flags(parser, DEFAULT_PORT)
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=list(LEVELS),
        default="info",
        help="Only log messages with the given severity or above. (default: info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=list(FORMATS),
        default="logfmt",
        help="Output format of log messages. (default: logfmt)",
    )
    parser.add_argument(
        "--root",
        default="/",
        metavar="PATH",
        help="Prefix for /proc, /sys, /dev, /etc and /var/lib/hyperv (tests, containers). (default: /)",
    )

    out = parser.add_argument_group("textfile mode (instead of serving HTTP)")
    out.add_argument(
        "--textfile",
        type=Path,
        metavar="PATH",
        help="Write metrics atomically to PATH (a .prom file in the textfile collector's directory).",
    )
    out.add_argument(
        "--textfile.interval",
        dest="textfile_interval",
        type=duration,
        default=60.0,
        metavar="DURATION",
        help="How often to rewrite the textfile. (default: 60s)",
    )
    out.add_argument("--once", action="store_true", help="Write the textfile once and exit.")

    coll = parser.add_argument_group("collectors", "Each defaults to enabled where the platform supports it.")
    for name, text in COLLECTOR_HELP.items():
        coll.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"Enable the {name} collector: {text}.",
        )
    coll.add_argument(
        "--probe.timeout",
        dest="probe_timeout",
        type=duration,
        default=8.0,
        metavar="DURATION",
        help="Deadline for every collector in one collection. (default: 8s)",
    )

    p = parser.add_argument_group("ptp collector")
    p.add_argument(
        "--ptp.device",
        dest="ptp_device",
        type=Path,
        metavar="PATH",
        help="PTP clock device (default: /dev/ptp_hyperv, else the ptp device named 'hyperv').",
    )
    p.add_argument(
        "--ptp.samples",
        dest="ptp_samples",
        type=positive_int,
        default=10,
        metavar="N",
        help=f"PTP_SYS_OFFSET samples per reading, 1..{ptp.PTP_MAX_SAMPLES}. (default: 10)",
    )

    n = parser.add_argument_group("ntp collector")
    n.add_argument(
        "--ntp.server",
        dest="ntp_server",
        type=_server,
        action="append",
        metavar="HOST[:PORT]",
        help="NTP server to compare with; repeatable; IPv6 as [addr]:port. "
        "(default: the servers in chrony/timesyncd/ntpd configuration, or W32Time's NtpServer)",
    )
    n.add_argument("--ntp.version", dest="ntp_version", type=int, choices=(3, 4), default=4, help="(default: 4)")
    n.add_argument(
        "--ntp.samples",
        dest="ntp_samples",
        type=positive_int,
        default=3,
        metavar="N",
        help="Requests per measurement; the minimum-delay answer is used. (default: 3)",
    )
    n.add_argument(
        "--ntp.sample-interval",
        dest="ntp_sample_interval",
        type=duration,
        default=2.0,
        metavar="DURATION",
        help="Pause between requests to one server (servers drop faster clients). (default: 2s)",
    )
    n.add_argument(
        "--ntp.request-timeout",
        dest="ntp_request_timeout",
        type=duration,
        default=1.0,
        metavar="DURATION",
        help="Wait for one answer. (default: 1s)",
    )
    n.add_argument(
        "--ntp.timeout",
        dest="ntp_timeout",
        type=duration,
        default=5.0,
        metavar="DURATION",
        help="Bound on one whole measurement of one server. (default: 5s)",
    )
    n.add_argument(
        "--ntp.min-interval",
        dest="ntp_min_interval",
        type=duration,
        default=64.0,
        metavar="DURATION",
        help="Measure a server at most this often; the last result is served in between. (default: 64s)",
    )
    n.add_argument(
        "--ntp.max-servers",
        dest="ntp_max_servers",
        type=positive_int,
        default=8,
        metavar="N",
        help="Cap on servers taken from the system configuration. (default: 8)",
    )

    k = parser.add_argument_group("kvp collector")
    k.add_argument(
        "--kvp.key",
        dest="kvp_key",
        type=_kvp_key,
        action="append",
        metavar="[POOL:]KEY",
        help="KVP key to export as hyperv_guest_kvp_info; repeatable; replaces the default. "
        "(default: pool 3's HostName, PhysicalHostName, PhysicalHostNameFullyQualified, "
        "VirtualMachineName, VirtualMachineId)",
    )
    k.add_argument(
        "--kvp.max-value-length",
        dest="kvp_max_value_length",
        type=positive_int,
        default=256,
        metavar="N",
        help="Longer KVP values are cut. (default: 256)",
    )
    k.add_argument(
        "--kvp.lock-timeout",
        dest="kvp_lock_timeout",
        type=duration,
        default=1.0,
        metavar="DURATION",
        help="Wait for the KVP daemon's pool lock. (default: 1s)",
    )
    return parser


@dataclass
class Agent:
    registry: CollectorRegistry
    collector: GuestCollector
    monitor: NtpMonitor | None
    collectors: list[str]

    def close(self) -> None:
        self.collector.close()
        if self.monitor is not None:
            self.monitor.close()


def build_agent(
    args: argparse.Namespace,
    platform: str = sys.platform,
    api: windows.WindowsApi | None = None,
    phc_reader: ptp.PhcReader | None = None,
    adjtimex: timex.AdjtimexFn | None = None,
) -> Agent:
    """The probes for this platform and these flags, on a private registry.

    ``api``, ``phc_reader`` and ``adjtimex`` are the seams to what cannot exist on a test machine
    (Windows, a Hyper-V PTP device, a disciplined kernel clock); None means the real thing.
    """
    is_windows = platform == "win32"
    root = Root(args.root)
    specs: list[KeySpec] = args.kvp_key or list(DEFAULT_KEYS)
    names = WINDOWS_COLLECTORS if is_windows else LINUX_COLLECTORS
    enabled = [n for n in names if getattr(args, f"collector_{n}")]
    if is_windows and api is None:
        api = windows.RealWindowsApi()
    probes: list[Probe] = []
    monitor: NtpMonitor | None = None
    for name in enabled:
        if name == "ptp":
            probes.append(
                HostClockProbe(
                    root,
                    phc_reader or ptp.IoctlPhcReader(),
                    min(args.ptp_samples, ptp.PTP_MAX_SAMPLES),
                    args.ptp_device,
                )
            )
        elif name == "timex":
            probes.append(TimexProbe(adjtimex))
        elif name == "components":
            probes.append(WindowsComponentsProbe(api) if api is not None else ComponentsProbe(root))
        elif name == "kvp":
            if api is not None:
                probes.append(WindowsKvpProbe(api, specs, args.kvp_max_value_length))
            else:
                probes.append(KvpProbe(root, specs, args.kvp_lock_timeout, args.kvp_max_value_length))
        elif name == "time_provider" and api is not None:
            probes.append(TimeProviderProbe(api))
        elif name == "ntp":
            servers: list[NtpServer] = list(dict.fromkeys(args.ntp_server or []))
            if not servers:
                servers = (
                    windows.ntp_servers(api, args.ntp_max_servers)
                    if api is not None
                    else ntpconf.system_servers(root, args.ntp_max_servers)
                )
                source = "system configuration"
            else:
                source = "--ntp.server"
            if not servers:
                log.warning("no NTP servers given or configured; the ntp collector measures nothing")
            else:
                log.info("NTP servers", extra={"servers": " ".join(s.label for s in servers), "source": source})
            options = MeasureOptions(
                version=args.ntp_version,
                samples=args.ntp_samples,
                sample_interval=args.ntp_sample_interval,
                request_timeout=args.ntp_request_timeout,
                timeout=args.ntp_timeout,
            )
            monitor = NtpMonitor(servers, options, min_interval=args.ntp_min_interval)
            if args.textfile is None:
                # Serving HTTP: measure from start-up on, on the schedule; a scrape never waits.
                monitor.start()
            # Textfile mode waits for the measurement made for each file, never past the probe deadline.
            wait = max(0.0, min(args.ntp_timeout + 0.5, args.probe_timeout - 0.25))
            probes.append(NtpProbe(monitor, wait, block=args.textfile is not None))
    collector = GuestCollector(probes, timeout=args.probe_timeout)
    registry = CollectorRegistry()  # private: no process/platform collectors, no auto-describe
    registry.register(collector)
    return Agent(registry, collector, monitor, [p.name for p in probes])


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM; the previous handlers come back afterwards (main() may run in-process)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_textfile(agent: Agent, path: Path, interval: float, once: bool, stop: threading.Event) -> int:
    while True:
        try:
            write_atomic(path, generate_latest(agent.registry))
        except OSError as exc:
            log.error("cannot write textfile", extra={"path": str(path), "err": str(exc)})
            if once:
                return 1
        else:
            log.debug("wrote textfile", extra={"path": str(path)})
        if once or stop.wait(interval):
            return 0


def run_http(agent: Agent, args: argparse.Namespace, stop: threading.Event) -> int:
    server = WebServer(
        args.web_listen_address,
        make_handler(agent.registry, agent.collectors),
        web_config_file=args.web_config_file,
        name="hyperv-guest-agent",
        max_connections=args.web_max_connections,
    )
    server.bind_reload_gauge(web_config_reload_gauge("hyperv_guest", agent.registry))
    try:
        server.start()
    except (OSError, WebConfigError) as exc:
        log.error("cannot start the web server", extra={"err": str(exc)})
        return 1
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.once and args.textfile is None:
        parser.error("--once needs --textfile")
    if args.ptp_samples > ptp.PTP_MAX_SAMPLES:
        parser.error(f"--ptp.samples must be at most {ptp.PTP_MAX_SAMPLES}")
    setup_logging(args.log_level, args.log_format)
    agent = build_agent(args)
    log.info("starting hyperv-guest-agent", extra={"version": __version__, "collectors": ",".join(agent.collectors)})
    try:
        with _stop_on_signals() as stop:
            if args.textfile is not None:
                return run_textfile(agent, args.textfile, args.textfile_interval, args.once, stop)
            return run_http(agent, args, stop)
    finally:
        agent.close()
