"""No credential forwarding through /probe: a target outside the module's allowlist gets 403 (or 400
when it is not a host at all) before any connection. Proven with listeners that record every accept."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from hyperv_exporter.host.cli import Running, build_parser, start
from hyperv_exporter.host.config import Module, TargetAllowlist, _pattern_regex, canonical_host, split_target
from hyperv_exporter.host.transport.settings import WinRMSettings

PASSWORD = "Trap-Pa55word-never-sent"


class RecordingListeners:
    """TCP listeners that accept, record and close every connection."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.accepted: list[tuple[str, int]] = []  # (local address, local port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def listen(self, host: str, port: int = 0) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        self.sockets.append(sock)
        return int(sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select(self.sockets, [], [], 0.05)
            for sock in readable:
                with contextlib.suppress(OSError):
                    conn, _ = sock.accept()
                    local = conn.getsockname()
                    self.accepted.append((str(local[0]), int(local[1])))
                    conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self.sockets:
            sock.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_loopback()


class Trap:
    def __init__(self, tmp_path: Path) -> None:
        self.listeners = RecordingListeners()
        self.port = self.listeners.listen("127.0.0.2")  # the one allowed host:port
        for host in ("127.0.0.1", *(("::1",) if HAVE_IPV6 else ())):
            self.listeners.listen(host, self.port)  # same port elsewhere: reachable only through a bypass
        self.other_port = self.listeners.listen("127.0.0.2")  # another port on the allowed host
        self.listeners.start()
        (tmp_path / "password").write_text(PASSWORD)
        config = tmp_path / "trap.yml"
        config.write_text(
            f"""modules:
  trap:
    targets: ["127.0.0.2:{self.port}", allowed.example, "*.corp.example", 10.99.0.0/16, "fd00:99::/64"]
    timeout: 2s
    cache_ttl: 0s
    winrm:
      scheme: http
      port: 5985
      transport: basic
      allow_unencrypted: true
      message_encryption: never
      username: monitor
      password_file: password
"""
        )
        args = ["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]
        self.running: Running = start(build_parser().parse_args(args))
        self.url = self.running.server.urls[0]

    def probe(self, target: str, *, encode: bool = True) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        value = quote(target, safe="") if encode else target
        try:
            with urllib.request.urlopen(f"{self.url}/probe?module=trap&target={value}", timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        self.running.stop()
        self.listeners.stop()


@pytest.fixture(scope="module")
def trap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trap]:
    t = Trap(tmp_path_factory.mktemp("trap"))
    try:
        yield t
    finally:
        t.stop()


# Targets that would land on a recording listener if the allowlist were bypassed: other loopback
# spellings of the listeners' addresses, another port of the allowed host, names for them.
REFUSED_403 = [
    "127.0.0.1:{port}",
    "localhost:{port}",
    "LOCALHOST.:{port}",
    "127.0.0.2:{other}",  # the allowed host, another port: anyone local there could listen
    "127.0.0.2",  # the allowed host on the module's default port only when listed without a port
    "[::ffff:127.0.0.2]:{port}",  # IPv4-mapped: not the same entry
    "allowed.example.attacker.example:{port}",
    "a.b.corp.example",  # '*' stays inside one label
    "10.98.0.1",
    "10.99.0.1:{port}",  # a network entry allows the module's port only
]
REFUSED_400 = [
    "127.1:{port}",  # inet_aton spellings of 127.0.0.1
    "2130706433:{port}",
    "0x7f000001:{port}",
    "0177.0.0.1:{port}",
    "127.0.0.02:{port}",
    "127.0.0.2:0{port}",  # six digits
    "127.0.0.2:{port}0",
    "127.0.0.2:+{port}",
    "127.0.0.2:{fullwidth}",
    "１２７.0.0.2:{port}",
    "127.0.0.2%3A{port}",  # double-encoded colon: '%' never belongs in a target
    "[fe80::1%25lo]:{port}",
    "fe80::1%lo",
    "monitor@127.0.0.2:{port}",
    "monitor:pw@127.0.0.2:{port}",
    "http://127.0.0.2:{port}",
    "127.0.0.2:{port}/wsman",
    "127.0.0.2:{port}#frag",
    "127.0.0.2:{port}?x=1",
    "127.0.0.2:{port}\\evil",
    "127.0.0.2:{port}\x00",
    "127.0.0.2\r\nX-Injected: 1",
    " 127.0.0.2:{port}",  # surrounding whitespace: refused, not silently stripped (issue 13)
    "127.0.0.2:{port} ",
    "[::1",
    "[::1]x",
    "",
]
if HAVE_IPV6:
    REFUSED_403 += ["[::1]:{port}", "[0:0:0:0:0:0:0:1]:{port}"]


def _fill(template: str, trap: Trap) -> str:
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(trap.port))
    return template.format(port=trap.port, other=trap.other_port, fullwidth=fullwidth)


@pytest.mark.parametrize("template", REFUSED_403)
def test_unlisted_targets_are_refused_before_any_connection(trap: Trap, template: str) -> None:
    target = _fill(template, trap)
    status, body = trap.probe(target)
    assert status == 403, body
    assert "not in the targets allowlist" in body and PASSWORD not in body
    assert trap.listeners.accepted == []


@pytest.mark.parametrize("template", REFUSED_400)
def test_targets_that_are_not_hosts_are_rejected(trap: Trap, template: str) -> None:
    target = _fill(template, trap)
    status, body = trap.probe(target)
    assert status == 400, body
    assert trap.listeners.accepted == []


def test_percent_encoding_is_decoded_once(trap: Trap) -> None:
    encoded = "".join(f"%{b:02X}" for b in f"127.0.0.1:{trap.port}".encode())
    assert trap.probe(encoded, encode=False)[0] == 403  # decoded once: a plain, unlisted target
    assert trap.probe(quote(encoded, safe=""), encode=False)[0] == 400  # decoded once: contains '%'
    assert trap.listeners.accepted == []


def test_the_allowed_target_is_reached_and_only_it(trap: Trap) -> None:
    """The positive control: the listed host:port gets the connection (and fails as a WinRM host)."""
    before = len(trap.listeners.accepted)
    for spelling in (f"127.0.0.2:{trap.port}", f"127.0.0.2.:{trap.port}"):
        status, body = trap.probe(spelling)
        assert status == 200 and "hyperv_up 0.0" in body, body
    accepted = trap.listeners.accepted[before:]
    assert accepted and set(accepted) == {("127.0.0.2", trap.port)}


def test_refusals_are_counted(trap: Trap) -> None:
    import urllib.request

    trap.probe("forbidden.example")
    with urllib.request.urlopen(f"{trap.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'hyperv_exporter_request_errors_total{reason="forbidden"}' in metrics
    assert 'hyperv_exporter_request_errors_total{reason="bad_request"}' in metrics


# -- the allowlist itself ---------------------------------------------------------------------------

ALLOW = TargetAllowlist.parse(
    ["hv01.corp.example", "*.hyperv.corp.example", "hv-?.lab.example", "10.20.0.0/24", "fe80::/64",
     "hv02.corp.example:15986", "[2001:db8::5]:5985"]
)  # fmt: skip


@pytest.mark.parametrize(
    "target",
    [
        "hv01.corp.example",
        "HV01.CORP.EXAMPLE",
        "hv01.corp.example.",
        "hv01.corp.example:5986",
        "hv07.hyperv.corp.example",
        "HV07.HyperV.corp.example.",
        "hv-a.lab.example",
        "10.20.0.7",
        "10.20.0.7:5986",
        "[fe80::1]:5986",
        "fe80::1",
        "FE80:0:0:0:0:0:0:1",
        "hv02.corp.example:15986",
        "[2001:db8:0::5]:5985",
    ],
)
def test_allowed(target: str) -> None:
    assert ALLOW.allows(target, 5986)


@pytest.mark.parametrize(
    "target",
    [
        "hv01.corp.example:5985",  # another port
        "hv01.corp.example.evil.example",
        "x.hv01.corp.example",
        "hyperv.corp.example",
        "a.b.hyperv.corp.example",
        "hv-ab.lab.example",  # '?' is exactly one character
        "10.20.1.7",
        "[fe80::1]:5985",
        "fe81::1",
        "::ffff:10.20.0.7",
        "hv02.corp.example",  # listed only with its port
        "hv02.corp.example:5986",
        "[2001:db8::5]",
    ],
)
def test_not_allowed(target: str) -> None:
    # Each of these is a valid target: refused by the allowlist, not by the parser.
    assert ALLOW.allows(target, 5986) is False


def test_a_wildcard_never_matches_nothing() -> None:
    """``hv-?.lab.example`` does not allow ``hv-.lab.example``: that target is refused as no host
    name at all before the allowlist is asked, so the pattern is checked on its own too."""
    with pytest.raises(ValueError, match="not a host name"):
        ALLOW.allows("hv-.lab.example", 5986)
    assert _pattern_regex("hv-?.lab.example").fullmatch("hv-.lab.example") is None
    assert _pattern_regex("hv-?.lab.example").fullmatch("hv-a.lab.example") is not None


@pytest.mark.parametrize(
    "entry",
    ["", "hv*:5986", "hv[01", "hv/01", "*.corp.example/", "user@host", "hv 01", "hv%01", "10.0.0.1:99999"],
)
def test_bad_allowlist_entries_fail_at_load(entry: str) -> None:
    with pytest.raises(ValueError):
        TargetAllowlist.parse([entry])


def test_star_alone_allows_any_host() -> None:
    anything = TargetAllowlist.parse(["*"])
    assert anything.allows("a.b.c.example") and anything.allows("10.0.0.1") and anything.allows("::1")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("HV01.Corp.Example.", ("HV01.Corp.Example", None)),
        ("10.0.0.1:5986", ("10.0.0.1", 5986)),
        ("[fe80::1]:5986", ("fe80::1", 5986)),
        ("fe80::1", ("fe80::1", None)),
        ("hv-01", ("hv-01", None)),
        ("3com.example", ("3com.example", None)),
    ],
)
def test_split_target(target: str, expected: tuple[str, int | None]) -> None:
    assert split_target(target) == expected


def test_canonical_forms() -> None:
    assert canonical_host("FE80:0::1") == "fe80::1"
    assert canonical_host("HV01.Example.") == "hv01.example"
    module = Module(
        name="m",
        targets=ALLOW,
        winrm=WinRMSettings(),
        endpoints={"hv01.corp.example": "https://10.0.0.1:5986/wsman"},
    )
    for spelling in ("HV01.corp.example", "hv01.corp.example.", "hv01.corp.example:5986"):
        assert module.endpoint_url(spelling) == "https://10.0.0.1:5986/wsman"
    assert module.endpoint_url("hv01.corp.example:15986") == "https://hv01.corp.example:15986/wsman"
    assert module.endpoint_url("[fe80::1]") == "https://[fe80::1]:5986/wsman"
