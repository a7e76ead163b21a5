"""A generated fleet in one process and, optionally, the real exporter in another, wired by a config file."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from benchmarks.common import free_port, python_module, read_json_line, stop, wait_http
from hyperv_exporter.sim.host import exporter_config

PASSWORD_ENV = "HYPERV_BENCH_PASSWORD"  # noqa: S105 - the name of a variable
MODULE = "bench"


class Stack:
    def __init__(
        self,
        workdir: Path,
        hosts: int,
        vms: int,
        *,
        seed: int = 1,
        latency: float = 0.0,
        run_seconds: float = 0.05,
        exporter: bool = True,
        timeout: float = 120.0,
    ) -> None:
        self.workdir = workdir
        self.password = secrets.token_urlsafe(18)
        env = {**os.environ, PASSWORD_ENV: self.password}
        self.sim = python_module(
            "benchmarks.simserver",
            "--hosts", str(hosts), "--vms", str(vms), "--seed", str(seed),
            "--latency", str(latency), "--run-seconds", str(run_seconds), "--password-env", PASSWORD_ENV,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.exporter: subprocess.Popen[str] | None = None
        try:
            self.urls: dict[str, str] = read_json_line(self.sim.stdout, "the simulator")["urls"]
            self.targets = list(self.urls)
            (workdir / "password").write_text(self.password + "\n", encoding="utf-8")
            self.config_path = workdir / "hyperv.yml"
            self.config_path.write_text(self._config(timeout), encoding="utf-8")
            if exporter:
                self.port = free_port()
                self.exporter = python_module(
                    "hyperv_exporter",
                    "--config.file", str(self.config_path),
                    "--web.listen-address", f"127.0.0.1:{self.port}",
                    "--log.level", "error",
                )  # fmt: skip
                self.base = f"http://127.0.0.1:{self.port}"
                wait_http(self.base + "/-/healthy")
        except BaseException:
            self.close()
            raise

    def _config(self, timeout: float) -> str:
        return exporter_config(
            self.urls,
            str(self.workdir / "password"),
            modules=(MODULE,),
            module_keys=f"    cache_ttl: 0s\n    timeout: {timeout:g}s\n",
        )

    def probe_url(self, target: str) -> str:
        return f"{self.base}/probe?module={MODULE}&target={quote(target)}"

    def sim_command(self, line: str) -> Any:
        assert self.sim.stdin is not None
        self.sim.stdin.write(line + "\n")
        self.sim.stdin.flush()
        return json.loads(self.sim.stdout.readline()) if self.sim.stdout else None

    def close(self) -> None:
        if self.exporter is not None:
            stop(self.exporter)
        if self.sim.stdin is not None and self.sim.poll() is None:
            with contextlib.suppress(OSError):
                self.sim.stdin.close()
        stop(self.sim)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
