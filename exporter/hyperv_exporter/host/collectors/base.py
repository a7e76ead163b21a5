"""The collector interface, and :class:`Family`, the lean metric family every collector fills.

Why not prometheus_client's ``GaugeMetricFamily`` + ``generate_latest``: a 1,000-VM host is about
74,000 samples per probe, and prometheus_client builds a ``Sample`` namedtuple and a labels dict
per sample, then re-validates and re-escapes every label *name* and sorts every labels dict when
rendering; that was 440 ms of the 650 ms a 1,000-VM probe took to decode, parse and render
(docs/performance.md). A :class:`Family`
keeps each sample as the tuple of label values the collector already has, checks names once per
family, and renders with one precompiled ``%`` template per family and one escape per distinct
label value. The text is byte-identical to ``generate_latest`` (tests/test_perf_render.py proves
it on random and on large input), and :meth:`Family.to_metric` still gives prometheus_client
objects for tests and tools.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from hyperv_exporter.host.model import VM, HostReport

# prometheus_client's own formatting (Go's exponent style, +Inf, NaN), so the text cannot drift from it.
_float_to_go_string: Callable[[float], str] = floatToGoString

# vm and vm_id sort after every other label the VM families use, so collectors pass them last and
# the families' label values are already in the sorted order the text format wants (no reordering).
VM_LABELS = ("vm", "vm_id")
_VM_BLOCK = '{vm="%s",vm_id="%s"} '

# The legacy (pre-UTF-8) name syntax: every name here matches it, so no name ever needs quoting or
# escaping, which is what lets a template hold the names verbatim.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")  # used with fullmatch: no trailing newline slips through
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

FamilyKind = Literal["gauge", "info"]


def go_float(value: float) -> str:
    """``floatToGoString`` with the two values that make up most samples answered without a call."""
    if value == 1.0:
        return "1.0"
    if value == 0.0:
        return "0.0" if math.copysign(1.0, value) > 0 else "-0.0"
    return _float_to_go_string(value)


class Escaped(dict[str, str]):
    """Label value -> its text-format escape (``\\``, newline, ``"``), computed once per distinct value.

    One instance serves one rendering: a VM's name and id appear in ~70 samples but are escaped once.
    It also keeps what repeats across the families of one rendering: the rendered label block of
    each distinct label-value tuple (``{vm="web01",vm_id="..."} ``, shared by every family with the
    same label names) and the text of each distinct sample value.
    """

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[tuple[object, ...], dict[tuple[str, ...], str]] = {}
        self.floats: dict[float, str] = {}

    def __missing__(self, value: str) -> str:
        text = value
        if "\\" in value or "\n" in value or '"' in value:
            text = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        self[value] = text
        return text

    def value(self, value: float) -> str:
        """:func:`go_float`, remembered per distinct value (memory sizes, versions and counts repeat)."""
        text = self.floats.get(value)
        if text is None:
            text = go_float(value)
            # Zero is left out (0.0 and -0.0 are equal keys with different texts), NaN cannot be found again.
            if value and not math.isnan(value):
                self.floats[value] = text
        return text


class Family:
    """One metric family: name, help, label names and samples (label values and values, side by side).

    ``kind="info"`` is prometheus_client's info type: the samples are named ``<name>_info``, have
    the value 1 and are exposed as a gauge, exactly as ``InfoMetricFamily`` + ``generate_latest``.
    """

    __slots__ = (
        "_header",
        "_order",
        "_template",
        "documentation",
        "kind",
        "labelnames",
        "name",
        "sample_labels",
        "sample_name",
        "sample_values",
    )

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), kind: FamilyKind = "gauge"
    ) -> None:
        sample_name = f"{name}_info" if kind == "info" else name
        if not _METRIC_NAME.fullmatch(sample_name):
            raise ValueError(f"invalid metric name {sample_name!r}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} in {name}")
        self.name = name
        self.sample_name = sample_name
        self.documentation = documentation
        self.kind = kind
        self.labelnames = tuple(labelnames)
        # Two lists rather than a (labels, value) tuple per sample: a 1,000-VM probe adds 90,000
        # samples, and tuples are objects the garbage collector tracks (docs/performance.md).
        self.sample_labels: list[Sequence[str]] = []
        self.sample_values: list[float] = []
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self._header = f"# HELP {sample_name} {help_text}\n# TYPE {sample_name} gauge\n"
        order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        # None when the collector passes values already in label-name order (the fast path).
        self._order: tuple[int, ...] | None = None if order == list(range(len(order))) else tuple(order)
        if self.labelnames:
            pairs = ",".join(f'{self.labelnames[i]}="%s"' for i in order)
            self._template = f"{sample_name}{{{pairs}}} %s\n"
        else:
            self._template = f"{sample_name} %s\n"

    def add(self, labelvalues: Sequence[str], value: float) -> None:
        """One sample; ``labelvalues`` in the order of ``labelnames``."""
        self.sample_labels.append(labelvalues)
        self.sample_values.append(value)

    @property
    def samples(self) -> list[tuple[Sequence[str], float]]:
        """Every sample added with :meth:`add`, as (label values, value)."""
        return list(zip(self.sample_labels, self.sample_values, strict=True))

    def expanded(self) -> Iterable[tuple[Sequence[str], float]]:
        """Every sample as (label values, value), in exposition order."""
        return zip(self.sample_labels, self.sample_values, strict=True)

    def render(self, escaped: Escaped) -> str:
        """This family in the Prometheus text format, as ``generate_latest`` writes it."""
        lines: list[str] = []
        self.render_into(lines, escaped)
        return "".join(lines)

    def render_into(self, lines: list[str], escaped: Escaped) -> None:
        """Append this family's text to ``lines`` (one join for a whole exposition, not one per family)."""
        template, order = self._template, self._order
        append = lines.append
        append(self._header)
        number = escaped.value
        if not self.labelnames:
            for _, value in self.expanded():
                append(template % number(value))
        elif self.labelnames == VM_LABELS:
            # A VM's (name, id) block is the same in a dozen families: rendered once per rendering.
            name = self.sample_name
            blocks = escaped.blocks.setdefault(VM_LABELS, {})
            for labelvalues, value in self.expanded():
                try:
                    block = blocks.get(labelvalues)  # type: ignore[call-overload]  # any sequence; tuples in practice
                except TypeError:  # a list: rendered every time, still right
                    block = None
                if block is None:
                    block = blocks[tuple(labelvalues)] = _VM_BLOCK % tuple(map(escaped.__getitem__, labelvalues))
                append(f"{name}{block}{number(value)}\n")
        elif order is None:
            lookup = escaped.__getitem__
            for labelvalues, value in self.expanded():
                append(template % (*map(lookup, labelvalues), number(value)))
        else:
            for labelvalues, value in self.expanded():
                append(template % (*[escaped[labelvalues[i]] for i in order], number(value)))

    def to_metric(self) -> Metric:
        """The same family as a prometheus_client ``Metric`` (what GaugeMetricFamily/InfoMetricFamily build)."""
        metric = Metric(self.name, self.documentation, self.kind)
        for labelvalues, value in self.expanded():
            metric.add_sample(self.sample_name, dict(zip(self.labelnames, labelvalues, strict=True)), value)
        return metric


class EnumFamily(Family):
    """A gauge with one sample per possible value of its first label, 1 for the current value.

    The full set every time, so series never vanish when the value changes. This is most of an
    exposition (hyperv_vm_state alone is 30 samples per VM), so it is stored as one entry per
    labelled object and rendered from per-value line prefixes built once per family.
    """

    __slots__ = ("entries", "values")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], values: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames)
        self.values = tuple(values)
        self.entries: list[tuple[Sequence[str], str]] = []

    def add(self, labelvalues: Sequence[str], value: float) -> None:
        raise TypeError("EnumFamily takes set(), not add()")

    def set(self, labels: Sequence[str], current: str) -> None:
        """The object with ``labels`` (every label but the first) has the value ``current``."""
        self.entries.append((labels, current))

    def expanded(self) -> Iterable[tuple[Sequence[str], float]]:
        for labels, current in self.entries:
            for value in self.values:
                yield (value, *labels), 1.0 if value == current else 0.0

    def render_into(self, lines: list[str], escaped: Escaped) -> None:
        order = self._order
        if order is not None and order[0] != 0:
            super().render_into(lines, escaped)  # the enum label does not sort first: the general path
            return
        names = self.labelnames
        rest = tuple(range(1, len(names))) if order is None else order[1:]
        # One text per current value with every line of an object, the rest of its labels left as a
        # placeholder: an object's lines are then one str.replace (in C) instead of 30 concatenations.
        # The placeholder is NUL, which no line prefix contains (names are checked, values escaped
        # enum labels); a label value that contains it is inserted, never searched.
        prefixes = [f'{self.sample_name}{{{names[0]}="{escaped[v]}"' for v in self.values]
        if any("\0" in prefix for prefix in prefixes):
            super().render_into(lines, escaped)
            return
        texts = {
            current: "".join(p + ("\0" + "1.0\n" if v == current else "\0" + "0.0\n")
                             for p, v in zip(prefixes, self.values, strict=True))
            for current in self.values
        }  # fmt: skip
        none_current = "".join(p + "\0" + "0.0\n" for p in prefixes)  # a value outside the set: all 0
        tail_template = "".join(f',{names[i]}="%s"' for i in rest) + "} "
        tails = escaped.blocks.setdefault((tail_template, rest), {})
        lookup = escaped.__getitem__
        lines.append(self._header)
        append = lines.append
        for labels, current in self.entries:
            try:
                tail = tails.get(labels)  # type: ignore[call-overload]  # any sequence; tuples in practice
            except TypeError:  # a list: rendered every time, still right
                tail = None
            if tail is None:
                tail = tails[tuple(labels)] = tail_template % tuple(lookup(labels[i - 1]) for i in rest)
            append(texts.get(current, none_current).replace("\0", tail))


