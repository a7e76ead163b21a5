"""What powershell.exe writes to stderr over WinRS, and console code pages.

``powershell -encodedcommand`` run through WinRS detects that its stderr is redirected and serializes
error records as CLIXML: the line ``#< CLIXML`` then one ``<Objs>`` document in which every console row of
the formatted error is an ``<S S="Error">`` element ending in ``_x000D__x000A_`` (reference §4.6, pywinrm's
``get_ps_output_response`` fixture). pywinrm's ``Session.run_ps`` turns that back into text with
``_clean_error_msg``; the exporter's own client has to do the same.
"""

from __future__ import annotations

import codecs
from xml.sax.saxutils import escape

CLIXML_PREFIX = b"#< CLIXML\r\n"
_OBJS_OPEN = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
_CRLF = "_x000D__x000A_"

#: Defaults reproduce ``Write-Error "Error"`` byte for byte (pywinrm fixture, reference §4.3/§4.6).
DEFAULT_CATEGORY_INFO = "NotSpecified: (:) [Write-Error], WriteErrorException"
DEFAULT_ERROR_ID = "Microsoft.PowerShell.Commands.WriteErrorException"

# The console host wraps error rows longer than 78 characters: the row is cut after 78 characters plus a
# trailing blank and continues on rows indented by three blanks. Derived from the fixture, where a
# 79-character row ("...WriteErrorException") becomes "...WriteErrorExceptio " + "   n".
_ROW = 78
_INDENT = "   "


def console_codec(codepage: int) -> str:
    """Python codec for a WINRS_CODEPAGE value (437 is WinRS's default; 65001 is UTF-8)."""
    if codepage == 65001:
        return "utf-8"
    if codepage == 1200:
        return "utf-16-le"
    name = f"cp{codepage}"
    try:
        codecs.lookup(name)
    except LookupError:
        return "ascii"
    return name


def encode_console(text: str, codepage: int) -> bytes:
    """Text as a console program writes it in ``codepage``; unmappable characters become ``?``."""
    return text.encode(console_codec(codepage), errors="replace")


def _wrap(row: str) -> list[str]:
    if len(row) <= _ROW:
        return [row]
    rows = [row[:_ROW] + " "]
    rest = row[_ROW:]
    width = _ROW - len(_INDENT)
    while len(rest) > width:
        rows.append(_INDENT + rest[:width] + " ")
        rest = rest[width:]
    rows.append(_INDENT + rest)
    return rows


def _clixml_text(text: str) -> str:
    # PowerShell's serializer escapes XML metacharacters, encodes control characters as _xHHHH_ and
    # protects a literal "_x" so it is not read back as an escape.
    out = escape(text.replace("_x", "_x005F_x"))
    return "".join(f"_x{ord(ch):04X}_" if ord(ch) < 0x20 else ch for ch in out)


def clixml_error(
    message: str,
    *,
    category_info: str = DEFAULT_CATEGORY_INFO,
    error_id: str = DEFAULT_ERROR_ID,
    codepage: int = 437,
) -> bytes:
    """stderr bytes of a PowerShell error record as powershell.exe writes them over WinRS.

    ``message`` is the first part of the record (for ``Write-Error`` from a script that is
    ``'<invocation> : <text>'``, e.g. ``'Write-Error "Error" : Error'``; for ``throw`` just the text).
    pywinrm's ``_clean_error_msg`` decodes the result to ``message`` followed by the CategoryInfo and
    FullyQualifiedErrorId rows. Encoded in the console code page, like the real thing (pass the shell's
    ``codepage``; 437 mangles characters outside that code page to ``?``).
    """
    rows = [*(message.splitlines() or [""])]
    rows.append(f"    + CategoryInfo          : {category_info}")
    rows.append(f"    + FullyQualifiedErrorId : {error_id}")
    rows.append(" ")
    elements = "".join(f'<S S="Error">{_clixml_text(piece)}{_CRLF}</S>' for row in rows for piece in _wrap(row))
    return CLIXML_PREFIX + encode_console(f"{_OBJS_OPEN}{elements}</Objs>", codepage)
