"""Shared fixtures: tool lookup, the simulated fleet, a running exporter in front of it."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families

from hyperv_exporter.host import cimxml
from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import DEFAULT_KVP_KEYS
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.host.report import decode_output, parse_report
from hyperv_exporter.host.transport.settings import Secret, WinRMSettings
from hyperv_exporter.sim.cost import NO_COST
from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import SIM_WINRM, HostRunner, exporter_config
from hyperv_exporter.web import Handler, WebServer
from hyperv_exporter.web.server import DEFAULT_MAX_CONNECTIONS
from pki import Pki

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("HYPERV_EXPORTER_CI") == "1"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Property tests explore a fixed sequence of examples so a run is reproducible: a failure on CI is a failure
# on every machine. HYPOTHESIS_PROFILE=explore searches fresh random examples (and keeps a local database).
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from the current output")
    parser.addoption(
        "--update-screenshot", action="store_true", help="rewrite docs/images/landing.png from a new screenshot"
    )


def require_tool(name: str) -> str:
    """Path of an external tool (promtool, chronyd, ...). In CI a missing tool fails the test, never skips it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


@pytest.fixture
def demo() -> Iterator[Running]:
    """The exporter in --demo mode on a free loopback port, with its simulated fleet."""
    running = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
    assert running.simulator is not None
    # --demo charges a real host's process start-up (seconds per WinRS probe); tests don't wait for it.
    running.simulator.set_process_cost(NO_COST)
    try:
        yield running
    finally:
        running.stop()


class Stack:
    """A simulated fleet plus an exporter configured from a real config file in front of it."""

    DEFAULT_WINRM = SIM_WINRM + "      max_output_bytes: 8MiB\n"

    def __init__(
        self,
        tmp_path: Path,
        module: str = "",
        extra_modules: str = "",
        flags: tuple[str, ...] = (),
        endpoint_placeholder: bool = False,
        *,
        module_keys: str | None = None,
        winrm: str = DEFAULT_WINRM,
        ssl_context: ssl.SSLContext | None = None,
        allow_unencrypted: bool = True,
        password: str = "S1m-Pa55word-for-tests",  # noqa: S107 - the simulated fleet's test password
    ) -> None:
        """``module`` adds keys to the default module (``module_keys`` replaces them all);
        ``extra_modules`` adds modules (with ``endpoint_placeholder``, ``{url}`` in it is the
        HV-LONDON-01 endpoint); ``winrm`` is the module's ``winrm:`` block (``{password_file}`` is
        filled in)."""
        from hyperv_exporter.sim.fleet import demo_fleet, with_password
        from hyperv_exporter.sim.host import Simulator

        self.password = password
        self.fleet = with_password(demo_fleet(), self.password)
        self.sim = Simulator(self.fleet, ssl_context=ssl_context, allow_unencrypted=allow_unencrypted)
        self.sim.start()
        password_file = tmp_path / "password"
        password_file.write_text(self.password + "\n")
        if endpoint_placeholder:
            extra_modules = extra_modules.format(url=self.sim.url("HV-LONDON-01"))
        if module_keys is None:
            module_keys = f"    cache_ttl: 0s\n    timeout: 10s\n{module}\n"
        self.config_path = tmp_path / "hyperv.yml"
        # Relative to the config file, as an operator would usually write it.
        config = exporter_config(self.sim.urls(), password_file.name, module_keys=module_keys, winrm=winrm)
        self.config_text = config + extra_modules + "\n"
        self.config_path.write_text(self.config_text, encoding="utf-8")
        args = ["--config.file", str(self.config_path), "--web.listen-address", "127.0.0.1:0", *flags]
        try:
            self.running = start(build_parser().parse_args(args))
        except BaseException:
            self.sim.stop()
            raise
        self.url = self.running.server.urls[0]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8")

    def probe(self, target: str, module: str = "default", extra: str = "") -> Samples:
        """Probe and return {(sample name, sorted labels): value}."""
        from urllib.parse import quote

        status, text = self.get(f"/probe?module={quote(module)}&target={quote(target)}{extra}")
        assert status == 200, text
        return samples_of(text)

    def stop(self) -> None:
        self.running.stop()
        self.sim.stop()


