"""The direct text renderer (collectors.base.Family) writes exactly what prometheus_client's generate_latest writes.

Checked three ways: random families built side by side with GaugeMetricFamily/InfoMetricFamily,
a whole 1,000-VM host through exposition (rendered text vs generate_latest of the same families
converted with ``to_metric``), and ``to_metric`` itself against prometheus_client's own families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from conftest import thousand_vm_result
from hyperv_exporter.host import exposition
from hyperv_exporter.host.collectors.base import EnumFamily, Escaped, Family, go_float, render_families


class _Fixed:
    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Sequence[Metric]:
        return self.metrics


def generate_latest_of(metrics: Sequence[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(metrics))
    return generate_latest(registry)


label_names = st.sampled_from(["vm", "vm_id", "state", "service", "key", "value", "a", "zz", "_x", "Upper"])
label_values = st.lists(
    st.characters(blacklist_categories=["Cs"]) | st.sampled_from(['"', "\\", "\n", "\\n", '\\"', "é", "会"]),
    max_size=12,
).map("".join)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-9, 1795800000.123, 123456789.0, 1e22, 0.1]),
    st.integers(min_value=-(10**12), max_value=10**12).map(float),
)
docs = st.text(max_size=40) | st.sampled_from(["back\\slash and\nnewline", "plain help"])


@st.composite
def family_specs(draw: st.DrawFn) -> tuple[str, str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]:
    kind = draw(st.sampled_from(["gauge", "info"]))
    name = draw(st.sampled_from(["hyperv_vm_state", "hyperv_x", "a:b_c", "hyperv_host"]))
    names = tuple(draw(st.lists(label_names, unique=True, max_size=5)))  # any order: the reordering path too
    samples = draw(st.lists(st.tuples(st.tuples(*[label_values for _ in names]), values), max_size=8))
    if kind == "info":
        samples = [(labels, 1.0) for labels, _ in samples]
    return kind, name, draw(docs), names, samples


@settings(max_examples=300, deadline=None)
@given(st.lists(family_specs(), max_size=4))
def test_random_families_render_exactly_like_generate_latest(
    specs: list[tuple[str, str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]],
) -> None:
    ours: list[Family] = []
    theirs: list[Metric] = []
    for kind, name, doc, names, samples in specs:
        family = Family(name, doc, names, kind="info" if kind == "info" else "gauge")
        reference: GaugeMetricFamily | InfoMetricFamily
        if kind == "info":
            reference = InfoMetricFamily(name, doc, labels=list(names))
        else:
            reference = GaugeMetricFamily(name, doc, labels=list(names))
        for labels, value in samples:
            family.add(labels, value)
            if isinstance(reference, InfoMetricFamily):
                reference.add_metric(list(labels), {})
            else:
                reference.add_metric(list(labels), value)
        ours.append(family)
        theirs.append(reference)
    assert render_families(ours).encode() == generate_latest_of(theirs)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True),
    st.lists(st.tuples(label_values, label_values, st.text(max_size=6)), max_size=6),
    st.booleans(),
)
def test_enum_families_render_exactly_like_generate_latest(
    enum_values: list[str], objects: list[tuple[str, str, str]], enum_label_sorts_first: bool
) -> None:
    label = "state" if enum_label_sorts_first else "zstate"  # "zstate" sorts after vm: the general path
    family = EnumFamily("hyperv_vm_state", "doc", (label, "vm", "vm_id"), enum_values)
    reference = GaugeMetricFamily("hyperv_vm_state", "doc", labels=[label, "vm", "vm_id"])
    for vm, vm_id, current in objects:
        family.set((vm, vm_id), current)
        for value in enum_values:
            reference.add_metric([value, vm, vm_id], 1.0 if value == current else 0.0)
    assert family.render(Escaped()).encode() == generate_latest_of([reference])
    assert family.to_metric() == reference


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(label_values | st.sampled_from(["\0", "a\0b"]), label_values), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), values, st.booleans()), max_size=24),
    st.lists(st.text(max_size=4) | st.just("\0"), min_size=1, max_size=4, unique=True),
)
def test_shared_label_blocks_and_values_render_exactly_like_generate_latest(
    vms: list[tuple[str, str]],
    samples: list[tuple[int, int, float, bool]],
    enum_values: list[str],
) -> None:
    """One rendering reuses a VM's label block across families and each value's text across samples:
    the same (name, id) in several families, as tuples and as lists, 0.0 next to -0.0, NaN twice,
    enum objects whose current value is outside the set, and NUL in label and enum values."""
    families = [Family(f"hyperv_f{i}", "doc", ("vm", "vm_id")) for i in range(4)]
    references = [GaugeMetricFamily(f"hyperv_f{i}", "doc", labels=["vm", "vm_id"]) for i in range(4)]
    state = EnumFamily("hyperv_vm_state", "doc", ("state", "vm", "vm_id"), enum_values)
    state_reference = GaugeMetricFamily("hyperv_vm_state", "doc", labels=["state", "vm", "vm_id"])
    for family_index, vm_index, value, as_list in samples:
        vm = vms[vm_index % len(vms)]
        families[family_index].add(list(vm) if as_list else vm, value)
        references[family_index].add_metric(list(vm), value)
    for index, vm in enumerate(vms):
        current = enum_values[index] if index < len(enum_values) else "outside"
        state.set(vm, current)
        for value in enum_values:
            state_reference.add_metric([value, *vm], 1.0 if value == current else 0.0)
    ours = [state, *families, state]  # the same families twice: blocks found again
    assert render_families(ours).encode() == generate_latest_of([state_reference, *references, state_reference])


def test_to_metric_is_what_prometheus_client_builds() -> None:
    gauge = Family("hyperv_vm_uptime_seconds", "Uptime.", ("vm", "vm_id"))
    gauge.add(("web01", "id-1"), 12.5)
    expected = GaugeMetricFamily("hyperv_vm_uptime_seconds", "Uptime.", labels=["vm", "vm_id"])
    expected.add_metric(["web01", "id-1"], 12.5)
    assert gauge.to_metric() == expected
    info = Family("hyperv_vm", "Facts.", ("generation", "vm"), kind="info")
    info.add(("2", "web01"), 1.0)
    expected_info = InfoMetricFamily("hyperv_vm", "Facts.", labels=["generation", "vm"])
    expected_info.add_metric(["2", "web01"], {})
    assert info.to_metric() == expected_info


def test_go_float_is_float_to_go_string() -> None:
    from prometheus_client.utils import floatToGoString

    for value in (0.0, -0.0, 1.0, -1.0, 2.5, 1e22, 1795800000.5, math.inf, -math.inf, math.nan, 1, 0):
        assert go_float(value) == floatToGoString(value), value  # type: ignore[no-untyped-call]


def test_a_thousand_vm_host_renders_exactly_like_generate_latest() -> None:
    result = thousand_vm_result()  # with names to escape in every family that carries one
    output = exposition._collect(result, 9.5, result.started + result.duration, keep_families=True)  # as render()
    rendered = output.text.encode()
    assert rendered == generate_latest_of([f.to_metric() for f in output.families])
    assert rendered == exposition.render(result, 9.5)
    assert rendered.count(b"\n") > 20_000  # ~22 series per VM since the series budget (docs/metrics.md)
