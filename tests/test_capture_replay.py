"""Capture and replay: a host captured through the exporter's own WinRM path, served by
``hyperv-sim --replay``, gives the exporter the same metrics as the host it was captured from; every
capture under tests/fixtures/captures/ replays; the operator's capture script is valid PowerShell."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import Samples, basic_http_settings, samples_of
from hyperv_exporter.host import script
from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.transport.settings import WinRMSettings
from hyperv_exporter.sim import capture
from hyperv_exporter.sim.capture import Pseudonyms, capture_run, pseudonymize, pseudonymize_document
from hyperv_exporter.sim.fleet import SimFleet, demo_fleet, with_password
from hyperv_exporter.sim.host import Simulator, exporter_config
from hyperv_exporter.sim.replay import (
    CaptureError,
    CaptureRun,
    capture_document,
    load_capture,
    parse_capture,
    replay_fleet,
    runner_for,
)
from test_script import syntax_errors

REPO = Path(__file__).resolve().parent.parent
SECTIONS = sections_for(list(COLLECTORS))
CAPTURES = sorted((REPO / "tests" / "fixtures" / "captures").glob("*.json"))
CAPTURE_SCRIPT = REPO / "deploy" / "windows" / "capture-collection.ps1"
PASSWORD = "Capture-Replay-pw1"
# Values that differ between two probes of one live host anyway: durations, request counts (a new
# shell), uptimes and "now"-relative times, the measured clock offset. Their series must match;
# their values only within a tolerance (None: any value).
VOLATILE: dict[str, float | None] = {
    "hyperv_probe_duration_seconds": None,
    "hyperv_probe_winrm_requests": None,
    "hyperv_probe_timeout_seconds": None,  # the module's setting, not the host's
    "hyperv_collector_duration_seconds": None,
    "hyperv_last_success_timestamp_seconds": None,
    "hyperv_host_time_offset_seconds": 0.05,
    "hyperv_host_time_offset_uncertainty_seconds": None,
    "hyperv_vm_uptime_seconds": 120.0,
    "hyperv_vm_checkpoint_oldest_timestamp_seconds": 120.0,
    "hyperv_vm_replication_last_success_timestamp_seconds": 120.0,
}


class Exporter:
    """hyperv-exporter with one module per simulated fleet (same host names, different endpoints)."""

    def __init__(self, tmp_path: Path, fleets: dict[str, Simulator], config: Path | None = None) -> None:
        """``config``: an existing configuration file instead of one for ``fleets``."""
        path = config or tmp_path / "hyperv.yml"
        if config is None:
            password_file = tmp_path / "password"
            password_file.write_text(PASSWORD + "\n")
            text = "modules:\n"
            for module, simulator in fleets.items():
                module_config = exporter_config(simulator.urls(), str(password_file), modules=(module,))
                text += module_config.removeprefix("modules:\n") + "    timeout: 20s\n"
            path.write_text(text, encoding="utf-8")
        self.running: Running = start(
            build_parser().parse_args(["--config.file", str(path), "--web.listen-address", "127.0.0.1:0"])
        )
        self.url = self.running.server.urls[0]

    def probe(self, module: str, target: str) -> Samples:
        url = f"{self.url}/probe?module={quote(module)}&target={quote(target)}"
        with urllib.request.urlopen(url, timeout=60) as response:
            return samples_of(response.read().decode())


def serve(fleet: SimFleet) -> Simulator:
    simulator = Simulator(with_password(fleet, PASSWORD), runner_factory=runner_for)
    simulator.start()
    return simulator


def settings() -> WinRMSettings:
    return basic_http_settings("monitor", PASSWORD)


def capture_files(simulator: Simulator, names: Sequence[str], out: Path, pseudonymized: bool = False) -> list[Path]:
    paths = []
    for name in names:
        run = capture_run(simulator.url(name), settings(), sections_for(list(COLLECTORS)))
        if pseudonymized:
            run = pseudonymize(run, Pseudonyms())
        doc = capture_document(
            [run], {}, synthetic=True, pseudonymized=pseudonymized, note="test", tool="test", script_sha256=None
        )
        path = out / f"{name}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture
def live() -> Iterator[Simulator]:
    simulator = serve(demo_fleet())
    yield simulator
    simulator.stop()


def assert_same_metrics(expected: Samples, actual: Samples, where: str) -> None:
    assert set(expected) == set(actual), f"{where}: series differ: {set(expected) ^ set(actual)}"
    for key, value in expected.items():
        name = key[0]
        tolerance = VOLATILE.get(name, 0.0)
        if tolerance is None:
            continue
        assert abs(actual[key] - value) <= tolerance, f"{where}: {key}: {actual[key]} != {value}"


def test_capture_replays_to_the_same_metrics(tmp_path: Path, live: Simulator) -> None:
    """Done-when of issue 12 item 7: capture every demo host, replay, compare /probe output."""
    names = [host.computer_name for host in live.fleet.hosts]
    replayed = serve(replay_fleet(capture_files(live, names, tmp_path)))
    exporter = Exporter(tmp_path, {"live": live, "replay": replayed})
    try:
        assert set(replayed.urls()) == set(names)
        for name in names:
            expected = exporter.probe("live", name)
            actual = exporter.probe("replay", name)
            assert expected[("hyperv_up", ())] == 1.0
            assert_same_metrics(expected, actual, name)
    finally:
        exporter.running.stop()
        replayed.stop()


def test_pseudonymized_capture_keeps_relations_and_hides_names(tmp_path: Path, live: Simulator) -> None:
    host = live.fleet.host("HV-BERLIN-01")
    [path] = capture_files(live, [host.computer_name], tmp_path, pseudonymized=True)
    text = path.read_text(encoding="utf-8")
    for vm in host.vms:
        assert vm.name not in text and vm.id.lower() not in text.lower()
    assert host.computer_name not in text and "10.20.1." not in text
    replayed = serve(replay_fleet([path]))
    exporter = Exporter(tmp_path, {"live": live, "replay": replayed})
    try:
        [name] = replayed.urls()
        assert name == "HOST-0001"
        expected = exporter.probe("live", host.computer_name)
        actual = exporter.probe("replay", name)
        assert actual[("hyperv_up", ())] == 1.0
        # The same series per family, and every per-VM series names a VM that exists.
        count = lambda s: sorted((n, len(labels)) for n, labels in s)  # noqa: E731
        assert count(expected) == count(actual)
        vm_ids = {dict(labels)["vm_id"] for n, labels in actual if n == "hyperv_vm_info"}
        assert len(vm_ids) == len(host.vms)
        assert {dict(labels)["vm_id"] for n, labels in actual if "vm_id" in dict(labels)} == vm_ids
    finally:
        exporter.running.stop()
        replayed.stop()


def test_pseudonyms_are_consistent() -> None:
    p = Pseudonyms()
    vm = "8E3ECE81-7EF3-4581-A6B4-92F152ABE267"
    assert p.guid(vm) == p.guid(vm.lower()).upper() == "00000000-0000-4000-8000-000000000001"
    assert p.text(f"Microsoft:{vm}\\9F8233AC-BE49-4C79-8EE3-E7E1985B2077") == (
        "Microsoft:00000000-0000-4000-8000-000000000001\\9F8233AC-BE49-4C79-8EE3-E7E1985B2077"
    )  # the service GUID is no VM's: kept
    assert p.address("10.0.0.5") == p.address("10.0.0.5") == "198.18.0.1" != p.address("10.0.0.6")
    assert p.address("fe80::1").startswith("2001:db8::")
    item = (
        '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" TYPE="string"><VALUE>{}</VALUE>'
        '</PROPERTY><PROPERTY NAME="Name" TYPE="string"><VALUE>{}</VALUE></PROPERTY></INSTANCE>'
    )
    assert p.kvp_item(item.format("Ubuntu", "OSName")) == item.format("Ubuntu", "OSName")
    assert p.kvp_item(item.format("10.0.0.5;10.0.0.6", "NetworkAddressIPv4")) == item.format(
        "198.18.0.1;198.18.0.2", "NetworkAddressIPv4"
    )
    assert p.kvp_item(item.format("s3cret", "ProvisioningToken")) == item.format("value-0001", "ProvisioningToken")
    assert p.name("web01", "vm") == "vm-0001" and p.name("HV01", "HOST") == "HOST-0001"
    assert p.text("VM 'web01': Get-VMSnapshot failed") == "VM 'vm-0001': Get-VMSnapshot failed"
    doc = pseudonymize_document({"Host": {"ComputerName": "HV-NODE-A", "Cluster": "HV-CLUSTER-01"}, "VMs": []}, p)
    assert doc["Host"] == {"ComputerName": "HOST-0002", "Cluster": "CLUSTER-0001"}


def test_replay_reduces_to_the_requested_sections_and_keys(tmp_path: Path, live: Simulator) -> None:
    [path] = capture_files(live, ["HV-LONDON-01"], tmp_path)
    replayed = serve(replay_fleet([path]))
    try:
        runner = replayed.runners["HV-LONDON-01"]
        result = runner.answer(["host", "vm", "kvp"], False, 65001, ["OSName"])
        doc = json.loads(result.stdout)
        assert set(doc["Sections"]) == {"host", "vm", "kvp"}
        vm = next(v for v in doc["VMs"] if v["Kvp"])
        assert "IntegrationServices" not in vm
        items = [i for items in vm["Kvp"].values() for i in items]
        assert items and all("OSName" in i for i in items)
        # The captured sections: the captured bytes, only the clock readings moved.
        captured = load_capture(path).runs[0].stdout
        served = runner.answer(SECTIONS, False, 65001, ["OSName"]).stdout.decode("utf-8")
        clock = re.compile(r'"Clock(Start|End)Ticks":\d+')
        assert clock.sub("", served) == clock.sub("", captured) and served != captured
    finally:
        replayed.stop()


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_fixture_capture_replays(tmp_path: Path, path: Path) -> None:
    """Each contributed or synthetic capture: loads, says whether it is synthetic, and the exporter
    reads it as the capture says (a good run: up, every section collected, every VM seen)."""
    capture = load_capture(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(raw.get("Synthetic"), bool), "a fixture says whether it is synthetic"
    assert capture.note, "a fixture says where it comes from"
    replayed = serve(replay_fleet([path]))
    exporter = Exporter(tmp_path, {"replay": replayed})
    try:
        [name] = replayed.urls()
        samples = exporter.probe("replay", name)
        run = capture.runs[0]
        if run.exit_code != 0:
            assert samples[("hyperv_up", ())] == 0.0
            return
        assert samples[("hyperv_up", ())] == 1.0
        doc = json.loads(run.stdout)
        failed = {n for n, s in doc["Sections"].items() if s.get("Error")}
        for (sample, labels), value in samples.items():
            if sample == "hyperv_collector_success":
                collector = dict(labels)["collector"]
                assert value == (0.0 if set(COLLECTORS[collector].sections) & failed else 1.0), collector
        vm_ids = {dict(labels)["vm_id"] for sample, labels in samples if sample == "hyperv_vm_info"}
        assert len(vm_ids) == len(doc["VMs"])
    finally:
        exporter.running.stop()
        replayed.stop()


def test_fixture_captures_exist_and_synthetic_ones_say_so() -> None:
    assert CAPTURES, "tests/fixtures/captures/ holds at least the synthetic captures"
    for path in CAPTURES:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw["Synthetic"]:
            assert "synthetic" in raw["Note"].lower(), path.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"Kind": "something else"}', "not a hyperv-exporter capture"),
        ('{"Kind": "hyperv-exporter-capture", "CaptureVersion": 7, "Runs": []}', "CaptureVersion 7"),
        ('{"Kind": "hyperv-exporter-capture", "CaptureVersion": 1, "Runs": []}', "Runs is empty"),
        ('{"Kind": "hyperv-exporter-capture", "CaptureVersion": 1, "Runs": [{"Collectors": 1}]}', "Collectors"),
    ],
)
def test_bad_capture_files_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(CaptureError, match=re.escape(message)):
        parse_capture(text, "x.json")


def test_hyperv_sim_replay_flag(tmp_path: Path, live: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """hyperv-sim --replay in its own process, the exporter in this one (joined by --exporter-config):
    the replayed host gives the metrics of the live host it was captured from."""
    [path] = capture_files(live, ["HV-DUBLIN-01"], tmp_path)
    code = "from hyperv_exporter.sim.cli import main; raise SystemExit(main())"
    env = {"HYPERV_SIM_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    config = tmp_path / "replay.yml"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--replay", str(path), str(path), "--exporter-config", str(config)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(2)]
        assert [name for name, _ in lines] == ["HV-DUBLIN-01", "HV-DUBLIN-01-2"]
        monkeypatch.setenv("HYPERV_SIM_PASSWORD", PASSWORD)  # the written config reads it
        live_exporter = Exporter(tmp_path, {"live": live})
        replay_exporter = Exporter(tmp_path / "x", {}, config=config)
        try:
            assert_same_metrics(
                live_exporter.probe("live", "HV-DUBLIN-01"), replay_exporter.probe("default", "HV-DUBLIN-01"), "cli"
            )
        finally:
            live_exporter.running.stop()
            replay_exporter.running.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = subprocess.run(
        [sys.executable, "-c", code, "--replay", str(tmp_path / "missing.json")],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "missing.json: cannot read" in bad.stderr


def test_capture_script_parses_as_powershell() -> None:
    assert syntax_errors(CAPTURE_SCRIPT.read_text(encoding="utf-8")) == []


def test_capture_script_pseudonymizes_by_the_same_rules() -> None:
    """The PowerShell script and sim/capture.py (which the tests exercise) keep the same KVP values
    and use the same pseudonyms."""
    text = CAPTURE_SCRIPT.read_text(encoding="utf-8")
    block = re.search(r"\$keepKvpKeys = @\((.*?)\)", text, flags=re.S)
    assert block is not None
    assert set(re.findall(r"'(\w+)'", block.group(1))) == capture.KEEP_KVP_KEYS
    assert f"'{capture.NOT_CANONICAL}'" in text
    for fragment in ("'00000000-0000-4000-8000-{0:D12}'", "'value-{0:D4}'", "'198.{0}.{1}.{2}'", "'2001:db8::{0:x}'"):
        assert fragment in text, fragment
    for kind in ("'HOST'", "'CLUSTER'", "'vm'"):
        assert kind in text


def test_capture_script_runs_collect_ps1_as_the_exporter_does() -> None:
    """The same program, arguments, environment variable and loader as host/script.py builds."""
    text = CAPTURE_SCRIPT.read_text(encoding="utf-8")
    assert "'" + " ".join(script.POWERSHELL_ARGS) + " ' + $encoded" in text
    assert "EnvironmentVariables['" + script.SCRIPT_ENV + "'] = $scriptText" in text
    prefix = script.loader(["vm"], False).split(" -Collectors ")[0]
    assert "$loader = '" + prefix + " -Collectors ' + (ConvertTo-PSLiteral $Collectors)" in text
    assert "$loader += ' -KvpKeys '" in text and "$loader += ' -Gzip'" in text
    assert '.Replace("`r`n", "`n")' in text  # the exporter sends the script with LF line ends


def test_capture_run_records_a_failing_host(tmp_path: Path, live: Simulator) -> None:
    live.fleet.host("HV-DUBLIN-01").set(output_fault="powershell_error")
    run = capture_run(live.url("HV-DUBLIN-01"), settings(), ["host", "vm"])
    assert run.exit_code == 1 and "permission" in run.stderr and run.stdout == ""
    assert isinstance(run, CaptureRun)


def test_captures_record_the_hash_the_script_reports(tmp_path: Path) -> None:
    """ScriptSha256 in a capture is collect.ps1's own ScriptHash (host/script.py text_hash), from the
    PowerShell capture script and from sim/capture.py alike: one hash of the script, not two."""
    text = CAPTURE_SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"^\$HashLinePattern = '((?:[^']|'')*)'$", text, flags=re.M)
    assert match is not None and match.group(1).replace("''", "'") == "(?m)" + script.HASH_LINE.pattern
    # No BOM, LF (above), the stamp emptied ("$$" is .NET's literal "$"), UTF-8 without a BOM.
    assert "$scriptText.TrimStart([char]0xFEFF), $HashLinePattern, \"`$`$scriptHash = ''\")" in text
    assert "(New-Object Text.UTF8Encoding $false).GetBytes($canonicalText)" in text
    assert "ScriptSha256 = $scriptHash" in text
    assert capture.main(["--host", "HV-BERLIN-01", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text(encoding="utf-8"))["ScriptSha256"] == script.script_hash()
