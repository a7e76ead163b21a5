"""The collection script: real PowerShell grammar, loader round trip, cmd.exe limit."""

from __future__ import annotations

import re

import pytest
import tree_sitter
import tree_sitter_powershell

from hyperv_exporter.host import script
from hyperv_exporter.host.collectors import COLLECTORS, DEFAULT_COLLECTORS, sections_for

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def syntax_errors(source: str) -> list[str]:
    """Positions of ERROR / MISSING nodes in a tree-sitter-powershell parse."""
    tree = PARSER.parse(source.encode("utf-8"))
    errors: list[str] = []

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            errors.append(
                f"line {node.start_point[0] + 1}: {node.type} {source.encode()[node.start_byte : node.end_byte][:60]!r}"
            )
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return errors


def test_grammar_detects_errors() -> None:
    """Guard: the grammar really rejects broken PowerShell, so a clean parse means something."""
    assert syntax_errors("$x = @{ a = 1") != []
    assert syntax_errors("foreach ($v in $vms) { [void]$rows.Add($v) ") != []
    assert syntax_errors("$x = @{ a = if ($true) { 1 } else { 2 } }") == []


def test_collection_script_parses_as_powershell() -> None:
    assert syntax_errors(script.script_text()) == []


@pytest.mark.parametrize("gzip", [True, False])
def test_loader_parses_as_powershell_and_round_trips(gzip: bool) -> None:
    sections = sections_for(list(DEFAULT_COLLECTORS))
    text = script.loader(sections, gzip)
    assert syntax_errors(text) == []
    assert script.parse_loader(text) == (sections, gzip)


def test_loader_rejects_other_powershell() -> None:
    assert script.parse_loader("Get-Process") is None
    assert script.parse_loader(script.loader(["vm"], True) + "; Remove-Item C:\\ -Recurse") is None
    with pytest.raises(ValueError, match="invalid section"):
        script.loader(["vm'; Stop-Computer; '"], True)


def test_command_line_stays_under_cmd_limit_and_decodes() -> None:
    command, args = script.command_line(sections_for(list(COLLECTORS)), gzip=True)
    line = " ".join([command, *args])
    assert len(line) < script.CMD_LINE_LIMIT
    # The script itself would not fit: that is why it travels in the shell environment.
    assert len(script.encode_command(script.script_text())) > script.CMD_LINE_LIMIT
    assert script.decode_command(args[-1]) == script.loader(sections_for(list(COLLECTORS)), True)


def test_script_sections_match_collectors() -> None:
    """Every section a collector asks for is one the script knows (or comes from Get-VM itself)."""
    text = script.script_text()
    known = set(re.findall(r"\$want\['(\w+)'\]", text)) | set(re.findall(r"Invoke-Section '(\w+)'", text))
    for collector in COLLECTORS.values():
        for section in collector.sections:
            assert section in known, f"{collector.name} needs section {section} that collect.ps1 lacks"


def test_script_emits_enum_names_and_arrays() -> None:
    """The properties whose numbers drift between Windows versions are cast to their names."""
    text = script.script_text()
    for prop in ("State", "Heartbeat", "PrimaryOperationalStatus", "SecondaryOperationalStatus", "SnapshotType"):
        assert re.search(rf"\[string\]\$\w+\.{prop}\b", text), prop
    assert """+ ',"VMs":[')""" in text  # zero or one VM: still an array
    assert "ConvertTo-Json -InputObject $batch" in text  # each batch an array, also with one VM
    assert "$ProgressPreference = 'SilentlyContinue'" in text
