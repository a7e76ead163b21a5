"""Fast paths give the same answers as the slow ones they stand in for.

- cimxml: an item in Hyper-V's canonical single-line layout is read with a regular expression; any
  other text goes through defusedxml. For every input the two must agree, value or refusal.
- sim.ps51json: strings are escaped with str.replace passes instead of a loop per character, and
  compact documents are written by the standard library's C encoder (floats prepared as 5.1 prints
  them, ``< > & '`` replaced afterwards) instead of a recursive function.
- report.load_json: msgspec reads the document's bytes; what it refuses goes to json.loads. For
  every input the result (value, or error message) must be json.loads's.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperv_exporter.host import cimxml, report
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
        assert ps51json._compact(doc) == fast
    finally:
        ps51json._string = original


_ps51_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.sampled_from([0.0, -0.0, 3.0, 1e15, 1e16, 2.5, "<a & 'b'>", "\x00\x1f\x7f\ud800", "\\u003c"]),
    lambda children: st.lists(children, max_size=4) | st.tuples(children)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(_ps51_values)
def test_ps51json_fast_compact_writes_what_the_recursive_writer_writes(value: object) -> None:
    assert ps51json.dumps(value) == ps51json._compact(value)


def test_ps51json_leaves_other_types_to_the_recursive_writer() -> None:
    class Name(str):
        pass

    value = {"a": [Name("x<"), (1, 2.0)], "b": {1: "key not a str"}}
    assert ps51json.dumps(value) == ps51json._compact(value) == '{"a":["x\\u003c",[1,2]],"b":{"1":"key not a str"}}'


# -- report.load_json: msgspec, with json.loads for whatever msgspec refuses ---------------------------
def _json_outcome(load: object, document: str | bytes) -> object:
    try:
        value = load(document)  # type: ignore[operator]
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__, getattr(exc, "msg", str(exc)))
    return ("value", _tagged(value))


def _tagged(value: object) -> object:
    """A comparable form that tells int from float from bool, -0.0 from 0.0, and NaN from NaN's absence."""
    if isinstance(value, dict):
        return ("dict", [(k, _tagged(v)) for k, v in value.items()])  # key order too
    if isinstance(value, list):
        return ("list", [_tagged(v) for v in value])
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    return (type(value).__name__, value)


def _reference(document: str | bytes) -> object:
    """What parse_report did before: decode_output's text, then json.loads."""
    return json.loads(document if isinstance(document, str) else report._text(document))


def assert_same_json(document: str | bytes) -> None:
    assert _json_outcome(report.load_json, document) == _json_outcome(_reference, document), repr(document)[:300]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)
# Spellings json.loads accepts or refuses that a serialiser would not write: numbers beyond int64 and
# beyond a double, NaN and Infinity, lone surrogates (escaped and as UTF-8 bytes), escapes,
# whitespace, duplicate keys, a BOM, invalid UTF-8 and Windows-1252 text, trailing garbage.
JSON_PIECES = [
    "18446744073709551616", "-9223372036854775809", "1e400", "-1e400", "1e-400", "2.4703282292062328e-324",
    "NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\u003c\\u0026"',
    '"\\/"', "-0", "-0.0", "0.1e1", "1E+2", "01", "1.", ".5", "[1,]", '{"a":1,"a":2}', '{"a":1,}', " \t\r\n",
    '"\x7f\u00e9\u4e2d"', "true", "null", "[", "]", "{", "}", ",", ":", '"', "\x00",
]  # fmt: skip
_BYTE_PIECES = [b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\xe9", b"\xff", b"\xc3\xa9", b"\x80"]


@settings(max_examples=500, deadline=None)
@given(_json_values)
def test_load_json_equals_json_loads_on_serialised_documents(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, indent=2)):
        assert_same_json(text)
        assert_same_json(text.encode("utf-8", errors="surrogatepass"))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(JSON_PIECES) | st.sampled_from(["[", "]", ",", '"x":'])
                | st.text(max_size=3), max_size=8).map("".join),
       st.lists(st.sampled_from(_BYTE_PIECES), max_size=2), st.randoms(use_true_random=False))  # fmt: skip
