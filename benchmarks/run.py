"""The benchmark suite: ``.venv/bin/python -m benchmarks.run`` (or ``scripts/bench.sh``).

Runs, in one go and on one machine: one host with 100, 1,000 and 5,000 VMs (per-probe split,
exporter overhead, the prometheus_client floor and the node_exporter textfile anchor), HTTP
requests per probe, a 100 x 100 fleet probed every 15 s, and the guest agent. Prints the results
as Markdown tables and writes them into docs/performance.md between the ``benchmark`` markers
(``--quick`` is a smoke run at small sizes that writes nothing unless ``--output`` is given).
About four minutes on a 2-core machine; ``--quick`` about 15 seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, load_average, machine
from benchmarks.fleet import FleetResult, run_fleet
from benchmarks.guest import GuestResult, run_guest
from benchmarks.single_host import SizeResult, node_exporter_version, run_size

BEGIN = "<!-- benchmark:begin -->"
END = "<!-- benchmark:end -->"
DOC = REPO / "docs" / "performance.md"
PROFILE_SIZE = 1000  # the size whose profile goes into the docs (the largest run size if absent)

# The targets (docs/performance.md explains each).
TARGET_OVERHEAD_RATIO = 1.0
TARGET_STEADY_REQUESTS = 3
TARGET_P99 = 5.0
TARGET_FLEET_RSS = 200 * 1024 * 1024
TARGET_GUEST_RSS = 40 * 1024 * 1024
TARGET_GUEST_CPU = 0.020
TARGET_NTP_ERROR = 100e-6


@dataclass
class Results:
    machine: dict[str, str]
    node_exporter: str
    command: str
    seconds: float
    sizes: list[SizeResult]
    fleet: list[FleetResult]
    guest: GuestResult | None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run at small sizes; writes no docs unless --output")
    p.add_argument("--output", type=Path, help=f"Markdown file to write the results into (default: {DOC})")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    for name, (full, quick) in DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=f"(default: {full}; --quick: {quick})")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: host, fleet, guest, cost")
    return p


# Option: (full run, --quick). sizes: VMs per host of the single-host runs; probes: per size (0 =
# 10, 5 or 3 for small, medium and large hosts); interval and latency are seconds.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "sizes": ("100,1000,5000", "20,100"),
    "probes": (0, 2),
    "fleet_hosts": (100, 10),
    "fleet_vms": (100, 20),
    "fleet_rounds": (4, 2),
    "interval": (15.0, 3.0),
    "latency": (0.05, 0.05),
    "schedules": ("spread,burst", "spread,burst"),
    "guest_scrapes": (100, 10),
    "ntp_measurements": (100, 20),
}


def _probes_for(vms: int) -> int:
    return 10 if vms <= 200 else 5 if vms <= 2000 else 3


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.monotonic()
    info = machine()
    info["load_start"] = load_average()
    print(
        f"Benchmarking on {info['cpu']} ({info['cores']} cores), {info['python']}, load {info['load_start']}",
        flush=True,
    )
    if info["load_start"] != "?" and float(info["load_start"]) > 0.5 * int(info["cores"]):
        print("warning: the machine is busy; other processes will skew the results", flush=True)
    results = Results(
        info, node_exporter_version(), "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]), 0.0, [], [], None
    )
    with tempfile.TemporaryDirectory(prefix="hyperv-bench-") as tmp:
        workdir = Path(tmp)
        if "host" not in skip:
            print("One host:", flush=True)
            profile_size = PROFILE_SIZE if PROFILE_SIZE in sizes else max(sizes)
            for vms in sizes:
                results.sizes.append(
                    run_size(workdir, vms, args.probes or _probes_for(vms), profile=vms == profile_size, log=_log)
                )
        if "fleet" not in skip:
            print("Fleet:", flush=True)
            results.fleet = run_fleet(
                workdir,
                args.fleet_hosts,
                args.fleet_vms,
                latency=args.latency,
                interval=args.interval,
                rounds=args.fleet_rounds,
                schedules=tuple(s for s in args.schedules.split(",") if s),
                log=_log,
            )
        if "guest" not in skip:
            print("Guest agent:", flush=True)
            results.guest = run_guest(args.guest_scrapes, args.ntp_measurements, log=_log)
    results.seconds = time.monotonic() - started
    text = render(results)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1, default=str), encoding="utf-8")
    output = args.output or (None if args.quick else DOC)
    if output is not None and not args.no_write:
        write_into(output, text)
        print(f"wrote {output}")
    if "cost" not in skip and not args.quick:
        # What a probe costs the host, per protocol, in its own section (benchmarks/host_cost.py; it
        # waits out real process start-ups, so --quick leaves it to `python -m benchmarks.host_cost --quick`).
        from benchmarks import host_cost

        host_cost.main(["--no-write"] if output is None or args.no_write else ["--output", str(output)])
    return 0


def _log(message: str) -> None:
    print(message, flush=True)


# -- Markdown ------------------------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:,.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:,.0f} KiB"


def _median(values: list[float]) -> float:
    from benchmarks.common import median

    return median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" ---: " if i else " --- " for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(r: Results) -> str:
    m = r.machine
    parts = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['python']}; {m['os']}; "
        f"{r.node_exporter}. Command: `{r.command.strip()}` ({r.seconds / 60:.1f} minutes; 1-minute load "
        f"average before the run {m.get('load_start', '?')}).",
    ]
    if r.sizes:
        parts.append("### One host: per probe, steady state (medians)")
        parts.append(
            table(
                [
                    "VMs",
                    "JSON on the host",
                    "over WinRM",
                    "HTTP requests (first / steady)",
                    "exchange (wall)",
                    "exchange CPU",
                    "decode + parse",
                    "render",
                    "exposition",
                    "samples",
                    "series per VM",
                    "/probe wall",
                    "exporter CPU per probe",
                    "exporter RSS",
                ],
                [
                    [
                        f"{s.vms:,}",
                        mib(s.json_bytes),
                        mib(s.stdout_bytes),
                        f"{s.requests_first} / {s.requests_steady} "
                        f"(sim: {s.sim_requests_first} / {s.sim_requests_steady})",
                        ms(_median(s.exchange.wall)),
                        ms(_median(s.exchange.cpu)),
                        ms(_median(s.parse.cpu)),
                        ms(_median(s.render.cpu)),
                        f"{mib(s.exposition_bytes)} ({mib(s.exposition_gzip_bytes)} gzip)",
                        f"{s.samples:,}",
                        f"{s.series_per_vm:.1f}",
                        ms(_median(s.e2e_wall)),
                        ms(s.e2e_cpu_per_probe),
                        mib(s.exporter_rss),
                    ]
                    for s in r.sizes
                ],
            )
        )
        parts.append("### Baselines for the same series, same run")
        parts.append(
            table(
                [
                    "VMs",
                    "our render",
                    "prometheus_client generate_latest (floor)",
                    "render / floor",
                    "exporter overhead (CPU per probe)",
                    "node_exporter textfile scrape (median wall)",
                    "node_exporter CPU per scrape",
                    "overhead / node_exporter wall",
                    "overhead / node_exporter CPU",
                ],
                [
                    [
                        f"{s.vms:,}",
                        ms(_median(s.render.cpu)),
                        ms(s.floor_render),
                        _ratio(_median(s.render.cpu), s.floor_render),
                        ms(s.overhead),
                        ms(s.node_wall) if s.node_ok else "n/a",
                        ms(s.node_cpu_per_scrape) if s.node_ok else "n/a",
                        _ratio(s.overhead, s.node_wall) if s.node_ok else "n/a",
                        _ratio(s.overhead, s.node_cpu_per_scrape) if s.node_ok else "n/a",
                    ]
                    for s in r.sizes
                ],
            )
        )
        largest = next((s for s in r.sizes if s.vms == PROFILE_SIZE), r.sizes[-1])
        parts.append(f"### Series per VM ({largest.vms:,}-VM host, averaged over all its VMs)")
        rows = sorted(largest.family_series.items(), key=lambda kv: -kv[1])
        parts.append(table(["sample name", "series per VM"], [[f"`{n}`", f"{v:.2f}"] for n, v in rows if v >= 0.005]))
    if r.fleet:
        parts.append("### Fleet: every host probed once per interval")
        parts.append(
            table(
                [
                    "schedule",
                    "hosts x VMs",
                    "latency per request",
                    "interval x rounds",
                    "probes",
                    "p50",
                    "p99",
                    "slowest",
                    "missed the interval",
                    "HTTP requests (first / steady)",
                    "exporter RSS (peak)",
                    "exporter CPU per probe",
                ],
                [
                    [
                        f.schedule,
                        f"{f.hosts} x {f.vms}",
                        ms(f.latency),
                        f"{f.interval:g} s x {f.rounds}",
                        f.probes,
                        ms(f.p50),
                        ms(f.p99),
                        ms(f.worst),
                        f"{f.missed} ({f.failed} failed)",
                        f"{_mode(f.requests_first)} / {_mode(f.requests_steady)}",
                        mib(f.rss_peak),
                        ms(f.cpu_per_probe),
                    ]
                    for f in r.fleet
                ],
            )
        )
    if r.guest is not None:
        g = r.guest
        parts.append("### Guest agent")
        parts.append(
            table(
                [
                    "CPU per scrape",
                    "scrape (median wall)",
                    "RSS (peak)",
                    "NTP error median",
                    "NTP error p99",
                    "bound (delay/2) median",
                    "bound p99",
                    "error within bound",
                    "failed",
                ],
                [
                    [
                        ms(g.cpu_per_scrape),
                        ms(g.scrape_wall_median),
                        f"{mib(g.rss)} ({mib(g.rss_peak)})",
                        f"{g.error_median * 1e6:.1f} µs",
                        f"{g.error_p99 * 1e6:.1f} µs",
                        f"{g.bound_median * 1e6:.1f} µs",
                        f"{g.bound_p99 * 1e6:.1f} µs",
                        f"{g.within_bound} of {len(g.errors)}",
                        g.failed,
                    ]
                ],
            )
        )
    parts.append("### Targets")
    parts.append(targets(r))
    profiled = next((s for s in r.sizes if s.profile), None)
    if profiled is not None:
        parts.append(f"### Profile: decode + parse + render of the {profiled.vms:,}-VM host (3 rounds, pyinstrument)")
        lines = profiled.profile.splitlines()
        parts.append("```text\n" + "\n".join(lines[:60]) + ("\n..." if len(lines) > 60 else "") + "\n```")
    return "\n\n".join(parts) + "\n"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def _mode(values: list[int]) -> str:
    if not values:
        return "n/a"
    return str(max(set(values), key=values.count)) + (
        "" if len(set(values)) == 1 else f" ({min(values)}-{max(values)})"
    )


def targets(r: Results) -> str:
    rows: list[list[str]] = []

    def check(name: str, ok: bool | None, measured: str, target: str) -> None:
        rows.append([name, target, measured, "" if ok is None else ("met" if ok else "**not met**")])

    one = next((s for s in r.sizes if s.vms == 1000), None)
    if one is not None:
        ratio = one.overhead / one.node_wall if one.node_ok and one.node_wall > 0 else None
        check(
            "1,000-VM host: exporter overhead / node_exporter textfile",
            None if ratio is None else ratio <= 1.0,
            "n/a" if ratio is None else f"{ratio:.2f}",
            f"≤ {TARGET_OVERHEAD_RATIO:.1f}",
        )
    small = [s for s in r.sizes if s.vms <= 100]
    steady = [s.requests_steady for s in small] + [x for f in r.fleet for x in f.requests_steady]
    if steady:
        check(
            "steady-state HTTP requests per probe (≤ 100 VMs)",
            max(steady) <= TARGET_STEADY_REQUESTS,
            str(max(steady)),
            f"≤ {TARGET_STEADY_REQUESTS}",
        )
    for f in r.fleet:
        # The targets are for Prometheus' schedule (spread); the burst is a stress test, shown as such.
        stress = f.schedule != "spread"
        label = f"fleet {f.hosts} x {f.vms} ({f.schedule}{', stress test, no target' if stress else ''})"

        def verdict(ok: bool, stress: bool = stress) -> bool | None:
            return None if stress else ok

        check(f"{label}: probes that missed the interval", verdict(f.missed == 0), str(f.missed), "0")
        check(f"{label}: p99 probe latency", verdict(f.p99 < TARGET_P99), ms(f.p99), f"< {TARGET_P99:g} s")
        check(f"{label}: exporter resident memory (peak)", verdict(f.rss_peak < TARGET_FLEET_RSS), mib(f.rss_peak),
              "< 200 MiB")  # fmt: skip
    if r.guest is not None:
        g = r.guest
        check("guest agent resident memory", g.rss_peak < TARGET_GUEST_RSS, mib(g.rss_peak), "< 40 MiB")
        check("guest agent CPU per scrape", g.cpu_per_scrape < TARGET_GUEST_CPU, ms(g.cpu_per_scrape), "< 20 ms")
        check(
            "NTP offset error, median (loopback)",
            g.error_median < TARGET_NTP_ERROR and g.failed == 0,
            f"{g.error_median * 1e6:.1f} µs",
            "< 100 µs",
        )
    return table(["target", "goal", "measured", ""], rows)


def write_into(path: Path, text: str, begin: str = BEGIN, end: str = END, heading: str = "## Results") -> None:
    """Replace the text between the benchmark markers (or append a marked section under ``heading``)."""
    block = f"{begin}\n{text}{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
