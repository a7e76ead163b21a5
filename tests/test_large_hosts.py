"""Large hosts and old PowerShell: the host-side KVP filter (collect.ps1 -KvpKeys) changes nothing the
exporter reports, the probe passes the module's allowlist, the simulator enforces MaxMemoryPerShellMB
with the real fault, and collect.ps1 uses nothing newer than Windows PowerShell 3.0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tree_sitter
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.sim import scale
from hyperv_exporter.sim.fleet import SimFleet, kvp_item
from hyperv_exporter.sim.generator import generate_host
from hyperv_exporter.sim.ps51json import dumps
from test_capture_replay import Exporter, serve
from test_script import PARSER, syntax_errors

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "collect.ps1": REPO / "exporter" / "hyperv_exporter" / "host" / "collect.ps1",
    "capture-collection.ps1": REPO / "deploy" / "windows" / "capture-collection.ps1",
}
SECTIONS = sections_for(list(COLLECTORS))


def parse(doc: dict[str, object], keys: tuple[str, ...]) -> report.HostReport:
    return report.parse_report(dumps(doc), cimxml.allowlist(keys, 256))


@pytest.mark.parametrize("keys", [DEFAULT_KVP_KEYS, ("a&b", "x<y>", "OSName"), ("NetworkAddressIPv4",)])
def test_host_side_filter_changes_nothing_the_exporter_reports(keys: tuple[str, ...]) -> None:
    host = generate_host(3, 150, seed=7, now=1_700_000_000.0)
    odd = [
        kvp_item("a&b", "ampersand key"),
        kvp_item("x<y>", "angle key"),
        kvp_item("Junk", "mentions OSName in its data"),
        "<INSTANCE CLASSNAME='Msvm_KvpExchangeDataItem'><PROPERTY NAME='Name'><VALUE>OSName",  # malformed, has a key
        "<not xml at all>",  # malformed, no key: the exporter skips it unparsed either way
        42,  # not a string: cannot come from CIM; kept so that the exporter still counts it
    ]
    running = next(vm for vm in host.vms if vm.running())
    running.kvp["GuestExchangeItems"] = odd
    doc = host.document(SECTIONS, 1_700_000_000.0)
    unfiltered = parse(doc, keys)
    # What a probe sends: the allowlist and the keys the exporter reads for itself (report.GUEST_FACT_KEYS).
    filtered_doc = scale.filter_document_kvp(host.document(SECTIONS, 1_700_000_000.0), report.kvp_keys_read(keys))
    filtered = parse(filtered_doc, keys)
    assert filtered.vms == unfiltered.vms  # KVP items and the guest facts taken from them alike
    assert filtered.problems == unfiltered.problems
    assert len(dumps(filtered_doc)) < len(dumps(doc))


_KEY_TEXT = st.text(alphabet=st.sampled_from("OSNameab&<>'\" ;x"), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(_KEY_TEXT, min_size=1, max_size=4),
    items=st.lists(
        st.one_of(
            st.builds(kvp_item, _KEY_TEXT, st.text(max_size=20)),  # canonical items, any key and data
            st.text(max_size=40),  # anything else a guest or a broken host could leave there
        ),
        max_size=12,
    ),
)
def test_host_side_filter_is_invisible_to_the_exporter(keys: list[str], items: list[object]) -> None:
    """For any allowlist and any items: what the exporter selects is the same with the host's filter."""
    kvp_filter = cimxml.allowlist(keys, 256)
    unfiltered: list[str] = []
    filtered: list[str] = []
    expected = cimxml.select(items, kvp_filter, unfiltered, "x")
    assert cimxml.select(scale.kvp_host_filter(items, keys), kvp_filter, filtered, "x") == expected
    assert filtered == unfiltered


def test_loader_with_kvp_keys_round_trips_and_is_powershell() -> None:
    keys = ("OSName", "it's", "a\u2019b", "x,y", "spaces and $dollar", "a&b<c>")
    text = script.loader(["vm", "kvp"], True, keys)
    assert syntax_errors(text) == []
    invocation = script.parse_invocation(text)
    assert invocation == script.Invocation(["vm", "kvp"], True, keys)
    assert script.parse_loader(text) == (["vm", "kvp"], True)
    assert script.parse_invocation(text + "; Stop-Computer") is None
    with pytest.raises(ValueError, match="control characters"):
        script.loader(["kvp"], False, ["bad\nkey"])


def test_probe_command_falls_back_to_exporter_side_filtering() -> None:
    def keys_of(command: tuple[str, list[str]]) -> tuple[str, ...] | None:
        invocation = script.parse_invocation(script.decode_command(command[1][-1]))
        assert invocation is not None
        return invocation.kvp_keys

    assert keys_of(script.probe_command(SECTIONS, True, DEFAULT_KVP_KEYS)) == DEFAULT_KVP_KEYS
    assert keys_of(script.probe_command(["host", "vm"], True, DEFAULT_KVP_KEYS)) is None  # no kvp section
    assert keys_of(script.probe_command(SECTIONS, True, ["tab\tkey"])) is None
    many = [f"Key{i:04d}WithAFairlyLongName" for i in range(400)]  # does not fit cmd.exe's line
    assert keys_of(script.probe_command(SECTIONS, True, many)) is None