def render_families(families: Iterable[Family], escaped: Escaped | None = None) -> str:
    escaped = Escaped() if escaped is None else escaped
    lines: list[str] = []
    for family in families:
        family.render_into(lines, escaped)
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class ClockExchange:
    """Exporter-side wall-clock times around the host's run, for the host clock offset (collectors.host)."""

    sent: float  # just before the request that started the host's run was sent
    received: float  # just after the first output arrived (the host's last reading precedes it)
    # Upper bound on the one-way time from the host's last reading to ``received``, when the
    # exchange shows one (the transport's return_leg_bound); None: the NTP interval alone.
    return_leg: float | None = None


@dataclass(frozen=True, slots=True)
class CollectorContext:
    report: HostReport
    clock: ClockExchange | None = None


class Collector(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    # Sections of collect.ps1 this collector needs; "vm" (Get-VM) and "host" always run.
    sections: ClassVar[tuple[str, ...]] = ()
    # The entry of the host report's Sections table that times this collector and carries its
    # error: its own section, or the one whose query its data comes from (resources: Get-VM).
    report_section: ClassVar[str] = "vm"
    default_enabled: ClassVar[bool] = True
    # Whether the collector's data hangs off Get-VM: if the vm section failed, so did this collector.
    needs_vms: ClassVar[bool] = True

    @abstractmethod
    def collect(self, ctx: CollectorContext) -> Iterable[Family]:
        """Return fresh metric families for one report (no state is kept between probes)."""


def vm_labels(vm: VM) -> tuple[str, str]:
    return (vm.name, vm.id)


def gauge(name: str, documentation: str, labels: Sequence[str] = VM_LABELS) -> Family:
    return Family(name, documentation, labels)


def enum_gauge(name: str, documentation: str, label: str, values: Sequence[str]) -> EnumFamily:
    """A per-VM enum family: ``label`` (sorting before ``vm``) takes each of ``values``."""
    return EnumFamily(name, documentation, (label, *VM_LABELS), values)


def current_value(name: str, documentation: str, label: str) -> Family:
    """A per-VM enum as one series per VM: ``label`` (sorting before ``vm``) holds the current value, 1.

    The default encoding of the VM enums (docs/metrics.md, "Series budget"): a VM has exactly one
    series per enum, so the families cost 1 series per VM instead of one per possible value (30
    for hyperv_vm_state), while ``{state="running"} == 1`` reads as with one-hot series. A change
    of value starts a new series and ends the old one (a transition is rare: start, stop, failure).
    """
    return Family(name, documentation, (label, *VM_LABELS))


def single(name: str, documentation: str, value: float) -> Family:
    """A gauge with one unlabelled sample (``GaugeMetricFamily(name, doc, value=...)``)."""
    family = Family(name, documentation)
    family.add((), value)
    return family
