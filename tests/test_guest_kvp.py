"""KVP pool files: the exact record format, locking against a real other process, allowlist, cleaning."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from hyperv_exporter.guest import kvp_pool
from hyperv_exporter.guest.collector import ComponentsProbe, GuestCollector, KvpProbe
from hyperv_exporter.guest.kvp_pool import DEFAULT_KEYS, KeySpec
from hyperv_exporter.guest.rootfs import Root

FIXTURE_ROOT = Path(__file__).parent / "fixtures" / "guest" / "hyperv-root"
VM_ID = "8e3f2b1a-4c5d-4e6f-9a0b-1c2d3e4f5a6b"


def record(key: bytes, value: bytes, key_junk: bytes = b"", value_junk: bytes = b"") -> bytes:
    """A record as hv_kvp_daemon writes it: NUL-terminated fields, optionally junk after the NUL."""
    k = (key + b"\0" + key_junk).ljust(kvp_pool.KEY_SIZE, b"\0")
    v = (value + b"\0" + value_junk).ljust(kvp_pool.VALUE_SIZE, b"\0")
    assert len(k) == kvp_pool.KEY_SIZE and len(v) == kvp_pool.VALUE_SIZE
    return k + v


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE_ROOT / "var", tmp_path / "var")
    return tmp_path


def scrape(*probes: KvpProbe | ComponentsProbe, timeout: float = 5.0) -> tuple[CollectorRegistry, str]:
    """One collection through the real runner; the text is parsed back into a registry for lookups."""
    collector = GuestCollector(list(probes), timeout=timeout)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    families = list(text_string_to_metric_families(text))

    class Parsed(Collector):
        def collect(self) -> list[Metric]:
            return families

    parsed = CollectorRegistry()
    parsed.register(Parsed())
    return parsed, text


# --- format --------------------------------------------------------------------------------------
def test_garbage_after_nul_and_invalid_utf8() -> None:
    data = (
        record(b"HostName", b"HV-NODE-07", key_junk=b"\xff\xfe junk", value_junk=b"\x51\xf1\x01")
        + record(b"Caf\xc3\xa9", b"bad \xf1 byte")  # valid UTF-8 key, invalid value
        + record(b"", b"orphan value")  # an empty key is a hole, not a record
    )
    assert list(kvp_pool.parse_pool(data)) == [("HostName", "HV-NODE-07"), ("Café", "bad \ufffd byte")]


def test_truncated_last_record_is_ignored() -> None:
    data = record(b"A", b"1") + record(b"B", b"2")[:1000]
    assert list(kvp_pool.parse_pool(data)) == [("A", "1")]


def test_empty_pool() -> None:
    assert list(kvp_pool.parse_pool(b"")) == []


def test_fixture_pool_3_with_real_stray_bytes() -> None:
    data = (FIXTURE_ROOT / "var/lib/hyperv/.kvp_pool_3").read_bytes()
    assert data[kvp_pool.RECORD_SIZE + kvp_pool.KEY_SIZE + 1032 :][:3] == b"\x51\xf1\x01"
    items = dict(kvp_pool.parse_pool(data))
    assert items["HostingSystemEditionId"] == "8"
    assert items["VirtualMachineName"] == "web01"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3 * kvp_pool.RECORD_SIZE + 100))
def test_parser_never_crashes(data: bytes) -> None:
    for key, value in kvp_pool.parse_pool(data):
        assert key and "\0" not in key and "\0" not in value


_text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _text.filter(lambda k: 0 < len(k.encode()) < kvp_pool.KEY_SIZE),
            _text.filter(lambda v: len(v.encode()) < kvp_pool.VALUE_SIZE),
        ),
        max_size=6,
    ),
    st.binary(max_size=40),
)
def test_valid_records_round_trip(items: list[tuple[str, str]], junk: bytes) -> None:
    data = b"".join(kvp_pool.encode_record(k, v) for k, v in items)
    assert list(kvp_pool.parse_pool(data)) == items
    # a partially rewritten tail never yields an extra record
    assert list(kvp_pool.parse_pool(data + junk)) == items


# --- values --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("web01", "web01"),
        ("line1\nline2\r\x1b[31mred", "line1 line2 [31mred"),
        ("evil\u202egnp.exe", "evil gnp.exe"),  # bidi override
        ("  padded\t", "padded"),
        ("x" * 300, "x" * 256),
    ],
)
def test_clean_value(raw: str, clean: str) -> None:
    assert kvp_pool.clean_value(raw, 256) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "8E3F2B1A-4C5D-4E6F-9A0B-1C2D3E4F5A6B",
        "{8E3F2B1A-4C5D-4E6F-9A0B-1C2D3E4F5A6B}",
        " 8e3f2b1a-4c5d-4e6f-9a0b-1c2d3e4f5a6b ",
        "8E3F2B1A4C5D4E6F9A0B1C2D3E4F5A6B",
    ],
)
def test_vm_id_is_a_lower_case_guid_without_braces(raw: str) -> None:
    assert kvp_pool.normalise_vm_id(raw) == VM_ID


def test_vm_id_that_is_not_a_guid() -> None:
    assert kvp_pool.normalise_vm_id("{Not-A-GUID}") == "not-a-guid"


def test_key_specs() -> None:
    assert KeySpec.parse("3:VirtualMachineId") == KeySpec("VirtualMachineId", 3)
    assert KeySpec.parse("Custom:Key") == KeySpec("Custom:Key")
    assert KeySpec.parse("OSName") == KeySpec("OSName")
    with pytest.raises(ValueError, match="pool"):
        KeySpec.parse("7:Key")
    assert kvp_pool.pools_needed(DEFAULT_KEYS) == [3]
    assert kvp_pool.pools_needed([KeySpec("X")]) == [0, 1, 2, 3, 4]


# --- reading the tree ----------------------------------------------------------------------------
def test_host_info_and_allowlisted_items(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        registry, text = scrape(KvpProbe(Root(FIXTURE_ROOT), DEFAULT_KEYS, 1.0, 256))
    host = {"host_name": "HV-NODE-07", "physical_host_name": "HV-NODE-07", "vm_name": "web01", "vm_id": VM_ID}
    assert registry.get_sample_value("hyperv_guest_host_info", host) == 1.0
    assert registry.get_sample_value("hyperv_guest_kvp_info", {"pool": "3", "key": "VirtualMachineId",
                                                               "value": "8E3F2B1A-4C5D-4E6F-9A0B-1C2D3E4F5A6B"}) == 1.0  # fmt: skip
    assert registry.get_sample_value("hyperv_guest_kvp_pool_records", {"pool": "3"}) == 16
    assert registry.get_sample_value("hyperv_guest_kvp_pool_records", {"pool": "0"}) is None  # not even opened
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 1.0
    # Nothing outside the allowlist is exported or logged.
    assert "HostingSystemEditionId" not in text
    assert "hunter2" not in text and "ProvisioningSecret" not in text
    assert "hunter2" not in caplog.text and "ProvisioningSecret" not in caplog.text


def test_custom_keys_from_any_pool_never_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    specs = [KeySpec.parse("CustomerTag"), KeySpec.parse("1:cloud-init")]
    with caplog.at_level(logging.DEBUG):
        registry, text = scrape(KvpProbe(Root(FIXTURE_ROOT), specs, 1.0, 256))
    assert registry.get_sample_value("hyperv_guest_kvp_info", {"pool": "0", "key": "CustomerTag", "value": "blue"})
    assert registry.get_sample_value(
        "hyperv_guest_kvp_info", {"pool": "1", "key": "cloud-init", "value": "result=success"}
    )
    assert registry.get_sample_value("hyperv_guest_kvp_pool_records", {"pool": "0"}) == 2
    # host_info is still there (pool 3's identity keys are always read) ...
    assert 'vm_id="8e3f2b1a-4c5d-4e6f-9a0b-1c2d3e4f5a6b"' in text
    # ... but pool 3 keys not asked for are not in kvp_info, and the secret is nowhere.
    assert 'key="HostName"' not in text
    assert "hunter2" not in text and "ProvisioningSecret" not in text and "hunter2" not in caplog.text


def test_duplicate_keys_give_one_series(tree: Path) -> None:
    pool = tree / "var/lib/hyperv/.kvp_pool_0"
    pool.write_bytes(record(b"CustomerTag", b"old") + record(b"CustomerTag", b"new"))
    result = kvp_pool.read_pools(Root(tree), [KeySpec("CustomerTag", 0)], 1.0, 256)
    assert result.pools[0].items == [("CustomerTag", "new")]


def test_empty_and_missing_pool_files(tree: Path) -> None:
    (tree / "var/lib/hyperv/.kvp_pool_3").write_bytes(b"")
    (tree / "var/lib/hyperv/.kvp_pool_1").unlink()
    result = kvp_pool.read_pools(Root(tree), [KeySpec("X")], 1.0, 256)
    assert result.available
    assert result.host is None
    assert {p.pool: p.records for p in result.pools} == {0: 2, 2: 0, 3: 0, 4: 0}


def test_missing_directory_is_unavailable_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        registry, _ = scrape(KvpProbe(Root(tmp_path), DEFAULT_KEYS, 1.0, 256))
        scrape(KvpProbe(Root(tmp_path), DEFAULT_KEYS, 1.0, 256))
    assert registry.get_sample_value("hyperv_guest_kvp_available") == 0.0
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 1.0


# --- locking -------------------------------------------------------------------------------------
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)  # F_SETLKW + F_WRLCK on the whole file, as hv_kvp_daemon does
print("locked", flush=True)
if sys.argv[2] == "forever":
    sys.stdin.read()
else:
    time.sleep(float(sys.argv[2]))
"""


