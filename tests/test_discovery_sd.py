"""/sd: the guest agents of running VMs in Prometheus' HTTP service-discovery format.

Unit tests build reports by hand to pin the rules (CIDR allowlist, link-local never, one target
per VM, off VMs excluded, IPv6 only from allowlisted IPv6 networks, newest result wins); the
HTTP tests run the endpoint against the simulated fleet and change the fleet while it runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Stack
from hyperv_exporter.host import discovery
from hyperv_exporter.host import sd as sd_endpoint
from hyperv_exporter.host.config import ConfigError, KvpSettings, Module, TargetAllowlist, parse_config
from hyperv_exporter.host.discovery import DiscoverySettings, parse_discovery
from hyperv_exporter.host.model import KVP_GUEST, KVP_GUEST_INTRINSIC, VM, HostInfo, HostReport, KvpItem
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.transport.settings import WinRMSettings
from hyperv_exporter.sim.fleet import kvp_item
from hyperv_exporter.yamlutil import YamlError, document

NETS = "networks: [10.0.0.0/8]"


# --- configuration --------------------------------------------------------------------------------------
def settings(text: str, kvp: KvpSettings | None = None, collectors: tuple[str, ...] | None = None) -> DiscoverySettings:
    kvp = kvp or KvpSettings()
    return parse_discovery(document(text, "hyperv.yml"), kvp.keys, kvp.sources, collectors)


def test_defaults() -> None:
    s = settings(NETS)
    assert [str(n) for n in s.networks] == ["10.0.0.0/8"]
    assert (s.port, s.probe_targets, s.probe_after, s.max_age) == (10021, True, 120.0, 3600.0)


def test_all_keys() -> None:
    s = settings("networks: [10.20.0.0/16, '2001:db8::/32']\nport: 9100\nprobe_targets: false\nprobe_after: 5m\nmax_age: 2h",
                 KvpSettings(keys=("NetworkAddressIPv4", "NetworkAddressIPv6")))  # fmt: skip
    assert [str(n) for n in s.networks] == ["10.20.0.0/16", "2001:db8::/32"]
    assert (s.port, s.probe_targets, s.probe_after, s.max_age) == (9100, False, 300.0, 7200.0)


@pytest.mark.parametrize(
    ("text", "kvp", "collectors", "message"),
    [
        ("port: 10021", None, None, "missing required key 'networks'"),
        ("networks: []", None, None, "list at least one network"),
        ("networks: [10.0.0.1/8]", None, None, "has host bits set"),
        ("networks: [not-a-network]", None, None, "CIDR notation"),
        ("networks: [169.254.0.0/16]", None, None, "link-local"),
        ("networks: [169.254.7.0/24]", None, None, "link-local"),
        ("networks: ['fe80::/64']", KvpSettings(keys=("NetworkAddressIPv6",)), None, "link-local"),
        (NETS + "\nports: 1", None, None, "unknown key"),
        (NETS + "\nport: 0", None, None, "must be at least 1"),
        (NETS + "\nprobe_targets: yes please", None, None, "expected true or false"),
        (NETS + "\nprobe_after: 2h\nmax_age: 1h", None, None, "max_age must not be shorter"),
        (NETS + "\nprobe_after: 0s", None, None, "must be at least 1"),
        (NETS, KvpSettings(keys=("OSName",)), None, "NetworkAddressIPv4: add them to kvp.keys"),
        ("networks: ['2001:db8::/32']", None, None, "NetworkAddressIPv6: add them to kvp.keys"),
        (NETS, KvpSettings(sources=("guest", "host")), None, "guest_intrinsic"),
        (NETS, None, ("host", "vm"), "needs the kvp collector"),
    ],
)
def test_invalid(text: str, kvp: KvpSettings | None, collectors: tuple[str, ...] | None, message: str) -> None:
    with pytest.raises(YamlError, match=message):
        settings(text, kvp, collectors)


def test_config_file_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    text = f"""modules:
  default:
    targets: [hv01]
    winrm: {{username: u, password_file: {tmp_path / "pw"}}}
    discovery:
      networks: [10.0.0.0/8, 192.168.1.1/24]
