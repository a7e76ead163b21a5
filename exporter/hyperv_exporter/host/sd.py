"""Serving ``/sd``: turns the prober's latest results into Prometheus HTTP SD target groups.

What is discovered and why is explained in :mod:`hyperv_exporter.host.discovery`, which also holds the
settings; this module is the part that needs the configuration and the prober.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hyperv_exporter import logutil
from hyperv_exporter.host.config import Module
from hyperv_exporter.host.discovery import (
    FQDN_KEY,
    IPV4_KEY,
    IPV6_KEY,
    OS_KEY,
    REFRESH_HEADER,
    Address,
    _warned,
)
from hyperv_exporter.host.model import KVP_GUEST_INTRINSIC
from hyperv_exporter.host.probe import Prober, ProbeResult
from hyperv_exporter.web import Request, Response

log = logging.getLogger(__name__)


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
