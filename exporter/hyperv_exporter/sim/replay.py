"""Captures of real hosts, served as simulated hosts: ``hyperv-sim --replay FILE...``.

A capture is what ``deploy/windows/capture-collection.ps1`` records on a Hyper-V host (or
:mod:`hyperv_exporter.sim.capture` through any WinRM endpoint, the simulator included): the exact
stdout, stderr and exit code of ``collect.ps1`` run the way the exporter runs it, its timings, and
the host's OS, PowerShell and culture versions. The file is UTF-8 JSON::

    {"Kind": "hyperv-exporter-capture", "CaptureVersion": 1,
     "Synthetic": false, "Pseudonymized": true, "Note": "2012 R2, German, WMF 4.0",
     "Tool": "capture-collection.ps1 1", "ScriptSha256": "...",
     "Environment": {"PSVersion": "4.0", "OSVersion": "6.3.9600", "UICulture": "de-DE", ...},
     "Runs": [{"Collectors": "host,vm,kvp", "KvpKeys": null, "Gzip": false,
               "StartedTicks": ..., "EndedTicks": ..., "ExitCode": 0,
               "Stdout": "{\\"SchemaVersion\\":1,...}", "Stderr": "", "PeakMemoryBytes": 91234304}]}

Replaying serves a run's stdout as the host's answer: byte for byte when the exporter asks for the
sections the run was captured with (whatever its ``-KvpKeys``: the host-side filter changes nothing
the exporter reports), otherwise the captured document reduced to the requested sections and KVP
keys, as collect.ps1 would have printed it (re-serialised in Windows PowerShell 5.1's layout). A run that
failed (exit code not 0) replays its failure. The clock readings (``ClockStartTicks``,
``ClockEndTicks``) are moved to the time of the replayed answer, keeping their distance from the
capturer's own readings (``StartedTicks``/``EndedTicks``), so a replay shows the host clock offset
the capture saw; every other time in the document (checkpoint creation, last replication) is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperv_exporter.sim.accounts import Identity
from hyperv_exporter.sim.cost import NO_COST, HostCounters, ProcessCost
from hyperv_exporter.sim.fleet import SimFleet, SimHost, to_ticks
from hyperv_exporter.sim.host import UNCHECKED, HostRunner, RunOutcome, ScriptFailure, encode_stdout
from hyperv_exporter.sim.ps51json import dumps
from hyperv_exporter.sim.scale import filter_document_kvp
from hyperv_exporter.sim.tables import DOTNET_EPOCH_TICKS

CAPTURE_KIND = "hyperv-exporter-capture"
CAPTURE_VERSION = 1
MAX_CAPTURE_BYTES = 256 * 1024 * 1024
# Which parts of the document each section of collect.ps1 adds: per-VM keys, and Host keys.
SECTION_VM_KEYS = {
    "integration_services": ("IntegrationServices",),
    "kvp": ("Kvp",),
    "resources": ("Resources",),
    "replication": ("Replication",),
    "checkpoints": ("Checkpoints",),
}
_CLOCK = re.compile(r'"(ClockStartTicks|ClockEndTicks)":(-?\d+)')


class CaptureError(ValueError):
    """A capture file that cannot be replayed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CaptureRun:
    """One run of collect.ps1 on the captured host."""

    collectors: tuple[str, ...]
    kvp_keys: tuple[str, ...] | None  # the -KvpKeys filter in force; None: all items
    gzip: bool
    started: float  # capturer's clock (unix seconds) just before the run, and just after it
    ended: float
    exit_code: int
    stdout: str  # what the script printed (the JSON text; gzip runs are stored inflated)
    stderr: str
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class Capture:
    source: str
    synthetic: bool
    pseudonymized: bool
    note: str
    tool: str
    script_sha256: str | None
    environment: dict[str, Any]
    runs: tuple[CaptureRun, ...]

    def host_info(self) -> dict[str, Any]:
        """The report's ``Host`` object from the first run that printed a document (else {})."""
        for run in self.runs:
            try:
                doc = json.loads(run.stdout)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("Host"), dict):
                return dict(doc["Host"])
        return {}


def from_ticks(ticks: int) -> float:
    return (ticks - DOTNET_EPOCH_TICKS) / 1e7


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CaptureError(f"{where}: {key} is missing or not a {getattr(kind, '__name__', 'value')}")
    return value


