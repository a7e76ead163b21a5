"""Are a VM's integration services up to date? What each Hyper-V host generation lets us know.

Hyper-V answers this differently per host generation (docs/metrics.md has the table, docs/alerts.md
the reasoning and sources):

- **Windows Server 2012 / 2012 R2** judge it themselves: Get-VM ``IntegrationServicesState`` is
  "Up to date" or "Update required" (empty when the VM is off or has no integration components),
  comparing the guest's integration components with the ones the host ships (vmguest.iso). The
  text is translated on a localized host; see :func:`state_from_text`.
- **Windows Server 2016 and later** do not: the state is always empty and the version ``0.0``,
  because integration components reach Windows guests through Windows Update and ship inside
  Linux kernels. What is left is what the guest reports about itself in the KVP intrinsic items
  ``IntegrationServicesVersion`` and ``OSVersion``; see :func:`guest_up_to_date`.

Where there is no basis the answer is ``None`` and the metric is absent, so an alert stays silent
rather than wrong.
"""

from __future__ import annotations

import re
from typing import Final

from hyperv_exporter import enums

# Get-VM IntegrationServicesState in English (moora/zbx-hyperv; Msvm_SummaryInformation
# IntegrationServicesVersionState 1 up to date, 2 version mismatch).
ENGLISH_STATES: Final = enums.IS_STATE_TEXT

_VERSION = re.compile(r"\d{1,9}(?:\.\d{1,9}){1,3}")


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"6.3.9600.16384"`` -> ``(6, 3, 9600, 16384)``; ``None`` for anything that is not a dotted number."""
    if not text:
        return None
    text = text.strip()
    if not _VERSION.fullmatch(text):
        return None
    return tuple(int(part) for part in text.split("."))


def host_generation(os_version: str | None) -> str | None:
    """``2012`` (6.2), ``2012r2`` (6.3), ``2016+`` (10.0 and later) or ``None`` when unknown/older."""
    version = parse_version(os_version)
    if version is None or len(version) < 2:
        return None
    if version[:2] == (6, 2):
        return "2012"
    if version[:2] == (6, 3):
        return "2012r2"
    if version[0] >= 10:
        return "2016+"
    return None


def state_from_text(text: str | None, vm_ic_version: str | None, host_os_version: str | None) -> tuple[str, bool]:
    """(IS_STATES label, whether the text was recognised) for a Get-VM IntegrationServicesState.

    English text maps directly. Any other non-empty text on a 2012/2012 R2 host is taken as the
    localized form of one of the two states (the property has no other values) and is decided the
    way the host decides it: the guest's integration components (Get-VM IntegrationServicesVersion)
    older than the host's own build (major.minor.build of Win32_OperatingSystem Version) means
    ``update_required``, otherwise ``up_to_date``. Without a version to compare it stays ``unknown``.
    """
    folded = (text or "").strip().lower()
    if not folded:
        return enums.UNKNOWN, True
    if folded in ENGLISH_STATES:
        return ENGLISH_STATES[folded], True
    if host_generation(host_os_version) not in ("2012", "2012r2"):
        return enums.UNKNOWN, False
    guest, host = parse_version(vm_ic_version), parse_version(host_os_version)
    if guest is None or host is None or len(guest) < 3 or len(host) < 3:
        return enums.UNKNOWN, True
    return ("update_required" if guest[:3] < host[:3] else "up_to_date"), True


def guest_up_to_date(ic_version: str | None, os_version: str | None) -> bool | None:
    """2016+ hosts: the guest's own report (KVP intrinsic items) compared with its own OS version.

    A Windows guest's integration components are part of its OS and serviced with it, so their
    version (e.g. ``10.0.17763.1``) starts with the OS's major.minor.build (``10.0.17763``). ICs
    older than the OS they run on (say 6.2.9200.x installed from a 2012 host's vmguest.iso inside
    a guest since upgraded to 2012 R2, 6.3.9600) are outdated. Not judged (``None``): Linux guests
    (their version is the kernel module's, e.g. ``3.1``, not comparable with ``uname -r``), missing
    or non-numeric values. Not detectable: a guest lacking an IC update *within* its OS build.
    """
    ic, os_ = parse_version(ic_version), parse_version(os_version)
    if ic is None or os_ is None or len(ic) < 3 or len(os_) < 3 or ic[0] < 6:
        return None
    return ic[:3] >= os_[:3]


def up_to_date(
    state: str, host_os_version: str | None, guest_ic_version: str | None, guest_os_version: str | None
) -> bool | None:
    """The value of ``hyperv_vm_integration_services_up_to_date``; ``None`` where there is no basis."""
    generation = host_generation(host_os_version)
    if generation in ("2012", "2012r2"):
        return {"up_to_date": True, "update_required": False}.get(state)
    if generation == "2016+":
        return guest_up_to_date(guest_ic_version, guest_os_version)
    return None
