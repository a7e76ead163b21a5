"""End to end: simulated VM loses its heartbeat -> exporter -> Prometheus -> Alertmanager -> webhook.

Real processes: the exporter in --demo mode (in-process, with its simulated Hyper-V hosts), a
Prometheus configured from examples/prometheus/prometheus.yml and the shipped rule files, an
Alertmanager configured from examples/alertmanager/alertmanager.yml, and a webhook receiver in
this test. Only speed-related settings differ from what ships: 1 s scrape and evaluation
intervals, every ``for:`` shortened to 2 s in a temporary copy of the rules, 1 s group_wait and
group_interval, and each receiver's integration (PagerDuty, e-mail) replaced by a webhook to this
test with the receiver's name as the path, so the routing by severity is what is tested.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.sim.fleet import SimFleet
from promstack import (
    ALERTMANAGER_EXAMPLE,
    Alertmanager,
    Prometheus,
    WebhookReceiver,
    load_yaml,
    prometheus_config_for_test,
    wait_for,
    write_rules_with_for,
)

pytestmark = pytest.mark.slow

WEB01_ID = "8e3ece81-7ef3-4581-a6b4-92f152abe267"
HEARTBEAT_LOST = {
    "labels": {
        "alertname": "HyperVVMHeartbeatLost",
        "severity": "critical",
        "job": "hyperv",
        "instance": "HV-LONDON-01",
        "vm": "web01",
        "vm_id": WEB01_ID,
        "status": "lost_communication",
    },
    "annotations": {
        "summary": "A running Hyper-V VM has lost its heartbeat.",
        "description": "VM web01 on Hyper-V host HV-LONDON-01 is running but its heartbeat is lost_communication: "
        "the guest OS is hung or crashed, or its heartbeat service stopped.",
        "runbook_url": "docs/runbooks/HyperVVMHeartbeatLost.md",
    },
}


def alertmanager_config_for_test(webhook: str) -> dict[str, Any]:
    """The example's routing and inhibition, receivers turned into webhooks, timers shortened."""
    config: dict[str, Any] = copy.deepcopy(load_yaml(ALERTMANAGER_EXAMPLE))
    config["global"] = {"resolve_timeout": config["global"]["resolve_timeout"]}
    for receiver in config["receivers"]:
        integrations = [key for key in receiver if key.endswith("_configs")]
        for key in integrations:
            del receiver[key]
        if integrations:
            receiver["webhook_configs"] = [{"url": f"{webhook}/{receiver['name']}", "send_resolved": True}]

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            route.pop(key, None)
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    config["route"].update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    return config


@dataclass
class Pipeline:
    exporter: Running
    fleet: SimFleet
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("pipeline-alertmanager")
    with contextlib.ExitStack() as stack:
        exporter = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
        stack.callback(exporter.stop)
        fleet: SimFleet = exporter.simulator.fleet
        webhook = stack.enter_context(WebhookReceiver())
        alertmanager = stack.enter_context(
            Alertmanager(work / "alertmanager", alertmanager_config_for_test(webhook.url))
        )
        config = prometheus_config_for_test(
            exporter=exporter.server.urls[0].removeprefix("http://"),
            hosts=[h.computer_name for h in fleet.hosts],
            guests=[],
            rule_paths=write_rules_with_for(work / "rules", "2s"),
            alertmanager=f"127.0.0.1:{alertmanager.port}",
        )
        prometheus = stack.enter_context(
            Prometheus(work / "prometheus", config, extra_flags=("--rules.alert.resend-delay=1s",))
        )
        yield Pipeline(exporter, fleet, prometheus, alertmanager, webhook)


def exporter_address(pipeline: Pipeline) -> str:
    """The probe job's ``exporter`` label (examples/prometheus/prometheus.yml): the exporter's host:port."""
    return pipeline.exporter.server.urls[0].removeprefix("http://")


def delivered(webhook: WebhookReceiver, status: str, **labels: str) -> list[tuple[str, dict[str, Any]]]:
    """Notified alerts with this status whose labels include ``labels``, as (receiver path, alert)."""
    return [
        (path, alert)
        for path, alert in webhook.alerts()
        if alert["status"] == status and labels.items() <= alert["labels"].items()
    ]


