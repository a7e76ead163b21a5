"""``/sd``: Prometheus HTTP service discovery of the guest agents in running VMs.

Hyper-V hosts already know every running VM's addresses: the guest's Data Exchange (KVP)
integration service reports them as the intrinsic items ``NetworkAddressIPv4`` and
``NetworkAddressIPv6`` (``;``-separated). ``/sd?module=NAME`` turns the latest successful
probes of the module's hosts into Prometheus' ``http_sd_configs`` format::

    [{"targets": ["10.20.1.11:10021"],
      "labels": {"__meta_hyperv_module": "default", "__meta_hyperv_host": "HV-BERLIN-01",
                 "__meta_hyperv_target": "hv-berlin-01", "__meta_hyperv_vm": "Büro-Server",
                 "__meta_hyperv_vm_id": "4f6f1c3e-...", "__meta_hyperv_vm_fqdn": "buero-server.firma.example",
                 "__meta_hyperv_vm_os": "Windows Server 2022 Datacenter"}}]

``__meta_hyperv_vm_fqdn`` and ``__meta_hyperv_vm_os`` come from the KVP items
FullyQualifiedDomainName and OSName when the module's ``kvp.keys`` allow them (the default does).

Rules, and why:

- **Only allowlisted networks.** KVP values are written by the guest, so a guest could name any
  address; Prometheus would then scrape it. Every address must lie in the module's
  ``discovery.networks``; link-local (169.254.0.0/16, fe80::/10), loopback, multicast and
  unspecified addresses are never used, whatever the allowlist says.
- **One target per VM**: the first allowed IPv4 address in the guest's order, else the first allowed
  IPv6 address. A VM with two NICs in the allowlist is scraped once, not twice.
- **Only running VMs.** An Off or Saved VM has no KVP component; a stale result that still
  says Running is dropped by age (see below).
- **Data source: the prober's latest successful result per host**, so Prometheus' own /probe
  scrapes keep discovery current at no extra cost. A listed host (a name, ``host:port`` or single
  address in ``targets:``) with no result younger than ``discovery.probe_after`` is probed on demand when /sd
  is asked (all such hosts in parallel, bounded by the module timeout and by Prometheus'
  ``X-Prometheus-Refresh-Interval-Seconds``), so discovery works before anything was scraped and
  without a ``hyperv`` job at all. Hosts only matched by a pattern or network cannot be enumerated
  and appear once Prometheus probed them. If a probe fails, the previous good result is used until
  it is older than ``discovery.max_age``: a WinRM hiccup must not make every guest target vanish.
- **A VM seen on several hosts** (live migration, a stale result after failover) is listed once,
  from the newest result.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hyperv_exporter import logutil
from hyperv_exporter.model import KVP_GUEST_INTRINSIC
from hyperv_exporter.web import Request, Response
from hyperv_exporter.yamlutil import Node

if TYPE_CHECKING:  # config and probe import this module's settings; only types are needed from them
    from hyperv_exporter.config import KvpSettings, Module
    from hyperv_exporter.probe import Prober, ProbeResult

log = logging.getLogger(__name__)

DEFAULT_PORT = 10021  # hyperv-guest-agent's default --web.listen-address
IPV4_KEY = "NetworkAddressIPv4"
IPV6_KEY = "NetworkAddressIPv6"
FQDN_KEY = "FullyQualifiedDomainName"
OS_KEY = "OSName"
REFRESH_HEADER = "X-Prometheus-Refresh-Interval-Seconds"
KEYS = ("networks", "port", "probe_targets", "probe_after", "max_age")
# Never discovered, even inside an allowlisted network: these addresses are not reachable from
# Prometheus (link-local is per link; Windows invents 169.254.x.x when DHCP fails).
NEVER = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
_warned: set[str] = set()  # modules whose discovery was found without the kvp collector
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class DiscoverySettings:
    """A module's ``discovery:`` block."""

    networks: tuple[Network, ...]
    port: int = DEFAULT_PORT
    probe_targets: bool = True
    probe_after: float = 120.0
    max_age: float = 3600.0

    def allows(self, address: Address) -> bool:
        # is_link_local covers NEVER (169.254.0.0/16, fe80::/10), whatever the allowlist says.
        if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local:
            return False
        return any(address in net for net in self.networks if net.version == address.version)

    def view(self) -> dict[str, Any]:
        """As shown on /config."""
        return {
            "networks": [str(n) for n in self.networks],
            "port": self.port,
            "probe_targets": self.probe_targets,
            "probe_after": self.probe_after,
            "max_age": self.max_age,
        }


