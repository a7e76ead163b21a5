"""``hyperv-exporter``: command-line flags, start-up checks, serving, reload on SIGHUP, ``--demo``.

Flags follow the Prometheus exporter toolkit: ``--config.file``, ``--web.listen-address``,
``--web.config.file``, ``--collector.NAME`` / ``--no-collector.NAME``, ``--log.level``,
``--log.format``. Precedence: the ``--collector.*`` flags decide which collectors are *allowed*;
a module's ``collectors:`` list picks among those (absent: all allowed ones).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyperv_exporter import __version__, allocator, logutil
from hyperv_exporter.host.collectors import COLLECTORS
from hyperv_exporter.host.config import Config, ConfigError, Module, TargetAllowlist, load_config
from hyperv_exporter.host.discovery import DiscoverySettings
from hyperv_exporter.host.http_app import ExporterApp
from hyperv_exporter.host.probe import Prober
from hyperv_exporter.host.selfmetrics import ExporterMetrics
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.web import WebConfigError, WebServer, add_web_flags, load_web_config

if TYPE_CHECKING:  # imported lazily at run time: only --demo needs the simulator
    from hyperv_exporter.sim.host import Simulator

log = logging.getLogger("hyperv_exporter")

DEFAULT_PORT = 10020
DEFAULT_CONFIG = "/etc/hyperv_exporter/hyperv.yml"


def _seconds(text: str) -> float:
    """A finite, non-negative number of seconds (a negative offset would outlast Prometheus' timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperv-exporter",
        description="Prometheus exporter for Hyper-V integration services, collected agentlessly over WinRM.",
    )
    parser.add_argument("--version", action="version", version=f"hyperv-exporter {__version__}")
    parser.add_argument(
        "--config.file", dest="config_file", default=DEFAULT_CONFIG, metavar="FILE",
        help=f"Configuration file with the modules (default: {DEFAULT_CONFIG}).",
    )  # fmt: skip
    parser.add_argument(
        "--config.check", dest="config_check", action="store_true",
        help="Check the configuration file (and the web config, if given), then exit.",
    )  # fmt: skip
    parser.add_argument(
        "--demo", action="store_true",
        help="Start the Hyper-V host simulator with the built-in demo fleet in-process and serve the exporter for it.",
    )  # fmt: skip
    add_web_flags(parser, DEFAULT_PORT)
    parser.add_argument(
        "--timeout-offset", dest="timeout_offset", type=_seconds, default=0.5, metavar="SECONDS",
        help="Seconds subtracted from Prometheus' scrape timeout to get a probe's deadline (default: 0.5).",
    )  # fmt: skip
    group = parser.add_argument_group(
        "collectors", "Which collectors are allowed; a module's collectors: list selects among them."
    )
    for name, collector in COLLECTORS.items():
        state = "enabled" if collector.default_enabled else "disabled"
        group.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=collector.default_enabled,
            help=f"Enable the {name} collector: {collector.help} (default: {state}).",
        )
    parser.add_argument(
        "--log.level", dest="log_level", default="info", choices=list(logutil.LEVELS),
        help="Only log messages with the given severity or above (default: info).",
    )  # fmt: skip
    parser.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=list(logutil.FORMATS),
        help="Output format of log messages (default: logfmt).",
    )  # fmt: skip
    return parser


@dataclass
class Running:
    """A started exporter (used by the CLI, the demo and the tests)."""

    app: ExporterApp
    server: WebServer
    prober: Prober
    simulator: Simulator | None = None

    def stop(self) -> None:
        self.server.stop()
        self.prober.stop()
        if self.simulator is not None:
            self.simulator.stop()