def _run(obj: object, where: str) -> CaptureRun:
    if not isinstance(obj, dict):
        raise CaptureError(f"{where}: not an object")
    collectors = _field(obj, "Collectors", str, where)
    keys = _field(obj, "KvpKeys", list, where, required=False)
    if keys is not None and not all(isinstance(k, str) for k in keys):
        raise CaptureError(f"{where}: KvpKeys must be a list of strings")
    peak = _field(obj, "PeakMemoryBytes", int, where, required=False)
    return CaptureRun(
        collectors=tuple(s.strip() for s in collectors.split(",") if s.strip()),
        kvp_keys=None if keys is None else tuple(keys),
        gzip=bool(obj.get("Gzip", False)),
        started=from_ticks(_field(obj, "StartedTicks", int, where)),
        ended=from_ticks(_field(obj, "EndedTicks", int, where)),
        exit_code=_field(obj, "ExitCode", int, where),
        stdout=_field(obj, "Stdout", str, where, required=False) or "",
        stderr=_field(obj, "Stderr", str, where, required=False) or "",
        peak_memory_bytes=peak,
    )


def parse_capture(text: str, source: str) -> Capture:
    """A capture file's text -> :class:`Capture`; raises :class:`CaptureError`."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CaptureError(f"{source}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("Kind") != CAPTURE_KIND:
        raise CaptureError(f"{source}: not a hyperv-exporter capture (Kind is not {CAPTURE_KIND!r})")
    if doc.get("CaptureVersion") != CAPTURE_VERSION:
        raise CaptureError(f"{source}: CaptureVersion {doc.get('CaptureVersion')!r} is not {CAPTURE_VERSION}")
    runs = _field(doc, "Runs", list, source)
    if not runs:
        raise CaptureError(f"{source}: Runs is empty")
    environment = _field(doc, "Environment", dict, source, required=False) or {}
    return Capture(
        source=source,
        synthetic=bool(doc.get("Synthetic", False)),
        pseudonymized=bool(doc.get("Pseudonymized", False)),
        note=str(doc.get("Note") or ""),
        tool=str(doc.get("Tool") or ""),
        script_sha256=doc.get("ScriptSha256") if isinstance(doc.get("ScriptSha256"), str) else None,
        environment=environment,
        runs=tuple(_run(run, f"{source}: Runs[{i}]") for i, run in enumerate(runs)),
    )


def load_capture(path: str | Path) -> Capture:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CAPTURE_BYTES:
            raise CaptureError(f"{path}: larger than {MAX_CAPTURE_BYTES // 1024 // 1024} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CaptureError(f"{path}: not UTF-8") from None
    return parse_capture(text, str(path))


def capture_document(
    runs: Sequence[CaptureRun],
    environment: dict[str, Any],
    *,
    synthetic: bool,
    pseudonymized: bool,
    note: str,
    tool: str,
    script_sha256: str | None,
) -> dict[str, Any]:
    """The JSON document of a capture file (the inverse of :func:`parse_capture`)."""
    return {
        "Kind": CAPTURE_KIND,
        "CaptureVersion": CAPTURE_VERSION,
        "Synthetic": synthetic,
        "Pseudonymized": pseudonymized,
        "Note": note,
        "Tool": tool,
        "ScriptSha256": script_sha256,
        "Environment": environment,
        "Runs": [
            {
                "Collectors": ",".join(run.collectors),
                "KvpKeys": None if run.kvp_keys is None else list(run.kvp_keys),
                "Gzip": run.gzip,
                "StartedTicks": to_ticks(run.started),
                "EndedTicks": to_ticks(run.ended),
                "Seconds": round(run.ended - run.started, 6),
                "ExitCode": run.exit_code,
                "Stdout": run.stdout,
                "Stderr": run.stderr,
                "PeakMemoryBytes": run.peak_memory_bytes,
            }
            for run in runs
        ],
    }


# -- serving ------------------------------------------------------------------------------------------
@dataclass
class ReplayHost(SimHost):
    """A simulated host whose answers come from a capture instead of a fleet file's VMs."""

    capture: Capture | None = field(default=None, repr=False)


def _pick_run(capture: Capture, sections: Iterable[str]) -> CaptureRun:
    """The run captured with exactly these sections, else the first good run that has them all."""
    wanted = set(sections)
    for run in capture.runs:
        if set(run.collectors) == wanted:
            return run
    for run in capture.runs:
        if run.exit_code == 0 and wanted <= set(run.collectors):
            return run
    return capture.runs[0]


