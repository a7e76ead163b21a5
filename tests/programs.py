"""A program started from its real command line for a test (the exporter, the guest agent): on a free
loopback port, its output in a log file, stopped with SIGTERM as a service manager would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from promstack import free_port


class ServedProgram:
    """``argv`` run in ``directory`` with ``--web.listen-address`` on a free port, its output in
    ``directory / log_name``; returns once the port accepts connections."""

    def __init__(self, argv: list[str], directory: Path, log_name: str) -> None:
        self.port = free_port()
        self.log = directory / log_name
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*argv, "--web.listen-address", f"127.0.0.1:{self.port}"],
            cwd=directory, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "did not start listening"
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
