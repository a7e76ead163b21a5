"""Integration components from a fake /proc and /sys tree (``--root``): modules, daemons, detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hyperv_exporter import enums
from hyperv_exporter.guest import components
from hyperv_exporter.guest.collector import ComponentsProbe
from hyperv_exporter.guest.rootfs import Root

FIXTURE_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"


def test_root_joins_absolute_paths_only(tmp_path: Path) -> None:
    root = Root(tmp_path)
    assert root.join("/proc/modules") == tmp_path / "proc" / "modules"
    with pytest.raises(ValueError, match="absolute"):
        root.join("proc/modules")
    assert root.read_text("/does/not/exist") is None


def test_modules_loaded_or_built_in() -> None:
    loaded = components.loaded_modules(Root(FIXTURE_ROOT))
    # hv_vmbus: /sys/module only (built in with parameters); hv_utils & co: /proc/modules and sysfs;
    # hv_balloon: built in without a sysfs entry, known only from modules.builtin.
    assert loaded == {"hv_vmbus": True, "hv_utils": True, "hv_netvsc": True, "hv_storvsc": True, "hv_balloon": True}


def test_modules_absent_on_another_machine(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "modules").write_text("ext4 1 0 - Live 0x0\nhv_sock 1 0 - Live 0x0\n")
    assert not any(components.loaded_modules(Root(tmp_path)).values())


def test_daemons_by_comm_and_argv0_not_by_substring() -> None:
    running = components.running_daemons(Root(FIXTURE_ROOT))
    # hv_kvp_daemon (upstream name), hypervvssd (Red Hat name), hv_fcopy_uio_daemon (comm cut to 15 chars).
    assert running == {
        enums.KEY_VALUE_PAIR_EXCHANGE: True,
        enums.VSS: True,
        enums.GUEST_SERVICE_INTERFACE: True,
    }


def test_kernel_threads_and_grep_do_not_count(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_ROOT / "proc", tmp_path / "proc")
    for pid in ("612", "640", "701"):  # remove the three real daemons
        shutil.rmtree(tmp_path / "proc" / pid)
    # left: kernel threads hv_vmbus_con/hv_pri_chan (empty cmdline) and `grep --color=auto hv`
    assert not any(components.running_daemons(Root(tmp_path)).values())


def test_daemon_found_by_argv0_when_comm_was_renamed(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "77"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("kvp-worker\n")  # prctl(PR_SET_NAME) can change comm
    (proc / "cmdline").write_bytes(b"/usr/sbin/hypervkvpd\0-n\0")
    assert components.running_daemons(Root(tmp_path))[enums.KEY_VALUE_PAIR_EXCHANGE]


def test_unlistable_proc_is_a_collector_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot list"):
        components.running_daemons(Root(tmp_path))


def test_detection_signals() -> None:
    detection = components.detect(Root(FIXTURE_ROOT))
    assert detection.signals() == {"vmbus": True, "dmi": True, "cpu_hypervisor_flag": True}
    assert detection.hyperv


def test_hypervisor_flag_alone_is_not_hyperv(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu tsc hypervisor lm\n")
    (tmp_path / "sys/class/dmi/id").mkdir(parents=True)
    (tmp_path / "sys/class/dmi/id/sys_vendor").write_text("QEMU\n")
    (tmp_path / "sys/class/dmi/id/product_name").write_text("Standard PC (Q35 + ICH9, 2009)\n")
    detection = components.detect(Root(tmp_path))
    assert detection.cpu_hypervisor_flag
    assert not detection.hyperv


def test_components_probe_families() -> None:
    families = {f.name: f for f in ComponentsProbe(Root(FIXTURE_ROOT)).collect()}
    assert families["hyperv_guest_hyperv_detected"].samples[0].value == 1.0
    modules = {s.labels["module"]: s.value for s in families["hyperv_guest_module_loaded"].samples}
    assert modules == dict.fromkeys(components.MODULES, 1.0)
    daemons = {s.labels["service"]: s.value for s in families["hyperv_guest_daemon_running"].samples}
    assert set(daemons) == {"key_value_pair_exchange", "vss", "guest_service_interface"}
    assert set(daemons) <= set(enums.SERVICES)  # the same label values as the host exporter