def test_lost_heartbeat_is_paged_and_resolved(pipeline: Pipeline) -> None:
    webhook = pipeline.webhook
    web01 = pipeline.fleet.host("HV-LONDON-01").vm("web01")

    def logs() -> str:
        return f"{pipeline.prometheus.log_tail()}\n{pipeline.alertmanager.log_tail()}"

    # Baseline: the pipeline delivers (web02 has lost its heartbeat in the demo fleet), web01 is healthy.
    wait_for(
        lambda: delivered(webhook, "firing", alertname="HyperVVMHeartbeatLost", vm="web02"),
        60,
        "the demo fleet's lost heartbeat (web02) to be delivered",
        on_timeout=logs,
    )
    assert not delivered(webhook, "firing", vm="web01")

    try:
        # web01 loses its heartbeat.
        web01.set(Heartbeat="LostCommunication")
        web01.set_service("heartbeat", PrimaryOperationalStatus="LostCommunication")
        firing = wait_for(
            lambda: delivered(webhook, "firing", alertname="HyperVVMHeartbeatLost", vm="web01"),
            60,
            "HyperVVMHeartbeatLost for web01 to be delivered",
            on_timeout=logs,
        )
        path, alert = firing[0]
        assert path == "/pager", "critical alerts go to the pager receiver"
        assert alert["labels"] == HEARTBEAT_LOST["labels"] | {"exporter": exporter_address(pipeline)}
        assert alert["annotations"] == HEARTBEAT_LOST["annotations"]
        assert not delivered(webhook, "resolved", vm="web01")

        # web01 recovers: the resolved notification follows.
        web01.set(Heartbeat="OkApplicationsHealthy")
        web01.set_service("heartbeat", PrimaryOperationalStatus="Ok")
        resolved = wait_for(
            lambda: delivered(webhook, "resolved", alertname="HyperVVMHeartbeatLost", vm="web01"),
            60,
            "the resolved notification for web01",
            on_timeout=logs,
        )
        path, alert = resolved[0]
        assert path == "/pager"
        assert alert["labels"] == HEARTBEAT_LOST["labels"] | {"exporter": exporter_address(pipeline)}
        assert alert["annotations"] == HEARTBEAT_LOST["annotations"]
    finally:
        web01.set(Heartbeat="OkApplicationsHealthy")
        web01.set_service("heartbeat", PrimaryOperationalStatus="Ok")
    # web02 is still down and still firing in the same group.
    assert any(a["status"] == "firing" and a["labels"].get("vm") == "web02" for _, a in webhook.alerts("/pager"))


def test_routing_by_severity(pipeline: Pipeline) -> None:
    """critical -> pager, warning -> ticket, info -> blackhole (known to Alertmanager, never delivered)."""
    webhook = pipeline.webhook

    def logs() -> str:
        return f"{pipeline.prometheus.log_tail()}\n{pipeline.alertmanager.log_tail()}"

    def receivers_by_severity() -> dict[str, set[str]] | None:
        found: dict[str, set[str]] = {}
        for alert in pipeline.alertmanager.alerts():
            found.setdefault(alert["labels"]["severity"], set()).update(r["name"] for r in alert["receivers"])
        return found if {"critical", "warning", "info"} <= found.keys() else None

    routed = wait_for(receivers_by_severity, 60, "alerts of every severity in Alertmanager", on_timeout=logs)
    assert routed == {"critical": {"pager"}, "warning": {"ticket"}, "info": {"blackhole"}}
    wait_for(lambda: webhook.alerts("/ticket"), 60, "a warning notification", on_timeout=logs)
    wait_for(lambda: webhook.alerts("/pager"), 60, "a critical notification", on_timeout=logs)
    delivered_pairs = {(path, alert["labels"]["severity"]) for path, alert in webhook.alerts()}
    assert delivered_pairs == {("/pager", "critical"), ("/ticket", "warning")}


DOWN_ALERTS = {"HyperVExporterDown", "HyperVExporterTargetDown", "HyperVCollectorFailing"}


def _unix(rfc3339: str) -> float:
    """Alertmanager's startsAt (RFC 3339, UTC, up to nanoseconds) as Unix time."""
    whole, _, fraction = rfc3339.removesuffix("Z").partition(".")
    started = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return started.timestamp() + float(f"0.{fraction or 0}")


