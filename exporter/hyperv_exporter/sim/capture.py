"""Capture a host's collection output through the exporter's own WinRM code path, and pseudonymize it.

``deploy/windows/capture-collection.ps1`` is what an operator runs on a real Hyper-V host. This module
records the same capture file (:mod:`hyperv_exporter.sim.replay`) from any WinRM endpoint with the
exporter's transport (:class:`~hyperv_exporter.host.transport.winrs.WinRMSession`, the same command
line, the same shipped ``collect.ps1``): the tests use it to capture simulated hosts, replay them and
compare the exporter's metrics. :func:`pseudonymize` applies the rules the PowerShell script's
``-Pseudonymize`` applies (both are documented in docs/simulator.md)::

    python -m hyperv_exporter.sim.capture --host HV-BERLIN-01 --out captures/ [--pseudonymize]

captures hosts of the built-in demo fleet (or ``--fleet.file``) served in-process.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hyperv_exporter import __version__
from hyperv_exporter.host import script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.transport.errors import ProbeError
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.host.transport.winrs import WinRMSession
from hyperv_exporter.sim.fleet import demo_fleet, load_fleet, with_password
from hyperv_exporter.sim.host import OUTPUT_FAULTS, Simulator
from hyperv_exporter.sim.ps51json import dumps
from hyperv_exporter.sim.replay import CaptureRun, capture_document

TOOL = f"hyperv_exporter.sim.capture {__version__}"
# KVP keys whose values describe software, not a person or a network: kept by -Pseudonymize.
KEEP_KVP_KEYS = frozenset(
    {
        "OSName", "OSVersion", "OSMajorVersion", "OSMinorVersion", "OSBuildNumber", "OSPlatformId",
        "ServicePackMajor", "ServicePackMinor", "SuiteMask", "ProductType", "OSEditionId",
        "ProcessorArchitecture", "IntegrationServicesVersion", "CSDVersion", "OSVendor",
        "OSDistributionName", "OSDistributionData", "OSKernelVersion",
    }
)  # fmt: skip
ADDRESS_KEYS = frozenset({"NetworkAddressIPv4", "NetworkAddressIPv6"})
_GUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
_ITEM_NAME = re.compile(r'<PROPERTY NAME="Name" TYPE="string"><VALUE>(.*?)</VALUE></PROPERTY>')
_ITEM_DATA = re.compile(r'(<PROPERTY NAME="Data" TYPE="string"><VALUE>)(.*?)(</VALUE></PROPERTY>)')
NOT_CANONICAL = "<pseudonymized: a KVP item not in the canonical CIM-XML layout was removed>"


def _inflate(stdout: bytes, limit: int) -> bytes:
    """``-Gzip`` output (base64 of gzip) inflated, at most ``limit`` bytes; other output as it is."""
    data = stdout.strip()
    if not data.startswith(b"H4sI"):
        return stdout
    inflater = zlib.decompressobj(wbits=31)
    return inflater.decompress(base64.b64decode(data), limit)


def capture_run(
    url: str,
    settings: WinRMSettings,
    sections: Sequence[str],
    *,
    kvp_keys: Sequence[str] | None = None,
    timeout: float = 120.0,
) -> CaptureRun:
    """Run the shipped collect.ps1 once, exactly as a probe does, and record what came back."""
    session = WinRMSession(url, settings, script.script_text())
    try:
        command, args = script.command_line(sections, settings.gzip, kvp_keys)
        exchange = session.run(command, args, time.monotonic() + timeout)
    finally:
        session.close()
    stdout = _inflate(exchange.stdout, settings.max_output_bytes).decode("utf-8", errors="replace")
    return CaptureRun(
        collectors=tuple(sections),
        kvp_keys=None if kvp_keys is None else tuple(kvp_keys),
        gzip=settings.gzip,
        started=exchange.sent,
        ended=exchange.received,
        exit_code=exchange.exit_code,
        stdout=stdout,
        stderr=exchange.stderr.decode("utf-8", errors="replace"),
    )


# -- pseudonymization ----------------------------------------------------------------------------------
class Pseudonyms:
    """Consistent replacements: the same original always gets the same pseudonym, so relations survive
    (a VM's Id in its integration-service Ids, an address shared by two VMs, a replicated pair's Id)."""

    def __init__(self) -> None:
        self.guids: dict[str, str] = {}
        self.names: dict[str, str] = {}  # host and VM names; numbered per kind
        self.kinds: dict[str, int] = {}
        self.values: dict[str, str] = {}
        self.ipv4: dict[str, str] = {}
        self.ipv6: dict[str, str] = {}

    @staticmethod
    def _next(table: dict[str, str], key: str, make: Callable[[int], str]) -> str:
        if key not in table:
            table[key] = make(len(table) + 1)
        return table[key]

    def guid(self, value: str) -> str:
        new = self._next(self.guids, value.lower(), lambda n: f"00000000-0000-4000-8000-{n:012d}")
        return new.upper() if value.isupper() else new

    def name(self, value: str, kind: str) -> str:
        if value not in self.names:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.names[value] = f"{kind}-{self.kinds[kind]:04d}"
        return self.names[value]

    def address(self, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value.strip())
        except ValueError:
            return self.value(value)
        if ip.version == 4:  # 198.18.0.0/15: reserved for benchmarking, never a real guest's address
            return self._next(self.ipv4, str(ip), lambda n: str(ipaddress.IPv4Address(0xC6120000 + n)))
        return self._next(self.ipv6, str(ip), lambda n: str(ipaddress.IPv6Address(0x20010DB8 << 96 | n)))

    def value(self, value: str) -> str:
        return self._next(self.values, value, lambda n: f"value-{n:04d}")

    def kvp_item(self, item: str) -> str:
        name = _ITEM_NAME.search(item)
        data = _ITEM_DATA.search(item)
        if name is None or data is None:
            return NOT_CANONICAL
        key, old = name.group(1), data.group(2)
        if key in KEEP_KVP_KEYS or not old:
            new = old
        elif key in ADDRESS_KEYS:
            new = ";".join(self.address(part) for part in old.split(";"))
        else:
            new = self.value(old)
        return item[: data.start(2)] + new + item[data.end(2) :]

    def text(self, value: str) -> str:
        """Any other string: known GUIDs and names replaced wherever they occur."""
        value = _GUID.sub(lambda m: self.guid(m.group(0)) if m.group(0).lower() in self.guids else m.group(0), value)
        if value in self.names:
            return self.names[value]
        for old in sorted(self.names, key=len, reverse=True):
            if old in value:
                value = value.replace(f"'{old}'", f"'{self.names[old]}'").replace(f'"{old}"', f'"{self.names[old]}"')
        return value


def _walk(value: Any, pseudonyms: Pseudonyms, kvp: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, pseudonyms, kvp or k == "Kvp") for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, pseudonyms, kvp) for v in value]
    if isinstance(value, str):
        return pseudonyms.kvp_item(value) if kvp else pseudonyms.text(value)
    return value


def pseudonymize_document(doc: dict[str, Any], pseudonyms: Pseudonyms) -> dict[str, Any]:
    """collect.ps1's document with the host's, its cluster's and VMs' names, the VMs' Ids and KVP values replaced."""
    host = doc.get("Host")
    if isinstance(host, dict):
        for key, kind in (("ComputerName", "HOST"), ("Cluster", "CLUSTER")):
            if isinstance(host.get(key), str) and host[key]:
                pseudonyms.name(host[key], kind)
    for vm in doc.get("VMs") or []:
        if isinstance(vm, dict):
            if isinstance(vm.get("Id"), str) and _GUID.fullmatch(vm["Id"].strip("{}")):
                pseudonyms.guid(vm["Id"].strip("{}"))
            if isinstance(vm.get("Name"), str):
                pseudonyms.name(vm["Name"], "vm")
    result: dict[str, Any] = _walk(doc, pseudonyms)
    return result


