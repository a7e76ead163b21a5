"""The benchmark suite: ``.venv/bin/python -m benchmarks.run`` (or ``scripts/bench.sh``).

Runs, in one go and on one machine: one host with 100, 1,000 and 5,000 VMs (per-probe split,
exporter CPU and peak memory interleaved with the node_exporter textfile anchor, the
prometheus_client floor), HTTP requests per probe, a 100 x 100 fleet probed every 15 s (spread and
burst), the guest agent, and any part registered in :data:`PARTS`. Prints the results
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
TARGET_CPU_PER_VM = 0.12e-3  # exporter CPU per VM of a 1,000-VM probe, seconds
TARGET_CPU_RATIO = 0.15  # exporter CPU / node_exporter CPU for the same exposition
TARGET_PROBE_PEAK_RSS = 80 * 1024 * 1024  # exporter VmHWM during a 1,000-VM probe
TARGET_STEADY_REQUESTS = 3
TARGET_P99 = 5.0  # spread schedule
TARGET_BURST_P99 = 3.0  # every host probed at the same instant
TARGET_FLEET_RSS = 200 * 1024 * 1024
TARGET_GUEST_RSS = 40 * 1024 * 1024
TARGET_GUEST_CPU = 0.020
TARGET_NTP_ERROR = 100e-6

# One row of the targets table: name, goal, measured, met (None: no verdict, shown without one).
TargetRow = tuple[str, str, str, bool | None]


@dataclass(frozen=True)
class Part:
    """A part of the suite that another module adds (e.g. the host-side cost of a probe).

    ``run(args, workdir, log)`` measures and returns JSON-serialisable results; ``render(results)``
    gives the Markdown for the Results section (headed ``### {title}``); ``targets(results)`` the
    rows it adds to the targets table. ``options`` adds command-line options (``--skip NAME`` skips it).
    """

    name: str
    title: str
    run: Callable[[argparse.Namespace, Path, Callable[[str], None]], Any]
    render: Callable[[Any], str]
    targets: Callable[[Any], list[TargetRow]] = lambda results: []
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None


# Parts run after the built-in ones, in this order. Register with PARTS.append(Part(...)) in a
# module that this file imports (the host-side cost of a probe, psrp against winrs, goes here).
PARTS: list[Part] = []


@dataclass
class Results:
    machine: dict[str, str]
    node_exporter: str
    command: str
    seconds: float
    sizes: list[SizeResult]
    fleet: list[FleetResult]
    guest: GuestResult | None
    parts: dict[str, Any] = field(default_factory=dict)  # results of PARTS, by name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run at small sizes; writes no docs unless --output")
    p.add_argument("--output", type=Path, help=f"Markdown file to write the results into (default: {DOC})")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    for name, (full, quick) in DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=f"(default: {full}; --quick: {quick})")
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: "
        + ", ".join(["host", "fleet", "guest", *(x.name for x in PARTS), "cost"]),
    )
    for part in PARTS:
        part.options(p)
    return p


# Option: (full run, --quick). sizes: VMs per host of the single-host runs; probes: per size (0 =
# 10, 5 or 3 for small, medium and large hosts); interval and latency are seconds.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "sizes": ("100,1000,5000", "20,100"),
    "probes": (0, 2),  # rounds of the interleaved exporter / node_exporter comparison
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
    return 7 if vms <= 2000 else 3


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
        for part in PARTS:
            if part.name not in skip:
                print(f"{part.title}:", flush=True)
                results.parts[part.name] = part.run(args, workdir, _log)
    results.seconds = time.monotonic() - started
    info["load_end"] = load_average()
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

        if output is None or args.no_write:
            host_cost.main(["--no-write"])
        else:  # the default document needs no --output (which would print this machine's path in it)
            host_cost.main([] if output == DOC else ["--output", str(output)])
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


def _min_median(values: Sequence[float]) -> str:
    return f"{ms(min(values))} / {ms(_median(list(values)))}" if values else "n/a"


def render(r: Results) -> str:
    m = r.machine
    parts = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['python']}; {m['os']}; "
        f"{r.node_exporter}. Command: `{r.command.strip()}` ({r.seconds / 60:.1f} minutes; 1-minute load "
        f"average {m.get('load_start', '?')} before the run and {m.get('load_end', '?')} after it: other work on "
        "the machine shares its cores, so CPU times are the measure and wall times are indicative).",
    ]
    if r.sizes:
        parts.append("### One host: per probe, steady state")
        parts.append(
            "In-process phases: medians of the steady probes. Exporter, simulator and node_exporter: "
            "CPU time of each process from /proc, min / median over the interleaved rounds; peak "
            "memory: the exporter's VmHWM, reset before each round, largest over the rounds."
        )
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
                    "exporter CPU per probe (min / median)",
                    "exporter CPU per VM",
                    "simulated host's CPU per probe",
                    "exporter peak RSS during a probe",
                    "exporter RSS after",
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
                        _min_median(s.exporter_cpu),
                        f"{s.overhead / max(1, s.vms) * 1000:.3f} ms",
                        ms(_median(s.sim_cpu)),
                        mib(s.peak_rss) + ("" if s.peak_reset else " (lifetime peak)"),
                        mib(s.exporter_rss),
                    ]
                    for s in r.sizes
                ],
            )
        )
        parts.append("### Baselines for the same series, same run")
        parts.append(
            "node_exporter's textfile collector serves the exporter's own output for the host, scraped "
            "the same way (gzip) in alternation with the exporter's probes; the ratio is CPU to CPU."
        )
        parts.append(
            table(
                [
                    "VMs",
                    "our render",
                    "prometheus_client generate_latest (floor)",
                    "render / floor",
                    "exporter CPU per probe (min / median)",
                    "node_exporter CPU per scrape (min / median)",
                    "node_exporter scrape (median wall)",
                    "exporter CPU / node_exporter CPU (median; min)",
                ],
                [
                    [
                        f"{s.vms:,}",
                        ms(_median(s.render.cpu)),
                        ms(s.floor_render),
                        _ratio(_median(s.render.cpu), s.floor_render),
                        _min_median(s.exporter_cpu),
                        _min_median(s.node_cpu) if s.node_ok else "n/a",
                        ms(_median(s.node_wall)) if s.node_ok else "n/a",
                        f"{_ratio(s.overhead, s.node_cpu_per_scrape)}; {_ratio(min(s.exporter_cpu), min(s.node_cpu))}"
                        if s.node_ok and s.node_cpu and s.exporter_cpu
                        else "n/a",
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
                    "simulated hosts' CPU per probe",
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
                        ms(f.sim_cpu_per_probe),
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
    for part in PARTS:
        if part.name in r.parts:
            parts.append(f"### {part.title}")
            parts.append(part.render(r.parts[part.name]))
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
    if one is not None and one.exporter_cpu:
        per_vm = one.overhead / one.vms
        distance = "" if per_vm <= TARGET_CPU_PER_VM else f" ({per_vm / TARGET_CPU_PER_VM:.2f}x the goal)"
        check(
            "1,000-VM host: exporter CPU per VM (median)",
            per_vm <= TARGET_CPU_PER_VM,
            f"{per_vm * 1000:.3f} ms{distance}",
            f"≤ {TARGET_CPU_PER_VM * 1000:.2f} ms",
        )
        ratio = one.overhead / one.node_cpu_per_scrape if one.node_ok and one.node_cpu_per_scrape > 0 else None
        check(
            "1,000-VM host: exporter CPU / node_exporter CPU (medians)",
            None if ratio is None else ratio <= TARGET_CPU_RATIO,
            "n/a" if ratio is None else f"{ratio:.2f}",
            f"≤ {TARGET_CPU_RATIO:.2f}",
        )
        check(
            "1,000-VM host: exporter peak RSS during a probe (VmHWM)",
            one.peak_rss <= TARGET_PROBE_PEAK_RSS if one.peak_reset else None,
            mib(one.peak_rss) + ("" if one.peak_reset else " (lifetime peak: VmHWM could not be reset)"),
            "≤ 80 MiB",
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
        label = f"fleet {f.hosts} x {f.vms} ({f.schedule})"
        p99_target = TARGET_P99 if f.schedule == "spread" else TARGET_BURST_P99
        check(f"{label}: probes that missed the interval", f.missed == 0, str(f.missed), "0")
        check(f"{label}: p99 probe latency", f.p99 <= p99_target, ms(f.p99), f"≤ {p99_target:g} s")
        check(f"{label}: exporter resident memory (peak)", f.rss_peak < TARGET_FLEET_RSS, mib(f.rss_peak),
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
    for part in PARTS:
        if part.name in r.parts:
            for name, goal, measured, ok in part.targets(r.parts[part.name]):
                check(name, ok, measured, goal)
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
