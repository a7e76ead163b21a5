"""docs/troubleshooting.md explains every error reason the exporter reports, and the WinRM set-up."""

from __future__ import annotations

import pytest

from conftest import REPO
from hyperv_exporter.host.transport.errors import REASONS

TROUBLESHOOTING_MD = REPO / "docs" / "troubleshooting.md"


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_has_a_section(reason: str) -> None:
    assert f"\n### `{reason}`\n" in TROUBLESHOOTING_MD.read_text(encoding="utf-8"), reason


@pytest.mark.parametrize(
    "topic",
    [
        "TrustedHosts",
        r"New-Item -Path WSMan:\localhost\Listener -Transport HTTPS",
        "winrm quickconfig -transport:https",
        "-LocalPort 5986",
        "5985",
        "Double hop",
        "Test-WSMan",
        "MaxShellsPerUser",
        "AllowUnencrypted",
        "Remote Management Users",
        "Hyper-V Administrators",
        "hyperv_exporter_probe_errors_total",
        "debug=true",
    ],
)
def test_winrm_topics(topic: str) -> None:
    assert topic in TROUBLESHOOTING_MD.read_text(encoding="utf-8"), topic
