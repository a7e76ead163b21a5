"""The NTP servers the system itself is configured with, read from chrony, timesyncd and ntpd files.

Used when no ``--ntp.server`` is given, so that by default the agent compares the guest clock with
the same servers its time daemon uses (it measures them independently over SNTP). Only the files
are read: no daemon is contacted. Runtime-only sources (DHCP-provided servers, timesyncd's
compiled-in fallback list) are not known from files and are not included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from hyperv_exporter.guest.ntp import DEFAULT_PORT, NtpServer, parse_server
from hyperv_exporter.guest.rootfs import Root

log = logging.getLogger(__name__)

CHRONY_CONFS: Final = ("/etc/chrony/chrony.conf", "/etc/chrony.conf")
NTPD_CONFS: Final = ("/etc/ntpsec/ntp.conf", "/etc/ntp.conf")
TIMESYNCD_CONF: Final = "/etc/systemd/timesyncd.conf"
TIMESYNCD_DROPIN_DIRS: Final = (
    "/usr/lib/systemd/timesyncd.conf.d",
    "/usr/local/lib/systemd/timesyncd.conf.d",
    "/run/systemd/timesyncd.conf.d",
    "/etc/systemd/timesyncd.conf.d",
)
_MAX_FILES: Final = 64  # include/confdir globs are bounded: a config is not a file-system walk
_MAX_FILE_BYTES: Final = 256 * 1024


def _lines(root: Root, absolute: str) -> list[str]:
    text = root.read_text(absolute, limit=_MAX_FILE_BYTES)
    return [] if text is None else text.splitlines()


def _glob(root: Root, pattern: str) -> list[str]:
    """Absolute guest paths matching ``pattern`` (itself an absolute guest path), sorted."""
    if not pattern.startswith("/"):
        return []
    try:
        matches = sorted(root.path.glob(pattern.lstrip("/")))[:_MAX_FILES]
    except (OSError, ValueError):
        return []
    return ["/" + str(m.relative_to(root.path)) for m in matches]


def _server_from_words(words: list[str], port_option: str | None) -> NtpServer | None:
    """``server HOST [options]`` -> NtpServer, honouring chrony's ``port N`` option."""
    if len(words) < 2:
        return None
    host = words[1]
    port = DEFAULT_PORT
    if port_option is not None and port_option in words[2:]:
        index = words.index(port_option, 2)
        if index + 1 < len(words) and words[index + 1].isdigit():
            port = int(words[index + 1])
    try:
        server = parse_server(host)
    except ValueError:
        return None
    return NtpServer(server.host, port if port != DEFAULT_PORT else server.port)


def chrony_servers(root: Root) -> list[NtpServer]:
    """``server``/``pool`` lines from chrony.conf and the files it pulls in.

    Follows ``include`` (glob), ``confdir`` (``*.conf`` in each directory, chrony's own rule) and
    ``sourcedir`` (``*.sources``), as Debian and Ubuntu split their configuration that way.
    ``peer`` (symmetric mode) and ``refclock`` lines are not client/server NTP sources.
    """
    servers: list[NtpServer] = []
    seen: set[str] = set()

    def visit(path: str, depth: int) -> None:
        if path in seen or depth > 4 or len(seen) >= _MAX_FILES:
            return
        seen.add(path)
        for line in _lines(root, path):
            words = line.split()
            if not words or words[0][0] in "#!;%":
                continue
            directive = words[0].lower()
            if directive in ("server", "pool"):
                server = _server_from_words(words, "port")
                if server is not None:
                    servers.append(server)
            elif directive == "include" and len(words) > 1:
                for match in _glob(root, words[1]):
                    visit(match, depth + 1)
            elif directive in ("confdir", "sourcedir"):
                suffix = ".conf" if directive == "confdir" else ".sources"
                for directory in words[1:]:
                    for match in _glob(root, directory.rstrip("/") + "/*" + suffix):
                        visit(match, depth + 1)

    for conf in CHRONY_CONFS:
        visit(conf, 0)
    return servers


def ntpd_servers(root: Root) -> list[NtpServer]:
    """``server``/``pool`` lines of ntpd or ntpsec; 127.127.t.u pseudo-addresses are refclocks."""
    servers: list[NtpServer] = []
    for conf in NTPD_CONFS:
        for line in _lines(root, conf):
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0].lower() in ("server", "pool") and not words[1].startswith("127.127."):
                server = _server_from_words(words, None)
                if server is not None:
                    servers.append(server)
    return servers


def _ini_values(lines: Iterable[str], section: str, key: str) -> Iterator[str | None]:
    """Values of ``key=`` in ``[section]``; None for an empty assignment (systemd: reset the list)."""
    current = ""
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            continue
        if current != section or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if name.strip() == key:
            yield value.strip() or None


def timesyncd_servers(root: Root) -> list[NtpServer]:
    """systemd-timesyncd's ``NTP=`` (or, when that is empty, ``FallbackNTP=``) after drop-ins.

    Drop-ins are applied in file-name order across the directories, later ones overriding, and an
    empty assignment resets the list (systemd.syntax(7)).
    """
    files = [TIMESYNCD_CONF]
    dropins: dict[str, str] = {}
    for directory in TIMESYNCD_DROPIN_DIRS:
        for match in _glob(root, directory + "/*.conf"):
            dropins[Path(match).name] = match  # a later directory overrides a same-named drop-in
    files += [dropins[name] for name in sorted(dropins)]
    lists: dict[str, list[str]] = {"NTP": [], "FallbackNTP": []}
    for path in files:
        lines = _lines(root, path)
        for key, values in lists.items():
            for value in _ini_values(lines, "Time", key):
                if value is None:
                    values.clear()
                else:
                    values.extend(value.split())
    names = lists["NTP"] or lists["FallbackNTP"]
    servers = []
    for name in names:
        try:
            servers.append(parse_server(name))
        except ValueError:
            continue
    return servers


def system_servers(root: Root, limit: int) -> list[NtpServer]:
    """All configured servers, de-duplicated in order, capped at ``limit`` (each one is a label value)."""
    found: list[NtpServer] = []
    for source in (chrony_servers, timesyncd_servers, ntpd_servers):
        try:
            found.extend(source(root))
        except OSError as exc:
            log.warning("could not read NTP configuration", extra={"source": source.__name__, "err": str(exc)})
    unique = list(dict.fromkeys(found))
    if len(unique) > limit:
        log.warning(
            "more configured NTP servers than --ntp.max-servers; using the first ones",
            extra={"found": len(unique), "limit": limit},
        )
    return unique[:limit]
