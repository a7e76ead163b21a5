"""Config errors name the file, the line and the key; the process exits non-zero before serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hyperv_exporter.host.config import ConfigError, TargetAllowlist, load_config, parse_config, split_target

GOOD = """modules:
  default:
    targets: [hv01.corp.example, "*.hyperv.corp.example", 10.20.0.0/24]
    timeout: 1m30s
    collectors: [vm, kvp]
    winrm:
      username: 'CORP\\svc-hyperv'
      password_file: pw
      ca_file: ca.pem
    kvp:
      keys: [OSName]
      max_value_length: 64
"""


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "pw").write_text("correct horse battery staple\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "hyperv.yml"
    path.write_text(text)
    return str(path)


def test_good_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    module = config.modules["default"]
    assert module.timeout == 90.0
    assert module.collectors == ("vm", "kvp")
    assert module.winrm.scheme == "https" and module.winrm.port == 5986 and module.winrm.transport == "ntlm"
    assert module.winrm.username == "CORP\\svc-hyperv"
    assert module.winrm.password is not None and module.winrm.password.get() == "correct horse battery staple"
    assert module.winrm.ca_file == str(tmp_path / "ca.pem")  # relative to the config file
    assert "correct horse" not in repr(config)
    assert module.endpoint_url("hv01.corp.example") == "https://hv01.corp.example:5986/wsman"
    assert module.endpoint_url("hv01.corp.example:15986") == "https://hv01.corp.example:15986/wsman"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("modules: [a, b]", "hyperv.yml:1: modules: expected a mapping, got a list"),
        (
            "modules:\n  default:\n    targets: [a]\n    winrm: {}\n    timeot: 5s\n",
            "hyperv.yml:5: modules.default.timeot: unknown key",
        ),
        ("modules:\n  default:\n    targets: [a]\n", "modules.default: missing required key 'winrm'"),
        (
            "modules:\n  default:\n    targets: [a]\n    timeout: soon\n    winrm: {password_file: pw, username: u}\n",
            "hyperv.yml:4: modules.default.timeout: expected a duration like 30s",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm:\n      username: u\n      password_file: pw\n      port: 'x'\n",
            "hyperv.yml:7: modules.d.winrm.port: expected an integer",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm:\n      username: u\n      password: hunter2\n",
            "passwords are never written into the config",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm:\n      username: u\n      password_file: missing.txt\n",
            "hyperv.yml:6: modules.d.winrm.password_file: cannot read password file",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm:\n      username: u\n      password_env: HYPERV_TEST_UNSET_VARIABLE\n",
            "environment variable HYPERV_TEST_UNSET_VARIABLE is not set",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm: {scheme: http, transport: basic, username: u, password_file: pw}\n",
            "basic transport over plain http sends the password in clear text",
        ),
        (
            "modules:\n  d:\n    targets: [a]\n    collectors: [vm, disks]\n    winrm: {username: u, password_file: pw}\n",
            "modules.d.collectors[1]: expected one of host, vm",
        ),
        ("modules:\n  d:\n    targets: []\n    winrm: {username: u, password_file: pw}\n", "list at least one target"),
        ("modules:\n  d:\n    targets: [a]\n    winrm: {transport: ntlm}\n", "ntlm transport needs username"),
        (
            "modules:\n  d:\n    targets: ['http://x']\n    winrm: {username: u, password_file: pw}\n",
            "is not a host name or IP address",
        ),
        ("modules:\n  d: {}\n  d: {}\n", "duplicate key 'd'"),
        ("modules:\n  d: [\n", "invalid YAML"),
        (
            "modules:\n  d:\n    targets: [a]\n    winrm: {username: u, password_file: pw}\n    kvp: {max_value_length: 0}\n",
            "modules.d.kvp.max_value_length: must be at least 1",
        ),
    ],
)
def test_bad_configs_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "nope.yml"))
    (tmp_path / "latin1.yml").write_bytes("modules: {}\n# Gr\xfc\xdfe".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(tmp_path / "latin1.yml"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.file", "{bad}"], "modules.default.timeot: unknown key"),
        (["--config.file", "/nonexistent/hyperv.yml"], "cannot read config file"),
        (["--config.file", "{good}", "--web.config.file", "/nonexistent/web.yml"], "web"),
    ],
)
def test_cli_exits_non_zero_before_serving(tmp_path: Path, args: list[str], message: str) -> None:
    good = write(tmp_path, GOOD)
    bad = tmp_path / "bad.yml"
    bad.write_text("modules:\n  default:\n    targets: [a]\n    winrm: {}\n    timeot: 5s\n")
    argv = [a.format(good=good, bad=bad) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "hyperv_exporter", *argv, "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert message in proc.stderr


def test_config_check_flag(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    ok = subprocess.run([sys.executable, "-m", "hyperv_exporter", "--config.file", good, "--config.check"],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0 and "OK" in ok.stdout


def test_target_allowlist() -> None:
    allow = TargetAllowlist.parse(["hv01.corp.example", "*.hyperv.corp.example", "10.20.0.0/24", "fe80::/64"])
    assert allow.allows("HV01.corp.example") and allow.allows("hv01.corp.example:5986")
    assert allow.allows("hv07.hyperv.corp.example") and not allow.allows("hyperv.corp.example.evil.example")
    assert allow.allows("10.20.0.7") and not allow.allows("10.20.1.7")
    assert allow.allows("[fe80::1]:5986") and not allow.allows("hv02.corp.example")


@pytest.mark.parametrize("target", ["", "a b", "user@host", "http://host", "host/path", "host:0", "host:99999", "[::1"])
def test_invalid_targets(target: str) -> None:
    with pytest.raises(ValueError):
        split_target(target)


def test_parse_config_without_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x" * 12)
    config = parse_config(
        "modules:\n  m:\n    targets: [h]\n    winrm: {username: u, password_file: pw}\n", "inline.yml", tmp_path
    )
    assert config.modules["m"].winrm.password is not None
