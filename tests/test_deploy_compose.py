"""deploy/compose: every file the stack mounts, checked as the containers will see it.

There is no Docker engine here, so the stack is checked the way it would fail: bind mounts whose
source is missing, a Prometheus config whose relative rule_files glob finds nothing inside the
container, a scrape target that is not a compose service, a port that does not match what the
service listens on, Grafana provisioning that points at a directory nobody mounted. Prometheus'
and Alertmanager's own checkers (promtool, amtool) run on the configs laid out in a temporary
directory exactly as the compose volumes place them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO
from hyperv_exporter.host import cli
from promstack import amtool_binary, promtool_binary, run_tool

COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
# What each service listens on inside its container (the images' defaults, and the exporter's).
CONTAINER_PORTS = {"hyperv-exporter": cli.DEFAULT_PORT, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) for every bind mount (short syntax) of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        source, target = parts[0], parts[1]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_DIR / source).resolve(), target, len(parts) > 2 and "ro" in parts[2].split(",")))
    return mounts


def container_root(service: dict[str, Any], root: Path) -> Path:
    """Lay out a service's bind mounts under ``root`` as symlinks at their container paths."""
    for source, target, _ in bind_mounts(service):
        link = root / target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source, target_is_directory=source.is_dir())
    return root


def config_file(service: dict[str, Any]) -> str:
    """The --config.file=... argument of a service's command."""
    (value,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config.file=")]
    return str(value)


def service_address(compose: dict[str, Any], host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    assert host in compose["services"], f"{host_port}: {host} is not a compose service"
    return host, int(port)


# --- compose.yaml ---------------------------------------------------------------------------------------
def test_the_four_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(CONTAINER_PORTS)


def test_every_bind_mount_exists_and_the_repository_is_mounted_read_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source, target, read_only in bind_mounts(service):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert read_only, f"{name}: {source} should be mounted :ro"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in (compose.get("volumes") or {}), f"{name}: named volume {source} is not declared"
    mounted = {source for s in compose["services"].values() for source, _, _ in bind_mounts(s)}
    # The stack shows what this checkout ships: mounted, not copied.
    assert {REPO / "alerts", REPO / "dashboards"} <= mounted


def test_ports_are_the_services_own_and_only_on_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        (published,) = service["ports"]
        address, host_port, container_port = published.split(":")
        assert address == "127.0.0.1", f"{name}: publish on loopback only (anonymous Grafana, no auth anywhere)"
        assert int(container_port) == CONTAINER_PORTS[name], name
        assert int(host_port) == CONTAINER_PORTS[name], f"{name}: the README promises the usual port"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue  # built from this checkout
        image = service["image"]
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image} to a version"


def test_the_exporter_is_built_from_this_repository_in_demo_mode(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["hyperv-exporter"]
    context = (COMPOSE_DIR / exporter["build"]["context"]).resolve()
    assert (context / exporter["build"].get("dockerfile", "Dockerfile")) == REPO / "Dockerfile"
    assert exporter["command"] == ["--demo"]
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]
    check = exporter["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"] and f"127.0.0.1:{cli.DEFAULT_PORT}/-/healthy" in check[-1]


# --- Prometheus -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus_config_in_container(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    service = compose["services"]["prometheus"]
    root = container_root(service, tmp_path_factory.mktemp("prometheus-root"))
    return root / config_file(service).lstrip("/")


def test_promtool_accepts_the_config_and_finds_every_rule_file(prometheus_config_in_container: Path) -> None:
    proc = run_tool([promtool_binary(), "check", "config", str(prometheus_config_in_container)])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # A relative rule_files glob that matches nothing is not an error for promtool; count them.
    rule_files = sorted(p.name for p in (REPO / "alerts").glob("*.yml"))
    assert rule_files
    for name in rule_files:
        assert f"alerts/{name}" in output, f"{name} is not loaded inside the container\n{output}"


def test_prometheus_targets_are_compose_services(compose: dict[str, Any], prometheus_config_in_container: Path) -> None:
    config = yaml.safe_load(prometheus_config_in_container.read_text(encoding="utf-8"))
    addresses: list[str] = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            if job["job_name"] == "hyperv":
                continue  # the simulated Hyper-V hosts, reached through the exporter
            addresses += static["targets"]
        for sd in job.get("http_sd_configs", []):
            addresses.append(urlsplit(sd["url"]).netloc)
        for rule in job.get("relabel_configs", []):
            if rule.get("target_label") == "__address__" and "source_labels" not in rule:
                addresses.append(rule["replacement"])
    for alertmanagers in config["alerting"]["alertmanagers"]:
        for static in alertmanagers["static_configs"]:
            addresses += static["targets"]
    assert addresses
    for address in addresses:
        if address.startswith("localhost:"):
            continue  # Prometheus itself
        host, port = service_address(compose, address)
        assert port == CONTAINER_PORTS[host], address


def test_the_hyperv_job_probes_the_demo_hosts(prometheus_config_in_container: Path) -> None:
    from hyperv_exporter.sim.fleet import demo_fleet

    config = yaml.safe_load(prometheus_config_in_container.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hyperv"]
    assert job["metrics_path"] == "/probe" and job["params"] == {"module": ["default"]}
    (static,) = job["static_configs"]
    assert static["targets"] == [host.computer_name for host in demo_fleet().hosts]


def test_the_guest_job_uses_the_shipped_discovery_relabelling(prometheus_config_in_container: Path) -> None:
    config = yaml.safe_load(prometheus_config_in_container.read_text(encoding="utf-8"))
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "guest-discovery.yml").read_text(encoding="utf-8"))
    (demo,) = [j for j in config["scrape_configs"] if j["job_name"] == "hyperv-guest"]
    (real,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "hyperv-guest"]
    # The demo adds exactly one rule: never scrape the simulated VMs' made-up addresses.
    assert demo["relabel_configs"][:-1] == real["relabel_configs"]
    assert demo["relabel_configs"][-1] == {"action": "drop", "regex": ".*"}


