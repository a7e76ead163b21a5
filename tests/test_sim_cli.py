"""hyperv-sim as a process: prints one URL per host, refuses to start without passwords."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import winrm
from winrm.exceptions import WinRMError


def test_hyperv_sim_serves_the_demo_fleet(tmp_path: Path) -> None:
    env = {**os.environ, "HYPERV_SIM_PASSWORD": "sim-test-password"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(4)]
        urls = dict(lines)
        assert set(urls) == {"HV-BERLIN-01", "HV-LONDON-01", "HV-DUBLIN-01", "HV-LEGACY-01"}
        session = winrm.Session(
            urls["HV-LONDON-01"],
            auth=("monitor", "sim-test-password"),
            transport="basic",
            server_cert_validation="ignore",
        )
        # The built-in fleet's account is the least-privilege one: WinRS cmd shells are for administrators.
        with pytest.raises(WinRMError, match="Access is denied"):
            session.run_cmd("hostname")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "sim-test-password" not in (proc.stderr.read() if proc.stderr else "")


def test_hyperv_sim_writes_a_working_exporter_config(tmp_path: Path) -> None:
    """hyperv-sim in one process, hyperv-exporter in another, joined by --exporter-config."""
    (tmp_path / "pw").write_text("sim-test-password\n")
    config = tmp_path / "hyperv.yml"
    sim = subprocess.Popen(
        [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())",
         "--password-file", str(tmp_path / "pw"), "--exporter-config", str(config)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # the config is written before the first URL is printed
        from hyperv_exporter.host.config import load_config

        module = load_config(str(config)).modules["default"]
        assert module.targets.allows("HV-DUBLIN-01") and not module.targets.allows("evil.example")
        assert module.winrm.password is not None and module.winrm.password.get() == "sim-test-password"
        assert (module.winrm.protocol, module.winrm.configuration_name) == ("psrp", "HyperVExporter")
        from hyperv_exporter.host.cli import build_parser, start

        running = start(
            build_parser().parse_args(["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"])
        )
        try:
            import urllib.request

            url = running.server.urls[0] + "/probe?module=default&target=HV-DUBLIN-01"
            with urllib.request.urlopen(url, timeout=30) as response:
                assert "hyperv_up 1.0" in response.read().decode()
        finally:
            running.stop()
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def test_hyperv_sim_without_password_or_with_bad_fleet_exits_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYPERV_SIM_PASSWORD"}
    run = [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())"]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1 and "no password for HV-BERLIN-01" in proc.stderr
    bad = tmp_path / "fleet.yml"
    bad.write_text("hosts:\n  - ComputerName: X\n    VMs:\n      - {Name: a, Id: b, State: Runnin}\n")
    proc = subprocess.run(
        [*run, "--fleet.file", str(bad)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "fleet.yml:4: hosts[0].VMs[0].State: expected one of Other, Running" in proc.stderr


def test_hyperv_sim_serves_a_generated_fleet(tmp_path: Path) -> None:
    """--fleet.generate HOSTSxVMS: the benchmarks' fleet from the command line, probed by the exporter."""
    (tmp_path / "pw").write_text("sim-test-password\n")
    config = tmp_path / "hyperv.yml"
    sim = subprocess.Popen(
        [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())",
         "--fleet.generate", "2x30", "--fleet.seed", "7", "--password-file", str(tmp_path / "pw"),
         "--exporter-config", str(config)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        urls = dict(sim.stdout.readline().split() for _ in range(2))
        assert set(urls) == {"HV-GEN-0000", "HV-GEN-0001"}
        from hyperv_exporter.host.collectors import COLLECTORS
        from hyperv_exporter.host.config import load_config
        from hyperv_exporter.host.probe import Prober
        from hyperv_exporter.host.selfmetrics import ExporterMetrics

        module = load_config(str(config)).modules["default"]
        prober = Prober(ExporterMetrics(), tuple(COLLECTORS))
        try:
            result = prober.probe(module, "HV-GEN-0001", 30.0)
        finally:
            prober.stop()
        assert result.ok and result.report is not None, result.message
        assert len(result.report.vms) == 30 and not result.report.problems
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def test_hyperv_sim_refuses_a_bad_fleet_size() -> None:
    for bad in (["--fleet.generate", "100"], ["--fleet.generate", "0x5"], ["--fleet.generate", "1x2", "--fleet.file", "x"]):
        proc = subprocess.run(
            [sys.executable, "-c", "from hyperv_exporter.sim.cli import main; raise SystemExit(main())", *bad],
            capture_output=True, text=True, env={**os.environ, "HYPERV_SIM_PASSWORD": "x"}, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and "fleet" in proc.stderr, bad
