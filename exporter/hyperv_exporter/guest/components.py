"""Linux integration components: Hyper-V kernel modules, user-space daemons, and "is this Hyper-V?".

This replaces the checks Microsoft's documentation suggests (``lsmod | grep hv_utils`` and
``ps -eaf | grep hv``), which are wrong in both directions: lsmod misses drivers built into the
kernel (many cloud kernels build hv_vmbus and hv_utils in), and ``grep hv`` matches kernel threads
such as ``hv_vmbus_con``/``hv_balloon``, the grep itself, and any path containing "hv".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hyperv_exporter import enums
from hyperv_exporter.guest.rootfs import Root

MODULES: Final = ("hv_vmbus", "hv_utils", "hv_netvsc", "hv_storvsc", "hv_balloon")

# Daemon binary names per service, across distributions: upstream tools/hv names (Debian, Ubuntu,
# Arch, SUSE), Red Hat's renamed binaries (hyperv-daemons), and the UIO file-copy daemon that
# replaced hv_fcopy_daemon in Linux 6.10.
DAEMONS: Final = {
    enums.KEY_VALUE_PAIR_EXCHANGE: ("hv_kvp_daemon", "hypervkvpd"),
    enums.VSS: ("hv_vss_daemon", "hypervvssd"),
    enums.GUEST_SERVICE_INTERFACE: ("hv_fcopy_daemon", "hv_fcopy_uio_daemon", "hypervfcopyd"),
}
# /proc/<pid>/comm holds at most TASK_COMM_LEN - 1 = 15 bytes: hv_fcopy_uio_daemon shows as
# "hv_fcopy_uio_da", so comm is compared with the truncated name and argv[0] with the full one.
TASK_COMM_LEN: Final = 16
_MAX_PIDS: Final = 100_000


# --- modules -------------------------------------------------------------------------------------
def _builtin_modules(root: Root) -> set[str]:
    """Module names from ``/lib/modules/$(uname -r)/modules.builtin`` (``kernel/drivers/hv/hv_vmbus.ko``)."""
    release = (root.read_text("/proc/sys/kernel/osrelease", limit=256) or "").strip()
    if not release or "/" in release:
        return set()
    names: set[str] = set()
    for directory in ("/lib/modules", "/usr/lib/modules"):
        text = root.read_text(f"{directory}/{release}/modules.builtin", limit=4 * 1024 * 1024)
        for line in (text or "").splitlines():
            base = line.rsplit("/", 1)[-1]
            if base.endswith(".ko"):
                names.add(base[:-3].replace("-", "_"))
    return names


def _proc_modules(root: Root) -> set[str]:
    text = root.read_text("/proc/modules", limit=4 * 1024 * 1024) or ""
    return {line.split(" ", 1)[0] for line in text.splitlines() if line}


def loaded_modules(root: Root) -> dict[str, bool]:
    """Which Hyper-V modules are loaded or built in.

    ``/sys/module/<name>`` exists for every loaded module and for built-in modules that have
    parameters or a version; ``/proc/modules`` lists loadable modules only; ``modules.builtin``
    covers built-ins without sysfs entries. Any one of the three is enough.
    """
    proc = _proc_modules(root)
    builtin: set[str] | None = None
    result: dict[str, bool] = {}
    for name in MODULES:
        present = root.join(f"/sys/module/{name}").is_dir() or name in proc
        if not present:
            if builtin is None:
                builtin = _builtin_modules(root)
            present = name in builtin
        result[name] = present
    return result


# --- daemons -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    comm: str
    argv0: str


def _processes(root: Root) -> list[Process]:
    """User-space processes from ``/proc/<pid>/{comm,cmdline}``; kernel threads have no cmdline."""
    proc = root.join("/proc")
    processes: list[Process] = []
    try:
        entries = [e.name for e in proc.iterdir() if e.name.isdigit()]
    except OSError as exc:
        raise OSError(exc.errno, f"cannot list {proc}: {exc.strerror}") from None
    for name in entries[:_MAX_PIDS]:
        # A process may exit between listing and reading: missing files are skipped, not errors.
        cmdline = root.read_text(f"/proc/{name}/cmdline", limit=4096)
        if not cmdline:
            continue  # kernel thread or zombie, or gone
        comm = (root.read_text(f"/proc/{name}/comm", limit=64) or "").rstrip("\n")
        argv0 = cmdline.split("\0", 1)[0]
        processes.append(Process(int(name), comm, argv0.rsplit("/", 1)[-1]))
    return processes


def running_daemons(root: Root) -> dict[str, bool]:
    """``service`` -> whether one of its daemons runs (matched by exact comm or argv[0] basename)."""
    processes = _processes(root)
    result: dict[str, bool] = {}
    for service, names in DAEMONS.items():
        truncated = {n[: TASK_COMM_LEN - 1] for n in names}
        result[service] = any(p.comm in truncated or p.argv0 in names for p in processes)
    return result


# --- is this a Hyper-V guest? --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Detection:
    """Independent signals; ``hyperv`` is the verdict.

    * ``vmbus``: ``/sys/bus/vmbus`` exists, i.e. the VMBus driver found a Hyper-V VMBus. Definitive,
      and the only signal in guests without firmware tables (WSL 2, Hyper-V containers).
    * ``dmi``: SMBIOS says ``sys_vendor`` "Microsoft Corporation" and ``product_name`` "Virtual
      Machine" (Hyper-V's firmware sets both; Azure too). Works even when hv_vmbus is not loaded.
    * ``cpu_hypervisor_flag``: the ``hypervisor`` CPU flag in /proc/cpuinfo says *some* hypervisor
      (KVM, VMware, Xen...), so it is reported but never decides on its own.

    ``/sys/hypervisor/type`` is not used: it is populated by Xen (and s390), not by Hyper-V.
    """

    vmbus: bool
    dmi: bool
    cpu_hypervisor_flag: bool

    @property
    def hyperv(self) -> bool:
        return self.vmbus or self.dmi

    def signals(self) -> dict[str, bool]:
        return {"vmbus": self.vmbus, "dmi": self.dmi, "cpu_hypervisor_flag": self.cpu_hypervisor_flag}


def detect(root: Root) -> Detection:
    vendor = (root.read_text("/sys/class/dmi/id/sys_vendor", limit=256) or "").strip()
    product = (root.read_text("/sys/class/dmi/id/product_name", limit=256) or "").strip()
    cpuinfo = root.read_text("/proc/cpuinfo", limit=1024 * 1024) or ""
    flag = any(
        line.split(":", 1)[0].strip() in ("flags", "Features") and "hypervisor" in line.split(":", 1)[-1].split()
        for line in cpuinfo.splitlines()
    )
    return Detection(
        vmbus=root.join("/sys/bus/vmbus").is_dir(),
        dmi=vendor == "Microsoft Corporation" and product == "Virtual Machine",
        cpu_hypervisor_flag=flag,
    )
