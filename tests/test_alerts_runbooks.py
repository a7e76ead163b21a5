"""Every alert has a runbook in docs/runbooks/<AlertName>.md with Meaning, Impact, Diagnosis, Mitigation."""

from __future__ import annotations

import re

import pytest

from promstack import RUNBOOKS_DIR, alert_names, alerting_rules

SECTIONS = ["Meaning", "Impact", "Diagnosis", "Mitigation"]


def sections(text: str) -> dict[str, str]:
    """``## Heading`` -> the text up to the next level-2 heading."""
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def test_one_runbook_per_alert_and_no_orphans() -> None:
    assert sorted(p.stem for p in RUNBOOKS_DIR.glob("*.md")) == alert_names()


@pytest.mark.parametrize("name", alert_names())
def test_runbook_structure(name: str) -> None:
    text = (RUNBOOKS_DIR / f"{name}.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# {name}"
    found = sections(text)
    assert list(found) == SECTIONS, f"{name}: sections {list(found)}, expected {SECTIONS} in this order"
    for section, body in found.items():
        assert len(body) > 80, f"{name}: section {section} is (nearly) empty"
    assert "```" in found["Diagnosis"] + found["Mitigation"], f"{name}: no commands to run"
    severities = {rule["labels"]["severity"] for _, rule in alerting_rules() if rule["alert"] == name}
    header = text.split("## Meaning", 1)[0]
    for severity in severities:
        assert severity in header, f"{name}: the header does not mention severity {severity}"
    for _, rule in alerting_rules():
        if rule["alert"] == name:
            assert rule["for"] in header, f"{name}: the header does not mention for: {rule['for']}"


def test_runbooks_show_hyperv_and_guest_commands() -> None:
    """The runbooks as a whole give the operator both the host (PowerShell) and the guest commands."""
    corpus = "\n".join(p.read_text(encoding="utf-8") for p in RUNBOOKS_DIR.glob("*.md"))
    for command in (
        "Get-VM ",
        "Get-VMIntegrationService",
        "Enable-VMIntegrationService",
        "Get-VMReplication",
        "Measure-VMReplication",
        "Get-VMSnapshot",
        "w32tm /query /status",
        "systemctl status hv-kvp-daemon",
        "lsmod | grep hv_utils",
        "chronyc tracking",
    ):
        assert command in corpus, command
