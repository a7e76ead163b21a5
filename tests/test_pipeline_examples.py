"""The example configurations in examples/: valid for promtool, amtool and Grafana provisioning."""

from __future__ import annotations

from typing import Any

import pytest

from promstack import (
    ALERTMANAGER_EXAMPLE,
    DASHBOARDS_DIR,
    EXAMPLES_DIR,
    PROMETHEUS_EXAMPLE,
    REPO,
    amtool_binary,
    load_yaml,
    promtool_binary,
    rule_files,
    run_tool,
)


def test_promtool_check_config_with_the_rule_files() -> None:
    result = run_tool([promtool_binary(), "check", "config", str(PROMETHEUS_EXAMPLE)])
    assert result.returncode == 0, result.stdout + result.stderr
    # rule_files (relative to the config file) reaches every shipped rule file, the recording rules too.
    shipped = [*rule_files(), *sorted((REPO / "rules").glob("*.yml"))]
    assert f"SUCCESS: {len(shipped)} rule files found" in result.stdout + result.stderr
    for path in shipped:
        assert path.relative_to(REPO).as_posix() in result.stdout + result.stderr


def test_prometheus_example_jobs_match_the_rule_selectors() -> None:
    config = load_yaml(PROMETHEUS_EXAMPLE)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"hyperv", "hyperv-exporter", "hyperv-guest"}
    rules_text = "".join(p.read_text(encoding="utf-8") for p in rule_files())
    for job in jobs:
        assert f'job="{job}"' in rules_text, f"no rule selects job {job}"
    probe = jobs["hyperv"]
    assert probe["metrics_path"] == "/probe"
    assert probe["params"] == {"module": ["default"]}
    relabel = probe["relabel_configs"]
    assert relabel[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
    assert relabel[1] == {"source_labels": ["__param_target"], "target_label": "instance"}
    assert relabel[2]["target_label"] == "__address__" and relabel[2]["replacement"].endswith(":10020")
    assert all(t.endswith(":10021") for c in jobs["hyperv-guest"]["static_configs"] for t in c["targets"])


def test_amtool_check_config() -> None:
    result = run_tool([amtool_binary(), "check-config", str(ALERTMANAGER_EXAMPLE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    "labels,receiver",
    [
        (["severity=critical", "alertname=HyperVVMHeartbeatLost"], "pager"),
        (["severity=warning", "alertname=HyperVCheckpointTooOld"], "ticket"),
        (["severity=info", "alertname=HyperVGuestServiceInterfaceEnabled"], "blackhole"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run_tool([amtool_binary(), "config", "routes", "test", f"--config.file={ALERTMANAGER_EXAMPLE}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_info_is_not_routed_anywhere() -> None:
    receivers = {r["name"]: r for r in load_yaml(ALERTMANAGER_EXAMPLE)["receivers"]}
    assert [key for key in receivers["blackhole"] if key != "name"] == []
    assert receivers["pager"].get("pagerduty_configs") and receivers["ticket"].get("email_configs")


def test_grafana_datasource_provisioning() -> None:
    config: dict[str, Any] = load_yaml(EXAMPLES_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    assert datasource["url"].startswith("http")


def test_grafana_dashboard_provisioning() -> None:
    config: dict[str, Any] = load_yaml(EXAMPLES_DIR / "grafana" / "provisioning" / "dashboards" / "hyperv.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["folder"] == "Hyper-V"
    assert list(DASHBOARDS_DIR.glob("*.json")), "nothing to provision"