def test_dead_exporter_pages_once(tmp_path: Path) -> None:
    """Kill the exporter with 4 hosts configured: 1 notification (HyperVExporterDown), not 1 + 4.

    HyperVExporterTargetDown excludes the hosts of an exporter that is down (``unless on
    (exporter)``), so its 4 per-host alerts never fire, whichever of the two jobs' scrapes fails
    first. ``for:`` is 4 s for every rule: four scrape intervals, as the shipped 5m is many.
    """
    with contextlib.ExitStack() as stack:
        exporter = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
        stack.callback(exporter.stop)
        hosts = [h.computer_name for h in exporter.simulator.fleet.hosts][:4]
        assert len(hosts) == 4
        webhook = stack.enter_context(WebhookReceiver())
        alertmanager = stack.enter_context(
            Alertmanager(tmp_path / "alertmanager", alertmanager_config_for_test(webhook.url))
        )
        config = prometheus_config_for_test(
            exporter=exporter.server.urls[0].removeprefix("http://"),
            hosts=hosts,
            guests=[],
            rule_paths=write_rules_with_for(tmp_path / "rules", "4s"),
            alertmanager=f"127.0.0.1:{alertmanager.port}",
        )
        prometheus = stack.enter_context(
            Prometheus(tmp_path / "prometheus", config, extra_flags=("--rules.alert.resend-delay=1s",))
        )

        def logs() -> str:
            return f"{prometheus.log_tail()}\n{alertmanager.log_tail()}"

        wait_for(lambda: len(prometheus.query("hyperv_up == 1")) == 4, 60, "4 hosts probed", on_timeout=logs)
        killed_at = time.time()
        exporter.stop()
        killed = len(webhook.received())

        def down_alerts() -> list[str]:
            return sorted(a["alertname"] for a in prometheus.firing() if a["alertname"] in DOWN_ALERTS)

        wait_for(lambda: down_alerts() == ["HyperVExporterDown"], 60, "HyperVExporterDown", on_timeout=logs)
        wait_for(
            lambda: delivered(webhook, "firing", alertname="HyperVExporterDown"), 60, "the page", on_timeout=logs
        )
        # The 4 hosts' scrapes have failed since about when the exporter's did: a per-host alert
        # would have passed its 4 s and been sent within these 4 more evaluations and group intervals.
        time.sleep(4)
        assert down_alerts() == ["HyperVExporterDown"], logs()
        # Pages for what the kill did: alerts that started after it. The demo's hosts open their
        # runspace pools in the first seconds (with a real host's process cost), so a slow machine
        # can see their first probes time out, HyperVExporterTargetDown start then, and its page
        # arrive after the kill (a CI run saw that); it is no page for the dead exporter.
        pages = [
            payload
            for _, payload in webhook.received()[killed:]
            if payload["status"] == "firing"
            and any(
                a["labels"]["alertname"] in DOWN_ALERTS and _unix(a["startsAt"]) >= killed_at for a in payload["alerts"]
            )
        ]
        assert len(pages) == 1, pages
        assert {a["labels"]["alertname"] for a in pages[0]["alerts"]} == {"HyperVExporterDown"}


def test_the_inhibit_rule_backs_up_the_rule_for_a_dead_exporter(tmp_path: Path) -> None:
    """The shipped inhibit rule, the second line of defence (a rule set edited without the `unless`,
    or a /probe job relabelled differently): while HyperVExporterDown fires for an exporter, the real
    Alertmanager suppresses HyperVExporterTargetDown of that exporter's hosts, not of another's."""

    def alert(name: str, instance: str, exporter: str, job: str = "hyperv") -> dict[str, Any]:
        labels = {"alertname": name, "severity": "critical", "job": job, "instance": instance, "exporter": exporter}
        return {"labels": labels, "annotations": {"summary": name}}

    with WebhookReceiver() as webhook, Alertmanager(tmp_path / "am", alertmanager_config_for_test(webhook.url)) as am:
        alerts = [
            alert("HyperVExporterDown", "exporter-a:10020", "exporter-a:10020", job="hyperv-exporter"),
            alert("HyperVExporterTargetDown", "HV-BERLIN-01", "exporter-a:10020"),
            alert("HyperVExporterTargetDown", "HV-LONDON-01", "exporter-b:10020"),
        ]
        request = urllib.request.Request(
            f"{am.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        def states() -> dict[str, str]:
            return {a["labels"]["instance"]: a["status"]["state"] for a in am.alerts()}

        expected = {"exporter-a:10020": "active", "HV-BERLIN-01": "suppressed", "HV-LONDON-01": "active"}
        wait_for(lambda: states() == expected, 30, f"inhibition {expected}", on_timeout=lambda: str(states()))
        wait_for(lambda: len(webhook.alerts("/pager")) >= 2, 30, "the two unsuppressed pages")
        time.sleep(2)  # two more group intervals
        paged = sorted(a["labels"]["instance"] for _, a in webhook.alerts("/pager"))
        assert "HV-BERLIN-01" not in paged and {"exporter-a:10020", "HV-LONDON-01"} <= set(paged), paged