def pseudonymize(run: CaptureRun, pseudonyms: Pseudonyms) -> CaptureRun:
    """A run with its document pseudonymized (re-serialised as Windows PowerShell 5.1 would print it)."""
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        doc = None
    stdout = dumps(pseudonymize_document(doc, pseudonyms)) if isinstance(doc, dict) else ""
    return CaptureRun(**{**vars(run), "stdout": stdout, "stderr": pseudonyms.text(run.stderr)})


# -- command line -------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperv_exporter.sim.capture", description=__doc__.split("\n")[0])
    parser.add_argument("--fleet.file", dest="fleet_file", help="Fleet file (default: the built-in demo fleet).")
    parser.add_argument("--host", action="append", default=[], help="Host to capture (repeatable; default: all).")
    parser.add_argument("--out", required=True, help="Directory for the capture files.")
    parser.add_argument("--pseudonymize", action="store_true", help="Replace names, Ids and KVP values.")
    parser.add_argument("--note", default="", help="Free text stored in the capture's Note.")
    parser.add_argument("--fault", choices=sorted(OUTPUT_FAULTS), help="Capture the hosts misbehaving this way.")
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet_file) if args.fleet_file else demo_fleet()
    password = "capture-" + str(time.time_ns())
    with_password(fleet, password)
    simulator = Simulator(fleet)
    simulator.start()
    try:
        settings = WinRMSettings(
            scheme="http", transport="basic", username="monitor", password=Secret(password),
            allow_unencrypted=True, message_encryption="never",
        )  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for host in fleet.hosts:
            if args.host and host.computer_name not in args.host:
                continue
            host.output_fault = args.fault
            settings = WinRMSettings(**{**vars(settings), "username": host.username})
            try:
                run = capture_run(simulator.url(host.computer_name), settings, sections_for(list(COLLECTORS)))
            except ProbeError as exc:
                print(f"error: {host.computer_name}: {exc}", file=sys.stderr)
                return 1
            name = host.computer_name
            if args.pseudonymize:
                pseudonyms = Pseudonyms()
                run = pseudonymize(run, pseudonyms)
                name = pseudonyms.names.get(name, name)
            doc = capture_document(
                [run],
                {"ComputerName": host.computer_name if not args.pseudonymize else None, "PSVersion": "5.1 (simulated)"},
                synthetic=True,
                pseudonymized=args.pseudonymize,
                note=args.note or f"hyperv-sim host {host.computer_name} from {fleet.source}",
                tool=TOOL,
                script_sha256=script.script_hash(),  # what collect.ps1 reports as ScriptHash
            )
            path = out / f"{name.lower()}.json"
            path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(path)
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
