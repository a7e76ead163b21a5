"""What collect.ps1 costs on a host, in the simulator's model: the host-side KVP filter, output size,
a peak-memory estimate, and the WinRS ``MaxMemoryPerShellMB`` quota with the fault a real host gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from xml.sax.saxutils import escape


def kvp_needles(keys: Iterable[str]) -> tuple[str, ...]:
    """What collect.ps1 looks for in an item: each key as it appears in CIM-XML text (``&``, ``<``, ``>``
    escaped). The exporter's own pre-filter (``cimxml.KvpFilter.may_match``) uses the same needles, so
    filtering on the host never drops an item the exporter would have kept."""
    return tuple(escape(key) for key in keys)


def kvp_host_filter(items: Sequence[object], keys: Sequence[str]) -> list[object]:
    """collect.ps1's ``-KvpKeys``: keep the items that contain one of the keys' needles (case-sensitive,
    ``-cmatch``). Items that are not strings cannot come from CIM; they stay, so tests that plant them
    still reach the exporter's own checks."""
    needles = kvp_needles(keys)
    return [item for item in items if not isinstance(item, str) or any(map(item.__contains__, needles))]


def filter_document_kvp(doc: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Apply :func:`kvp_host_filter` to every KVP array of a collect.ps1 document (in place)."""
    for vm in doc.get("VMs") or []:
        kvp = vm.get("Kvp") if isinstance(vm, dict) else None
        if isinstance(kvp, dict):
            for name, items in kvp.items():
                if isinstance(items, list):
                    kvp[name] = kvp_host_filter(items, keys)
    return doc
