"""docs/metrics.md is generated from the code (hyperv_exporter.metricsdoc) and must not go stale."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO
from hyperv_exporter import metricsdoc

METRICS_MD = REPO / "docs" / "metrics.md"


def test_metrics_md_is_current() -> None:
    expected = metricsdoc.render_markdown()
    current = METRICS_MD.read_text(encoding="utf-8") if METRICS_MD.exists() else ""
    assert current == expected, f"docs/metrics.md is stale; regenerate it with: .venv/bin/{metricsdoc.REGENERATE}"


def test_every_golden_family_is_documented() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))
    for golden in (REPO / "tests" / "golden").glob("*.prom"):
        for name in re.findall(r"^# TYPE (\S+) ", golden.read_text(encoding="utf-8"), flags=re.M):
            assert name in documented or f"{name}_total" in documented, (
                f"{name} ({golden.name}) is not in docs/metrics.md"
            )


def test_documented_families_have_help_and_labels_as_exposed() -> None:
    sections = metricsdoc.probe_sections()
    probe = {name for _, _, docs in sections for name in docs}
    assert {"hyperv_up", "hyperv_vm_state", "hyperv_vm_kvp_info", "hyperv_host_time_offset_seconds"} <= probe
    for _, _, docs in sections:
        for doc in docs.values():
            assert doc.help, doc.name
            assert doc.name.startswith("hyperv_")
            assert "instance" not in doc.labels and "host" not in doc.labels, "the target is Prometheus' instance label"
    vm_state = next(docs for name, _, docs in sections if name == "vm")["hyperv_vm_state"]
    assert set(vm_state.labels) == {"state", "vm", "vm_id"} and "running" in vm_state.values["state"]
    own, _ = metricsdoc.self_metric_families()
    assert set(own["hyperv_exporter_probe_errors_total"].labels) == {"module", "target", "reason"}
    guest = metricsdoc.guest_families()
    assert set(guest["hyperv_guest_host_info"].labels) == {"host_name", "physical_host_name", "vm_name", "vm_id"}


def test_generator_cli_check(tmp_path: Path) -> None:
    stale = tmp_path / "metrics.md"
    stale.write_text("old\n", encoding="utf-8")
    assert metricsdoc.main(["--check", str(stale)]) == 1
    assert metricsdoc.main(["--write", str(stale)]) == 0
    assert metricsdoc.main(["--check", str(stale)]) == 0


def test_series_budget_per_running_vm() -> None:
    """At most SERIES_BUDGET series per running VM on the demo fleet, every collector on (docs/metrics.md)."""
    per_vm = metricsdoc.series_per_vm()
    running = [n for is_running, n in per_vm.values() if is_running]
    assert running, "the demo fleet has running VMs"
    assert max(running) <= metricsdoc.SERIES_BUDGET, sorted(per_vm.items(), key=lambda kv: -kv[1][1])[:3]
