"""Server-side TLS: an ``ssl.SSLContext`` from a parsed ``tls_server_config``, and the client SAN allowlist.

A context is built once per (re)load and used to wrap each accepted connection, so rotated
certificates take effect on the next connection without a restart.
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .config import CIPHER_SUITES, CURVES, TLSServerConfig, WebConfigError

_VERSIONS = {  # TLS10 and TLS11 are refused by the config parser
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_Fail = Callable[[str, str], WebConfigError]

_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


def build_ssl_context(cfg: TLSServerConfig, source: str) -> ssl.SSLContext:
    """Build the server context, loading every file; errors name ``source`` (the web config) and the key."""

    def fail(key: str, message: str) -> WebConfigError:
        return WebConfigError(f"web config {source}: tls_server_config.{key}: {message}")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.maximum_version = _VERSIONS[cfg.max_version]
    # Client-initiated renegotiation (TLS 1.2) only serves to burn server CPU.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if not cfg.prefer_server_cipher_suites:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12_ciphers = [name for name in (CIPHER_SUITES[c] for c in cfg.cipher_suites) if name]
    if tls12_ciphers:
        try:
            ctx.set_ciphers(":".join(tls12_ciphers))
        except ssl.SSLError:
            raise fail("cipher_suites", "none of the listed suites is available in this OpenSSL build") from None
    if cfg.curve_preferences:
        try:
            ctx.set_ecdh_curve(CURVES[cfg.curve_preferences[0]])
        except (ValueError, ssl.SSLError):
            raise fail(
                "curve_preferences", f"{cfg.curve_preferences[0]} is not available in this OpenSSL build"
            ) from None

    _load_cert_chain(ctx, cfg, fail)

    ctx.verify_mode = _VERIFY_MODES[cfg.client_auth_type]
    if cfg.client_ca_file:
        _require_readable(cfg.client_ca_file, "client_ca_file", fail)
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        except ssl.SSLError:
            raise fail("client_ca_file", f"{cfg.client_ca_file} contains no PEM certificate") from None
        except OSError as exc:
            raise fail("client_ca_file", f"cannot read {cfg.client_ca_file}: {exc.strerror}") from None
    elif cfg.client_ca:
        try:
            ctx.load_verify_locations(cadata=cfg.client_ca)
        except (ssl.SSLError, ValueError):
            raise fail("client_ca", "contains no PEM certificate") from None
    return ctx


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise WebConfigError("encrypted private keys are not supported")


def _require_readable(path: str, key: str, fail: _Fail) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL in a path built without the parser
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(key, f"cannot read {path}: {reason}") from None


def _load_cert_chain(ctx: ssl.SSLContext, cfg: TLSServerConfig, fail: _Fail) -> None:
    if cfg.cert_file:
        _require_readable(cfg.cert_file, "cert_file", fail)
    if cfg.key_file:
        _require_readable(cfg.key_file, "key_file", fail)
    what = f"cert_file {cfg.cert_file}" if cfg.cert_file else "the inline cert"
    what += f" and key_file {cfg.key_file}" if cfg.key_file else " and the inline key"
    # ssl loads certificates only from files: inline PEM goes through a private temporary directory
    # (mode 0700), removed as soon as it is loaded.
    tmp = tempfile.mkdtemp(prefix="hyperv-web-tls-") if (cfg.cert or cfg.key) else None
    try:
        cert_path, key_path = cfg.cert_file, cfg.key_file
        if tmp is not None and cfg.cert:
            cert_path = str(Path(tmp, "cert.pem"))
            Path(cert_path).write_text(cfg.cert, encoding="utf-8")
        if tmp is not None and cfg.key:
            key_path = str(Path(tmp, "key.pem"))
            Path(key_path).touch(mode=0o600)
            Path(key_path).write_text(cfg.key, encoding="utf-8")
        try:
            ctx.load_cert_chain(cert_path, key_path, password=_refuse_password)
        except WebConfigError as exc:
            raise fail("key_file" if cfg.key_file else "key", f"{exc} ({what})") from None
        except ssl.SSLError as exc:
            # exc.reason is OpenSSL's short code (KEY_VALUES_MISMATCH, PEM_LIB, ...); never the PEM itself.
            reason = exc.reason or "invalid PEM"
            raise fail("cert_file" if cfg.cert_file else "cert", f"cannot load {what}: {reason}") from None
        except OSError as exc:  # e.g. a file removed since _require_readable()
            raise fail("cert_file" if cfg.cert_file else "cert", f"cannot read {what}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _normalise_san(value: str) -> str:
    # OpenSSL prints IPv6 SANs expanded and upper-case, Go compacts them; compare canonical forms.
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


def peer_sans(peer_cert: dict[str, Any] | None) -> list[str]:
    """DNS, IP, e-mail and URI SANs of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    if not peer_cert:
        return []
    names: Iterable[tuple[str, str]] = peer_cert.get("subjectAltName", ())
    return [_normalise_san(value) for kind, value in names if kind in ("DNS", "IP Address", "email", "URI")]


def san_allowed(peer_cert: dict[str, Any] | None, allowed: Iterable[str]) -> bool:
    """True when any SAN of the peer certificate is exactly one of ``allowed`` (the toolkit's rule)."""
    wanted = {_normalise_san(a) for a in allowed}
    return any(san in wanted for san in peer_sans(peer_cert))
