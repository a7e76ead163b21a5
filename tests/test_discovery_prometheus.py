"""A real Prometheus discovers the guest agents through /sd, with the shipped relabelling.

The job is taken from ``deploy/prometheus/guest-discovery.yml`` as shipped; only the exporter URL
and the refresh interval change, and two rules are appended so that Prometheus never connects
to the simulated VMs' made-up 10.x addresses (something on the test machine's network might
answer to them). The test then changes the simulated fleet and watches the target go away.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, Stack
from promstack import Prometheus, free_port, wait_for

GUEST_DISCOVERY = REPO / "deploy" / "prometheus" / "guest-discovery.yml"
pytestmark = pytest.mark.slow


def guest_job(sd_url: str) -> dict[str, Any]:
    shipped = yaml.safe_load(GUEST_DISCOVERY.read_text(encoding="utf-8"))
    (job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "hyperv-guest"]
    job = copy.deepcopy(job)
    (sd,) = job["http_sd_configs"]
    assert sd["url"].endswith("/sd?module=default")
    sd["url"] = sd_url
    sd["refresh_interval"] = "1s"
    job["scrape_interval"] = "1h"
    job["relabel_configs"] += [
        # Test only: keep the address as instance (when the shipped rules did not set one), then
        # send any scrape to a closed local port instead of the made-up guest address.
        {"source_labels": ["instance", "__address__"], "regex": ";(.+)", "target_label": "instance"},
        {"target_label": "__address__", "replacement": f"127.0.0.1:{free_port()}"},
    ]
    return job


@pytest.fixture
def sd_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, module="    discovery:\n      networks: [10.0.0.0/8]\n")
    try:
        yield stack
    finally:
        stack.stop()


def guest_targets(prometheus: Prometheus) -> dict[str, dict[str, Any]]:
    """Active hyperv-guest targets by their vm label."""
    return {t["labels"]["vm"]: t for t in prometheus.targets() if t["labels"].get("job") == "hyperv-guest"}


def test_prometheus_discovers_the_guest_agents_with_the_shipped_relabelling(sd_stack: Stack, tmp_path: Path) -> None:
    config = {"global": {"scrape_interval": "1h"}, "scrape_configs": [guest_job(sd_stack.url + "/sd?module=default")]}
    with Prometheus(tmp_path / "prometheus", config) as prometheus:
        # Prometheus' discovery manager passes updates on every 5 s.
        targets = wait_for(
            lambda: (found := guest_targets(prometheus)) and len(found) == 19 and found,
            timeout=30,
            what="19 discovered hyperv-guest targets",
            on_timeout=prometheus.log_tail(),
        )
        buero = targets["Büro-Server"]
        assert buero["labels"] == {
            "job": "hyperv-guest",
            "instance": "buero-server.firma.example:10021",
            "vm": "Büro-Server",
            "hyperv_host": "HV-BERLIN-01",
            "hyperv_vm_id": "4f6f1c3e-2b7a-4c1d-9e0f-8a1b2c3d4e01",
        }
        discovered = buero["discoveredLabels"]
        assert discovered["__address__"] == "10.20.1.11:10021"
        assert discovered["__meta_hyperv_module"] == "default"
        assert discovered["__meta_hyperv_target"] == "hv-berlin-01"
        assert targets["会計"]["labels"]["hyperv_host"] == "HV-BERLIN-01"
        assert {t["labels"]["hyperv_host"] for t in targets.values()} == {
            "HV-BERLIN-01", "HV-LONDON-01", "HV-DUBLIN-01", "HV-LEGACY-01", "HV-MUENCHEN-01", "HV-NODE-A", "HV-NODE-B",
        }  # fmt: skip
        # No __meta_* label survives relabelling, and off/saved VMs were never listed.
        assert not any(k.startswith("__") for t in targets.values() for k in t["labels"])
        assert not {"Dateiablage", "jumpbox"} & set(targets)
        assert targets["sql-prod"]["labels"]["hyperv_host"] == "HV-LONDON-01"  # the running primary, not the replica

        # The fleet changes: a VM is shut down, and Prometheus' next /probe of its host tells discovery.
        sd_stack.fleet.host("HV-LONDON-01").vm("web01").set(State="Off")
        sd_stack.probe("HV-LONDON-01")
        started = time.monotonic()
        wait_for(
            lambda: "web01" not in guest_targets(prometheus) and len(guest_targets(prometheus)) == 18,
            timeout=30,
            what="web01 to leave the hyperv-guest targets",
            on_timeout=prometheus.log_tail(),
        )
        assert time.monotonic() - started < 30