def samples_of(text: str) -> Samples:
    """{(sample name, sorted labels): value} of a text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample with this name whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def basic_http_settings(username: str, password: str, **extra: object) -> WinRMSettings:
    """A module's WinRM settings for Basic auth over plain HTTP without message encryption (the
    simulator on loopback); ``extra``: more settings (protocol, caps)."""
    return WinRMSettings(
        scheme="http",
        transport="basic",
        username=username,
        password=Secret(password),
        allow_unencrypted=True,
        message_encryption="never",
        **extra,  # type: ignore[arg-type]
    )


def thousand_vm_result() -> ProbeResult:
    """A probe of one generated 1,000-VM host, all collectors, as the simulator answers it; the first
    two VM names need escaping in every family that carries a name (quotes, backslash, newline)."""
    host = generate_fleet(1, 1000, seed=11).hosts[0]
    host.vms[0].props["Name"] = 'quote " back \\ slash'
    host.vms[1].props["Name"] = "new\nline"
    answer = HostRunner(host).answer(sections_for(tuple(COLLECTORS)), True, 65001)
    report = parse_report(decode_output(answer.stdout, 1 << 27), cimxml.allowlist(DEFAULT_KVP_KEYS, 256))
    now = time.time()
    return ProbeResult(
        "default", host.computer_name, tuple(COLLECTORS), now, 0.5, report=report,
        clock=ClockExchange(now - 0.2, now + 0.1), requests=6,
    )  # fmt: skip


@contextlib.contextmanager
def serving(
    handler: Handler,
    config: Path | None = None,
    addresses: Sequence[str] = ("127.0.0.1:0",),
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Iterator[WebServer]:
    """A WebServer named "test" (on a free loopback port unless ``addresses``), with ``config`` as its
    web config file if given; stopped on the way out."""
    server = WebServer(
        list(addresses),
        handler,
        web_config_file=str(config) if config else None,
        name="test",
        max_connections=max_connections,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fetch(server: WebServer, path: str = "/", context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET ``path`` from the server's first address (over HTTPS with ``context``): status and body."""
    host, port = server.addresses[0]
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


# -- security and resilience fixtures (issue 5) ------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The tests' throw-away CA and certificates (see :class:`pki.Pki`); nothing may change its files."""
    return Pki(tmp_path_factory.mktemp("pki"))


def https_winrm(
    pki: Pki, transport: str = "basic", ca: str | None = "ca", extra: str = "", protocol: str = "winrs"
) -> str:
    """A module's ``winrm:`` block for HTTPS with the test PKI (``ca``: the ca_file's certificate, or none)."""
    lines = [f"      protocol: {protocol}", "      scheme: https", f"      transport: {transport}"]
    if ca is not None:
        lines.append(f"      ca_file: {pki[ca].cert}")
    if transport == "certificate":
        lines += [f"      client_cert_file: {pki.client.cert}", f"      client_key_file: {pki.client.key}"]
    else:
        lines += ["      username: monitor", "      password_file: {password_file}"]
    return "\n".join(lines) + extra


class ConfigurableStack(Stack):
    """Like :class:`Stack`, with the WinRM block, module keys, TLS and the simulator's options chosen by the test.

    ``winrm``: the lines of the module's ``winrm:`` block (6-space indent); ``module``: extra module
    keys (4-space indent). ``{password_file}`` in either is replaced by the password file's path.
    """

    DEFAULT_WINRM = """      protocol: winrs
      scheme: http
      transport: basic
      allow_unencrypted: true
      message_encryption: never
      username: monitor
      password_file: {password_file}
      max_output_bytes: 8MiB"""

    def __init__(
        self,
        tmp_path: Path,
        *,
        winrm: str = DEFAULT_WINRM,
        module: str = "    cache_ttl: 0s\n    timeout: 10s",
        flags: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        allow_unencrypted: bool = True,
        password: str = "S1m-Pa55word-for-tests",  # noqa: S107 - the simulated fleet's test password
    ) -> None:
        super().__init__(
            tmp_path,
            flags=flags,
            module_keys=module + "\n",
            winrm=winrm,
            ssl_context=ssl_context,
            allow_unencrypted=allow_unencrypted,
            password=password,
        )

    @property
    def protocol(self) -> str:
        """The default module's WinRM protocol, as the exporter read its configuration."""
        return self.running.app.config.modules["default"].winrm.protocol

    def debug(self, target: str, module: str = "default") -> str:
        """The probe's debug output (its log and the exposition), for assertion messages."""
        return self.get(f"/probe?module={module}&target={target}&debug=true")[1]


StackFactory = Callable[..., ConfigurableStack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Starts :class:`ConfigurableStack` s (keyword arguments as its own), each in a directory of its
    own, and stops them all after the test."""
    started: list[ConfigurableStack] = []

    def make(**kwargs: Any) -> ConfigurableStack:
        directory = tmp_path / f"stack{len(started)}"
        directory.mkdir()
        stack = ConfigurableStack(directory, **kwargs)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop()