def test_probe_passes_the_module_allowlist_to_the_host(tmp_path: Path) -> None:
    host = generate_host(0, 20, seed=1, password=None)
    simulator = serve(SimFleet(hosts=[host]))
    exporter = Exporter(tmp_path, {"default": simulator})
    try:
        samples = exporter.probe("default", host.computer_name)
        assert samples[("hyperv_up", ())] == 1.0
        invocation = simulator.runners[host.computer_name].last_invocation
        assert invocation is not None and invocation.kvp_keys == report.kvp_keys_read(DEFAULT_KVP_KEYS)
        assert set(report.GUEST_FACT_KEYS) <= set(invocation.kvp_keys)  # what the exporter reads for itself
        keys = {dict(labels)["key"] for name, labels in samples if name == "hyperv_vm_kvp_info"}
        assert keys and keys <= set(DEFAULT_KVP_KEYS)
    finally:
        exporter.running.stop()
        simulator.stop()


@pytest.mark.parametrize(("vms", "quota_mb", "up"), [(1000, 150, 1.0), (3000, 150, 0.0), (3000, 1024, 1.0)])
def test_max_memory_per_shell_is_enforced_with_the_real_fault(
    tmp_path: Path, vms: int, quota_mb: int, up: float
) -> None:
    host = generate_host(0, vms, seed=1)
    host.max_memory_per_shell_mb = quota_mb
    simulator = serve(SimFleet(hosts=[host]))
    exporter = Exporter(tmp_path, {"default": simulator})
    try:
        samples = exporter.probe("default", host.computer_name)
        assert samples[("hyperv_up", ())] == up, host.last_peak_memory_bytes / scale.MIB
        if not up:
            result = exporter.running.prober.history[0]
            assert result.reason == "powershell"
            assert "OutOfMemoryException" in (result.message or "")
    finally:
        exporter.running.stop()
        simulator.stop()


def test_memory_model_writes_in_parts_and_filters() -> None:
    whole = scale.MODEL.peak_bytes(1000, 7_000_000, 12_000_000, True, 300_000, streamed=False)
    parts = scale.MODEL.peak_bytes(1000, 7_000_000, 12_000_000, True, 300_000)
    assert parts < whole
    text = SCRIPTS["collect.ps1"].read_text(encoding="utf-8")
    assert f"$batchSize = {scale.BATCH_SIZE}" in text  # the model's batch is the script's


# -- Windows PowerShell 3.0 ----------------------------------------------------------------------------
# Constructs newer than Windows PowerShell 3.0 (Windows Server 2012), with the version that brought them.
NEWER_THAN_3 = {
    r"(?im)^\s*class\s+\w+": "class definitions (5.0)",
    r"(?im)^\s*enum\s+\w+": "enum definitions (5.0)",
    r"(?im)^\s*using\s+(namespace|module|assembly)\b": "using statements (5.0)",
    r"::new\s*\(": "::new() (5.0)",
    r"\.(Where|ForEach)\s*\(": ".Where()/.ForEach() methods (4.0)",
    r"(?i)-PipelineVariable\b": "-PipelineVariable (4.0)",
    r"(?i)#requires\s.*-RunAsAdministrator": "#requires -RunAsAdministrator (4.0)",
    r"(?i)\b(Get-FileHash|New-TemporaryFile|Write-Information|Import-PowerShellDataFile)\b": "cmdlets of 4.0/5.0",
    r"(?i)-(NoNewline|AsArray|EnumsAsStrings|AsHashtable|Parallel)\b": "parameters of 5.0 and later",
    r"\?\?|\?\.|&&|\|\|": "PowerShell 7 operators",
    r"(?i)\bConvertFrom-Json\b": "ConvertFrom-Json (2 MB input limit on 3.0/4.0)",
}


def code_only(source: str) -> str:
    """The script with comments and string literals blanked (their text is not code)."""
    data = bytearray(source.encode("utf-8"))

    def walk(node: tree_sitter.Node) -> None:
        if node.type in ("comment", "string_literal", "expandable_string_literal", "verbatim_string_characters"):
            data[node.start_byte : node.end_byte] = b" " * (node.end_byte - node.start_byte)
            return
        for child in node.children:
            walk(child)

    walk(PARSER.parse(bytes(data)).root_node)
    return data.decode("utf-8")


def test_the_scan_sees_code() -> None:
    sample = "# ::new( in a comment\n$x = 'a && b'\n$y = [Text.StringBuilder]::new()\n"
    found = [why for pattern, why in NEWER_THAN_3.items() if re.search(pattern, code_only(sample))]
    assert found == ["::new() (5.0)"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_use_nothing_newer_than_powershell_3(name: str) -> None:
    code = code_only(SCRIPTS[name].read_text(encoding="utf-8"))
    found = [why for pattern, why in NEWER_THAN_3.items() if re.search(pattern, code)]
    assert found == [], f"{name} uses {found}"
