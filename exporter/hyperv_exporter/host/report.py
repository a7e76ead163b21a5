"""Raw WinRM output -> :class:`~hyperv_exporter.host.model.HostReport`.

Two steps, both defensive because the input crosses a network and partly comes from guests:

1. :func:`decode_bytes` turns stdout bytes into the JSON document's bytes: the gzip+base64 form
   (``-Gzip``) is inflated with a hard cap on the inflated size. The document is UTF-8 (the shell
   uses code page 65001), with a fallback to Windows-1252 for a host that ignored that, so one
   mis-encoded VM name does not cost the whole host (:func:`decode_output` gives it as text).
2. :func:`parse_report` maps the JSON document to records. It reads the bytes with msgspec
   (:func:`load_json`: 2.5x faster than ``json.loads`` and without first decoding 12 MB of bytes to
   a string, which one non-ASCII VM name makes 2 bytes per character); whatever msgspec refuses
   goes to ``json.loads`` as before, so the result is ``json.loads``'s, value for value. A property
   that is missing, null or of the wrong type becomes ``None``/``unknown`` and, when that is not
   normal, a line in ``report.problems`` that says where; it never raises for per-VM damage. Only
   a document that is not the script's at all raises :class:`ReportError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, cast

import msgspec

from hyperv_exporter import enums
from hyperv_exporter.host import cimxml, icversion, script
from hyperv_exporter.host.model import (
    KVP_GUEST,
    KVP_GUEST_INTRINSIC,
    KVP_HOST,
    VM,
    Checkpoint,
    HostInfo,
    HostReport,
    IntegrationService,
    KvpItem,
    Replication,
    Resources,
    Section,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DOTNET_EPOCH_TICKS = 621_355_968_000_000_000  # DateTime(1970-01-01).Ticks: 100 ns units since 0001-01-01
GZIP_BASE64_PREFIX = b"H4sI"  # base64 of the gzip magic 1f 8b 08
# Hostile or broken hosts must not be able to blow up memory: at most this many VMs and
# integration services per VM are looked at (a real host has a few hundred VMs, six services).
MAX_VMS = 20_000
MAX_SERVICES_PER_VM = 32
MAX_KVP_ITEMS_PER_ARRAY = 4096
MAX_CHECKPOINTS_PER_VM = 4096
MAX_TEXT = 1024  # VM names, descriptions and versions are capped to this many characters
INFLATE_STEP = 1 << 20  # bytes inflated per zlib call
MAX_VM_PROBLEMS = 20_000

# KVP intrinsic items the exporter reads for itself, whatever the module's allowlist: the guest's
# own integration services version and OS version (host.icversion judges them on 2016+ hosts).
GUEST_FACT_KEYS = frozenset({"IntegrationServicesVersion", "OSVersion"})


def kvp_keys_read(allowlist: Iterable[str]) -> tuple[str, ...]:
    """Every KVP key the exporter reads: the module's allowlist and :data:`GUEST_FACT_KEYS`. What
    collect.ps1's host-side filter (-KvpKeys) must keep."""
    return tuple(dict.fromkeys([*allowlist, *sorted(GUEST_FACT_KEYS)]))


# Snapshot types that are Hyper-V Replica recovery points, not user checkpoints (a-schild's
# Zabbix template v2.1.0 excludes them for the same reason; docs/alerts.md "Checkpoints" says
# which types count and why).
REPLICA_SNAPSHOT_TYPES = frozenset({"replica", "app_consistent_replica", "synced_replica"})


_SURROGATE = re.compile("[\ud800-\udfff]")


class ReportError(ValueError):
    """The output is not a collection document (wrong format, too large, truncated)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "parse" or "output_too_large"


def decode_bytes(stdout: bytes, max_bytes: int) -> bytes | bytearray:
    """stdout bytes -> the JSON document's bytes, inflating the ``-Gzip`` form with a cap of ``max_bytes``."""
    data = stdout.strip()
    if data.startswith(GZIP_BASE64_PREFIX):
        try:
            compressed = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReportError("parse", f"output looks gzip+base64 encoded but is not valid base64: {exc}") from None
        del data
        return _strip_bom(_inflate(compressed, max_bytes))
    if len(data) > max_bytes:
        raise ReportError("output_too_large", f"output of {len(data)} bytes exceeds {max_bytes} bytes")
    return _strip_bom(data)


