"""Packaging of the guest agent: systemd units, udev rule, sysusers entry, Windows install script.

The units are checked by systemd itself (``systemd-analyze verify`` for syntax and unknown keys,
``systemd-analyze security --offline`` for the exposure score) and parsed here for the hardening
the agent relies on, including what must *not* be set because it would blind a collector. The
command lines in the units and in the Windows script are parsed with the agent's own argument
parser, so a renamed flag fails here rather than in a VM.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from conftest import REPO, require_tool
from hyperv_exporter.guest import cli as guest_cli

SYSTEMD = REPO / "deploy" / "systemd"
SERVICE = SYSTEMD / "hyperv-guest-agent.service"
TEXTFILE_SERVICE = SYSTEMD / "hyperv-guest-agent-textfile.service"
TIMER = SYSTEMD / "hyperv-guest-agent-textfile.timer"
UDEV_RULE = REPO / "deploy" / "udev" / "70-hyperv-guest-agent.rules"
SYSUSERS = SYSTEMD / "hyperv-guest-agent.sysusers.conf"
WINDOWS_SCRIPT = REPO / "deploy" / "windows" / "install-guest-agent.ps1"
SERVICES = [SERVICE, TEXTFILE_SERVICE]
USER = "hyperv-guest-agent"


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows repeated keys; an empty assignment resets the list)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(path: Path, key: str, section: str = "Service") -> str:
    (value,) = unit(path)[section][key]
    return value


# --- systemd's own checks -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def units_with_stub_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with ExecStart's program replaced by /bin/true (verify insists that it exists)."""
    directory = tmp_path_factory.mktemp("units")
    for path in [*SERVICES, TIMER]:
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", path.read_text(encoding="utf-8"), flags=re.M)
        (directory / path.name).write_text(text, encoding="utf-8")
    return directory