Holder = Callable[[Path, str], subprocess.Popen[bytes]]


@pytest.fixture
def lock_holder() -> Iterator[Holder]:
    started: list[subprocess.Popen[bytes]] = []

    def start(path: Path, hold: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path), hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"locked\n"
        return proc

    yield start
    for proc in started:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()


def test_write_lock_held_by_another_process_fails_only_kvp(tree: Path, lock_holder: Holder) -> None:
    (tree / "proc").mkdir()
    holder = lock_holder(tree / "var/lib/hyperv/.kvp_pool_3", "forever")
    registry, text = scrape(KvpProbe(Root(tree), DEFAULT_KEYS, 0.3, 256), ComponentsProbe(Root(tree)), timeout=5.0)
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 0.0
    duration = registry.get_sample_value("hyperv_guest_collector_duration_seconds", {"collector": "kvp"})
    assert duration is not None and 0.3 <= duration < 3.0  # bounded wait, then a clear failure
    assert "hyperv_guest_host_info{" not in text
    # the other collector is unaffected
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "components"}) == 1.0
    assert registry.get_sample_value("hyperv_guest_module_loaded", {"module": "hv_vmbus"}) == 0.0
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=5)
    registry, _ = scrape(KvpProbe(Root(tree), DEFAULT_KEYS, 0.3, 256))
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 1.0


