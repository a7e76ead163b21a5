"""Real Prometheus and Alertmanager processes for the alert/dashboard pipeline tests.

Each server runs as a child process on a free 127.0.0.1 port with its data in a temporary
directory, is waited for until ``/-/ready`` answers, and is killed on ``stop()`` (every class is a
context manager, so a failing test still tears it down). :class:`WebhookReceiver` is an in-process
HTTP server that records what Alertmanager delivers.

Also here: loading the repository's rule files, dashboards and examples, and substituting Grafana
template variables in dashboard queries, because several test modules need the same view of them.

The binaries are Debian's ``prometheus``/``promtool`` and ``prometheus-alertmanager``/``amtool``.
A missing binary fails the test in CI (``HYPERV_EXPORTER_CI=1``, where .ci installs them) and
skips it elsewhere, as ``tests/conftest.py`` does for other tools.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS_DIR = REPO / "alerts"
DASHBOARDS_DIR = REPO / "dashboards"
RUNBOOKS_DIR = REPO / "docs" / "runbooks"
RULE_TESTS_DIR = REPO / "tests" / "rules"
EXAMPLES_DIR = REPO / "examples"
PROMETHEUS_EXAMPLE = EXAMPLES_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER_EXAMPLE = EXAMPLES_DIR / "alertmanager" / "alertmanager.yml"
RUNBOOK_URL_BASE = "docs/runbooks/"
IN_CI = os.environ.get("HYPERV_EXPORTER_CI") == "1"

T = TypeVar("T")


# --- tools ---------------------------------------------------------------------------------------
def require_binary(*names: str) -> str:
    """The first of ``names`` found on PATH (or in /usr/bin, /usr/sbin); fails in CI, skips elsewhere."""
    for name in names:
        path = shutil.which(name) or next(
            (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None
        )
        if path is not None:
            return path
    message = f"none of {', '.join(names)} is installed"
    if IN_CI:
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(f"{message} (CI installs it)")
    raise AssertionError("unreachable")  # pragma: no cover - pytest.skip raises


def prometheus_binary() -> str:
    return require_binary("prometheus")


def promtool_binary() -> str:
    return require_binary("promtool")


def alertmanager_binary() -> str:
    return require_binary("prometheus-alertmanager", "alertmanager")


def amtool_binary() -> str:
    return require_binary("amtool")


def run_tool(args: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: str | Callable[[], str] = "",
) -> T:
    """Call ``probe`` until it returns something other than None/False/empty, or fail after ``timeout``.

    ``on_timeout`` (text, or a function giving it, e.g. a server's log tail) is added to the failure.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (OSError, PromError, ValueError) as exc:  # server not up yet, transient HTTP errors
            last_error = exc
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = on_timeout() if callable(on_timeout) else on_timeout
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}\n{extra}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post(url: str, data: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


# --- server processes ----------------------------------------------------------------------------
class PromError(Exception):
    """The Prometheus HTTP API answered with status "error" (bad query, ...)."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}")
        self.error_type = error_type
        self.error = error


class _Exited(AssertionError):
    """The server process exited while it was expected to start."""


class _ServerProcess:
    """A child process listening on ``127.0.0.1:<port>``, with its output in ``<workdir>/<name>.log``."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 30, attempts: int = 3) -> None:
        """Start and wait for ``/-/ready``; retried on another port if the chosen one was taken meanwhile."""
        for attempt in range(attempts):
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
                )

            def ready() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise _Exited(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")
                status, _ = http_get(f"{self.url}/-/ready", timeout=2)
                return status == 200

            try:
                wait_for(ready, timeout, f"{self.name} on {self.url} to be ready", on_timeout=self.log_tail)
                return
            except _Exited:
                self.stop()
                if "address already in use" not in self.log_tail() or attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Prometheus(_ServerProcess):
    """``prometheus`` with the given configuration (a dict, written as YAML) and a fresh TSDB."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: dict[str, Any], extra_flags: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.extra_flags = extra_flags

    def command(self) -> list[str]:
        return [
            prometheus_binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
            *self.extra_flags,
        ]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            raise PromError("http", f"HTTP {status}: {body[:200]!r}") from None
        if payload.get("status") != "success":
            raise PromError(payload.get("errorType", "unknown"), payload.get("error", repr(payload)))
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; a scalar result becomes one sample without labels."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def firing(self) -> list[dict[str, str]]:
        """Labels of every alert in state firing."""
        return [a["labels"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def reload(self) -> None:
        status, body = http_post(f"{self.url}/-/reload")
        assert status == 200, body


class Alertmanager(_ServerProcess):
    """``alertmanager`` with the given configuration, clustering disabled, state in the work directory."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def command(self) -> list[str]:
        return [
            alertmanager_binary(),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.url}/api/v2/alerts")
        assert status == 200, body
        return list(json.loads(body))


class WebhookReceiver:
    """Records every POST (Alertmanager webhook notifications) as ``(path, parsed JSON body)``."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError:
                    payload = {"unparseable": body.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver.notifications.append((self.path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.notifications)

    def alerts(self, path: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every alert of every notification as ``(path, alert)``; alert has status, labels, annotations."""
        return [
            (p, alert)
            for p, payload in self.received()
            if path is None or p == path
            for alert in payload.get("alerts", [])
        ]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- the repository's rules ----------------------------------------------------------------------
def rule_files() -> list[Path]:
    return sorted(ALERTS_DIR.glob("*.yml"))


def alerting_rules() -> list[tuple[Path, dict[str, Any]]]:
    """Every alerting rule as ``(file, rule)``, in file order."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            found.extend((path, rule) for rule in group["rules"] if "alert" in rule)
    return found


def alert_names() -> list[str]:
    return sorted({rule["alert"] for _, rule in alerting_rules()})


def write_rules_with_for(target_dir: Path, for_: str | None) -> list[Path]:
    """Copies of the shipped rule files with every ``for:`` replaced by ``for_`` (None: removed).

    Only the ``for:`` durations change (the pipeline tests shorten them for speed); expressions,
    labels and annotations are the shipped ones.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                if for_ is None:
                    rule.pop("for", None)
                else:
                    rule["for"] = for_
        out = target_dir / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(out)
    return written


# --- the examples --------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def prometheus_config_for_test(
    *,
    exporter: str,
    hosts: list[str],
    guests: list[str],
    rule_paths: list[Path],
    alertmanager: str | None = None,
    interval: str = "1s",
) -> dict[str, Any]:
    """``examples/prometheus/prometheus.yml`` pointed at the test's servers, with short intervals.

    The example's relabelling is kept as shipped, so the tests prove that it turns a host name
    into ``/probe?target=<host>`` on the exporter with ``instance="<host>"``.
    """
    config: dict[str, Any] = copy.deepcopy(load_yaml(PROMETHEUS_EXAMPLE))
    config["global"] = {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(p) for p in rule_paths]
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    probe = jobs["hyperv"]
    probe.pop("scrape_interval", None)
    probe.pop("scrape_timeout", None)
    probe["static_configs"] = [{"targets": hosts}]
    for relabel in probe["relabel_configs"]:
        if relabel.get("target_label") == "__address__":
            relabel["replacement"] = exporter
    self_job = jobs["hyperv-exporter"]
    self_job.pop("scrape_interval", None)
    self_job["static_configs"] = [{"targets": [exporter]}]
    guest_job = jobs["hyperv-guest"]
    guest_job.pop("scrape_interval", None)
    guest_job["static_configs"] = [{"targets": guests}]
    return config


# --- dashboards ----------------------------------------------------------------------------------
def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


# Built-in Grafana variables as a dashboard in the test would see them: a 1 s scrape interval
# (``$__rate_interval`` = max(4 x scrape interval, interval + scrape interval)) and the last minutes.
GRAFANA_BUILTINS = {
    "__rate_interval": "15s",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "2m",
    "__range_s": "120",
    "__range_ms": "120000",
}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``${name:format}`` as Grafana does (values used verbatim)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3) or match.group(4)
        if name in variables:
            return variables[name]
        if name.isdigit():
            return match.group(0)  # "$1" in label_replace: Grafana leaves unknown names alone
        raise KeyError(f"unknown template variable ${name} in {expr!r}")

    pattern = r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(__\w+)|\$(\w+)"
    return re.sub(pattern, replace, expr)
