"""``hyperv-sim``: serve a fleet file's simulated Hyper-V hosts over WS-Management.

Or a generated fleet (``--fleet.generate 100x100 --fleet.seed 1``, sim/generator.py): the input of
the benchmarks, so that anyone can rerun one against the real exporter from the command line.

Each host gets its own WinRM listener on ``--listen`` (port from the fleet file's
``Simulator.Port``, or a free one); the tool prints one line per host with its URL, so that an
exporter's ``endpoints:`` map can point at it. Passwords come from the fleet file's
``PasswordFile``/``PasswordEnv``, or for every host from ``--password-file``/``HYPERV_SIM_PASSWORD``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from hyperv_exporter import __version__, logutil
from hyperv_exporter.sim.cost import MODELS, WINDOWS
from hyperv_exporter.sim.fleet import SimFleet, demo_fleet, load_fleet, with_password
from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import Simulator, exporter_config, use_least_privilege, winrm_block_for
from hyperv_exporter.sim.replay import CaptureError, replay_fleet, runner_for
from hyperv_exporter.yamlutil import YamlError

log = logging.getLogger("hyperv_exporter.sim")
PASSWORD_ENV = "HYPERV_SIM_PASSWORD"  # noqa: S105 - the name of the variable, not a password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperv-sim", description="Simulated Hyper-V hosts speaking WS-Management.")
    parser.add_argument("--version", action="version", version=f"hyperv-sim {__version__}")
    parser.add_argument(
        "--fleet.file", dest="fleet_file", metavar="FILE",
        help="Fleet file (YAML, see docs/simulator.md). Default: the built-in demo fleet.",
    )  # fmt: skip
    parser.add_argument(
        "--fleet.generate", dest="fleet_generate", metavar="HOSTSxVMS", type=_fleet_size,
        help="Serve a generated fleet of HOSTS hosts with VMS VMs each (e.g. 100x100; sim/generator.py, "
        "the benchmarks' input) instead of a fleet file.",
    )  # fmt: skip
    parser.add_argument(
        "--fleet.seed", dest="fleet_seed", metavar="N", type=int, default=1,
        help="Seed of --fleet.generate: the same seed gives the same fleet on every machine (default: 1).",
    )  # fmt: skip
    parser.add_argument(
        "--replay", nargs="+", metavar="FILE",
        help="Serve these capture files (deploy/windows/capture-collection.ps1) as hosts instead of a fleet file.",
    )  # fmt: skip
    parser.add_argument(
        "--listen", default="127.0.0.1", metavar="ADDRESS", help="Address the listeners bind to (default: 127.0.0.1)."
    )
    parser.add_argument(
        "--password-file", dest="password_file", metavar="FILE",
        help=f"Password for every host without its own (or set {PASSWORD_ENV}).",
    )  # fmt: skip
    parser.add_argument(
        "--exporter-config", dest="exporter_config", metavar="FILE",
        help="Write an exporter configuration for these simulated hosts to FILE (for hyperv-exporter --config.file).",
    )  # fmt: skip
    parser.add_argument(
        "--tls.cert-file", dest="tls_cert_file", metavar="FILE", help="Serve HTTPS with this certificate."
    )
    parser.add_argument("--tls.key-file", dest="tls_key_file", metavar="FILE", help="Private key for --tls.cert-file.")
    parser.add_argument(
        "--web.listen-address", dest="web_listen_address", action="append", metavar="ADDRESS",
        help="Serve the simulator's own counters (requests, processes started, host CPU per host) on "
        "/metrics at this address (host:port, repeatable). Default: not served.",
    )  # fmt: skip
    parser.add_argument(
        "--process-cost", dest="process_cost", default="windows", choices=list(MODELS),
        help="What a new PowerShell process costs a host whose fleet entry does not say: windows "
        f"({WINDOWS.start_seconds:g} s start-up + {WINDOWS.import_seconds:g} s Hyper-V module import) "
        "or none (default: windows).",
    )  # fmt: skip
    parser.add_argument("--log.level", dest="log_level", default="info", choices=list(logutil.LEVELS))
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=list(logutil.FORMATS))
    return parser


MAX_GENERATED_VMS = 1_000_000  # hosts x VMs; a bigger fleet is a typo, not a benchmark


def _fleet_size(text: str) -> tuple[int, int]:
    hosts, sep, vms = text.lower().partition("x")
    if not sep or not hosts.strip().isdigit() or not vms.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected HOSTSxVMS, e.g. 100x100, not {text!r}")
    size = int(hosts), int(vms)
    if size[0] < 1 or size[0] * size[1] > MAX_GENERATED_VMS:
        raise argparse.ArgumentTypeError(f"1 to {MAX_GENERATED_VMS:,} VMs in at least one host, not {text!r}")
    return size


def write_exporter_config(path: str, urls: dict[str, str], password_file: str | None, fleet: SimFleet) -> None:
    """A configuration for hyperv-exporter that probes these hosts, with the same password source, through
    the JEA endpoint when every host's account may use it (the built-in fleet's can)."""
    winrm = winrm_block_for(fleet)
    if password_file:
        text = exporter_config(urls, str(Path(password_file).resolve()), winrm=winrm)
    else:
        winrm = winrm.replace("password_file: {password_file}", f"password_env: {PASSWORD_ENV}")
        text = exporter_config(urls, "", winrm=winrm)
    Path(path).write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logutil.setup_logging(args.log_level, args.log_format)
    if args.replay and args.fleet_file:
        print("error: --replay and --fleet.file go separately", file=sys.stderr)
        return 1
    if args.fleet_generate and (args.fleet_file or args.replay):
        print("error: --fleet.generate goes without --fleet.file and --replay", file=sys.stderr)
        return 1
    try:
        if args.replay:
            fleet = replay_fleet(args.replay)
        elif args.fleet_generate:
            fleet = generate_fleet(*args.fleet_generate, seed=args.fleet_seed)
        else:
            # The built-in fleet shows the recommended account: only in the JEA endpoint's role group.
            fleet = load_fleet(args.fleet_file) if args.fleet_file else use_least_privilege(demo_fleet())
    except (YamlError, CaptureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    password = os.environ.get(PASSWORD_ENV)
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            print(f"error: cannot read {args.password_file}: {exc.strerror}", file=sys.stderr)
            return 1
    if password:
        logutil.register_secret(password)
        with_password(fleet, password, {h.computer_name for h in fleet.hosts if h.password is None})
    missing = [h.computer_name for h in fleet.hosts if h.password is None]
    if missing:
        print(f"error: no password for {', '.join(missing)}: use --password-file or {PASSWORD_ENV}", file=sys.stderr)
        return 1
    context = None
    if args.tls_cert_file or args.tls_key_file:
        if not (args.tls_cert_file and args.tls_key_file):
            print("error: --tls.cert-file and --tls.key-file go together", file=sys.stderr)
            return 1
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 1
    simulator = Simulator(
        fleet, bind=args.listen, ssl_context=context, process_cost=MODELS[args.process_cost], runner_factory=runner_for
    )
    metrics_server = None
    try:
        simulator.start()
        if args.web_listen_address:
            from hyperv_exporter.sim.metrics import make_handler  # noqa: PLC0415 - only with the flag
            from hyperv_exporter.web import WebServer  # noqa: PLC0415

            metrics_server = WebServer(args.web_listen_address, make_handler(simulator), name="hyperv-sim")
            metrics_server.start()
    except (OSError, ValueError) as exc:
        simulator.stop()
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    if args.exporter_config:
        write_exporter_config(args.exporter_config, simulator.urls(), args.password_file, fleet)
    for name, url in simulator.urls().items():
        print(f"{name} {url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    stop.wait()
    if metrics_server is not None:
        metrics_server.stop()
    simulator.stop()
    return 0
