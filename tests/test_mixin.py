"""The monitoring mixin (mixin/) renders exactly the shipped alerts/ and dashboards/, and its _config works.

- ``scripts/render-mixin.py --check`` passes: the shipped files are the mixin's output;
- no placeholder host: every runbook_url is built from ``_config.runbookURLBase``, whose default
  is the runbooks' path in this repository;
- a user's ``_config`` (job selectors, runbook base, multi-site group labels) reaches every rule,
  and the result still passes ``promtool check rules``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from promstack import REPO, dashboard_files, load_dashboard, panels, promtool_binary, run_tool

SCRIPT = REPO / "scripts" / "render-mixin.py"


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120)


def test_shipped_files_are_the_mixins_output() -> None:
    result = render("--check")
    assert result.returncode == 0, result.stderr


def test_check_notices_a_hand_edit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert render("--out", str(out)).returncode == 0
    rule_file = out / "alerts" / "hyperv-vms.yml"
    rule_file.write_text(rule_file.read_text(encoding="utf-8").replace("for: 1h", "for: 2h"), encoding="utf-8")
    result = render("--check", "--out", str(out))
    assert result.returncode == 1
    assert "alerts/hyperv-vms.yml" in result.stderr


def test_no_placeholder_host_anywhere() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = [
        name
        for name in tracked
        if (REPO / name).is_file()
        and name != "tests/test_mixin.py"
        and "github.com/hyperv-exporter" in (REPO / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []


def custom_render(tmp_path: Path, config: str) -> Path:
    source = tmp_path / "mine.jsonnet"
    source.write_text(
        f"local mixin = (import '{REPO}/mixin/mixin.libsonnet') + {{ _config+:: {config} }};\n"
        f"(import '{REPO}/mixin/render.libsonnet')(mixin)\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = render("--mixin", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_config_reaches_every_rule(tmp_path: Path) -> None:
    out = custom_render(
        tmp_path,
        "{ runbookURLBase: 'https://wiki.example.com/rb/', hypervSelector: 'job=\"hv-probe\"', "
        "exporterSelector: 'job=\"hv-self\"', guestSelector: 'job=\"hv-guest\"', groupLabels: ['cluster'] }",
    )
    exprs = []
    for path in sorted((out / "alerts").glob("*.yml")):
        checked = run_tool([promtool_binary(), "check", "rules", str(path)])
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                assert rule["annotations"]["runbook_url"] == f"https://wiki.example.com/rb/{rule['alert']}.md"
                exprs.append(rule["expr"])
    text = "\n".join(exprs)
    assert 'job="hyperv"' not in text and 'job="hyperv-exporter"' not in text and 'job="hyperv-guest"' not in text
    assert 'up{job="hv-self"}' in text and 'up{job="hv-probe"}' in text and 'up{job="hv-guest"}' in text
    assert "on (cluster, instance, job, vm_id)" in text
    assert "by (cluster, vm_id)" in text
    assert "on (instance" not in text and "by (vm_id" not in text


def test_fleet_overview_vm_cells_link_to_vm_detail_and_time_drift() -> None:
    """Every table of the fleet overview with a VM column links that VM to both drill-down dashboards."""
    dashboard = load_dashboard(REPO / "dashboards" / "hyperv-fleet-overview.json")
    uids = {load_dashboard(p)["uid"] for p in dashboard_files()}
    tables = [p for p in panels(dashboard) if p["type"] == "table"]
    linked = 0
    for table in tables:
        renames = [t["options"].get("renameByName", {}) for t in table.get("transformations", []) if t["id"] == "organize"]
        vm_column = next((r["vm"] for r in renames if "vm" in r), None)
        if vm_column is None:
            continue
        (override,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == vm_column]
        (links,) = [p["value"] for p in override["properties"] if p["id"] == "links"]
        urls = [link["url"] for link in links]
        assert urls[0].startswith("/d/hyperv-vm-detail/") and "var-vm=${__value.raw}" in urls[0], urls
        assert "var-host=${__data.fields[" in urls[0] and "${__url_time_range}" in urls[0]
        assert urls[1].startswith("/d/hyperv-time-drift/") and "var-vm=${__value.raw}" in urls[1], urls
        assert {u.split("/")[2] for u in urls} <= uids
        linked += 1
    assert linked >= 4, "Integration services version, Guest Service Interface, Replication, Checkpoints, alerts"


def test_fleet_overview_has_the_exporter_health_row() -> None:
    dashboard = load_dashboard(REPO / "dashboards" / "hyperv-fleet-overview.json")
    titles = [p["title"] for p in panels(dashboard)]
    assert "Exporter health" in titles
    assert {"Exporter up", "Probe errors by reason", "Probe duration", "Collector success"} <= set(titles)
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    assert 'up{job="hyperv-exporter"}' in exprs and "hyperv_exporter_probe_errors_total" in exprs


def test_recording_rules_check_and_unit_tests() -> None:
    """rules/hyperv-recording.yml (windows_exporter's per-VM series with this exporter's labels)."""
    rules = REPO / "rules" / "hyperv-recording.yml"
    checked = run_tool([promtool_binary(), "check", "rules", str(rules)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_tool([promtool_binary(), "test", "rules", "hyperv-recording.test.yml"], cwd=REPO / "tests" / "recording")
    assert tested.returncode == 0, tested.stdout + tested.stderr
