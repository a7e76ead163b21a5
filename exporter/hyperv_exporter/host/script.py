"""The collection script and the command line that starts it on the host.

``collect.ps1`` is about 8 KB: as ``powershell -EncodedCommand <base64 of UTF-16LE>`` it would
exceed cmd.exe's 8,191-character command line (pywinrm issues #87, #184). So the script travels
once, as an environment variable of the WinRS shell (``rsp:Environment`` in the Create request),
and each probe runs a short loader that turns that variable into a script block::

    & ([ScriptBlock]::Create($env:HYPERV_EXPORTER_SCRIPT)) -Collectors 'vm,kvp' -Gzip

The shell is kept open across probes, so the script is not re-sent on every probe either.
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


@lru_cache(maxsize=1)
def script_text() -> str:
    """The shipped script, with LF line ends (XML transport normalises CR LF to LF anyway)."""
    text = resources.files("hyperv_exporter.host").joinpath("collect.ps1").read_text(encoding="utf-8")
    return text.replace("\r\n", "\n")


def script_digest(text: str | None = None) -> str:
    """SHA-256 of a script text after line-end normalisation; the simulator uses it to recognise ours."""
    return hashlib.sha256((script_text() if text is None else text).replace("\r\n", "\n").encode()).hexdigest()


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