def parse_discovery(node: Node, kvp: KvpSettings, collectors: Sequence[str] | None) -> DiscoverySettings:
    """Validate a module's ``discovery:`` block against the module's KVP settings and collectors."""
    keys = node.mapping(KEYS, required=["networks"])
    networks: list[Network] = []
    for item in keys["networks"].items():
        text = item.string().strip()
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            item.fail(f"expected a network in CIDR notation like 10.0.0.0/8 ({exc})")
        if any(_within(network, never) for never in NEVER):
            item.fail(f"{network} is link-local; link-local addresses are never discovered")
        networks.append(network)
    if not networks:
        keys["networks"].fail("list at least one network (the guest addresses Prometheus may scrape)")
    needed = [IPV4_KEY] if any(n.version == 4 for n in networks) else []
    needed += [IPV6_KEY] if any(n.version == 6 for n in networks) else []
    missing = [key for key in needed if key not in kvp.keys]
    if missing:
        node.fail(f"discovery reads the KVP key(s) {', '.join(missing)}: add them to kvp.keys")
    if KVP_GUEST_INTRINSIC not in kvp.sources:
        node.fail(f"discovery reads guest addresses from the {KVP_GUEST_INTRINSIC} KVP source: add it to kvp.sources")
    if collectors is not None and "kvp" not in collectors:
        node.fail("discovery needs the kvp collector: add kvp to the module's collectors")
    settings = DiscoverySettings(
        networks=tuple(networks),
        port=keys["port"].integer(1, 65535) if "port" in keys else DEFAULT_PORT,
        probe_targets=keys["probe_targets"].boolean() if "probe_targets" in keys else True,
        probe_after=keys["probe_after"].duration(minimum=1.0) if "probe_after" in keys else 120.0,
        max_age=keys["max_age"].duration(minimum=1.0) if "max_age" in keys else 3600.0,
    )
    if settings.max_age < settings.probe_after:
        keys["max_age" if "max_age" in keys else "probe_after"].fail("max_age must not be shorter than probe_after")
    return settings