def test_load_json_equals_json_loads_on_odd_documents(text: str, raw: list[bytes], rng: random.Random) -> None:
    for candidate in (text, "[" + text + "]", '{"k":' + text + "}"):
        assert_same_json(candidate)
        data = candidate.encode("utf-8", errors="surrogatepass")
        for piece in raw:
            at = rng.randrange(len(data) + 1)
            data = data[:at] + piece + data[at:]
        assert_same_json(data)


@pytest.mark.parametrize("depth", [10, 200, 5000])
def test_load_json_equals_json_loads_on_deep_nesting(depth: int) -> None:
    assert_same_json("[" * depth + "]" * depth)
    assert_same_json('{"a":' * depth + "1" + "}" * depth)


def test_load_json_equals_json_loads_on_a_generated_host() -> None:
    host = generate_fleet(1, 60, seed=1).hosts[0]
    text = ps51json.dumps(host.document(sections_for(tuple(COLLECTORS)), 1_795_800_000.0))
    assert not text.isascii()  # generated hosts have non-ASCII VM names now and then; this one does
    assert_same_json(text)
    assert_same_json(text.encode("utf-8"))
    assert_same_json(text.encode("cp1252", errors="replace"))  # a host that ignored code page 65001


# -- report.parse_report: VMs decoded one at a time, json.loads when msgspec refuses one ---------------
def _report_outcome(parse: object, document: str | bytes) -> object:
    kvp_filter = cimxml.allowlist(["OSName", "FullyQualifiedDomainName"], 256)
    try:
        return parse(document, kvp_filter)  # type: ignore[operator]
    except report.ReportError as exc:
        return ("error", exc.reason, str(exc))


def _reference_report(document: str | bytes, kvp_filter: cimxml.KvpFilter) -> object:
    """What parse_report did before: the whole document through json.loads, then the records."""
    sources = frozenset((report.KVP_GUEST_INTRINSIC, report.KVP_GUEST, report.KVP_HOST))
    return report._report(report._load(document, lazy=False), kvp_filter, sources)


def assert_same_report(document: str | bytes) -> None:
    ours, reference = _report_outcome(report.parse_report, document), _report_outcome(_reference_report, document)
    assert ours == reference, repr(document)[:300]


def _generated_document(vms: int = 6) -> str:
    host = generate_fleet(1, vms, seed=1).hosts[0]
    return ps51json.dumps(host.document(sections_for(tuple(COLLECTORS)), 1_795_800_000.0))


# What msgspec refuses in one VM and json.loads takes (or refuses differently): each must give the
# report json.loads gives, whichever VM it is in.
VM_DAMAGE = [
    ('"Generation":2', '"Generation":NaN'), ('"Generation":2', '"Generation":1e400'),
    ('"Generation":2', '"Generation":123456789012345678901234567890'), ('"Version":"', '"Version":"\\ud800'),
    ('"Name":"', '"Name":"\\udc00\\ud800'), ('"Generation":2', '"Generation":Infinity'),
    ('"Generation":2', '"Generation":2,"Generation":3'),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new"), VM_DAMAGE)
@pytest.mark.parametrize("vm", [0, 3, 5])
def test_parse_report_equals_the_json_path_when_one_vm_is_odd(old: str, new: str, vm: int) -> None:
    text = _generated_document()
    start = text.index('"VMs":[')
    for _ in range(vm + 1):
        start = text.index('{"Name":', start + 1)
    at = text.index(old, start)
    damaged = text[:at] + new + text[at + len(old) :]
    assert_same_report(damaged)
    assert_same_report(damaged.encode("utf-8", errors="surrogatepass"))


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xed\xa0\x80", b"\xe9t\xe9", b"\xc3"],  # invalid UTF-8: json.loads reads it all as Windows-1252
)
@pytest.mark.parametrize("vm", [0, 5])
def test_parse_report_equals_the_json_path_with_invalid_utf8_in_a_vm(raw: bytes, vm: int) -> None:
    data = _generated_document().encode("utf-8")
    start = data.index(b'"VMs":[')
    for _ in range(vm + 1):
        start = data.index(b'{"Name":"', start + 1)
    at = start + len(b'{"Name":"')
    assert_same_report(data[:at] + raw + data[at:])


