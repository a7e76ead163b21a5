"""NTLM authentication (HTTP ``Negotiate``) and SPNEGO session encryption for the simulated listener.

A Windows WinRM listener offers ``Negotiate``; pywinrm's ``ntlm`` transport (requests_ntlm on
pyspnego) answers the 401 with a raw NTLM NEGOTIATE token, gets a CHALLENGE in the next 401 and
authenticates with an AUTHENTICATE token. NTLM authenticates the *connection*: later requests on
it carry no Authorization header. Over plain HTTP pywinrm then encrypts every message (MS-WSMV
2.2.9.1.1, reference §4.8)::

    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted\\r\\n
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>\\r\\n
    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/octet-stream\\r\\n
    <signature length, 4 bytes LE><signature><sealed message>--Encrypted Boundary--\\r\\n

The acceptor is pyspnego's own (``spnego.server(protocol="ntlm")``), so the client's NTLMv2
responses, session keys, signing and sealing are checked for real. pyspnego's acceptor reads
credentials only from the file that the ``NTLM_USER_FILE`` environment variable names; this module
points that variable at a private file once per process and, under a lock, fills the file with the
endpoint's current users for the AUTHENTICATE step only (so hosts may have different passwords, a
password rotation applies to the next handshake, and the passwords do not rest on disk).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import spnego
from spnego.exceptions import SpnegoError

logger = logging.getLogger(__name__)

ENCRYPTED_PROTOCOL = b"application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = (
    'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'
)
BOUNDARY = b"--Encrypted Boundary"
_HEADER_PART = BOUNDARY + b"\r\n\tContent-Type: " + ENCRYPTED_PROTOCOL + b"\r\n"
_ORIGINAL = b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
_DATA_PART = BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
_END = BOUNDARY + b"--\r\n"
_NTLM_SIGNATURE = b"NTLMSSP\x00"
_NEGOTIATE, _AUTHENTICATE = 1, 3

_store_lock = threading.Lock()
_store: Path | None = None


class NtlmError(Exception):
    """A token or an encrypted message the listener refuses (answered with 401 or 400)."""


def _credential_store() -> Path:
    """The file pyspnego reads NTLM credentials from (created once; caller holds ``_store_lock``)."""
    global _store  # noqa: PLW0603 - one file per process, because pyspnego reads one environment variable
    if _store is None:
        directory = Path(tempfile.mkdtemp(prefix="hyperv-sim-ntlm-"))  # mode 0700
        path = directory / "users"
        path.touch(mode=0o600)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["NTLM_USER_FILE"] = str(path)
        _store = path
    return _store


def _store_lines(users: Mapping[str, str], domain: str) -> str:
    lines = []
    for user, password in users.items():
        # Heimdal format DOMAIN:USER:PASSWORD; pyspnego splits on ':', so such passwords cannot be served.
        if ":" in user or ":" in password or "\n" in password or "\r" in password:
            logger.warning("hyperv-sim: NTLM cannot serve user %s (':' or a line break in the password)", user)
            continue
        lines.append(f":{user}:{password}")  # "monitor"
        lines.append(f"{domain}:{user}:{password}")  # "HV-LONDON-01\\monitor"
    return "\n".join(lines) + "\n"


def message_type(token: bytes) -> int | None:
    if len(token) < 12 or not token.startswith(_NTLM_SIGNATURE):
        return None
    kind: int = struct.unpack("<I", token[8:12])[0]
    return kind


class NtlmConnection:
    """NTLM state of one TCP connection: the handshake, then the authenticated user and session keys."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._context: spnego.ContextProxy | None = None
        self.user: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def step(self, token: bytes, users: Mapping[str, str]) -> bytes | None:
        """Process a client token: the CHALLENGE to send back, or None once the user is authenticated."""
        kind = message_type(token)
        try:
            if kind == _NEGOTIATE:
                self.user = None
                with _store_lock:
                    _credential_store()  # the acceptor refuses to start without the file
                self._context = spnego.server(protocol="ntlm")
                challenge = self._context.step(token)
                if not challenge:
                    raise NtlmError("no NTLM challenge produced")
                return challenge
            if kind == _AUTHENTICATE and self._context is not None:
                with _store_lock:
                    store = _credential_store()
                    store.write_text(_store_lines(users, self.domain), encoding="utf-8")
                    try:
                        self._context.step(token)
                    finally:
                        store.write_text("", encoding="utf-8")  # passwords rest on disk only during the step
                if not self._context.complete:
                    raise NtlmError("NTLM handshake incomplete")
                principal = self._context.client_principal or ""
                self.user = principal.rpartition("\\")[2]
                return None
        except SpnegoError as exc:
            self._context, self.user = None, None
            raise NtlmError(f"NTLM authentication failed: {exc.message}") from None
        self._context, self.user = None, None
        raise NtlmError(f"unexpected NTLM message type {kind}")

    def unwrap(self, body: bytes) -> bytes:
        """The plaintext SOAP message from an encrypted request body; raises NtlmError."""
        if self._context is None or not self.authenticated:
            raise NtlmError("encrypted message on a connection that is not authenticated")
        if not body.startswith(_HEADER_PART + _ORIGINAL) or not body.endswith(_END):
            raise NtlmError("not an HTTP-SPNEGO-session-encrypted message")
        length_text, sep, rest = body[len(_HEADER_PART + _ORIGINAL) : -len(_END)].partition(b"\r\n")
        if not sep or not length_text.isdigit() or not rest.startswith(_DATA_PART):
            raise NtlmError("malformed encrypted message")
        payload = rest[len(_DATA_PART) :]
        if len(payload) < 4:
            raise NtlmError("malformed encrypted message")
        signature_length = struct.unpack("<I", payload[:4])[0]
        signature, sealed = payload[4 : 4 + signature_length], payload[4 + signature_length :]
        try:
            plaintext = self._context.unwrap_winrm(signature, sealed)
        except SpnegoError as exc:
            raise NtlmError(f"cannot decrypt the message: {exc.message}") from None
        if len(plaintext) != int(length_text):
            raise NtlmError("decrypted length does not match OriginalContent")
        return plaintext

    def wrap(self, plaintext: bytes) -> bytes:
        """An encrypted response body for ``plaintext``."""
        if self._context is None:
            raise NtlmError("no NTLM context to encrypt with")
        wrapped = self._context.wrap_winrm(plaintext)
        return (
            _HEADER_PART
            + _ORIGINAL
            + str(len(plaintext)).encode()
            + b"\r\n"
            + _DATA_PART
            + struct.pack("<I", len(wrapped.header))
            + wrapped.header
            + wrapped.data
            + _END
        )
