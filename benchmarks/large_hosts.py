"""Large hosts: what collect.ps1 prints and (in the simulator's model) needs at 1,000 and 3,000 VMs, with
and without the host-side KVP filter (``-KvpKeys``), and what a probe of such a host costs.

    python -m benchmarks.large_hosts [--sizes 1000,3000] [--probes 3]

Per size, for one generated host (``sim.generator``, seed 1; every section, KVP included):

1. **Output**: the JSON document's size, its ``-Gzip`` form (what crosses the wire), and the
   modelled peak memory of powershell.exe (``sim.scale.MemoryModel``), serialising the document in
   one ConvertTo-Json call (as collect.ps1 did) and in parts (as it does), against the WinRS
   ``MaxMemoryPerShellMB`` quota (150 MB: WinRM 2.0 and unpatched WMF 3.0; 1024 MB: the default since).
2. **Probe**: the exporter's WinRM conversation (``WinRMSession``) with the simulator in a process of
   its own, as a probe runs it, then decoding and parsing the output: wall time, HTTP requests, and
   whether the result is the same with and without the filter.

The numbers are printed, never asserted (tests assert behaviour). The 3,000-VM host is beyond
Hyper-V's own limit of 1,024 *running* VMs per host (the generator runs 85 % of them): an upper bound.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import load_average, machine
from benchmarks.stack import MODULE, Stack
from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS, load_config
from hyperv_exporter.host.transport.winrs import WinRMSession
from hyperv_exporter.sim import scale
from hyperv_exporter.sim.generator import generate_host
from hyperv_exporter.sim.ps51json import dumps

MB = 1024 * 1024
QUOTAS_MB = (150, 1024)


VARIANTS = (
    # (label, host-side KVP filter, document written in parts)
    ("collect.ps1 before: all KVP, one ConvertTo-Json", False, False),
    ("all KVP items, in parts", False, True),
    ("-KvpKeys + in parts (as shipped)", True, True),
)


def output_sizes(vms: int) -> list[dict[str, float | int | str]]:
    sections = sections_for(list(COLLECTORS))
    rows = []
    for label, filtered, streamed in VARIANTS:
        host = generate_host(0, vms, seed=1, now=1_700_000_000.0)
        doc = host.document(sections, 1_700_000_000.0)
        if filtered:
            scale.filter_document_kvp(doc, report.kvp_keys_read(DEFAULT_KVP_KEYS))
        held = scale.kvp_chars(doc)  # the items the script holds: all, or the allowlisted ones
        text = dumps(doc)
        wire = base64.b64encode(gzip.compress(text.encode("utf-8"), mtime=0))
        peak = scale.MODEL.peak_bytes(vms, held, len(text), True, len(wire) * 3 // 4, streamed=streamed)
        rows.append(
            {
                "vms": vms,
                "variant": label,
                "json_mb": len(text.encode("utf-8")) / MB,
                "wire_mb": len(wire) / MB,
                "kvp_mchars": held / 1e6,
                "peak_mb": peak / MB,
            }
        )
    return rows


def probe_times(vms: int, probes: int) -> list[dict[str, float | int | str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), 1, vms, exporter=False, timeout=300) as stack:
        module = load_config(str(stack.config_path)).modules[MODULE]
        target = stack.targets[0]
        sections = sections_for(list(COLLECTORS))
        kvp_filter = cimxml.allowlist(module.kvp.keys, module.kvp.max_value_length)
        reports = {}
        keys = report.kvp_keys_read(module.kvp.keys)
        for label, command in (
            ("all KVP items", script.command_line(sections, module.winrm.gzip)),
            ("-KvpKeys (default allowlist + guest facts)", script.probe_command(sections, module.winrm.gzip, keys)),
        ):
            session = WinRMSession(module.endpoint_url(target), module.winrm, script.script_text())
            walls, parses, requests, size = [], [], 0, 0
            try:
                for _ in range(probes):
                    start = time.perf_counter()
                    exchange = session.run(command[0], command[1], time.monotonic() + 300)
                    middle = time.perf_counter()
                    text = report.decode_output(exchange.stdout, module.winrm.max_output_bytes)
                    parsed = report.parse_report(text, kvp_filter, frozenset(module.kvp.sources))
                    walls.append(time.perf_counter() - start)
                    parses.append(time.perf_counter() - middle)
                    requests, size = exchange.requests, len(exchange.stdout)
            finally:
                session.close()
            reports[label] = sorted((vm.id, tuple(vm.kvp or ())) for vm in parsed.vms)
            rows.append(
                {
                    "vms": vms,
                    "kvp": label,
                    "wall_s": statistics.median(walls),
                    "parse_s": statistics.median(parses),
                    "requests": requests,
                    "stdout_mb": size / MB,
                }
            )
        same = len(set(map(str, reports.values()))) == 1
        for row in rows:
            row["same_kvp_metrics"] = "yes" if same else "NO"
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000", help="VMs per host, comma-separated")
    parser.add_argument("--probes", type=int, default=3, help="probes per size and variant (median reported)")
    parser.add_argument("--no-probe", action="store_true", help="output sizes and the memory model only")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    info = machine()
    print(f"# large hosts: {info['cpu']}, {info['cores']} cores, Python {info['python']}, load {load_average()}")
    print("\n| VMs | collect.ps1 | JSON (MB) | on the wire, gzip+base64 (MB) | KVP held (M chars) | "
          "modelled peak (MB) | " + " | ".join(f"fits {q} MB" for q in QUOTAS_MB) + " |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: | ---: | " + " | ".join("---" for _ in QUOTAS_MB) + " |")
    for vms in sizes:
        for row in output_sizes(vms):
            fits = " | ".join("yes" if float(row["peak_mb"]) <= q else "**no**" for q in QUOTAS_MB)
            print(
                f"| {vms:,} | {row['variant']} | {row['json_mb']:.1f} | {row['wire_mb']:.2f} | "
                f"{row['kvp_mchars']:.1f} | {row['peak_mb']:.0f} | {fits} |"
            )
    if args.no_probe:
        return 0
    print("\n| VMs | KVP | probe wall (s, median) | decode+parse (s) | HTTP requests | stdout (MB) | same KVP |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for vms in sizes:
        for row in probe_times(vms, args.probes):
            print(
                f"| {vms:,} | {row['kvp']} | {row['wall_s']:.2f} | {row['parse_s']:.2f} | {row['requests']} | "
                f"{row['stdout_mb']:.2f} | {row['same_kvp_metrics']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
