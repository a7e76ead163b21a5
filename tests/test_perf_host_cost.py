"""benchmarks/host_cost.py runs end to end (without the process cost: tests don't wait for it) and
writes only its own section of the performance document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

if str(REPO) not in sys.path:  # benchmarks/ is a top-level package of the repository, not of the wheel
    sys.path.insert(0, str(REPO))

from benchmarks.host_cost import BEGIN, END, HEADING, write_section
from benchmarks.run import BEGIN as SUITE_BEGIN


def test_host_cost_benchmark_counts_processes_per_protocol(tmp_path: Path) -> None:
    output, raw = tmp_path / "performance.md", tmp_path / "cost.json"
    output.write_text("# Performance\n\nProse.\n\n" + SUITE_BEGIN + "\nsuite\n<!-- benchmark:end -->\n")
    command = [
        sys.executable, "-m", "benchmarks.host_cost", "--quick", "--process-cost", "none", "--run-seconds", "0.1",
        "--output", str(output), "--json", str(raw),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["protocol"]: r for r in json.loads(raw.read_text(encoding="utf-8"))}
    assert set(results) == {"psrp", "winrs"}
    for protocol, processes in (("psrp", 0), ("winrs", 1)):
        result = results[protocol]
        assert result["first"]["host"]["processes"] == 1  # the runspace pool's wsmprovhost.exe / powershell.exe
        for probe in result["steady"]:
            assert probe["host"]["processes"] == processes
            assert probe["requests"] == probe["host"]["requests"] == 3  # both sides count alike
            assert abs(probe["error"]) <= probe["uncertainty"]
    text = output.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nProse.\n") and "suite" in text  # the suite's block is kept
    assert text.count(HEADING) == 1 and "| psrp | 20 |" in text


def test_the_section_is_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\n{HEADING}\n\n{BEGIN}\nold\n{END}\n\n## Later\n")
    write_section(doc, "new\n")
    assert doc.read_text() == f"# Performance\n\n{HEADING}\n\n{BEGIN}\nnew\n{END}\n\n## Later\n"
