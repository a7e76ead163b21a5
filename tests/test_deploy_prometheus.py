"""The Prometheus configurations under deploy/: promtool, and what their relabelling does.

``promtool check service-discovery`` runs Prometheus' own file discovery and relabelling, so the
sharding examples are checked for their outcome: every host goes to exactly one exporter
replica (or Prometheus shard), consistently, and hashmod spreads them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from promstack import promtool_binary, run_tool

DEPLOY = REPO / "deploy"
SCALING = DEPLOY / "scaling"
CONFIGS = [DEPLOY / "prometheus" / "guest-discovery.yml", *sorted(SCALING.glob("*.yml"))]


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def hosts() -> list[str]:
    return [
        t for group in yaml.safe_load((SCALING / "targets" / "hyperv-hosts.yml").read_text()) for t in group["targets"]
    ]


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod: the last 8 bytes of the MD5, big-endian, modulo ``modulus``."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus  # noqa: S324 - what Prometheus uses


def discover(config: Path, job: str) -> list[dict[str, Any]]:
    """Targets of ``job`` after relabelling, as Prometheus computes them (dropped targets are left out).

    promtool waits --timeout whatever the mechanism; file discovery answers at once.
    """
    proc = run_tool(
        [promtool_binary(), "check", "service-discovery", "--timeout=1s", str(config), job], cwd=config.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [t["labels"] for t in json.loads(proc.stdout[proc.stdout.index("[") :]) if t.get("labels")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    proc = run_tool([promtool_binary(), "check", "config", str(config)], cwd=config.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for rule_file in load(config).get("rule_files", []):
        # rule_files are relative to the config file; a glob that finds nothing is not an error.
        assert list(config.parent.glob(rule_file)), f"{rule_file} matches no file"
        assert "rules found" in output


def test_exporter_shards_send_each_host_to_one_replica() -> None:
    config = SCALING / "exporter-shards.yml"
    (job,) = [j for j in load(config)["scrape_configs"] if j["job_name"] == "hyperv"]
    (hashing,) = [r for r in job["relabel_configs"] if r.get("action") == "hashmod"]
    modulus = hashing["modulus"]
    targets = discover(config, "hyperv")
    assert sorted(t["instance"] for t in targets) == sorted(hosts())
    replicas = {}
    for labels in targets:
        host = labels["__param_target"]
        assert labels["__address__"] == f"hyperv-exporter-{hashmod(host, modulus)}.corp.example:10020", host
        replicas.setdefault(labels["__address__"], []).append(host)
    assert len(replicas) == modulus, f"hashmod leaves a replica idle with these hosts: {replicas}"
    # Every replica is also scraped for its own metrics and asked for its guests.
    exporter_job = next(j for j in load(config)["scrape_configs"] if j["job_name"] == "hyperv-exporter")
    assert sorted(exporter_job["static_configs"][0]["targets"]) == sorted(replicas)
    guest_job = next(j for j in load(config)["scrape_configs"] if j["job_name"] == "hyperv-guest")
    assert sorted(sd["url"].split("/")[2] for sd in guest_job["http_sd_configs"]) == sorted(replicas)


def test_prometheus_shards_split_the_hosts_without_overlap(tmp_path: Path) -> None:
    shard0 = SCALING / "prometheus-shards.yml"
    text = shard0.read_text(encoding="utf-8")
    # Shard 1 is the documented edit of shard 0.
    shard1 = tmp_path / "prometheus-shard-1.yml"
    shard1.write_text(text.replace('regex: "0"', 'regex: "1"').replace('shard: "0"', 'shard: "1"'), encoding="utf-8")
    shutil.copytree(SCALING / "targets", tmp_path / "targets")
    first = {t["instance"] for t in discover(shard0, "hyperv")}
    second = {t["instance"] for t in discover(shard1, "hyperv")}
    assert first and second and not first & second
    assert first | second == set(hosts())
    assert first == {h for h in hosts() if hashmod(h, 2) == 0}


def test_ha_pair_differs_only_in_the_replica_label() -> None:
    a, b = load(SCALING / "ha-pair-a.yml"), load(SCALING / "ha-pair-b.yml")
    assert a["global"]["external_labels"] == {"replica": "a"}
    assert b["global"]["external_labels"] == {"replica": "b"}
    a["global"]["external_labels"] = b["global"]["external_labels"] = {}
    assert a == b
    # Alertmanager sees one alert from the pair, not two.
    assert {"regex": "replica", "action": "labeldrop"} in a["alerting"]["alert_relabel_configs"]


def test_remote_write_example() -> None:
    config = load(SCALING / "remote-write.yml")
    (remote,) = config["remote_write"]
    assert remote["url"].startswith("https://")
    assert "password_file" in remote["basic_auth"], "no secret in the example file"
    assert config["global"]["external_labels"], "a shared store needs to tell the writers apart"


def test_scaling_doc_covers_every_example() -> None:
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    for config in CONFIGS:
        assert config.relative_to(REPO).as_posix() in text, f"docs/deployment.md does not mention {config.name}"
    for word in ("hashmod", "cache_ttl", "remote_write", "docs/performance.md"):
        assert word in text
