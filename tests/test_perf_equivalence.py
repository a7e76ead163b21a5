"""Fast paths give the same answers as the slow ones they stand in for.

- cimxml: an item in Hyper-V's canonical single-line layout is read with a regular expression; any
  other text goes through defusedxml. For every input the two must agree, value or refusal.
- sim.ps51json: strings are escaped with str.replace passes instead of a loop per character.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperv_exporter.host import cimxml
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.sim import ps51json
from hyperv_exporter.sim.fleet import kvp_item
from hyperv_exporter.sim.generator import generate_fleet

# Things that are legal in some XML but outside the fast path, or not XML at all.
AWKWARD = [
    "\r", "\r\n", "]]>", "]", ">", "&#38;", "&#x41;", "&#0;", "&bogus;", "&", "<", "<!-- c -->", "<![CDATA[<x>]]>",
    "\x00", "\x0b", "\x7f", "\x85", "\ufffe", "\uffff", "\ud800", "\U0001f600", "\t", "\n", " ", "'", '"',
    "<VALUE>", "</VALUE>", '<PROPERTY NAME="Name" TYPE="string"><VALUE>x</VALUE></PROPERTY>',
]  # fmt: skip


def outcome(parse: object, item: str) -> tuple[str, str] | str:
    try:
        return parse(item)  # type: ignore[operator, no-any-return]
    except cimxml.KvpItemError:
        return "refused"


def assert_same(item: str) -> None:
    assert outcome(cimxml.parse_item, item) == outcome(cimxml._parse_xml, item), repr(item)


text = st.lists(st.characters() | st.sampled_from(AWKWARD), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(text, text, st.sampled_from([0, 1, 2]))
def test_items_hyperv_writes_parse_the_same_on_both_paths(name: str, data: str, source: int) -> None:
    # kvp_item escapes like Hyper-V; unescaped text (the AWKWARD pieces) makes them fall back or fail.
    assert_same(kvp_item(name, data, source))


@settings(max_examples=500, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.sampled_from(AWKWARD), min_size=1, max_size=3))
def test_damaged_items_parse_the_same_on_both_paths(rng: random.Random, pieces: list[str]) -> None:
    item = kvp_item(rng.choice(["OSName", "NetworkAddressIPv4", "x"]), rng.choice(["10.0.0.1", "", "a & b"]))
    for piece in pieces:
        at = rng.randrange(len(item) + 1)
        item = item[:at] + piece + item[at:]
    assert_same(item)


@pytest.mark.parametrize(
    "item",
    [
        kvp_item("OSName", "Windows Server 2022"),
        kvp_item("Department", "R&D <\"Labs\"> 'Nord'"),
        kvp_item("CSDVersion", ""),
        kvp_item("  Padded  ", " value "),
        kvp_item("OSName", "Windows\n"),
        # The minimal form some hosts return, on one line.
        '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" TYPE="string"><VALUE>169.254.103.5'
        '</VALUE></PROPERTY><PROPERTY NAME="Name" TYPE="string"><VALUE>RDPAddressIPv4</VALUE></PROPERTY>'
        '<PROPERTY NAME="Source" TYPE="uint16"><VALUE>2</VALUE></PROPERTY></INSTANCE>',
    ],
)
def test_hyperv_layouts_take_the_fast_path(item: str) -> None:
    assert cimxml._CANONICAL_ITEM.fullmatch(item) is not None
    assert_same(item)


def test_every_item_of_a_generated_host_parses_the_same_on_both_paths() -> None:
    host = generate_fleet(1, 120, seed=4).hosts[0]
    items = [item for vm in host.vms for array in vm.kvp.values() for item in array]
    assert len(items) > 1000
    for item in items:
        assert cimxml._CANONICAL_ITEM.fullmatch(item) is not None
        assert_same(item)


def _reference_string(text: str) -> str:
    """ps51json's original per-character escaping."""
    out = []
    for ch in text:
        escaped = ps51json._ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@settings(max_examples=500, deadline=None)
@given(st.lists(st.characters() | st.sampled_from(["\\u003c", "\\", '"', "<>&'"]), max_size=30).map("".join))
def test_ps51json_string_escaping_is_unchanged(value: str) -> None:
    assert ps51json._string(value) == _reference_string(value)


def test_ps51json_document_of_a_generated_host_is_unchanged() -> None:
    host = generate_fleet(1, 30, seed=9).hosts[0]
    doc = host.document(sections_for(tuple(COLLECTORS)), 1_795_800_000.0)
    original = ps51json._string
    try:
        fast = ps51json.dumps(doc)
        ps51json._string = _reference_string
        assert ps51json.dumps(doc) == fast
    finally:
        ps51json._string = original