def test_lock_released_within_the_timeout_is_waited_for(tree: Path, lock_holder: Holder) -> None:
    lock_holder(tree / "var/lib/hyperv/.kvp_pool_3", "0.2")
    result = kvp_pool.read_pools(Root(tree), DEFAULT_KEYS, 5.0, 256)
    assert result.host is not None and result.host.vm_id == VM_ID


def test_lock_timeout_error_names_no_content(tree: Path, lock_holder: Holder) -> None:
    lock_holder(tree / "var/lib/hyperv/.kvp_pool_3", "forever")
    with pytest.raises(kvp_pool.PoolLockTimeout, match=r"\.kvp_pool_3: locked by another process"):
        kvp_pool.read_pool_file(tree / "var/lib/hyperv/.kvp_pool_3", 0.1)


# --- special files where a pool belongs (issue 13) -----------------------------------------------------


def _special(kind: str, path: Path) -> None:
    import os
    import socket as socket_module
    import stat

    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket_module.socket(socket_module.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink to a device":
        path.symlink_to("/dev/zero")
    elif kind == "character device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        except PermissionError:
            pytest.skip("mknod needs privileges here")


SPECIAL = ["fifo", "socket", "directory", "symlink to a device", "character device"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_special_file_is_never_opened_as_a_pool(tree: Path, kind: str) -> None:
    import threading

    pool = tree / "var/lib/hyperv/.kvp_pool_3"
    pool.unlink()
    _special(kind, pool)
    outcome: list[BaseException | kvp_pool.KvpResult] = []

    def read() -> None:
        try:
            outcome.append(kvp_pool.read_pools(Root(tree), DEFAULT_KEYS, 1.0, 256))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)  # a blocked open must not hang the suite
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading the pools blocked on a special file"
    assert isinstance(outcome[0], kvp_pool.PoolNotAFile), outcome
    assert "not a KVP pool file" in str(outcome[0]) and ".kvp_pool_3" in str(outcome[0])


def test_a_fifo_fails_only_the_kvp_collector(tree: Path) -> None:
    import os

    (tree / "proc").mkdir()
    pool = tree / "var/lib/hyperv/.kvp_pool_3"
    pool.unlink()
    os.mkfifo(pool)
    registry, _ = scrape(KvpProbe(Root(tree), DEFAULT_KEYS, 1.0, 256), ComponentsProbe(Root(tree)), timeout=30.0)
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "kvp"}) == 0.0
    assert registry.get_sample_value("hyperv_guest_collector_success", {"collector": "components"}) == 1.0


def test_once_with_a_fifo_pool_exits(tree: Path, tmp_path: Path) -> None:
    """The reported symptom: ``--once`` never exited with a FIFO where pool 3 belongs."""
    import os

    pool = tree / "var/lib/hyperv/.kvp_pool_3"
    pool.unlink()
    os.mkfifo(pool)
    out = tmp_path / "guest.prom"
    argv = [sys.executable, "-m", "hyperv_exporter.guest", "--root", str(tree), "--no-collector.ntp",
            "--once", "--textfile", str(out)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert 'hyperv_guest_collector_success{collector="kvp"} 0.0' in out.read_text()
    assert b"not a KVP pool file" in result.stderr
