"""Logging in the Prometheus exporter style: ``--log.level`` and ``--log.format`` (logfmt or json).

Every handler gets a :class:`SecretRedactor`: any string registered with :func:`register_secret`
(passwords read from files or the environment) is replaced by ``<secret>`` in every record,
whatever code path formatted it. This is defence in depth; code must still never log secrets.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
FORMATS = ("logfmt", "json")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
REDACTED = "<secret>"

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


def register_secret(value: str) -> None:
    """Remember a secret so that it is redacted from every log line (ignores very short strings)."""
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` by ``<secret>``."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for structured fields, including names LogRecord reserves (``module``, ``name``)."""
    return {"kv": values}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key == "kv" and isinstance(value, dict):
            result.update(value)
        elif key not in _STANDARD_ATTRS and not key.startswith("_"):
            result[key] = value
    if record.exc_info:
        result["err_trace"] = logging.Formatter().formatException(record.exc_info)
    return result


# Characters no log line may carry raw: C0 and C1 controls, DEL, line and paragraph separators, and
# the bidi and zero-width controls that make a terminal or viewer show something else than is there.
# A client controls the request line and a host controls its error texts, and both reach the log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NEEDS_QUOTES = re.compile(r'[ ="\\]')
_LOGFMT_ESCAPED = re.compile(r'[\\"]|' + _CONTROL.pattern)
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    # \uXXXX as in JSON: what go-logfmt and Loki's logfmt parser decode.
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text) or _CONTROL.search(text):
        text = '"' + _LOGFMT_ESCAPED.sub(_escape_char, text) + '"'
    return text


def _logfmt_key(key: str) -> str:
    return re.sub(r"[^\w.-]", "_", key) or "_"


def _json_escape_controls(text: str) -> str:
    """``json.dumps`` escapes C0 controls only; escape the rest as ``\\uXXXX`` (inside strings, the
    only place such characters can be in JSON text)."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Redacted before escaping, so that a secret with a quote or backslash in it is still found.
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(redact(str(v)))}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: redact(v) if isinstance(v, str) else v for k, v in _fields(record).items()}
        return _json_escape_controls(redact(json.dumps(fields, default=str, ensure_ascii=False)))


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Configure the root logger once for a command-line program."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of {', '.join(FORMATS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JSONFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # Third-party libraries are noisy at debug level and may log request bodies; keep them at warning.
    for noisy in ("urllib3", "requests", "requests_ntlm", "spnego", "winrm"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
