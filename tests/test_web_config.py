"""The web config file: parsing, the toolkit's rules, and error messages (no certificates involved)."""

from __future__ import annotations

import contextlib
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperv_exporter.web import WebConfigError, load_web_config
from hyperv_exporter.web.config import (
    CIPHER_SUITES,
    CURVES,
    TLS_VERSIONS,
    parse_go_duration,
    parse_web_config,
    read_web_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "web"
CAROL_HASH = "$2y$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu"


def parse(text: str, path: str = "/etc/hyperv/web.yml") -> Any:
    return parse_web_config(textwrap.dedent(text), path)


def error_of(text: str, path: str = "/etc/hyperv/web.yml") -> str:
    with pytest.raises(WebConfigError) as info:
        parse(text, path)
    return str(info.value)


def test_empty_file_means_no_tls_and_no_auth(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("")
    config = load_web_config(str(path))
    assert config.tls is None
    assert config.basic_auth_users == {}
    assert config.rate_limit is None
    assert dict(config.http.headers) == {}


def test_comment_only_and_null_sections_are_empty() -> None:
    config = parse("# nothing\ntls_server_config:\nbasic_auth_users:\nhttp_server_config:\n")
    assert config.tls is None
    assert config.basic_auth_users == {}


def test_toolkit_sample_parses() -> None:
    config = read_web_config(str(FIXTURES / "toolkit-web-config.yml"))
    assert config.tls is not None
    # Relative paths resolve against the config file's directory, not the working directory.
    assert config.tls.cert_file == str(FIXTURES / "server.crt")
    assert config.tls.key_file == str(FIXTURES / "server.key")
    assert config.tls.min_version == "TLS12"
    assert config.tls.client_auth_type == "NoClientCert"
    assert config.users == ("alice", "bob")
    assert config.basic_auth_users["alice"].startswith("$2y$10$")


def test_toolkit_users_and_headers_samples_parse() -> None:
    users = read_web_config(str(FIXTURES / "toolkit-users-notls.yml"))
    assert users.tls is None
    assert users.users == ("alice", "bob", "carol", "dave")
    headers = read_web_config(str(FIXTURES / "toolkit-headers.yml"))
    assert headers.http.headers["X-XSS-Protection"] == "1"  # an int in YAML, a string in Go's yaml.v2
    assert headers.http.headers["X-Frame-Options"] == "deny"
    assert len(headers.http.headers) == 5


def test_unknown_top_level_key_names_key_and_line() -> None:
    message = error_of(
        """\
        basic_auth_users: {}
        basic_auth_excluded_paths: [/-/healthy]
        """
    )
    assert "/etc/hyperv/web.yml" in message
    assert "'basic_auth_excluded_paths'" in message
    assert "line 2" in message


def test_unknown_nested_key_names_its_path() -> None:
    message = error_of(
        """\
        tls_server_config:
          cert_file: a.crt
          key_file: a.key
          cert_fiel: b.crt
        """
    )
    assert "tls_server_config.cert_fiel" in message
    assert "line 4" in message


def test_duplicate_key_is_an_error() -> None:
    assert "duplicate key" in error_of("rate_limit: {}\nrate_limit: {}\n")


def test_bad_hash_names_user_but_not_the_value() -> None:
    message = error_of("basic_auth_users:\n  alice: hunter2-plaintext\n")
    assert "basic_auth_users.alice" in message
    assert "not a bcrypt hash" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "value",
    [
        "$2y$10$tooshort",
        "$2z$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu",  # unknown variant
        "$2y$03$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu",  # cost below 4
        "$2y$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTu!",
    ],
)
def test_malformed_hashes_are_rejected(value: str) -> None:
    assert "not a bcrypt hash" in error_of(f"basic_auth_users:\n  alice: '{value}'\n")


def test_user_name_with_colon_is_rejected() -> None:
    assert "cannot contain ':'" in error_of(f"basic_auth_users:\n  'a:b': '{CAROL_HASH}'\n")


@pytest.mark.parametrize("auth_type", ["RequestClientCert", "RequireAnyClientCert", "RequireClientCert"])
def test_unsupported_client_auth_type(auth_type: str) -> None:
    message = error_of(
        f"""\
        tls_server_config:
          cert_file: a.crt
          key_file: a.key
          client_ca_file: ca.crt
          client_auth_type: {auth_type}
        """
    )
    assert "tls_server_config.client_auth_type" in message
    assert f"{auth_type} is not supported" in message


def test_unknown_client_auth_type_lists_choices() -> None:
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n")
    assert "'Maybe'" in message
    assert "RequireAndVerifyClientCert" in message


def test_client_ca_without_verifying_auth_type() -> None:
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.crt\n")
    assert "client_auth_type is NoClientCert" in message


def test_verifying_auth_type_without_client_ca() -> None:
    message = error_of(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    assert "needs client_ca_file or client_ca" in message


def test_allowed_sans_need_required_client_certs() -> None:
    message = error_of(
        """\
        tls_server_config:
          cert_file: a
          key_file: b
          client_ca_file: ca
          client_auth_type: VerifyClientCertIfGiven
          client_allowed_sans: [client.example]
        """
    )
    assert "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert" in message


def test_any_tls_key_turns_tls_on_and_then_cert_and_key_are_required() -> None:
    assert "cert_file (or an inline cert) is missing" in error_of("tls_server_config:\n  min_version: TLS13\n")
    assert "key_file (or an inline key) is missing" in error_of("tls_server_config:\n  cert_file: a.crt\n")


def test_file_and_inline_are_exclusive() -> None:
    message = error_of("tls_server_config:\n  cert_file: a\n  cert: PEM\n  key_file: b\n")
    assert "set only one of cert and cert_file" in message


def test_tls_versions() -> None:
    config = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n")
    assert config.tls.min_version == "TLS13"
    assert config.tls.max_version == "TLS13"
    assert "unknown value 'TLS14'" in error_of(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n"
    )
    message = error_of(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n"
    )
    assert "above max_version" in message
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n")
    assert "tls_server_config.min_version: TLS10 is not supported" in message
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n")
    assert "tls_server_config.max_version: TLS11 is not supported" in message


def test_cipher_suites_and_curves() -> None:
    config = parse(
        """\
        tls_server_config:
          cert_file: a
          key_file: b
          cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
          curve_preferences: [CurveP384]
          prefer_server_cipher_suites: false
        """
    )
    assert config.tls.cipher_suites == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256")
    assert config.tls.curve_preferences == ("CurveP384",)
    assert config.tls.prefer_server_cipher_suites is False
    message = error_of(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"
    )
    assert "tls_server_config.cipher_suites[0]" in message
    assert "'TLS_RSA_WITH_RC4_128_SHA'" in message
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")
    assert "only TLS 1.3 suites" in message
    message = error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [X25519, CurveP256]\n")
    assert "single curve" in message
    assert "unknown value 'P256'" in error_of(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [P256]\n"
    )


def test_headers() -> None:
    message = error_of("http_server_config:\n  headers:\n    X-Powered-By: python\n")
    assert "http_server_config.headers.X-Powered-By" in message
    assert "can not be configured" in message
    message = error_of("http_server_config:\n  headers:\n    X-Frame-Options: allow\n")
    assert "invalid value 'allow'" in message
    # Names are case-sensitive, as in the toolkit's Go map.
    assert "can not be configured" in error_of("http_server_config:\n  headers:\n    x-frame-options: deny\n")
    blank = parse("http_server_config:\n  headers:\n    Content-Security-Policy: ''\n")
    assert dict(blank.http.headers) == {}  # "Unset if blank"


def test_http2() -> None:
    assert parse("http_server_config:\n  http2: false\n").http.http2 is False
    assert "HTTP/2 not supported" in error_of("http_server_config:\n  http2: true\n")
    assert "expected true or false" in error_of("http_server_config:\n  http2: 'no'\n")


def test_rate_limit() -> None:
    config = parse("rate_limit:\n  interval: 1m30s\n  burst: 5\n")
    assert config.rate_limit is not None
    assert config.rate_limit.interval == 90.0
    assert config.rate_limit.burst == 5
    assert parse("rate_limit:\n  interval: 0s\n  burst: 5\n").rate_limit is None
    assert parse("rate_limit:\n  interval: 0\n").rate_limit is None
    assert "write a duration" in error_of("rate_limit:\n  interval: 5\n  burst: 1\n")
    assert "invalid duration" in error_of("rate_limit:\n  interval: 1d\n  burst: 1\n")
    assert "at least 1" in error_of("rate_limit:\n  interval: 1s\n  burst: 0\n")
    assert "must not be negative" in error_of("rate_limit:\n  interval: -1s\n  burst: 1\n")
    assert "expected an integer" in error_of("rate_limit:\n  interval: 1s\n  burst: many\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1s", 1.0), ("500ms", 0.5), ("1h2m3s", 3723.0), ("1.5s", 1.5), (".5m", 30.0), ("10us", 1e-5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1d", "1 s", "1s2"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(text)


def test_type_errors_name_the_key() -> None:
    assert "tls_server_config: expected a mapping" in error_of("tls_server_config: [a, b]\n")
    assert "tls_server_config.cert_file: expected a string" in error_of("tls_server_config:\n  cert_file: [a]\n")
    assert "expected a list" in error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: x\n")
    assert "expected a mapping" in error_of("- just\n- a list\n")


def test_invalid_yaml_does_not_quote_the_source() -> None:
    # PyYAML's own message quotes the offending line, which here holds a password hash.
    message = error_of(f"basic_auth_users:\n  alice: {CAROL_HASH}\n   bad: [\n")
    assert "invalid YAML" in message
    assert "line" in message
    assert CAROL_HASH not in message
    assert "qRTBuFoULoYNA7AQ" not in message


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"missing\.yml: cannot read"):
        load_web_config(str(tmp_path / "missing.yml"))
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes(b"basic_auth_users:\n  j\xf6rg: x\n")
    with pytest.raises(WebConfigError, match="not UTF-8"):
        load_web_config(str(latin1))


def test_repr_hides_secrets() -> None:
    config = parse(
        f"""\
        tls_server_config:
          cert_file: a.crt
          key: "-----BEGIN PRIVATE KEY-----\\nSECRETKEYMATERIAL\\n-----END PRIVATE KEY-----"
        basic_auth_users:
          carol: '{CAROL_HASH}'
        """
    )
    assert "SECRETKEYMATERIAL" in config.tls.key
    text = repr(config)
    assert "SECRETKEYMATERIAL" not in text
    assert CAROL_HASH not in text


# --- property: whatever the YAML says, the validator answers with WebConfigError or a config ---------------

_KNOWN_KEYS = [
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca",
    "client_ca_file",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
    "headers",
    "http2",
    "interval",
    "burst",
    "X-Frame-Options",
    "Content-Security-Policy",
    "alice",
]
_INTERESTING = [
    CAROL_HASH,
    "RequireAndVerifyClientCert",
    "VerifyClientCertIfGiven",
    "NoClientCert",
    "RequireAnyClientCert",
    "deny",
    "nosniff",
    "1s",
    "-1s",
    "0",
    "",
    "/nonexistent/file.pem",
    "nul\x00byte",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ".",
    "/",
    *TLS_VERSIONS,
    *CIPHER_SUITES,
    *CURVES,
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(_INTERESTING),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_KNOWN_KEYS), st.text(max_size=8), st.integers()), children, max_size=5
        ),
    ),
    max_leaves=20,
)
_sections = st.fixed_dictionaries(
    {},
    optional={
        "tls_server_config": st.dictionaries(st.sampled_from(_KNOWN_KEYS[4:17]), _values, max_size=6),
        "http_server_config": st.dictionaries(st.sampled_from(["headers", "http2"]), _values, max_size=2),
        "basic_auth_users": st.dictionaries(st.text(max_size=8), _values, max_size=3),
        "rate_limit": st.dictionaries(st.sampled_from(["interval", "burst"]), _values, max_size=2),
    },
)


def _validate(text: str) -> None:
    """Parse, then load fully from a file (which also builds TLS contexts from whatever files it names)."""
    with contextlib.suppress(WebConfigError):
        parse_web_config(text, "/tmp/prop.yml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "web.yml")
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(WebConfigError):
            load_web_config(str(path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_sections, st.dictionaries(st.sampled_from(_KNOWN_KEYS), _values, max_size=4), _values))
def test_arbitrary_mappings_only_raise_web_config_error(document: Any) -> None:
    _validate(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_web_config_error(text: str) -> None:
    with contextlib.suppress(WebConfigError):
        parse_web_config(text, "/tmp/prop.yml")
