"""Collectors: each maps part of a :class:`~hyperv_exporter.host.model.HostReport` to metric families.

One module per collector; :data:`COLLECTORS` is the single registry from which the
``--collector.NAME`` flags, the config's ``collectors:`` list, the script's ``-Collectors``
sections and the docs are all derived, so adding a collector means adding one module here.
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext
from hyperv_exporter.host.collectors.checkpoints import CheckpointsCollector
from hyperv_exporter.host.collectors.host import HostCollector
from hyperv_exporter.host.collectors.integration_services import IntegrationServicesCollector
from hyperv_exporter.host.collectors.kvp import KvpCollector
from hyperv_exporter.host.collectors.replication import ReplicationCollector
from hyperv_exporter.host.collectors.resources import ResourcesCollector
from hyperv_exporter.host.collectors.vm import VMCollector

COLLECTORS: dict[str, type[Collector]] = {
    c.name: c
    for c in (
        HostCollector,
        VMCollector,
        IntegrationServicesCollector,
        KvpCollector,
        ResourcesCollector,
        ReplicationCollector,
        CheckpointsCollector,
    )
}
DEFAULT_COLLECTORS: tuple[str, ...] = tuple(n for n, c in COLLECTORS.items() if c.default_enabled)


def sections_for(names: list[str] | tuple[str, ...]) -> list[str]:
    """The script sections (``-Collectors``) that the given collectors need, in a stable order."""
    wanted = {s for n in names for s in COLLECTORS[n].sections}
    order = [s for c in COLLECTORS.values() for s in c.sections]
    return sorted(wanted, key=order.index)


__all__ = ["COLLECTORS", "DEFAULT_COLLECTORS", "Collector", "CollectorContext", "sections_for"]
