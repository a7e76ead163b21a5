"""Dashboards can show "down": with the guest agent and the exporter killed under a real Prometheus,
every stat panel that maps 0 to "down" returns 0 (not "No data").

A Grafana stat panel shows its value mapping only for a value; a query whose series vanish with the
thing it watches shows "No data" and can never say "down". The variables are resolved while
everything runs, as Grafana does on load (its label_values looks back over the time range), then
the guest agent of Datenbank-01 and the exporter are stopped and each such panel is queried.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from hyperv_exporter.host.cli import build_parser, start
from promstack import (
    Prometheus,
    dashboard_files,
    load_dashboard,
    panels,
    prometheus_config_for_test,
    substitute,
    wait_for,
    write_rules_with_for,
)
from test_pipeline_demo import GUESTS, SkewedNtpServer, resolve_variables, start_guest

pytestmark = pytest.mark.slow


def down_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Stat panels with a value mapping that shows 0 as "down"."""
    found = []
    for panel in panels(dashboard):
        if panel["type"] != "stat":
            continue
        for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
            if mapping["type"] == "value" and mapping["options"].get("0", {}).get("text") == "down":
                found.append(panel)
    return found


def test_the_dashboards_have_down_panels() -> None:
    titles = {p["title"] for path in dashboard_files() for p in down_panels(load_dashboard(path))}
    assert {"Guest agent up", "Exporter up"} <= titles


def test_down_panels_show_down_with_the_agent_and_the_exporter_killed(tmp_path: Path) -> None:
    spec = GUESTS[0]  # Datenbank-01 on HV-BERLIN-01, the VM the dashboards select
    with contextlib.ExitStack() as stack:
        exporter = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
        stack.callback(exporter.stop)
        ntp = SkewedNtpServer(-spec.ntp_skew)
        stack.callback(ntp.stop)
        guest = start_guest(tmp_path / "root", spec, [f"127.0.0.1:{ntp.port}"])
        stack.callback(guest.stop)
        hosts = [h.computer_name for h in exporter.simulator.fleet.hosts]
        config = prometheus_config_for_test(
            exporter=exporter.server.urls[0].removeprefix("http://"),
            hosts=hosts,
            guests=[guest.address],
            rule_paths=write_rules_with_for(tmp_path / "rules", "0s"),
        )
        prometheus = stack.enter_context(Prometheus(tmp_path / "prometheus", config))

        def ready() -> bool:
            return len(prometheus.query("hyperv_up == 1")) == len(hosts) and bool(
                prometheus.query(f'hyperv_guest_host_info{{vm_name="{spec.vm_name}"}}')
            )

        wait_for(ready, 60, "the fleet and the guest scraped", on_timeout=prometheus.log_tail)
        dashboards = [(path.name, load_dashboard(path)) for path in dashboard_files()]
        variables = {name: resolve_variables(prometheus, dashboard) for name, dashboard in dashboards}
        guest.stop()
        exporter.stop()
        wait_for(
            lambda: len(prometheus.query('up{job=~"hyperv-exporter|hyperv-guest"} == 0')) == 2,
            60,
            "Prometheus to see the agent and the exporter down",
            on_timeout=prometheus.log_tail,
        )
        checked, problems = 0, []
        for name, dashboard in dashboards:
            for panel in down_panels(dashboard):
                for target in panel["targets"]:
                    expr = substitute(target["expr"], variables[name])
                    values = [float(s["value"][1]) for s in prometheus.query(expr)]
                    checked += 1
                    if values != [0.0]:
                        problems.append(f"{name} {panel['title']!r}: {values or 'no data'}\n    {expr}")
        assert checked >= 2
        assert not problems, "\n".join(problems)
