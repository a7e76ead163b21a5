"""The collector interface and small helpers shared by all collectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily, Metric

from hyperv_exporter.model import VM, HostReport

VM_LABELS = ("vm", "vm_id")


@dataclass(frozen=True, slots=True)
class ClockExchange:
    """Exporter-side wall-clock times around the host's run, for the NTP-style host clock offset."""

    sent: float  # just before the Command request was sent
    received: float  # just after the Receive that completed the command returned


@dataclass(frozen=True, slots=True)
class CollectorContext:
    report: HostReport
    clock: ClockExchange | None = None


class Collector(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    # Sections of collect.ps1 this collector needs; "vm" (Get-VM) and "host" always run.
    sections: ClassVar[tuple[str, ...]] = ()
    default_enabled: ClassVar[bool] = True
    # Whether the collector's data hangs off Get-VM: if the vm section failed, so did this collector.
    needs_vms: ClassVar[bool] = True

    @abstractmethod
    def collect(self, ctx: CollectorContext) -> Iterable[Metric]:
        """Yield fresh metric families for one report (no state is kept between probes)."""


def vm_labels(vm: VM) -> list[str]:
    return [vm.name, vm.id]


def gauge(name: str, documentation: str, labels: Sequence[str] = VM_LABELS) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def add_enum(family: GaugeMetricFamily, labels: list[str], values: Iterable[str], current: str) -> None:
    """One sample per possible value, 1 for the current one: the full set every time, so series never vanish."""
    for value in values:
        family.add_metric([*labels, value], 1.0 if value == current else 0.0)
