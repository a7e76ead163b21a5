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
from functools import lru_cache
from importlib import resources

SCRIPT_ENV = "HYPERV_EXPORTER_SCRIPT"
POWERSHELL = "powershell.exe"
POWERSHELL_ARGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand")
CMD_LINE_LIMIT = 8191  # cmd.exe, which WinRS runs the command through (WINRS_SKIP_CMD_SHELL=FALSE)

_LOADER = "& ([ScriptBlock]::Create($env:" + SCRIPT_ENV + ")) -Collectors '{collectors}'{gzip}"
_LOADER_RE = re.compile(
    r"^& \(\[ScriptBlock\]::Create\(\$env:"
    + SCRIPT_ENV
    + r"\)\) -Collectors '(?P<collectors>[a-z_,]*)'(?P<gzip> -Gzip)?$"
)
_SECTION_NAME = re.compile(r"^[a-z_]+$")


@lru_cache(maxsize=1)
def script_text() -> str:
    """The shipped script, with LF line ends (XML transport normalises CR LF to LF anyway)."""
    text = resources.files("hyperv_exporter.host").joinpath("collect.ps1").read_text(encoding="utf-8")
    return text.replace("\r\n", "\n")


def script_digest(text: str | None = None) -> str:
    """SHA-256 of a script text after line-end normalisation; the simulator uses it to recognise ours."""
    return hashlib.sha256((script_text() if text is None else text).replace("\r\n", "\n").encode()).hexdigest()


def loader(sections: Sequence[str], gzip: bool) -> str:
    for name in sections:
        if not _SECTION_NAME.match(name):
            raise ValueError(f"invalid section name {name!r}")
    return _LOADER.format(collectors=",".join(sections), gzip=" -Gzip" if gzip else "")


def parse_loader(text: str) -> tuple[list[str], bool] | None:
    """The inverse of :func:`loader`; ``None`` for any other PowerShell text."""
    match = _LOADER_RE.match(text.strip())
    if match is None:
        return None
    sections = [s for s in match.group("collectors").split(",") if s]
    return sections, match.group("gzip") is not None


def encode_command(ps: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of the UTF-16LE text."""
    return base64.b64encode(ps.encode("utf-16-le")).decode("ascii")


def decode_command(encoded: str) -> str:
    return base64.b64decode(encoded, validate=True).decode("utf-16-le")


def command_line(sections: Sequence[str], gzip: bool) -> tuple[str, list[str]]:
    """(command, arguments) for pywinrm's ``run_command``; always far below the cmd.exe limit."""
    args = [*POWERSHELL_ARGS, encode_command(loader(sections, gzip))]
    length = len(POWERSHELL) + sum(len(a) + 1 for a in args)
    if length > CMD_LINE_LIMIT:  # only possible with an absurd number of sections
        raise ValueError(f"command line of {length} characters exceeds cmd.exe's {CMD_LINE_LIMIT}")
    return POWERSHELL, args
