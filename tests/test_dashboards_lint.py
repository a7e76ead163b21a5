"""Static checks of dashboards/*.json: importable as-is and by provisioning, conventions, sound layout.

Whether every query parses and returns data is tested against a real Prometheus in
tests/test_pipeline_demo.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promstack import GRAFANA_BUILTINS, dashboard_files, load_dashboard, panel_targets, panels, substitute

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED = {
    "hyperv-fleet-overview.json": ("hyperv-fleet-overview", "Hyper-V / Fleet overview"),
    "hyperv-vm-detail.json": ("hyperv-vm-detail", "Hyper-V / VM detail"),
    "hyperv-time-drift.json": ("hyperv-time-drift", "Hyper-V / Time drift"),
}
FILES = dashboard_files()


def ids(path: Path) -> str:
    return path.name


def test_the_three_dashboards_exist() -> None:
    assert sorted(p.name for p in FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_importable_as_is(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    dashboard = json.loads(raw)
    uid, title = EXPECTED[path.name]
    assert dashboard["uid"] == uid
    assert dashboard["title"] == title
    # Leftovers of an export that break importing into another Grafana or provisioning.
    for key in ("id", "iteration", "version", "__inputs", "__requires", "__elements"):
        assert key not in dashboard, f"remove {key!r}"
    assert "${DS_" not in raw, "use the $datasource variable, not an import-time input"
    assert dashboard["schemaVersion"] >= 39
    assert "hyperv-mixin" in dashboard["tags"]
    assert dashboard["editable"] is True
    assert raw.endswith("}\n") and json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n" == raw, (
        "keep the file formatted as json.dumps(indent=2, ensure_ascii=False), so diffs stay readable"
    )


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_template_variables(path: Path) -> None:
    variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert "host" in variables
    host_query = variables["host"]["query"]
    host_query = host_query["query"] if isinstance(host_query, dict) else host_query
    assert re.fullmatch(r'label_values\(hyperv_up\{job=~"\$job"\}, instance\)', host_query), host_query
    assert "vm" in variables
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]
            assert var["refresh"] in (1, 2), f"{var['name']}: refresh on load or on time range change"
            if var.get("includeAll"):
                assert var.get("allValue") == ".*", f"{var['name']}: All must be .* (not a huge regex)"


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_panels(path: Path) -> None:
    dashboard = load_dashboard(path)
    seen_ids: set[int] = set()
    for panel in panels(dashboard):
        assert panel["id"] not in seen_ids, f"duplicate panel id {panel['id']}"
        seen_ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert title and panel.get("description"), f"panel {panel['id']} needs a title and a description"
        assert panel["datasource"] == DATASOURCE, title
        targets = panel.get("targets", [])
        assert targets, f"{title}: no queries"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refId"
        for target in targets:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_layout_fits_the_grid_without_overlaps(path: Path) -> None:
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels(load_dashboard(path)):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']}: outside the 24-column grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_queries_use_only_defined_variables(path: Path) -> None:
    dashboard = load_dashboard(path)
    defined = {v["name"]: "x" for v in dashboard["templating"]["list"]} | GRAFANA_BUILTINS
    for panel, target in panel_targets(dashboard):
        substitute(target["expr"], defined)  # raises KeyError on an unknown $variable
        if "rate(" in target["expr"] or "increase(" in target["expr"]:
            assert "$__rate_interval" in target["expr"], f"{panel['title']}: use [$__rate_interval]"


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_counting_panels_show_zero_instead_of_no_data(path: Path) -> None:
    """A stat that counts problems must return 0, not "No data", when there are none."""
    for panel, target in panel_targets(load_dashboard(path)):
        expr = " ".join(target["expr"].split())
        if panel["type"] == "stat" and expr.startswith("count("):
            assert expr.endswith("or vector(0)"), f"{panel['title']}: {expr}"


def hard_coded_uids(node: Any) -> list[str]:
    found = []
    if isinstance(node, dict):
        datasource = node.get("datasource")
        if isinstance(datasource, dict) and datasource.get("uid") not in ("${datasource}", "-- Grafana --"):
            found.append(str(datasource))
        for value in node.values():
            found += hard_coded_uids(value)
    elif isinstance(node, list):
        for value in node:
            found += hard_coded_uids(value)
    return found


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_no_hard_coded_datasource(path: Path) -> None:
    assert hard_coded_uids(load_dashboard(path)) == []