def test_systemd_analyze_verify(units_with_stub_binary: Path) -> None:
    tool = require_tool("systemd-analyze")
    names = [p.name for p in sorted(units_with_stub_binary.iterdir())]
    proc = subprocess.run([tool, "verify", *names], cwd=units_with_stub_binary, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    # verify prints problems (unknown keys, bad values) as warnings, some without failing.
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("name", [p.name for p in SERVICES])
def test_systemd_analyze_security_exposure(units_with_stub_binary: Path, name: str) -> None:
    tool = require_tool("systemd-analyze")
    proc = subprocess.run([tool, "security", "--offline=true", f"./{name}"], cwd=units_with_stub_binary,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    # 0 is a fully sandboxed unit, 10 an unprotected root service; what is left open is what the
    # collectors need (devices, /proc, network, adjtimex).
    assert float(match.group(1)) <= 2.5, proc.stdout


# --- the hardening, key by key -------------------------------------------------------------------------
@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_hardening(path: Path) -> None:
    service = unit(path)["Service"]
    expected = {
        "User": [USER],
        "Group": [USER],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "DevicePolicy": ["closed"],
        "DeviceAllow": ["/dev/ptp_hyperv r", "char-ptp r"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "SystemCallFilter": ["@system-service", "~@privileged @resources", "adjtimex"],
        "SystemCallArchitectures": ["native"],
        "ProtectKernelTunables": ["yes"],
        "ProtectControlGroups": ["yes"],
        "RestrictSUIDSGID": ["yes"],
        "RestrictNamespaces": ["yes"],
        "LockPersonality": ["yes"],
    }
    for key, values in expected.items():
        assert service.get(key) == values, f"{path.name}: {key}={service.get(key)}, expected {values}"
    assert any("/var/lib/hyperv" in v for v in service["ReadOnlyPaths"])


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_settings_that_would_blind_a_collector_stay_off(path: Path) -> None:
    service = unit(path)["Service"]
    for key, bad in {
        "PrivateDevices": "yes",  # /dev/ptp_hyperv
        "ProtectClock": "yes",  # adjtimex, even read-only
        "ProtectKernelModules": "yes",  # /usr/lib/modules/*/modules.builtin
        "ProtectProc": "invisible",  # root's hv_kvp_daemon
        "ProcSubset": "pid",  # /proc/modules, /proc/cpuinfo
        "MemoryDenyWriteExecute": "yes",  # ctypes
        "PrivateNetwork": "yes",
    }.items():
        assert bad not in service.get(key, []), f"{path.name}: {key}={bad} breaks the agent (see the unit's comments)"


def test_units_run_only_in_hyper_v_guests() -> None:
    for path in [*SERVICES, TIMER]:
        assert one(path, "ConditionVirtualization", "Unit") == "microsoft"


def test_textfile_variant_writes_only_where_node_exporter_reads() -> None:
    service = unit(TEXTFILE_SERVICE)["Service"]
    assert service["Type"] == ["oneshot"]
    args = guest_cli.build_parser().parse_args(shlex.split(one(TEXTFILE_SERVICE, "ExecStart"))[1:])
    assert args.once and args.textfile is not None
    assert service["ReadWritePaths"] == [str(args.textfile.parent)]
    timer = unit(TIMER)
    assert timer["Timer"]["OnUnitActiveSec"] == ["60s"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_exec_start_flags_are_the_agents() -> None:
    for path in SERVICES:
        command = shlex.split(one(path, "ExecStart"))
        assert command[0] == "/opt/hyperv-guest-agent/bin/hyperv-guest-agent"
        guest_cli.build_parser().parse_args(command[1:])  # exits (SystemExit) on an unknown flag
    args = guest_cli.build_parser().parse_args(shlex.split(one(SERVICE, "ExecStart"))[1:])
    assert args.textfile is None and args.web_listen_address == [f":{guest_cli.DEFAULT_PORT}"]


# --- udev and the user ------------------------------------------------------------------------------------
def test_udev_rule_gives_the_agents_group_read_access_to_the_ptp_clock() -> None:
    rules = [line for line in UDEV_RULE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert rules == ['SUBSYSTEM=="ptp", ATTR{clock_name}=="hyperv", GROUP="hyperv-guest-agent", MODE="0640"']
    pairs = dict(re.findall(r'(\w+(?:\{\w+\})?)[=!]=?"([^"]*)"', rules[0]))
    assert pairs["GROUP"] == one(SERVICE, "Group")
    assert int(pairs["MODE"], 8) & 0o040 and not int(pairs["MODE"], 8) & 0o007, "group-readable, nothing for others"


def test_sysusers_entry_creates_the_units_user() -> None:
    entries = [line.split() for line in SYSUSERS.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    (entry,) = entries
    assert entry[:2] == ["u", one(SERVICE, "User")]
    assert entry[-1] in ("/usr/sbin/nologin", "/sbin/nologin")


# --- Windows ------------------------------------------------------------------------------------------------
def test_windows_script_parses() -> None:
    source = WINDOWS_SCRIPT.read_text(encoding="utf-8")
    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language())).parse(source.encode("utf-8"))
    errors: list[str] = []

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"line {node.start_point[0] + 1}: {source.encode()[node.start_byte : node.end_byte][:60]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert not errors


def test_windows_script_passes_only_real_flags_and_runs_without_admin_rights() -> None:
    source = WINDOWS_SCRIPT.read_text(encoding="utf-8")
    known = {s for action in guest_cli.build_parser()._actions for s in action.option_strings}
    used = set(re.findall(r"""['"](--[a-z][\w.-]*)""", source))
    assert {"--textfile", "--textfile.interval", "--web.listen-address"} <= used
    assert used <= known, f"not flags of hyperv-guest-agent: {used - known}"
    assert "'NT AUTHORITY\\LOCAL SERVICE'" in source and "-RunLevel Limited" in source
    assert "-ExecutionTimeLimit ([TimeSpan]::Zero)" in source, "the default stops the task after 72 hours"
    assert str(guest_cli.DEFAULT_PORT) in source


def test_deployment_doc_covers_the_guest_packaging() -> None:
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    for path in [*SERVICES, TIMER, UDEV_RULE, SYSUSERS, WINDOWS_SCRIPT]:
        assert path.relative_to(REPO).as_posix() in text, path.name
    for needle in ("hyperv-daemons", "linux-cloud-tools", "pipx", "dnf install", "apt install", "windows_exporter",
                   "textfile_inputs", "udevadm trigger", "systemd-sysusers"):  # fmt: skip
        assert needle in text, needle