def _within(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


# -- building the target groups ------------------------------------------------------------------------
def _addresses(value: str) -> list[Address]:
    """``10.0.0.5;169.254.1.2`` -> addresses, skipping anything that does not parse (guest-written text)."""
    found: list[Address] = []
    for part in value.split(";"):
        try:
            found.append(ipaddress.ip_address(part.strip()))
        except ValueError:
            continue
    return found


def _target(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def target_groups(
    module: Module, results: Iterable[ProbeResult], now: float | None = None
) -> list[tuple[float, dict[str, Any]]]:
    """``(result time, target group)`` for every running VM with an allowed address in ``results``."""
    settings = module.discovery
    if settings is None:
        return []
    now = time.time() if now is None else now
    groups: list[tuple[float, dict[str, Any]]] = []
    for result in results:
        report = result.report
        finished = result.started + result.duration
        if report is None or not result.ok or now - finished > settings.max_age:
            continue
        host = report.host.computer_name or result.target
        for vm in report.vms:
            if vm.state not in ("running", "running_critical") or not vm.kvp:
                continue
            intrinsic = {item.key: item.value for item in vm.kvp if item.source == KVP_GUEST_INTRINSIC}
            candidates = _addresses(intrinsic.get(IPV4_KEY, "")) + _addresses(intrinsic.get(IPV6_KEY, ""))
            allowed = [a for a in candidates if settings.allows(a)]
            if not allowed:
                continue
            chosen = min(allowed, key=lambda a: a.version)  # min() keeps the guest's order among equals
            labels = {
                "__meta_hyperv_module": module.name,
                "__meta_hyperv_host": host,
                "__meta_hyperv_target": _key(module, result.target),
                "__meta_hyperv_vm": vm.name,
                "__meta_hyperv_vm_id": vm.id,
            }
            # Guest-written, like the address: fit for naming and selecting targets, not for trust.
            if intrinsic.get(FQDN_KEY):
                labels["__meta_hyperv_vm_fqdn"] = intrinsic[FQDN_KEY]
            if intrinsic.get(OS_KEY):
                labels["__meta_hyperv_vm_os"] = intrinsic[OS_KEY]
            groups.append((finished, {"targets": [_target(chosen, settings.port)], "labels": labels}))
    return groups


def deduplicate(groups: Iterable[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One group per VM id (the newest result wins), sorted for a stable answer."""
    newest: dict[str, tuple[float, dict[str, Any]]] = {}
    for finished, group in groups:
        vm_id = group["labels"]["__meta_hyperv_vm_id"].lower()
        if vm_id not in newest or finished > newest[vm_id][0]:
            newest[vm_id] = (finished, group)
    return sorted(
        (group for _, group in newest.values()),
        key=lambda g: (
            g["labels"]["__meta_hyperv_host"],
            g["labels"]["__meta_hyperv_vm"],
            g["labels"]["__meta_hyperv_vm_id"],
        ),
    )


def listed_targets(module: Module) -> list[str]:
    """The targets discovery can probe by itself: names, host:port entries and single addresses,
    not patterns or networks (those cannot be enumerated)."""
    allowlist = module.targets
    ports = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in allowlist.host_ports]
    singles = [str(n.network_address) for n in allowlist.networks if n.num_addresses == 1]
    return sorted(allowlist.names) + sorted(ports) + singles


def _key(module: Module, target: str) -> str:
    """How the prober tells hosts apart (``HV01``, ``hv01.`` and ``hv01:5986`` are one host)."""
    try:
        return module.target_key(target)
    except ValueError:
        return target.lower()


def refresh(module: Module, prober: Prober, budget: float) -> None:
    """Probe, in parallel, the listed targets whose latest good result is older than ``probe_after``."""
    settings = module.discovery
    if settings is None or not settings.probe_targets:
        return
    now = time.time()
    fresh = {
        _key(module, r.target)
        for r in prober.latest_good(module.name)
        if now - (r.started + r.duration) < settings.probe_after
    }
    due = [t for t in listed_targets(module) if _key(module, t) not in fresh]
    if not due:
        return
    log.debug("probing hosts for discovery", extra=logutil.fields(module=module.name, targets=",".join(due)))
    with ThreadPoolExecutor(max_workers=min(32, len(due)), thread_name_prefix="sd-probe") as pool:
        # Prober.probe never takes much longer than its timeout and records failures itself.
        list(pool.map(lambda target: prober.probe(module, target, budget), due))


def budget_for(request: Request, module: Module) -> float:
    """Seconds the on-demand probes may take: the module timeout, within Prometheus' refresh interval."""
    budget = module.timeout
    header = request.headers.get(REFRESH_HEADER)
    if header:
        try:
            interval = float(header)
        except ValueError:
            interval = 0.0
        if interval > 0:
            # Prometheus gives up on the request after one refresh interval.
            budget = min(budget, max(interval - 1.0, interval * 0.5))
    return max(budget, 0.1)


def respond(request: Request, modules: Mapping[str, Module], prober: Prober) -> Response:
    """The /sd route: ``?module=NAME`` for one module, no parameter for every module with discovery."""
    names = request.query.get("module")
    if names is not None:
        if len(names) != 1:
            return Response(status=400, body="module parameter is given more than once\n")
        module = modules.get(names[0])
        if module is None:
            return Response(status=400, body=f"unknown module {names[0]!r}\n")
        if module.discovery is None:
            return Response(status=400, body=f"module {names[0]!r} has no discovery: block in its configuration\n")
        selected = [module]
    else:
        selected = [m for m in modules.values() if m.discovery is not None]
        if not selected:
            return Response(status=404, body="no module has a discovery: block in its configuration\n")
    groups: list[tuple[float, dict[str, Any]]] = []
    for module in selected:
        if "kvp" not in prober.collectors_for(module):
            if module.name not in _warned:  # once per module: Prometheus asks every refresh interval
                _warned.add(module.name)
                log.warning(
                    "discovery needs the kvp collector, which --no-collector.kvp disabled",
                    extra=logutil.fields(module=module.name),
                )
            continue
        refresh(module, prober, budget_for(request, module))
        groups += target_groups(module, prober.latest_good(module.name))
    body = json.dumps(deduplicate(groups), ensure_ascii=False, indent=1) + "\n"
    return Response(body=body, content_type="application/json; charset=utf-8")