def test_parse_report_decodes_vms_it_does_not_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM beyond MAX_VMS is never parsed, but its bytes still decide how the document is read."""
    monkeypatch.setattr(report, "MAX_VMS", 2)
    data = _generated_document().encode("utf-8")
    last = data.rindex(b'{"Name":"') + len(b'{"Name":"')
    damaged = data[:last] + b"\xe9" + data[last:]  # Windows-1252: the whole document is read that way
    assert_same_report(damaged)
    assert "VMs has 6 entries" in str(report.parse_report(damaged, cimxml.allowlist([], 1)).problems)


@pytest.mark.parametrize(
    "document",
    [
        '{"SchemaVersion":1,"VMs":{"Name":"single","Id":"1"}}',  # one VM, not wrapped in an array
        '{"SchemaVersion":1,"VMs":null}',
        '{"SchemaVersion":1,"VMs":[],"VMs":[{"Name":"second","Id":"2"}]}',  # the last one wins
        '{"SchemaVersion":1,"VMs":[1,"x",[],{"Name":"a","Id":"3"}]}',
        '{"SchemaVersion":1,"VMs":[{"Name":"a","Id":"3"}],"Host":{"ComputerName":NaN}}',
        '{"SchemaVersion":2,"VMs":[{"Name":"a","Id":NaN}]}',
        '[{"SchemaVersion":1}]',
        '{"SchemaVersion":1,"VMs":[{"Name":"a","Id":"3"}]',  # truncated
        '{"SchemaVersion":1,"VMs":[{"Name":"a","Id":"3"}]}trailing',
    ],
)
def test_parse_report_equals_the_json_path_on_odd_shapes(document: str) -> None:
    assert_same_report(document)
    assert_same_report(document.encode("utf-8"))


def test_parse_report_equals_the_json_path_on_a_generated_host() -> None:
    text = _generated_document(60)
    assert_same_report(text)
    assert_same_report(text.encode("utf-8"))


# -- report.decode_bytes: gzip inflated in steps into one buffer ----------------------------------------
def _old_decode(stdout: bytes, max_bytes: int) -> object:
    """decode_output before: one zlib call with max_length = cap + 1, then the same checks."""
    import base64
    import binascii
    import zlib

    data = stdout.strip()
    try:
        compressed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return ("error", "parse")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(compressed, max_bytes + 1)
    except zlib.error:
        return ("error", "parse")
    if len(data) > max_bytes:
        return ("error", "output_too_large")
    if not inflater.eof:
        return ("error", "parse")
    return ("value", data.removeprefix(b"\xef\xbb\xbf"))


def _new_decode(stdout: bytes, max_bytes: int) -> object:
    try:
        return ("value", bytes(report.decode_bytes(stdout, max_bytes)))
    except report.ReportError as exc:
        return ("error", exc.reason)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=3000) | st.sampled_from([b"\xef\xbb\xbf{}", b"x" * 5000]),
    st.integers(0, 6000),
    st.sampled_from(["whole", "truncated", "trailing", "flipped"]),
    st.sampled_from([1, 7, 1 << 20]),
)
def test_stepwise_inflation_decides_like_one_call(raw: bytes, cap: int, damage: str, step: int) -> None:
    import base64
    import gzip

    packed = gzip.compress(raw, mtime=0)
    if damage == "truncated":
        packed = packed[: max(10, len(packed) // 2)]
    elif damage == "trailing":
        packed += b"garbage after the gzip member"
    elif damage == "flipped" and len(packed) > 20:
        packed = packed[:15] + bytes([packed[15] ^ 0x55]) + packed[16:]
    stdout = base64.b64encode(packed)
    original = report.INFLATE_STEP
    try:
        report.INFLATE_STEP = step  # tiny steps exercise the loop's every turn
        assert _new_decode(stdout, cap) == _old_decode(stdout, cap)
    finally:
        report.INFLATE_STEP = original
