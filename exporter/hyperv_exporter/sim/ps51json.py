"""JSON exactly as Windows PowerShell 5.1's ``ConvertTo-Json`` writes it.

The simulator answers with the bytes a real host would print, so the exporter's parser is tested
against the real shape, quirks included:

- 5.1 serialises through .NET's JavaScriptSerializer, which escapes ``<``, ``>``, ``&`` and ``'`` as
  ``\\u003c``, ``\\u003e``, ``\\u0026``, ``\\u0027`` (PowerShell issue #7693; gone in PowerShell 6+).
  KVP items, being XML, are full of them.
- Control characters become ``\\b \\f \\n \\r \\t`` or ``\\u00XX``; other non-ASCII text stays literal.
- Without ``-Compress``, 5.1 indents with CR LF line ends, two spaces after the colon, and nested
  values aligned four columns right of their opening bracket (see the reference's TimeSpan
  sample); an empty array is ``[`` newline newline ``]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "'": "\\u0027",
}


_CONTROL = re.compile("[\x00-\x1f]")


def _control(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _string(text: str) -> str:
    # str.replace passes (in C) instead of a Python loop per character: a 1,000-VM document is 12 MB,
    # mostly KVP XML, and the loop made every simulated answer take 0.7 s. The backslash goes first,
    # because the other escapes introduce backslashes.
    text = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )
    if _CONTROL.search(text):
        text = _CONTROL.sub(_control, text)
    return '"' + text + '"'


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return '"NaN"' if math.isnan(value) else ('"Infinity"' if value > 0 else '"-Infinity"')
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))  # JavaScriptSerializer prints 0.0 as 0
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _compact(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_string(str(k))}:{_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return _scalar(value)


def _pretty(value: Any, column: int) -> str:
    """``column`` is where the value's opening bracket sits; children go four columns further."""
    inner = " " * (column + 4)
    if isinstance(value, Mapping):
        if not value:
            return "{\r\n\r\n" + " " * column + "}"
        lines = []
        for key, child in value.items():
            prefix = f"{_string(str(key))}:  "
            lines.append(inner + prefix + _pretty(child, column + 4 + len(prefix)))
        return "{\r\n" + ",\r\n".join(lines) + "\r\n" + " " * column + "}"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            return "[\r\n\r\n" + " " * column + "]"
        return "[\r\n" + ",\r\n".join(inner + _pretty(v, column + 4) for v in value) + "\r\n" + " " * column + "]"
    return _scalar(value)


class _Unsupported(TypeError):
    """A value the fast path leaves to :func:`_compact` (a type other than the JSON ones)."""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_SCALARS = (str, int, bool, type(None))


def _plain(value: Any) -> Any:
    """``value`` with every float as :func:`_scalar` prints it, for the standard library's encoder.

    Only the exact JSON types (a subclass could print differently); anything else raises."""
    kind = type(value)
    if kind is dict:
        return {_key(k): _plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_plain(v) for v in value]
    if kind is float:
        if math.isnan(value) or math.isinf(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")  # strings, as 5.1
        if value.is_integer() and abs(value) < 1e15:
            return int(value)  # JavaScriptSerializer prints 0.0 as 0
        return value  # repr, as _scalar
    if kind in _JSON_SCALARS:
        return value
    raise _Unsupported(kind.__name__)


def _key(key: object) -> str:
    if type(key) is not str:
        raise _Unsupported("key")
    return key


def _fast_compact(value: Any) -> str:
    """:func:`_compact`, with the escaping done by the standard library's C encoder.

    Its escapes are 5.1's (quote, backslash, ``\\b \\f \\n \\r \\t``, other control characters
    as lowercase ``\\u00XX``, everything else literal) except for ``< > & '``, which can only occur
    inside strings and are replaced afterwards. A 1,000-VM document (12 MB) takes 40 ms instead of
    140 ms; tests/test_perf_equivalence.py checks the text is the same.
    """
    text = _ENCODER.encode(_plain(value))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


def dumps(value: Any, compress: bool = True) -> str:
    """``ConvertTo-Json -Compress`` (default) or the indented 5.1 layout."""
    if not compress:
        return _pretty(value, 0)
    try:
        return _fast_compact(value)
    except _Unsupported:
        return _compact(value)