def _strip_bom(data: bytes | bytearray) -> bytes | bytearray:
    if not data.startswith(b"\xef\xbb\xbf"):
        return data
    if isinstance(data, bytearray):
        del data[:3]  # in place, without copying the document
        return data
    return data[3:]


def _inflate(compressed: bytes, max_bytes: int) -> bytearray:
    """gzip -> bytes, never more than ``max_bytes + 1`` inflated.

    In steps into one bytearray that grows in place: zlib's own output buffer for a 12 MB document
    is a list of blocks joined into a copy at the end, twice the memory at the moment it ends.
    """
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    out = bytearray()
    pending = compressed
    try:
        while True:
            # Never past max_bytes + 1 in all, as one call with that limit: the same data decides
            # between "too large" and "not valid gzip" (tests/test_perf_equivalence.py).
            piece = inflater.decompress(pending, min(INFLATE_STEP, max_bytes + 1 - len(out)))
            out += piece
            if len(out) > max_bytes:
                raise ReportError("output_too_large", f"inflated output exceeds {max_bytes} bytes")
            pending = inflater.unconsumed_tail
            if inflater.eof or not (piece or pending):
                break
    except zlib.error as exc:
        raise ReportError("parse", f"output is not valid gzip: {exc}") from None
    if not inflater.eof:
        raise ReportError("parse", "gzip output is truncated")
    return out


def _text(data: bytes | bytearray) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("host output is not UTF-8; decoding it as Windows-1252 (non-ASCII names may be wrong)")
        return data.decode("cp1252", errors="replace")


def decode_output(stdout: bytes, max_bytes: int) -> str:
    """stdout bytes -> JSON text (:func:`decode_bytes`, then UTF-8 or the Windows-1252 fallback)."""
    return _text(decode_bytes(stdout, max_bytes))


# Decoders are shared by every probe thread: their methods are thread-safe since msgspec 0.16 (msgspec/msgspec#401).
_DECODER = msgspec.json.Decoder()
_TOP_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])  # values as spans of the input, not decoded
_ARRAY_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
LAZY_ARRAY = "VMs"  # the top-level array whose elements are decoded one at a time (load_document)


def load_json(document: str | bytes | bytearray) -> Any:
    """``json.loads(document)`` (bytes decoded as :func:`decode_output` does), from msgspec where it can.

    msgspec gives the same values as ``json.loads`` for every document it accepts (integers of any
    size included; tests/test_perf_equivalence.py). What it refuses and ``json`` may not (NaN,
    Infinity, lone surrogates, numbers beyond a double, invalid UTF-8, nesting deeper than 1,000),
    and every broken document, goes to ``json.loads``, which gives the answer or the error message.
    """
    try:
        return _DECODER.decode(document)
    except (msgspec.DecodeError, RecursionError):
        pass
    return json.loads(document if isinstance(document, str) else _text(document))


class _Undecodable(Exception):
    """msgspec refused an element of a :class:`_LazyArray`: the document goes to ``json.loads`` whole."""


class _LazyArray(list[Any]):
    """The ``VMs`` array, its elements decoded as the parser reads them (:func:`load_document`).

    Holds msgspec ``Raw`` spans of the input (no copies); iterating or indexing decodes. A parsed
    VM is a few hundred bytes of records, its decoded JSON 13 KB (mostly KVP XML the allowlist
    drops), so a 1,000-VM document never exists decoded all at once: 13 MB less at the peak.
    """

    def __init__(self, raws: list[msgspec.Raw], source: str | bytes | bytearray) -> None:
        super().__init__(raws)
        self.source = source  # the whole document, for json.loads if an element is refused
        self.done = 0  # leading elements decoded by iteration

    @staticmethod
    def _decode(raw: msgspec.Raw) -> Any:
        try:
            return _DECODER.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise _Undecodable from None

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            value = self._decode(list.__getitem__(self, index))
            self.done = max(self.done, index + 1)
            yield value

    def __getitem__(self, index: Any) -> Any:
        item = list.__getitem__(self, index)
        return _LazyArray(item, self.source) if isinstance(index, slice) else self._decode(item)

    def finish(self) -> None:
        """Decode the elements nobody read, so that the document is accepted or refused as a whole,
        as ``json.loads`` would (an undecodable element beyond ``MAX_VMS`` still counts)."""
        for index in range(self.done, len(self)):
            self._decode(list.__getitem__(self, index))
        self.done = len(self)