"""
    with pytest.raises(ConfigError, match=r"hyperv.yml:6: modules.default.discovery.networks\[1\]: .*host bits"):
        parse_config(text, "hyperv.yml")
    module = parse_config(text.replace("192.168.1.1/24", "192.168.1.0/24"), "hyperv.yml").modules["default"]
    assert module.discovery is not None and len(module.discovery.networks) == 2


# --- target groups from reports -------------------------------------------------------------------------
def vm(name: str, vm_id: str, state: str = "running", ipv4: str | None = None, ipv6: str | None = None,
       fqdn: str | None = None, extra: list[KvpItem] | None = None) -> VM:  # fmt: skip
    items = [KvpItem(KVP_GUEST_INTRINSIC, k, v) for k, v in
             (("NetworkAddressIPv4", ipv4), ("NetworkAddressIPv6", ipv6), ("FullyQualifiedDomainName", fqdn),
              ("OSName", "Ubuntu" if fqdn else None)) if v is not None]  # fmt: skip
    running = state in ("running", "running_critical")
    return VM(
        name=name, id=vm_id, state=state, status=None, heartbeat="ok_applications_healthy" if running else "unknown",
        uptime_seconds=None, integration_services_version=None, integration_services_state="up_to_date",
        generation=2, version="10.0", kvp=(items + (extra or [])) if running else None,
    )  # fmt: skip


def result(target: str, vms: list[VM], started: float | None = None, host: str | None = "HV01") -> ProbeResult:
    report = HostReport(HostInfo(host, None, None, None), vms, {}, None, None)
    return ProbeResult("default", target, ("vm", "kvp"), time.time() - 1 if started is None else started, 0.5, report)


def module(networks: str = "10.0.0.0/8", **kw: Any) -> Module:
    nets = tuple(discovery.ipaddress.ip_network(n) for n in networks.split(","))
    return Module(
        name="default", targets=TargetAllowlist.parse(["hv01", "HV02.", "hv03:15986", "10.9.9.9", "*.hv.example", "10.8.0.0/16"]),
        winrm=WinRMSettings(), discovery=DiscoverySettings(networks=nets, **kw),
    )  # fmt: skip


def groups(mod: Module, *results: ProbeResult) -> list[dict[str, Any]]:
    return sd_endpoint.deduplicate(sd_endpoint.target_groups(mod, results))


def test_one_group_per_running_vm_with_the_documented_labels() -> None:
    found = groups(module(), result("HV01.corp", [vm("web01", "id-1", ipv4="10.1.2.3", fqdn="web01.corp.example")]))
    assert found == [
        {
            "targets": ["10.1.2.3:10021"],
            "labels": {
                "__meta_hyperv_module": "default",
                "__meta_hyperv_host": "HV01",
                "__meta_hyperv_target": "hv01.corp",
                "__meta_hyperv_vm": "web01",
                "__meta_hyperv_vm_id": "id-1",
                "__meta_hyperv_vm_fqdn": "web01.corp.example",
                "__meta_hyperv_vm_os": "Ubuntu",
            },
        }
    ]


def test_cidr_allowlist_picks_the_first_allowed_address_in_the_guests_order() -> None:
    vms = [
        vm("a", "1", ipv4="192.168.1.5;10.1.0.7;10.1.0.8"),  # the first one in the allowlist
        vm("b", "2", ipv4="192.168.1.9"),  # nothing allowed: not listed
        vm("c", "3", ipv4="garbage; 10.1.0.9 ;;300.1.1.1"),  # guest-written text: only valid addresses count
    ]
    found = groups(module("10.1.0.0/16"), result("hv01", vms))
    assert {g["labels"]["__meta_hyperv_vm"]: g["targets"] for g in found} == {
        "a": ["10.1.0.7:10021"],
        "c": ["10.1.0.9:10021"],
    }


def test_link_local_loopback_and_multicast_are_never_discovered() -> None:
    vms = [
        vm("apipa", "1", ipv4="169.254.12.7"),
        vm("loop", "2", ipv4="127.0.0.1"),
        vm("multi", "3", ipv4="224.0.0.1"),
        vm("zero", "4", ipv4="0.0.0.0"),
        vm("apipa-then-real", "5", ipv4="169.254.12.7;10.0.0.5"),
    ]
    found = groups(module("0.0.0.0/0"), result("hv01", vms))
    assert [(g["labels"]["__meta_hyperv_vm"], g["targets"]) for g in found] == [("apipa-then-real", ["10.0.0.5:10021"])]


def test_vms_that_are_not_running_are_excluded() -> None:
    vms = [vm(state, str(i), state=state, ipv4=f"10.0.0.{i}") for i, state in
           enumerate(("running", "running_critical", "off", "saved", "paused", "starting"), 1)]  # fmt: skip
    # A paused or starting VM still has its KVP component in reality; only running VMs run an agent.
    for v in vms:
        v.kvp = [KvpItem(KVP_GUEST_INTRINSIC, "NetworkAddressIPv4", f"10.0.0.{v.id}")]
    found = groups(module(), result("hv01", vms))
    assert sorted(g["labels"]["__meta_hyperv_vm"] for g in found) == ["running", "running_critical"]


def test_ipv6_only_from_allowlisted_ipv6_networks_and_ipv4_preferred() -> None:
    vms = [
        vm("both", "1", ipv4="10.0.0.1", ipv6="2001:db8::1"),
        vm("v6only", "2", ipv4="192.168.0.1", ipv6="fe80::1;2001:db8::2"),
        vm("v6-outside", "3", ipv6="2001:db9::3"),
    ]
    found = groups(module("10.0.0.0/8,2001:db8::/32"), result("hv01", vms))
    assert {g["labels"]["__meta_hyperv_vm"]: g["targets"] for g in found} == {
        "both": ["10.0.0.1:10021"],
        "v6only": ["[2001:db8::2]:10021"],
    }
    # With only IPv4 networks, IPv6 addresses are ignored entirely.
    assert [g["labels"]["__meta_hyperv_vm"] for g in groups(module("10.0.0.0/8"), result("hv01", vms))] == ["both"]


def test_only_the_integration_services_own_kvp_items_count() -> None:
    # A program in the guest can write any KVP item into the guest pool; the address comes from
    # the intrinsic items the Data Exchange service itself reports.
    fake = [KvpItem(KVP_GUEST, "NetworkAddressIPv4", "10.66.6.6")]
    found = groups(module(), result("hv01", [vm("v", "1", ipv4="10.0.0.1", extra=fake), vm("w", "2", extra=fake)]))
    assert [g["targets"] for g in found] == [["10.0.0.1:10021"]]


def test_port_and_host_fallback() -> None:
    found = groups(module(port=9182), result("hv01", [vm("v", "1", ipv4="10.0.0.1")], host=None))
    assert found[0]["targets"] == ["10.0.0.1:9182"]
    assert found[0]["labels"]["__meta_hyperv_host"] == "hv01"
    assert "__meta_hyperv_vm_fqdn" not in found[0]["labels"]


def test_results_older_than_max_age_are_dropped() -> None:
    old = result("hv01", [vm("v", "1", ipv4="10.0.0.1")], started=time.time() - 7200)
    assert groups(module(max_age=3600.0), old) == []
    assert len(groups(module(max_age=86400.0), old)) == 1


def test_a_vm_on_two_hosts_is_listed_once_from_the_newest_result() -> None:
    before = result("hv01", [vm("sql", "same-id", ipv4="10.0.0.1")], started=time.time() - 100, host="HV01")
    after = result("hv02", [vm("sql", "SAME-ID", ipv4="10.0.0.2")], started=time.time() - 10, host="HV02")
    for order in ((before, after), (after, before)):
        found = groups(module(), *order)
        assert [(g["labels"]["__meta_hyperv_host"], g["targets"]) for g in found] == [("HV02", ["10.0.0.2:10021"])]


def test_failed_results_are_ignored() -> None:
    failed = result("hv01", [vm("v", "1", ipv4="10.0.0.1")])
    failed.reason = "timeout"
    assert groups(module(), failed) == []


def test_listed_targets_are_names_and_single_addresses_not_patterns_or_networks() -> None:
    assert sd_endpoint.listed_targets(module()) == ["hv01", "hv02", "hv03:15986", "10.9.9.9"]


# --- the endpoint against the simulated fleet -----------------------------------------------------------
def running_vms_with_addresses(stack: Stack, prefix: str = "10.") -> set[str]:
    """VM names the demo fleet should yield: running, with an intrinsic IPv4 address under ``prefix``."""
    names = set()
    for host in stack.fleet.hosts:
        for v in host.vms:
            intrinsic = "".join(v.kvp.get("GuestIntrinsicExchangeItems", []))
            if v.running() and f"<VALUE>{prefix}" in intrinsic:
                names.add(v.name)
    return names


def sd(stack: Stack, query: str = "?module=default") -> list[dict[str, Any]]:
    status, body = stack.get("/sd" + query)
    assert status == 200, body
    return list(json.loads(body))


@pytest.fixture
def sd_stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, module="    discovery:\n      networks: [10.0.0.0/8]\n      probe_after: 1h\n")
    try:
        yield s
    finally:
        s.stop()


def test_sd_lists_the_running_vms_before_anything_was_probed(sd_stack: Stack) -> None:
    assert not sd_stack.running.prober.history
    found = sd(sd_stack)
    assert {g["labels"]["__meta_hyperv_vm"] for g in found} == running_vms_with_addresses(sd_stack)
    # 19: app-migrating, listed by both cluster nodes (it moved between their probes), counts once.
    assert len(found) == 19
    # The on-demand probes went through the prober: they show on the landing page and in /metrics.
    assert {r.target for r in sd_stack.running.prober.history} == {
        "hv-berlin-01",
        "hv-london-01",
        "hv-dublin-01",
        "hv-legacy-01",
        "hv-muenchen-01",
        "hv-node-a",
        "hv-node-b",
    }
    berlin = next(g for g in found if g["labels"]["__meta_hyperv_vm"] == "Büro-Server")
    assert berlin["targets"] == ["10.20.1.11:10021"]  # 169.254.12.7 comes second in its KVP and is never used
    assert berlin["labels"]["__meta_hyperv_host"] == "HV-BERLIN-01"
    assert berlin["labels"]["__meta_hyperv_vm_id"] == "4f6f1c3e-2b7a-4c1d-9e0f-8a1b2c3d4e01"
    # Without module= the answer covers every module with discovery; here the same.
    assert sd(sd_stack, "") == found
    # Recent results are reused: a second request probes nothing.
    probes = len(sd_stack.running.prober.history)
    sd(sd_stack)
    assert len(sd_stack.running.prober.history) == probes


def test_sd_follows_the_latest_probe_of_each_host(sd_stack: Stack) -> None:
    sd(sd_stack)
    london = sd_stack.fleet.host("HV-LONDON-01")
    london.vm("web01").set(State="Off")
    london.vm("web02").kvp["GuestIntrinsicExchangeItems"] = [kvp_item("NetworkAddressIPv4", "192.168.7.7;10.30.9.9")]
    assert "web01" in {g["labels"]["__meta_hyperv_vm"] for g in sd(sd_stack)}  # nothing probed London since
    sd_stack.probe("HV-LONDON-01")  # Prometheus' /probe scrape refreshes the result discovery uses
    found = {g["labels"]["__meta_hyperv_vm"]: g for g in sd(sd_stack)}
    assert "web01" not in found
    assert found["web02"]["targets"] == ["10.30.9.9:10021"]


def test_sd_keeps_the_last_good_result_when_a_host_fails(sd_stack: Stack) -> None:
    before = sd(sd_stack)
    sd_stack.fleet.host("HV-DUBLIN-01").set(output_fault="powershell_error")
    samples = sd_stack.probe("HV-DUBLIN-01")
    assert samples[("hyperv_up", ())] == 0
    assert sd(sd_stack) == before  # a WinRM failure must not make the guests vanish


def test_sd_without_on_demand_probes_waits_for_prometheus(tmp_path: Path) -> None:
    stack = Stack(tmp_path, module="    discovery:\n      networks: [10.30.0.0/16]\n      probe_targets: false\n")
    try:
        assert sd(stack) == []
        assert not stack.running.prober.history
        stack.probe("HV-LONDON-01")
        stack.probe("HV-BERLIN-01")  # probed, but its VMs are outside 10.30.0.0/16
        assert {g["labels"]["__meta_hyperv_vm"] for g in sd(stack)} == running_vms_with_addresses(stack, "10.30.")
    finally:
        stack.stop()


def test_sd_errors(sd_stack: Stack, tmp_path: Path) -> None:
    assert sd_stack.get("/sd?module=nope")[0] == 400
    assert sd_stack.get("/sd?module=default&module=default")[0] == 400
    (tmp_path / "plain").mkdir()
    plain = Stack(tmp_path / "plain")
    try:
        status, body = plain.get("/sd?module=default")
        assert status == 400 and "no discovery: block" in body
        status, body = plain.get("/sd")
        assert status == 404 and "no module has a discovery: block" in body
    finally:
        plain.stop()


def test_sd_is_json_for_prometheus(sd_stack: Stack) -> None:
    import urllib.request

    with urllib.request.urlopen(sd_stack.url + "/sd?module=default", timeout=30) as resp:
        # Prometheus refuses any other content type for http_sd_configs.
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        body = json.loads(resp.read().decode("utf-8"))
    for group in body:
        assert set(group) == {"targets", "labels"}
        assert all(isinstance(v, str) for v in group["labels"].values())
        assert all(k.startswith("__meta_hyperv_") for k in group["labels"])


def test_sd_on_demand_probes_respect_prometheus_refresh_interval() -> None:
    from hyperv_exporter.web import Request

    mod = module()
    mod = Module(**{**vars(mod), "timeout": 30.0})
    request = Request("GET", "/sd", {}, {"X-Prometheus-Refresh-Interval-Seconds": "10"}, b"", "127.0.0.1")
    assert sd_endpoint.budget_for(request, mod) == 9.0
    request = Request("GET", "/sd", {}, {}, b"", "127.0.0.1")
    assert sd_endpoint.budget_for(request, mod) == 30.0


def test_config_page_shows_discovery(sd_stack: Stack) -> None:
    status, body = sd_stack.get("/config")
    assert status == 200 and "discovery:" in body and "10.0.0.0/8" in body


def test_landing_page_links_sd(sd_stack: Stack) -> None:
    status, body = sd_stack.get("/")
    assert status == 200 and 'href="/sd"' in body


def test_shipped_relabelling_never_collides_with_the_agents_own_labels() -> None:
    """A target label named like a label the agent exports would rename the agent's to exported_<name>."""
    import yaml

    from conftest import REPO
    from hyperv_exporter import metricsdoc

    agent_labels = {label for doc in metricsdoc.guest_families().values() for label in doc.labels}
    assert {"vm_id", "vm_name", "host_name", "module"} <= agent_labels
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "guest-discovery.yml").read_text(encoding="utf-8"))
    for job in shipped["scrape_configs"]:
        targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
        assert targets >= {"vm", "hyperv_host", "hyperv_vm_id"}
        assert not targets & agent_labels, targets & agent_labels


def test_sd_without_the_kvp_collector_lists_nothing_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    discovery._warned.discard("default")
    stack = Stack(tmp_path, module="    discovery:\n      networks: [10.0.0.0/8]\n", flags=("--no-collector.kvp",))
    try:
        assert sd(stack) == [] and sd(stack) == []
        warnings = [r for r in caplog.records if "needs the kvp collector" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        stack.stop()
