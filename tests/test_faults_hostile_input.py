"""Hostile and broken input from hosts and guests: every case gives a clear, bounded result, the rest of
the metrics are still served, the exposition passes ``promtool check metrics`` and memory stays bounded."""

from __future__ import annotations

import logging
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ConfigurableStack, Stack, require_tool, sample
from hyperv_exporter.sim import host as sim_host
from hyperv_exporter.sim import wsman_http
from hyperv_exporter.sim.fleet import kvp_item
from hyperv_exporter.sim.wsman import Fault

TARGET = "HV-LONDON-01"
OTHER = "HV-BERLIN-01"
SECRET_VALUE = "Provisioning-S3cret-never-exported"


def promtool_check(text: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    # promtool exits 1 for lint findings too; only errors about the format itself matter here.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
    assert not problems, "\n".join(problems)


def parsed(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


# -- KVP written by a hostile guest -----------------------------------------------------------------

NASTY = "quote\" backslash\\ newline\n tab\t cr\r nel\x85 csi\x9b[31m zw\u200b ls\u2028 <tag> &amp; 'single'"
DTD_ITEM = (
    '<!DOCTYPE INSTANCE [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" TYPE="string"><VALUE>&d;</VALUE>'
    '</PROPERTY><PROPERTY NAME="Name" TYPE="string"><VALUE>OSVersion</VALUE></PROPERTY></INSTANCE>'
)
XXE_ITEM = (
    '<!DOCTYPE INSTANCE [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
    '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" TYPE="string"><VALUE>&x;</VALUE>'
    '</PROPERTY><PROPERTY NAME="Name" TYPE="string"><VALUE>FullyQualifiedDomainName</VALUE></PROPERTY></INSTANCE>'
)


def hostile_kvp() -> dict[str, list[object]]:
    intrinsic: list[object] = [
        kvp_item("OSName", NASTY * 40),  # allowlisted, hostile text, far over max_value_length
        kvp_item("ProvisioningPassword", SECRET_VALUE),  # not allowlisted: never anywhere
        DTD_ITEM,
        XXE_ITEM,
        kvp_item("NetworkAddressIPv4", "10.0.0.1;" * 3000),  # over MAX_ITEM_CHARS: refused unparsed
        '<INSTANCE CLASSNAME="Something_Else"><PROPERTY NAME="Name"><VALUE>OSName</VALUE></PROPERTY></INSTANCE>',
        "<INSTANCE CLASSNAME='Msvm_KvpExchangeDataItem'><PROPERTY NAME='Name'><VALUE>OSName",  # truncated
        42,
        None,
        {"Name": "OSName"},
        ["OSName"],
    ]
    flood: list[object] = [kvp_item(f"Junk{i}", "x" * 100, source=1) for i in range(5000)]
    return {"GuestIntrinsicExchangeItems": intrinsic, "GuestExchangeItems": flood}


def test_hostile_kvp_items(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vm = stack.fleet.host(TARGET).vm("web01")
    vm.kvp = hostile_kvp()
    status, text = stack.get(f"/probe?module=default&target={TARGET}")
    assert status == 200
    promtool_check(text)
    samples = parsed(text)
    assert ("hyperv_up", {}, 1.0) in samples
    web01 = [s for s in samples if s[1].get("vm") == "web01"]
    assert any(name == "hyperv_vm_heartbeat" for name, _, _ in web01)  # the rest of the VM is still there
    kvp = {labels["key"]: labels["value"] for name, labels, _ in web01 if name == "hyperv_vm_kvp_info"}
    assert set(kvp) == {"OSName"}  # the entity, external-entity, oversized and malformed items are gone
    value = kvp["OSName"]
    assert len(value) <= 256
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    assert 'quote" backslash\\' in value  # printable text survives; the exposition escapes it
    _, metrics = stack.get("/metrics")
    problems = [v for n, _, v in parsed(metrics) if n == "hyperv_exporter_report_problems_total"]
    # The malformed items count; the flood of non-allowlisted keys no longer reaches the exporter
    # (collect.ps1 -KvpKeys drops it on the host), so its "only the first 4096" problem is gone.
    assert problems and problems[0] >= 1
    # The non-allowlisted key's value and the external file appear nowhere.
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else None
    pages = [text, metrics, stack.get("/")[1], stack.get(f"/probe?module=default&target={TARGET}&debug=true")[1]]
    logs = "\n".join(r.getMessage() + repr(getattr(r, "kv", "")) for r in caplog.records)
    for page in [*pages, logs]:
        assert SECRET_VALUE not in page
        assert "ProvisioningPassword" not in page
        if hostname and len(hostname) > 6:
            assert f'value="{hostname}"' not in page


def test_kvp_flood_is_bounded_and_logged_once(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hyperv_exporter")
    vm = stack.fleet.host(TARGET).vm("web01")
    vm.kvp = {"GuestExchangeItems": [f"<not-xml-{i} OSName" for i in range(10_000)]}
    for _ in range(3):
        assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    warnings = [r.getMessage() for r in caplog.records if "problem" in r.getMessage()]
    assert any("only the first 4096 are used" in w for w in warnings)
    assert len(warnings) <= 3  # each distinct problem is logged once per host, not per probe


# -- broken or hostile host output ------------------------------------------------------------------

EXPECTED_UP = {
    "not_json": 0.0,
    "truncated": 0.0,
    "huge": 1.0,  # inflates to 4.8 MB, under this stack's 8 MiB cap: 20,000 nameless VMs, all skipped
    "zip_bomb": 0.0,
    "cp1252": 1.0,
    "powershell_error": 0.0,
    "progress_stderr": 1.0,
    "vm_section_error": 1.0,
    "old_schema": 0.0,
    "surrogates": 1.0,
    "deep_nesting": 0.0,
    "bad_clixml": 0.0,
    "huge_stderr": 0.0,
}


def test_every_output_fault_is_covered() -> None:
    assert set(EXPECTED_UP) == set(sim_host.OUTPUT_FAULTS)


@pytest.mark.parametrize("fault", list(EXPECTED_UP))
def test_output_faults_give_valid_expositions(stack: Stack, fault: str) -> None:
    stack.fleet.host(TARGET).set(output_fault=fault)
    status, text = stack.get(f"/probe?module=default&target={TARGET}")
    assert status == 200, text
    promtool_check(text)
    assert sample(stack.probe(TARGET), "hyperv_up") == EXPECTED_UP[fault]
    assert sample(stack.probe(OTHER), "hyperv_up") == 1.0


def test_lone_surrogates_cost_nothing_but_the_character(stack: Stack) -> None:
    stack.fleet.host(TARGET).set(output_fault="surrogates")
    samples = parsed(stack.get(f"/probe?module=default&target={TARGET}")[1])
    names = {labels["vm"] for name, labels, _ in samples if name == "hyperv_vm_info"}
    assert "?broken\x00name\x1b[31m" in names
    assert {"web02", "legacy-app"} <= names  # the host's other VMs are all there


def test_clixml_entity_expansion_is_not_expanded(stack: Stack) -> None:
    stack.fleet.host(TARGET).set(output_fault="bad_clixml")
    _, debug = stack.get(f"/probe?module=default&target={TARGET}&debug=true")
    assert "failed (powershell)" in debug
    assert "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in debug  # &c; never became 6,000 a's
    line = next(line for line in debug.splitlines() if "failed (powershell)" in line)
    assert len(line) < 800  # the message is capped


# -- memory ------------------------------------------------------------------------------------------


@pytest.fixture
def small_caps(tmp_path: Path) -> Iterator[ConfigurableStack]:
    winrm = ConfigurableStack.DEFAULT_WINRM.replace("max_output_bytes: 8MiB", "max_output_bytes: 1MiB")
    stack = ConfigurableStack(tmp_path, winrm=winrm)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("setup", "reason", "limit_mib"),
    [
        ("huge_body", "output_too_large", 24),  # the listener sends 64 MiB; the cap is 4 MiB
        ("gzip_body", "winrm_fault", 16),  # 64 MiB once inflated; it never is
        ("zip_bomb", "output_too_large", 16),  # 32 MiB once inflated; the cap is 1 MiB
    ],
)
def test_memory_stays_bounded(small_caps: ConfigurableStack, setup: str, reason: str, limit_mib: int) -> None:
    stack = small_caps
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    wsman_http._gzip_bomb()  # the simulator's own payloads are built before measuring
    sim_host._zip_bomb()
    if setup == "zip_bomb":
        stack.fleet.host(TARGET).set(output_fault="zip_bomb")
    else:
        stack.sim.endpoint(TARGET).fault = Fault(setup)  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        _, debug = stack.get(f"/probe?module=default&target={TARGET}&debug=true")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"failed ({reason})" in debug
    assert peak < limit_mib * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