def reduce_document(doc: dict[str, Any], sections: Iterable[str], kvp_keys: Sequence[str] | None) -> dict[str, Any]:
    """The captured document as collect.ps1 would have printed it for fewer sections or a KVP filter."""
    wanted = set(sections)
    drop = [key for section, keys in SECTION_VM_KEYS.items() if section not in wanted for key in keys]
    if isinstance(doc.get("Sections"), dict):
        doc["Sections"] = {k: v for k, v in doc["Sections"].items() if k in wanted or k in ("host", "vm")}
    for vm in doc.get("VMs") or []:
        if isinstance(vm, dict):
            for key in drop:
                vm.pop(key, None)
    return doc if kvp_keys is None else filter_document_kvp(doc, kvp_keys)


class ReplayRunner(HostRunner):
    """Answers the exporter's collection command with a captured run."""

    host: ReplayHost

    def run(
        self,
        sections: list[str],
        use_gzip: bool,
        codepage: int,
        kvp_keys: Sequence[str] | None = None,
        identity: Identity = UNCHECKED,
        process: ProcessCost = NO_COST,
    ) -> RunOutcome:
        # A capture is what an account that could read everything got: identity does not apply. The
        # process cost does, as on a live host (the capture's own timings are the script's alone).
        assert self.host.capture is not None
        run = _pick_run(self.host.capture, sections)
        stderr = run.stderr.encode("utf-8")
        started, seconds = self._run_clock(process)
        if run.exit_code != 0:
            # The captured stderr as it was: console CLIXML from a WinRS capture, the error records'
            # text from a PSRP one (replayed over PSRP as the message of one record).
            failure = ScriptFailure(run.stderr, stderr=stderr, exit_code=run.exit_code)
            return RunOutcome(run.stdout.encode("utf-8"), failure, run_seconds=seconds)
        if not run.stdout:
            return RunOutcome(b"", stderr=stderr, run_seconds=seconds)
        text = run.stdout
        # The captured bytes as they are whenever the sections match: -KvpKeys changes nothing the
        # exporter reports (tests/test_large_hosts.py), and re-serialising would lose the host's quirks.
        if set(sections) != set(run.collectors):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                text = dumps(reduce_document(doc, sections, kvp_keys), compress=True)
        shift = {
            # Keep each reading's distance from the capturer's own: before the run, and after it.
            "ClockStartTicks": to_ticks(started) - to_ticks(run.started),
            "ClockEndTicks": to_ticks(started - process.start_seconds + seconds) - to_ticks(run.ended),
        }
        text = _CLOCK.sub(lambda m: f'"{m.group(1)}":{int(m.group(2)) + shift[m.group(1)]}', text)
        return RunOutcome(encode_stdout(text, use_gzip, codepage), stderr=stderr, run_seconds=seconds)


def runner_for(host: SimHost, counters: HostCounters) -> HostRunner:
    """``Simulator(runner_factory=runner_for)``: replayed hosts answer from their capture, others live."""
    return ReplayRunner(host, counters) if isinstance(host, ReplayHost) else HostRunner(host, counters)


def replay_host(capture: Capture, name: str | None = None) -> ReplayHost:
    info = capture.host_info()
    env = capture.environment
    computer = name or str(info.get("ComputerName") or env.get("ComputerName") or Path(capture.source).stem)
    return ReplayHost(
        computer_name=computer,
        os_caption=str(info.get("OSCaption") or env.get("OSCaption") or ""),
        os_version=str(info.get("OSVersion") or env.get("OSVersion") or ""),
        ui_culture=str(info.get("UICulture") or env.get("UICulture") or ""),
        vms=[],
        capture=capture,
    )


def replay_fleet(paths: Sequence[str | Path]) -> SimFleet:
    """One simulated host per capture file; a host name captured twice gets a ``-2``, ``-3`` suffix."""
    hosts: list[SimHost] = []
    seen: dict[str, int] = {}
    for path in paths:
        capture = load_capture(path)
        host = replay_host(capture)
        count = seen.get(host.computer_name.lower(), 0) + 1
        seen[host.computer_name.lower()] = count
        if count > 1:
            host.computer_name = f"{host.computer_name}-{count}"
        hosts.append(host)
    return SimFleet(hosts=hosts, source="<replay: " + ", ".join(str(p) for p in paths) + ">")