def load_document(document: str | bytes | bytearray) -> Any:
    """:func:`load_json`, except that the top-level ``VMs`` array is a :class:`_LazyArray`."""
    try:
        top = _TOP_DECODER.decode(document)
        doc: dict[str, Any] = {}
        for key, raw in top.items():
            if key != LAZY_ARRAY:
                doc[key] = _DECODER.decode(raw)
                continue
            try:
                doc[key] = _LazyArray(_ARRAY_DECODER.decode(raw), document)
            except msgspec.ValidationError:  # not an array: decoded as it is
                doc[key] = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return load_json(document)  # not an object, or a value msgspec refuses: the general path decides
    return doc


def _load(document: str | bytes | bytearray, lazy: bool = True) -> Any:
    try:
        return load_document(document) if lazy else load_json(document)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ReportError(
            "parse", f"output is not JSON: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}"
        ) from None


def ticks_to_unix(ticks: object) -> float | None:
    if isinstance(ticks, bool) or not isinstance(ticks, int | float):
        return None
    return (ticks - DOTNET_EPOCH_TICKS) / 1e7


class _Fields:
    """Typed access to one JSON object; wrong types become None and a problem line."""

    __slots__ = ("obj", "problems", "where")

    def __init__(self, obj: Mapping[str, Any], where: str, problems: list[str]) -> None:
        self.obj = obj
        self.where = where
        self.problems = problems

    def _wrong(self, key: str, expected: str) -> None:
        self.problems.append(f"{self.where}: property {key} is not {expected}")

    def text(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = value[:MAX_TEXT]
            # JSON may escape a lone UTF-16 surrogate (a broken or hostile host): json.loads accepts
            # it, no UTF-8 encoder does, and one in a label value would fail the whole exposition.
            if not value.isascii() and _SURROGATE.search(value):
                value = _SURROGATE.sub("?", value)
            return value
        self._wrong(key, "a string")
        return None

    def shared(self, key: str) -> str | None:
        """:meth:`text` for values that repeat across VMs (service names, statuses, versions).

        Interned, so that every report (and the probe history keeps up to 100 of them) holds one
        copy of "Heartbeat" or "Operating normally" instead of one per VM: a third of a report's memory.
        """
        value = self.text(key)
        return None if value is None else sys.intern(value)

    def number(self, key: str) -> float | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        self._wrong(key, "a number")
        return None

    def integer(self, key: str) -> int | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        self._wrong(key, "an integer")
        return None

    def boolean(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self._wrong(key, "a boolean")
        return None

    def enum(self, key: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(key)
        label = enums.label_for(raw, allowed)
        if raw and label == enums.UNKNOWN and enums.snake(raw) != enums.UNKNOWN:
            self.problems.append(f"{self.where}: unknown {key} {raw[:64]!r}")
        return label

    def array(self, key: str, limit: int) -> list[Any] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            # PowerShell prints a one-element collection as a bare object unless the script wraps
            # it; accept that shape instead of losing the data.
            value = [value]
        if len(value) > limit:
            self.problems.append(f"{self.where}: {key} has {len(value)} entries; only the first {limit} are used")
            value = value[:limit]
        return value

    def mapping(self, key: str) -> _Fields | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, dict):
            return _Fields(value, f"{self.where} {key}", self.problems)
        self._wrong(key, "an object")
        return None


# What _services reads of one entry. Entries repeat across VMs (six services, a handful of states
# and texts per host), so the record parsed from each distinct entry is kept and shared: most of a
# host's entries then cost a tuple and a dict lookup instead of seven checked reads. Only entries of
# plain values are kept (str, bool, None: no 1 == True or 2 == 2.0 between a wrong and a right type)
# and only when they parsed without a problem line, which names the VM.
_SERVICE_KEYS = (
    "Name", "Enabled", "PrimaryOperationalStatus", "SecondaryOperationalStatus",
    "PrimaryStatusDescription", "SecondaryStatusDescription",
)  # fmt: skip
_PLAIN = (str, bool, type(None))
_SERVICE_MEMO: dict[tuple[object, ...], IntegrationService | None] = {}
_SERVICE_MEMO_MAX = 4096  # distinct entries; a host with more (hostile texts) clears it and goes on
_MISSING = object()


def _service(f: _Fields, service: str) -> IntegrationService:
    """One integration-service entry of a known ``service``."""
    secondary = f.text("SecondaryOperationalStatus")
    return IntegrationService(
        service=service,
        display_name=f.shared("Name") or service,
        enabled=f.boolean("Enabled"),
        primary_status=f.enum("PrimaryOperationalStatus", enums.IC_STATUSES),
        secondary_status=None if secondary is None else enums.label_for(secondary, enums.IC_STATUSES),
        primary_description=f.shared("PrimaryStatusDescription"),
        secondary_description=f.shared("SecondaryStatusDescription"),
    )


def _services(vm: _Fields, where: str) -> list[IntegrationService] | None:
    entries = vm.array("IntegrationServices", MAX_SERVICES_PER_VM)
    if entries is None:
        return None
    result: list[IntegrationService] = []
    seen: set[str] = set()
    problems = vm.problems
    memo = _SERVICE_MEMO
    for entry in entries:
        if not isinstance(entry, dict):
            problems.append(f"{where}: an integration service entry is not an object")
            continue
        ic_id = entry.get("Id")
        # The Id is "Microsoft:<VM Id>\\<service GUID>": the part that repeats across VMs is the key.
        key = (ic_id.rpartition("\\")[2] if type(ic_id) is str else ic_id, *map(entry.get, _SERVICE_KEYS))
        enabled = key[2]
        cached: object = _MISSING
        if enabled is None or enabled is True or enabled is False:  # not 1 or 1.0, which equal True
            try:  # noqa: SIM105 - per entry: a try costs nothing, contextlib.suppress a call
                cached = memo.get(key, _MISSING)
            except TypeError:  # a list or an object where text belongs: never kept
                pass
        if cached is not _MISSING:
            parsed = cast(IntegrationService | None, cached)
            if parsed is not None and parsed.service not in seen:
                seen.add(parsed.service)
                result.append(parsed)
            continue
        f = _Fields(entry, where, problems)
        before = len(problems)
        service = enums.service_for_id(f.text("Id"))
        if service in seen:
            continue  # the first entry of a service counts (its other fields are not read)
        # Unknown GUIDs (a service newer than this exporter) are left out to keep labels bounded.
        parsed = None if service is None else _service(f, service)
        if len(problems) == before and all(isinstance(value, _PLAIN) for value in key):
            if len(memo) >= _SERVICE_MEMO_MAX:
                memo.clear()
            memo[key] = parsed
        if parsed is not None:
            seen.add(parsed.service)
            result.append(parsed)
    return result


@lru_cache(maxsize=16)
def _with_facts(kvp_filter: cimxml.KvpFilter) -> cimxml.KvpFilter:
    """The module's allowlist plus :data:`GUEST_FACT_KEYS`, for the intrinsic items."""
    return cimxml.allowlist(kvp_filter.keys | GUEST_FACT_KEYS, kvp_filter.max_value_length)


def _kvp(
    vm: _Fields, where: str, kvp_filter: cimxml.KvpFilter, sources: frozenset[str]
) -> tuple[list[KvpItem] | None, dict[str, str]]:
    """(allowlisted items, guest facts) of one VM; (None, {}) when it has no KVP component."""
    kvp = vm.mapping("Kvp")
    if kvp is None:
        return None, {}
    items: list[KvpItem] = []
    facts: dict[str, str] = {}
    for prop, source in (
        ("GuestIntrinsicExchangeItems", KVP_GUEST_INTRINSIC),
        ("GuestExchangeItems", KVP_GUEST),
        ("HostExchangeItems", KVP_HOST),
    ):
        intrinsic = source == KVP_GUEST_INTRINSIC
        if source not in sources and not intrinsic:
            continue
        raw = kvp.array(prop, MAX_KVP_ITEMS_PER_ARRAY) or []
        seen: set[str] = set()
        selector = _with_facts(kvp_filter) if intrinsic else kvp_filter
        for key, value in cimxml.select(raw, selector, vm.problems, f"{where} {prop}"):
            if key in seen:  # the first item wins if a guest writes a key twice
                continue
            seen.add(key)
            if intrinsic and key in GUEST_FACT_KEYS:
                facts[key] = value
            if source in sources and key in kvp_filter.keys:
                items.append(KvpItem(source, key, value))
    return items, facts


def _resources(vm: _Fields) -> Resources | None:
    r = vm.mapping("Resources")
    if r is None:
        return None
    cpu = r.number("CPUUsage")
    return Resources(
        processor_count=r.integer("ProcessorCount"),
        cpu_usage_ratio=None if cpu is None else cpu / 100.0,
        memory_assigned_bytes=r.integer("MemoryAssigned"),
        memory_demand_bytes=r.integer("MemoryDemand"),
        memory_startup_bytes=r.integer("MemoryStartup"),
        dynamic_memory_enabled=r.boolean("DynamicMemoryEnabled"),
    )


def _replication(vm: _Fields) -> Replication | None:
    r = vm.mapping("Replication")
    if r is None:
        return None
    return Replication(
        state=r.enum("State", enums.REPLICATION_STATES),
        health=r.enum("Health", enums.REPLICATION_HEALTHS),
        mode=r.enum("Mode", enums.REPLICATION_MODES),
        last_replication_timestamp=ticks_to_unix(r.obj.get("LastReplicationTimeTicks")),
    )


def _checkpoints(vm: _Fields, where: str) -> list[Checkpoint] | None:
    entries = vm.array("Checkpoints", MAX_CHECKPOINTS_PER_VM)
    if entries is None:
        return None
    result: list[Checkpoint] = []
    for entry in entries:
        if isinstance(entry, dict):
            f = _Fields(entry, where, vm.problems)
            result.append(
                Checkpoint(
                    snapshot_type=enums.snake(f.text("SnapshotType") or enums.UNKNOWN),
                    creation_timestamp=ticks_to_unix(entry.get("CreationTimeTicks")),
                )
            )
    return result


def _vm(
    entry: Mapping[str, Any],
    index: int,
    problems: list[str],
    kvp_filter: cimxml.KvpFilter,
    kvp_sources: frozenset[str],
    host_os_version: str | None = None,
) -> VM | None:
    f = _Fields(entry, f"VM #{index}", problems)
    name = f.text("Name")
    vm_id = f.text("Id")
    if not name or not vm_id:
        problems.append(f"VM #{index}: no Name or Id; VM skipped")
        return None
    where = f"VM {name!r}"
    f.where = where
    ic_version = f.shared("IntegrationServicesVersion")
    is_state_text = f.text("IntegrationServicesState")
    is_state, recognised = icversion.state_from_text(is_state_text, ic_version, host_os_version)
    if not recognised:
        problems.append(f"{where}: unknown IntegrationServicesState {(is_state_text or '')[:64]!r}")
    heartbeat_raw = f.text("Heartbeat")
    kvp, facts = _kvp(f, where, kvp_filter, kvp_sources)
    guest_ic, guest_os = facts.get("IntegrationServicesVersion"), facts.get("OSVersion")
    return VM(
        name=name,
        id=vm_id.strip().strip("{}").lower(),
        state=f.enum("State", enums.VM_STATES),
        status=f.shared("Status"),
        heartbeat=enums.UNKNOWN if heartbeat_raw is None else f.enum("Heartbeat", enums.HEARTBEAT_STATUSES),
        uptime_seconds=f.number("UptimeSeconds"),
        integration_services_version=ic_version,
        integration_services_state=is_state,
        generation=f.integer("Generation"),
        version=f.shared("Version"),
        is_clustered=f.boolean("IsClustered"),
        integration_services=_services(f, where),
        kvp=kvp,
        resources=_resources(f),
        replication=_replication(f),
        checkpoints=_checkpoints(f, where),
        guest_integration_services_version=guest_ic,
        guest_os_version=guest_os,
        integration_services_up_to_date=icversion.up_to_date(is_state, host_os_version, guest_ic, guest_os),
    )


def _vm_problems(top: _Fields, problems: list[str]) -> dict[str, int]:
    """collect.ps1's VMProblems -> a problem line each, and per section the number of VMs affected."""
    affected: dict[str, set[str]] = {}
    for entry in top.array("VMProblems", MAX_VM_PROBLEMS) or []:
        if not isinstance(entry, dict):
            problems.append("VMProblems: an entry is not an object")
            continue
        f = _Fields(entry, "VMProblems", problems)
        section = (f.text("Section") or "unknown")[:64]
        name, vm_id = f.text("Name") or "", (f.text("Id") or "").strip().strip("{}").lower()
        problems.append(f"VM {name!r} ({vm_id}) lost its {section} data: {(f.text('Error') or 'no error text')[:512]}")
        affected.setdefault(section, set()).add(vm_id or name)
    return {section: len(vms) for section, vms in affected.items()}


def parse_report(
    text: str | bytes | bytearray,
    kvp_filter: cimxml.KvpFilter,
    kvp_sources: frozenset[str] = frozenset((KVP_GUEST_INTRINSIC, KVP_GUEST, KVP_HOST)),
) -> HostReport:
    """Parse the script's JSON document (text, or :func:`decode_bytes`'s bytes).

    Raises :class:`ReportError` if it is not one.
    """
    doc = _load(text)
    del text  # the VMs array refers to it; nothing else needs it
    vms = doc.get(LAZY_ARRAY) if isinstance(doc, dict) else None
    if not isinstance(vms, _LazyArray):
        return _report(doc, kvp_filter, kvp_sources)
    try:
        try:
            return _report(doc, kvp_filter, kvp_sources)
        finally:
            vms.finish()
    except _Undecodable:
        # msgspec refused a VM (NaN, a lone surrogate, invalid UTF-8, ...): json.loads reads the whole
        # document, exactly as before; the records are built again from its result.
        return _report(_load(vms.source, lazy=False), kvp_filter, kvp_sources)


def _report(doc: Any, kvp_filter: cimxml.KvpFilter, kvp_sources: frozenset[str]) -> HostReport:
    """The decoded document -> records."""
    if not isinstance(doc, dict):
        raise ReportError("parse", f"output is a JSON {type(doc).__name__}, not the collection document")
    version = doc.get("SchemaVersion")
    if version != SCHEMA_VERSION:
        raise ReportError("parse", f"unsupported SchemaVersion {version!r} (expected {SCHEMA_VERSION})")
    problems: list[str] = []
    top = _Fields(doc, "document", problems)
    host = top.mapping("Host") or _Fields({}, "Host", problems)
    sections: dict[str, Section] = {}
    raw_sections = top.mapping("Sections")
    if raw_sections is not None:
        for name, value in list(raw_sections.obj.items())[:64]:
            if isinstance(value, dict):
                s = _Fields(value, f"section {name}", problems)
                sections[str(name)[:64]] = Section(seconds=s.number("Seconds"), error=s.text("Error"))
    os_version = host.text("OSVersion")
    cluster_error = host.text("ClusterError")
    if cluster_error:
        problems.append(f"Host: failover cluster not readable: {cluster_error[:512]}")
    vm_problems = _vm_problems(top, problems)
    vms: list[VM] = []
    seen_ids: set[str] = set()
    for index, entry in enumerate(top.array("VMs", MAX_VMS) or []):
        if not isinstance(entry, dict):
            problems.append(f"VM #{index}: not an object; skipped")
            continue
        vm = _vm(entry, index, problems, kvp_filter, kvp_sources, os_version)
        if vm is None:
            continue
        if vm.id in seen_ids:
            problems.append(f"VM {vm.name!r}: duplicate Id {vm.id}; skipped")
            continue
        seen_ids.add(vm.id)
        vms.append(vm)
    script_hash = top.text("ScriptHash")
    return HostReport(
        host=HostInfo(
            computer_name=host.text("ComputerName"),
            os_caption=host.text("OSCaption"),
            os_version=os_version,
            ui_culture=host.text("UICulture"),
            cluster=host.text("Cluster") or None,
        ),
        vms=vms,
        sections=sections,
        clock_start=ticks_to_unix(doc.get("ClockStartTicks")),
        clock_end=ticks_to_unix(doc.get("ClockEndTicks")),
        problems=problems,
        script_version=top.text("ScriptVersion"),
        script_hash=script_hash,
        script_outdated=script_hash != script.script_hash(),
        vm_problems=vm_problems,
    )