def allowed_collectors(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(name for name in COLLECTORS if getattr(args, f"collector_{name}"))


def demo_config(urls: dict[str, str], username: str, password: str) -> Config:
    """The built-in module for --demo: only the simulated hosts are allowed targets. It shows the
    recommended set-up: PowerShell remoting to the read-only JEA endpoint with an account that is only
    in the endpoint's role group, NTLM with message encryption (plain HTTP on loopback only)."""
    module = Module(
        name="default",
        targets=TargetAllowlist.parse(urls),
        winrm=WinRMSettings(
            protocol="psrp",
            configuration_name="HyperVExporter",
            scheme="http",
            port=5985,
            transport="ntlm",
            username=username,
            password=Secret(password),
            password_source="generated for this demo run",  # noqa: S106 - a description, not a password
            message_encryption="auto",
        ),
        timeout=10.0,
        endpoints={name.lower(): url for name, url in urls.items()},
        cache_ttl=5.0,
        # The demo VMs report 10.x addresses in KVP, so /sd shows what discovery would find.
        discovery=DiscoverySettings(networks=(ipaddress.ip_network("10.0.0.0/8"),)),
    )
    return Config(modules={"default": module}, source="<built-in demo configuration>")


def start(args: argparse.Namespace) -> Running:
    """Load everything, bind the listeners; raises ConfigError/WebConfigError/OSError on bad input."""
    metrics = ExporterMetrics()
    prober = Prober(metrics, allowed_collectors(args))
    simulator = None
    reloader = None
    example_targets: dict[str, str] = {}
    if args.demo:
        # The simulator is only needed for --demo; importing it lazily keeps it out of normal start-up.
        from hyperv_exporter.sim.cost import WINDOWS  # noqa: PLC0415
        from hyperv_exporter.sim.fleet import demo_fleet, with_password  # noqa: PLC0415
        from hyperv_exporter.sim.host import Simulator, use_least_privilege  # noqa: PLC0415

        password = secrets.token_urlsafe(18)
        logutil.register_secret(password)
        fleet = use_least_privilege(with_password(demo_fleet(), password))
        # The demo shows what a probe costs a real host: a new PowerShell process takes seconds.
        simulator = Simulator(fleet, process_cost=WINDOWS)
        simulator.start()
        config = demo_config(simulator.urls(), fleet.hosts[0].username, password)
        example_targets["default"] = fleet.hosts[0].computer_name
    else:
        config_file = args.config_file
        config = load_config(config_file)

        def reloader() -> Config:
            return load_config(config_file)

    if simulator is not None:
        # --demo: the simulated hosts' own counters (requests, processes started, host CPU) beside the
        # exporter's, so the demo shows what each probe costs a host.
        from hyperv_exporter.sim.metrics import SimulatorCollector  # noqa: PLC0415

        metrics.registry.register(SimulatorCollector(simulator))
    app = ExporterApp(
        config=config,
        prober=prober,
        metrics=metrics,
        timeout_offset=args.timeout_offset,
        reloader=reloader,
        example_targets=example_targets,
        extra_links=[("/sd", "Service discovery of guest agents")] if _has_discovery(config) else [],
    )
    server = WebServer(
        args.web_listen_address,
        app,
        web_config_file=args.web_config_file,
        name="hyperv-exporter",
        max_connections=args.web_max_connections,
    )
    server.bind_reload_gauge(metrics.web_reload_success)
    try:
        server.start()
    except BaseException:
        prober.stop()
        if simulator is not None:
            simulator.stop()
        raise
    return Running(app=app, server=server, prober=prober, simulator=simulator)


def _has_discovery(config: Config) -> bool:
    return any(module.discovery is not None for module in config.modules.values())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logutil.setup_logging(args.log_level, args.log_format)
    allocator.tune()  # before any probe thread exists: bounded memory with many threads (allocator.py)
    allocator.tune_gc()  # young collections per probe, not per 700 objects (allocator.py)
    if args.config_check:
        try:
            if not args.demo:
                config = load_config(args.config_file)
                print(f"{args.config_file}: OK, modules: {', '.join(config.modules)}")
            if args.web_config_file:
                load_web_config(args.web_config_file)
                print(f"{args.web_config_file}: OK")
        except (ConfigError, WebConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        running = start(args)
    except (ConfigError, WebConfigError) as exc:
        log.error("invalid configuration: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_hup(signum: int, frame: object) -> None:
        threading.Thread(target=_reload_quietly, args=(running.app,), daemon=True).start()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    log.info("listening", extra=logutil.fields(version=__version__, address=" ".join(running.server.urls)))
    if args.demo:
        _print_demo_banner(running)
    stop.wait()
    log.info("shutting down")
    running.stop()
    return 0


def _reload_quietly(app: ExporterApp) -> None:
    try:
        app.reload()
    except ConfigError as exc:
        log.error("configuration reload failed; keeping the previous configuration: %s", exc)


def _print_demo_banner(running: Running) -> None:
    # A wildcard listener ([::] or 0.0.0.0) is not an address a browser can open.
    base = re.sub(r"//(\[::\]|0\.0\.0\.0):", "//localhost:", running.server.urls[0])
    rows = [("Landing page:", f"{base}/")]
    for name in running.app.config.modules["default"].endpoints:
        host = name.upper()
        rows.append((f"Metrics of {host}:", f"{base}/probe?module=default&target={host}"))
    rows.append(("Exporter metrics:", f"{base}/metrics"))
    width = max(len(label) for label, _ in rows)
    lines = ["", "hyperv-exporter demo: a simulated Hyper-V fleet is running in this process."]
    lines += [f"  {label:<{width}}  {url}" for label, url in rows]
    lines += ["Press Ctrl+C to stop.", ""]
    print("\n".join(lines), flush=True)
