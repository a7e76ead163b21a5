"""deploy/windows: every shipped PowerShell file parses, and the JEA endpoint script keeps the settings
docs/security.md promises (no Windows here: the checks read the script; the JEA behaviours it relies on
are cited from Microsoft's documentation in docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from hyperv_exporter.host import script
from test_script import syntax_errors

WINDOWS = REPO / "deploy" / "windows"
ENDPOINT_SCRIPT = WINDOWS / "HyperVExporterEndpoint.ps1"
SHIPPED = sorted(p for ext in ("*.ps1", "*.psm1", "*.psd1", "*.psrc", "*.pssc") for p in REPO.glob(f"deploy/**/{ext}"))


def endpoint_text() -> str:
    return ENDPOINT_SCRIPT.read_text(encoding="utf-8")


def ps_single_quoted(name: str) -> str:
    """The value of ``$name = '...'`` in the endpoint script (PowerShell: '' is a literal ')."""
    match = re.search(rf"^\${name} = '((?:[^']|'')*)'$", endpoint_text(), re.MULTILINE)
    assert match, name
    return match.group(1).replace("''", "'")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_powershell_parses(path: Path) -> None:
    # .psd1/.psrc/.pssc files are one hashtable literal: a valid PowerShell expression statement.
    assert syntax_errors(path.read_text(encoding="utf-8-sig")) == []


def test_endpoint_script_is_shipped() -> None:
    assert ENDPOINT_SCRIPT in SHIPPED


def test_role_capability_shape_parses_with_collect_ps1_as_its_function() -> None:
    """The .psrc the script generates: New-PSRoleCapabilityFile writes the function body between
    braces, so collect.ps1 (stamped) must parse there too, inside a hashtable literal."""
    psrc = (
        "@{\n"
        "GUID = '5f1b0c43-6d0e-4b8a-9a59-1e0d6e3c4a11'\n"
        "Description = 'hyperv-exporter: read-only collection'\n"
        "ModulesToImport = 'Hyper-V', 'CimCmdlets', 'Microsoft.PowerShell.Utility'\n"
        "VisibleFunctions = 'Get-HyperVExporterReport'\n"
        "FunctionDefinitions = @{\n"
        "    'Name' = 'Get-HyperVExporterReport'\n"
        "    'ScriptBlock' = {" + script.script_text() + "}\n"
        "}\n"
        "}\n"
    )
    assert syntax_errors(psrc) == []
    pssc = (
        "@{\n"
        "SchemaVersion = '2.0.0.0'\n"
        "SessionType = 'RestrictedRemoteServer'\n"
        "RunAsVirtualAccount = $true\n"
        "RunAsVirtualAccountGroups = 'Hyper-V Administrators'\n"
        "RoleDefinitions = @{ 'CORP\\HyperV-Monitoring' = @{ 'RoleCapabilities' = 'HyperVExporterReader' } }\n"
        "}\n"
    )
    assert syntax_errors(pssc) == []


def test_hash_pattern_and_canonical_form_match_the_exporter() -> None:
    """The deploy script stamps the hash the exporter compares with: same line pattern, same
    canonical text (no BOM, LF, stamp emptied), SHA-256 of its UTF-8 bytes."""
    pattern = ps_single_quoted("HashLinePattern")
    assert pattern == "(?m)" + script.HASH_LINE.pattern
    text = endpoint_text()
    assert 'TrimStart([char]0xFEFF).Replace("`r`n", "`n")' in text
    assert "[Security.Cryptography.SHA256]::Create()" in text and "New-Object Text.UTF8Encoding $false" in text
    assert "ToString('x2')" in text  # lower-case hex, as hashlib's hexdigest
    # The .NET replacement texts ("$$" is a literal "$") give the exporter's unstamped and stamped lines.
    assert "$UnstampedLine = \"`$`$scriptHash = ''\"" in text
    assert "\"`$`$scriptHash = '$hash'\"" in text
    # Emulate the script's canonicalisation with the same regex on a CRLF, BOM, stamped copy.
    emulated = re.sub(
        pattern.removeprefix("(?m)"),
        "$scriptHash = ''",
        ("\ufeff" + script.script_text().replace("\n", "\r\n")).lstrip("\ufeff").replace("\r\n", "\n"),
        flags=re.MULTILINE,
    )
    assert emulated == script.canonical_text(script.script_text())
    version = re.search(ps_single_quoted("VersionLinePattern").removeprefix("(?m)"), emulated, re.MULTILINE)
    assert version and version.group(1) == script.script_version()


def test_endpoint_settings() -> None:
    text = endpoint_text()
    assert "$EndpointName = 'HyperVExporter'" in text  # CONTRACTS C1
    assert "$CommandName = 'Get-HyperVExporterReport'" in text
    assert "SessionType = 'RestrictedRemoteServer'" in text
    assert "RunAsVirtualAccount = $true" in text
    assert "RunAsVirtualAccountGroups = $hyperVAdmins" in text
    assert "'S-1-5-32-578'" in text  # Hyper-V Administrators by SID: its name is localized
    assert "RoleDefinitions = @{ $members = @{ RoleCapabilities = $RoleName } }" in text
    assert "VisibleFunctions = $CommandName" in text
    assert "FunctionDefinitions = @{ Name = $CommandName; ScriptBlock = [ScriptBlock]::Create($Collect.Text) }" in text
    for forbidden in (
        "VisibleCmdlets",
        "VisibleExternalCommands",
        "VisibleProviders",
        "MountUserDrive",
        "RunAsCredential",
    ):
        assert forbidden not in text, forbidden
    # Transcripts only when asked for.
    assert re.search(r"if \(\$TranscriptDirectory\) \{[^}]*\$session\.TranscriptDirectory = ", text, re.DOTALL)


def test_endpoint_script_says_what_operators_must_know() -> None:
    text = endpoint_text()
    assert "RESTARTS THE WinRM SERVICE" in text and "restarts WinRM" in text
    assert "WMF) 5.1" in text and "2012 R2" in text
    assert "[version]'5.1'" in text
    assert "event 4104" in text
    for action in ("-Register", "-Update", "-Test", "-Unregister"):
        assert f"\n      {action}" in text, action
    assert "Test-PSSessionConfigurationFile" in text and "Get-PSSessionCapability" in text
    assert "ShouldProcess" in text  # asks before restarting WinRM
