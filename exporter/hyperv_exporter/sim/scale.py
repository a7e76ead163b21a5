"""What collect.ps1 costs on a host, in the simulator's model: the host-side KVP filter, output size,
a peak-memory estimate, and the WinRS ``MaxMemoryPerShellMB`` quota with the fault a real host gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


# -- the memory model -----------------------------------------------------------------------------------
# Windows enforces MaxMemoryPerShellMB on the shell's processes through a job object: an allocation
# past the limit fails, which a .NET process sees as OutOfMemoryException (ansible/ansible#39327
# shows a WinRS shell hitting the quota). Defaults: 1024 MB in MS-WSMV's WinrsType schema; 150 MB
# under WinRM 2.0, and WinRM 3.0 (WMF 3.0, Windows Server 2012) ignores a raised value unless
# hotfixed (xebialabs/overthere#64, test-kitchen/test-kitchen#742).
OUT_OF_MEMORY = "Exception of type 'System.OutOfMemoryException' was thrown."
MIB = 1024 * 1024


BATCH_SIZE = 100  # collect.ps1's $batchSize: VMs serialised by one ConvertTo-Json call


@dataclass(frozen=True)
class MemoryModel:
    """A peak-memory estimate of powershell.exe running collect.ps1, in bytes.

    The constants are assumptions, not measurements of a real host (none has run here); captures
    record the real peak (``PeakMemoryBytes``, deploy/windows/capture-collection.ps1) to correct them.
    What grows with the host, and why:

    - ``base``: powershell.exe with the Hyper-V and CIM modules loaded.
    - ``per_vm``: a Get-VM ``VirtualMachine`` object (it caches its WMI data) and the row built from it.
    - The KVP items kept, UTF-16 (2 bytes a character): with ``-KvpKeys`` only the allowlisted ones,
      because the CIM instances stream through the pipeline and are dropped once filtered.
    - ConvertTo-Json of one batch of VMs: JavaScriptSerializer's StringBuilder (UTF-16, grown by
      doubling: up to twice the text, so 4 bytes a character), its ToString() copy (2) and the
      Substring that drops the brackets (2). ``streamed=False`` models one call for the whole document
      (collect.ps1 before it wrote the document in parts).
    - ``-Gzip``: the compressed buffer (a MemoryStream grown by doubling, then ToArray) and its
      base64 text (UTF-16).
    """

    base: int = 72 * MIB
    per_vm: int = 24 * 1024
    kvp_char: int = 2
    json_char: int = 8

    def peak_bytes(
        self, vms: int, kvp_chars: int, json_chars: int, gzip: bool, compressed_bytes: int = 0, streamed: bool = True
    ) -> int:
        serialised = json_chars * min(BATCH_SIZE, vms) // vms if streamed and vms else json_chars
        total = self.base + self.per_vm * vms + self.kvp_char * kvp_chars + self.json_char * serialised
        if gzip:
            total += 3 * compressed_bytes + 2 * (compressed_bytes * 4 // 3)
        return total


MODEL = MemoryModel()


def kvp_chars(doc: dict[str, Any]) -> int:
    """Characters of every KVP item string in a collect.ps1 document (what CIM hands the script)."""
    total = 0
    for vm in doc.get("VMs") or []:
        kvp = vm.get("Kvp") if isinstance(vm, dict) else None
        if isinstance(kvp, dict):
            total += sum(
                len(item)
                for items in kvp.values()
                if isinstance(items, list)
                for item in items
                if isinstance(item, str)
            )
    return total
