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
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hyperv_exporter.host.model import KVP_GUEST_INTRINSIC
from hyperv_exporter.yamlutil import Node

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


def parse_discovery(
    node: Node, kvp_keys: Sequence[str], kvp_sources: Sequence[str], collectors: Sequence[str] | None
) -> DiscoverySettings:
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
    missing = [key for key in needed if key not in kvp_keys]
    if missing:
        node.fail(f"discovery reads the KVP key(s) {', '.join(missing)}: add them to kvp.keys")
    if KVP_GUEST_INTRINSIC not in kvp_sources:
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