# --- Alertmanager and Grafana -----------------------------------------------------------------------------
def test_amtool_accepts_the_alertmanager_config(compose: dict[str, Any], tmp_path: Path) -> None:
    service = compose["services"]["alertmanager"]
    root = container_root(service, tmp_path)
    proc = run_tool([amtool_binary(), "check-config", str(root / config_file(service).lstrip("/"))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Inhibition names a real alert.
    config = yaml.safe_load((COMPOSE_DIR / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for f in (REPO / "alerts").glob("*.yml") for g in yaml.safe_load(f.read_text())["groups"]
              for r in g["rules"] if "alert" in r}  # fmt: skip
    for rule in config.get("inhibit_rules", []):
        for matcher in rule["source_matchers"]:
            name = re.fullmatch(r'alertname="(\w+)"', matcher)
            assert name is None or name.group(1) in alerts, matcher


def test_grafana_provisioning(compose: dict[str, Any], tmp_path: Path) -> None:
    service = compose["services"]["grafana"]
    root = container_root(service, tmp_path)
    provisioning = root / "etc" / "grafana" / "provisioning"
    (datasources_file,) = (provisioning / "datasources").glob("*.yml")
    datasources = yaml.safe_load(datasources_file.read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["isDefault"] is True
    host, port = service_address(compose, urlsplit(prometheus["url"]).netloc)
    assert (host, port) == ("prometheus", CONTAINER_PORTS["prometheus"])

    (providers_file,) = (provisioning / "dashboards").glob("*.yml")
    providers = yaml.safe_load(providers_file.read_text(encoding="utf-8"))
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    dashboards_dir = root / provider["options"]["path"].lstrip("/")
    dashboards = sorted(dashboards_dir.glob("*.json"))
    assert dashboards == sorted(dashboards_dir / p.name for p in (REPO / "dashboards").glob("*.json")) and dashboards
    uids = [json.loads(p.read_text(encoding="utf-8"))["uid"] for p in dashboards]
    assert len(set(uids)) == len(uids)
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (root / home.lstrip("/")).is_file(), home


def test_readme_says_what_the_stack_shows() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docker compose up" in readme and "deploy/compose" in readme
    for url in ("http://localhost:3000", "http://localhost:9090", "http://localhost:9093", "http://localhost:10020"):
        assert url in readme, url
