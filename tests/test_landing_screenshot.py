"""The landing page in a real browser: its tables render, and docs/images/landing.png is its picture.

Headless Chromium loads the page of a --demo exporter after a few probes (one of them against a
host made to fail, so the picture shows an error too), dumps the DOM it built, and takes the
screenshot the README shows. Before the screenshot the probe times and durations are pinned, so
the image only changes when the page does; it is written to docs/images/ only when it differs.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO, require_tool
from hyperv_exporter.host import landing
from hyperv_exporter.host.cli import Running

SCREENSHOT = REPO / "docs" / "images" / "landing.png"
WINDOW = (1440, 800)
PINNED_START = 1767261600.0  # 2026-01-01 10:00:00 UTC, shown in UTC


class Tables(HTMLParser):
    """Rows (lists of cell texts) of every table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.classes: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "span" and self._table and attributes.get("class"):
            self.classes.setdefault(self._table, []).append(attributes["class"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("chromium")
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", "--force-device-scale-factor=1", "--font-render-hinting=none",
        f"--user-data-dir={user_data}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.fixture
def probed_demo(demo: Running) -> Iterator[Running]:
    """The demo after four probes; HV-LEGACY-01 is made to fail like a host where Get-VM is denied."""
    simulator = demo.simulator
    fleet = simulator.fleet
    fleet.host("HV-LEGACY-01").set(output_fault="powershell_error")
    base = demo.server.urls[0]
    for host in ("HV-BERLIN-01", "HV-LONDON-01", "HV-DUBLIN-01", "HV-LEGACY-01"):
        with urllib.request.urlopen(f"{base}/probe?module=default&target={host}", timeout=30) as resp:
            assert resp.status == 200
    yield demo


def test_landing_page_renders_its_tables_in_chromium(probed_demo: Running, tmp_path: Path) -> None:
    url = probed_demo.server.urls[0] + "/"
    proc = chromium("--dump-dom", url, user_data=tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tables = Tables()
    tables.feed(proc.stdout)
    assert set(tables.tables) >= {"modules", "probes"}, proc.stdout[:2000]

    header, *modules = tables.tables["modules"]
    assert header[:2] == ["Module", "Allowed targets"]
    assert len(modules) == 1 and modules[0][0] == "default"
    assert "hv-berlin-01" in modules[0][1].lower() and "<secret>" in modules[0][2]

    header, *probes = tables.tables["probes"]
    assert header == ["Time", "Module", "Target", "Result", "Duration", "Detail"]
    assert [row[2] for row in probes] == ["HV-LEGACY-01", "HV-DUBLIN-01", "HV-LONDON-01", "HV-BERLIN-01"]
    by_target = {row[2]: row for row in probes}
    assert by_target["HV-BERLIN-01"][3] == "ok" and by_target["HV-BERLIN-01"][5].startswith("5 VMs")
    assert by_target["HV-LEGACY-01"][3] == "powershell" and "permission" in by_target["HV-LEGACY-01"][5]
    assert tables.classes["probes"].count("fail") == 1


def test_landing_page_screenshot(probed_demo: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pin what changes from run to run: when the probes ran and how long they took.
    for index, result in enumerate(reversed(probed_demo.prober.history)):
        result.started = PINNED_START + 15 * index
        result.duration = 0.05 + 0.01 * index
    monkeypatch.setattr(landing.time, "localtime", time.gmtime)
    # ... and the simulated hosts' ports (free ports, new every run), shown as the WinRM endpoints.
    endpoints = probed_demo.app.config.modules["default"].endpoints
    for index, host in enumerate(sorted(endpoints)):
        monkeypatch.setitem(endpoints, host, f"http://127.0.0.1:{45985 + index}/wsman")  # type: ignore[index]
    shot = tmp_path / "landing.png"
    started = time.monotonic()
    proc = chromium(
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        probed_demo.server.urls[0] + "/",
        user_data=tmp_path / "profile",
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert time.monotonic() - started < 30
    data = shot.read_bytes()
    assert png_size(data) == WINDOW
    assert len(data) > 20_000, "a page of text and tables, not a blank image"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    if not SCREENSHOT.exists() or SCREENSHOT.read_bytes() != data:
        tmp = SCREENSHOT.with_name(f".landing.{os.getpid()}.png")
        tmp.write_bytes(data)
        tmp.replace(SCREENSHOT)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/images/landing.png" in readme
