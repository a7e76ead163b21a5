"""The collection script and the command line that starts it on the host.

``collect.ps1`` is about 8 KB: as ``powershell -EncodedCommand <base64 of UTF-16LE>`` it would
exceed cmd.exe's 8,191-character command line (pywinrm issues #87, #184). So the script travels
once, as an environment variable of the WinRS shell (``rsp:Environment`` in the Create request),
and each probe runs a short loader that turns that variable into a script block::

    & ([ScriptBlock]::Create($env:HYPERV_EXPORTER_SCRIPT)) -Collectors 'vm,kvp' -Gzip

The shell is kept open across probes, so the script is not re-sent on every probe either.

The script reports which copy of it ran (``ScriptVersion``, ``ScriptHash``): on a JEA endpoint it
is the copy registered on the host (``deploy/windows/HyperVExporterEndpoint.ps1``), which can be
older than the exporter's. The hash is the SHA-256 of the script's *canonical* text (LF line ends,
no BOM, the ``$scriptHash`` line's value empty); the exporter stamps it into the text it sends and
the deploy script into the endpoint's function, both computed the same way, so comparing the
reported hash with :func:`script_hash` tells whether the host runs this exporter's script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SCRIPT_ENV = "HYPERV_EXPORTER_SCRIPT"
POWERSHELL = "powershell.exe"
POWERSHELL_ARGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand")
CMD_LINE_LIMIT = 8191  # cmd.exe, which WinRS runs the command through (WINRS_SKIP_CMD_SHELL=FALSE)

_LOADER = "& ([ScriptBlock]::Create($env:" + SCRIPT_ENV + ")) -Collectors '{collectors}'{kvp_keys}{gzip}"
# A single-quoted PowerShell string: PowerShell takes the typographic quotes U+2018..U+201B for "'"
# too, so each of them is doubled like "'" itself.
_QUOTES = "'\u2018\u2019\u201a\u201b"
_QUOTED = "'(?:[^" + _QUOTES + "]|[" + _QUOTES + "]{2})*'"
_LOADER_RE = re.compile(
    r"^& \(\[ScriptBlock\]::Create\(\$env:"
    + SCRIPT_ENV
    + r"\)\) -Collectors '(?P<collectors>[a-z_,]*)'"
    + f"(?: -KvpKeys (?P<kvp_keys>{_QUOTED}(?:,{_QUOTED})*))?"
    + r"(?P<gzip> -Gzip)?$",
    re.DOTALL,
)
_SECTION_NAME = re.compile(r"^[a-z_]+$")
# Keys with control characters are not passed to the host (they would not survive a command line
# intact); such a module filters KVP in the exporter only, as before -KvpKeys existed.
_PLAIN_KEY = re.compile(r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class Invocation:
    """What one run of collect.ps1 is asked for: its parameters."""

    sections: list[str]
    gzip: bool
    kvp_keys: tuple[str, ...] | None = None  # -KvpKeys: only KVP items that may carry these keys


# The stamp line and the version line in collect.ps1 (deploy/windows/HyperVExporterEndpoint.ps1 uses
# the same pattern; keep them in step).
HASH_LINE = re.compile(r"^\$scriptHash = '[0-9a-f]*'$", re.MULTILINE)
_VERSION_LINE = re.compile(r"^\$scriptVersion = '([^']*)'$", re.MULTILINE)
_UNSTAMPED = "$scriptHash = ''"


def canonical_text(text: str) -> str:
    """``text`` as it is hashed: no BOM, LF line ends, the hash stamp emptied."""
    return HASH_LINE.sub(_UNSTAMPED, text.removeprefix("\ufeff").replace("\r\n", "\n"), count=1)


def text_hash(text: str) -> str:
    """The collection script's hash as the script reports it (lower-case hex SHA-256)."""
    return hashlib.sha256(canonical_text(text).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def _shipped_text() -> str:
    text = resources.files("hyperv_exporter.host").joinpath("collect.ps1").read_text(encoding="utf-8")
    return canonical_text(text)


@lru_cache(maxsize=1)
def script_hash() -> str:
    """The hash of this exporter's own collect.ps1."""
    return text_hash(_shipped_text())


@lru_cache(maxsize=1)
def script_version() -> str:
    """The release this exporter's collect.ps1 belongs to (its ``$scriptVersion`` line)."""
    match = _VERSION_LINE.search(_shipped_text())
    return match.group(1) if match else ""


@lru_cache(maxsize=1)
def script_text() -> str:
    """The script as the exporter sends it: LF line ends (XML transport normalises CR LF to LF
    anyway), its own hash stamped in."""
    return HASH_LINE.sub(f"$scriptHash = '{script_hash()}'", _shipped_text(), count=1)


def short_hash(value: str | None) -> str:
    """The first 12 hex digits, as the log, the landing page and the metric label show a hash."""
    return (value or "")[:12]


def outdated_message(version: str | None, reported_hash: str | None) -> str:
    """What the log and the landing page say about a host that ran another copy of collect.ps1."""
    theirs = f"{(version or 'unknown')[:32]} (hash {short_hash(reported_hash) or 'none'})"
    return (
        f"the host ran collection script {theirs}, not this exporter's {script_version()} "
        f"(hash {short_hash(script_hash())}): its JEA endpoint is outdated; update it with "
        "deploy/windows/HyperVExporterEndpoint.ps1 -Update and this release's collect.ps1"
    )


def quote(text: str) -> str:
    """``text`` as a single-quoted PowerShell string literal."""
    for q in _QUOTES:
        text = text.replace(q, q + q)
    return "'" + text + "'"


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub("([" + _QUOTES + "])[" + _QUOTES + "]", r"\1", body)


def host_filterable(kvp_keys: Sequence[str]) -> bool:
    """Whether these keys can be passed to the host as -KvpKeys (see _PLAIN_KEY)."""
    return bool(kvp_keys) and all(_PLAIN_KEY.match(k) for k in kvp_keys)


def loader(sections: Sequence[str], gzip: bool, kvp_keys: Sequence[str] | None = None) -> str:
    for name in sections:
        if not _SECTION_NAME.match(name):
            raise ValueError(f"invalid section name {name!r}")
    keys = ""
    if kvp_keys is not None:
        if not host_filterable(kvp_keys):
            raise ValueError("KVP keys for -KvpKeys must be non-empty and free of control characters")
        keys = " -KvpKeys " + ",".join(quote(k) for k in kvp_keys)
    return _LOADER.format(collectors=",".join(sections), kvp_keys=keys, gzip=" -Gzip" if gzip else "")


def parse_invocation(text: str) -> Invocation | None:
    """The inverse of :func:`loader`; ``None`` for any other PowerShell text."""
    match = _LOADER_RE.match(text.strip())
    if match is None:
        return None
    sections = [s for s in match.group("collectors").split(",") if s]
    keys = match.group("kvp_keys")
    kvp_keys = None if keys is None else tuple(_unquote(k) for k in re.findall(_QUOTED, keys))
    return Invocation(sections, match.group("gzip") is not None, kvp_keys)


def parse_loader(text: str) -> tuple[list[str], bool] | None:
    """(sections, gzip) of a loader; ``None`` for any other PowerShell text."""
    invocation = parse_invocation(text)
    return None if invocation is None else (invocation.sections, invocation.gzip)


def probe_command(sections: Sequence[str], gzip: bool, kvp_keys: Sequence[str]) -> tuple[str, list[str]]:
    """The command a probe runs: with ``-KvpKeys`` (the module's allowlist, filtered on the host)
    whenever the kvp section runs and the keys can travel on the command line."""
    if "kvp" in sections and host_filterable(kvp_keys):
        try:
            return command_line(sections, gzip, kvp_keys)
        except ValueError:
            pass  # hundreds of keys do not fit cmd.exe's line: the exporter filters alone, as before
    return command_line(sections, gzip)


def encode_command(ps: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of the UTF-16LE text."""
    return base64.b64encode(ps.encode("utf-16-le")).decode("ascii")


def decode_command(encoded: str) -> str:
    return base64.b64decode(encoded, validate=True).decode("utf-16-le")


def command_line(sections: Sequence[str], gzip: bool, kvp_keys: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """(command, arguments) for pywinrm's ``run_command``; far below the cmd.exe limit unless a module
    lists hundreds of KVP keys (then ValueError: the caller filters in the exporter instead)."""
    args = [*POWERSHELL_ARGS, encode_command(loader(sections, gzip, kvp_keys))]
    length = len(POWERSHELL) + sum(len(a) + 1 for a in args)
    if length > CMD_LINE_LIMIT:
        raise ValueError(f"command line of {length} characters exceeds cmd.exe's {CMD_LINE_LIMIT}")
    return POWERSHELL, args
