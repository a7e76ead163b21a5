"""The benchmark suite at tiny sizes, so that it cannot rot (no timing is asserted: tests stay deterministic)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import IN_CI, REPO, require_tool

if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not of the wheel
    sys.path.insert(0, str(REPO))

from benchmarks.run import BEGIN, END, write_into


def test_benchmark_suite_runs_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    if IN_CI:
        require_tool("prometheus-node-exporter")  # the Go anchor must really run in CI
    output, raw = tmp_path / "performance.md", tmp_path / "results.json"
    output.write_text("# Performance\n\nProse that the benchmark must keep.\n\n" + BEGIN + "\nold\n" + END + "\n")
    command = [
        sys.executable, "-m", "benchmarks.run", "--quick", "--sizes", "5", "--probes", "2",
        "--fleet-hosts", "2", "--fleet-vms", "3", "--fleet-rounds", "1", "--interval", "2", "--schedules", "burst",
        "--guest-scrapes", "2", "--ntp-measurements", "3", "--output", str(output), "--json", str(raw),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    text = output.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nProse that the benchmark must keep.\n")
    assert "old" not in text and text.count(BEGIN) == 1 and text.count(END) == 1
    for heading in (
        "### One host",
        "### Baselines",
        "### Series per VM",
        "### Fleet",
        "### Guest agent",
        "### Targets",
    ):
        assert heading in text

    results = json.loads(raw.read_text(encoding="utf-8"))
    (size,) = results["sizes"]
    assert size["vms"] == 5 and size["problems"] == 0
    # A new shell costs one Create; a steady probe is Command, Receive, Signal; both sides count alike.
    assert (size["requests_first"], size["requests_steady"]) == (4, 3)
    assert (size["sim_requests_first"], size["sim_requests_steady"]) == (4, 3)
    assert size["samples"] > 5 * 15 and size["series_per_vm"] > 15  # about 22 per VM since the series budget
    assert size["family_series"]["hyperv_vm_state"] == 1  # one series per VM: the current state
    # Exporter and node_exporter interleaved, one value per round; peaks per round.
    assert len(size["exporter_cpu"]) == len(size["sim_cpu"]) == len(size["exporter_peak_rss"]) == 2
    assert all(peak > 0 for peak in size["exporter_peak_rss"])
    if size["node_ok"]:
        assert len(size["node_cpu"]) == 2
    (fleet,) = results["fleet"]
    assert len(fleet["latencies"]) == 2 and fleet["failed"] == 0
    assert "exporter CPU / node_exporter CPU" in text and "simulated host's CPU per probe" in text
    guest = results["guest"]
    assert guest["measurements"] == 3 and guest["failed"] == 0 and len(guest["errors"]) == 3


def test_results_replace_only_the_marked_section(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    write_into(doc, "new table\n")
    assert doc.read_text() == f"intro\n{BEGIN}\nnew table\n{END}\noutro\n"
    fresh = tmp_path / "fresh.md"
    write_into(fresh, "table\n")
    assert fresh.read_text().endswith(f"{BEGIN}\ntable\n{END}\n")
