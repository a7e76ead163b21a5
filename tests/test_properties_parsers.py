"""Property-based tests for every parser of untrusted or hand-written input: nothing crashes them
(only their documented errors come out), and valid inputs round-trip where that makes sense."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperv_exporter.guest import kvp_pool, ntp
from hyperv_exporter.host import cimxml, report
from hyperv_exporter.host.config import ConfigError, TargetAllowlist, canonical_host, parse_config, split_target
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.transport.winrs import clixml_errors
from hyperv_exporter.sim.fleet import kvp_item, parse_fleet
from hyperv_exporter.web import WebConfigError
from hyperv_exporter.web.config import parse_web_config
from hyperv_exporter.yamlutil import YamlError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KVP_FILTER = cimxml.allowlist(["OSName", "FullyQualifiedDomainName", "Key with spaces & <xml>"], 64)

# Anything JSON can carry, lone surrogates included (json.loads accepts their escapes).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
VM_KEYS = ["Name", "Id", "State", "Status", "Heartbeat", "UptimeSeconds", "IntegrationServicesVersion",
           "IntegrationServicesState", "Generation", "Version", "IsClustered", "IntegrationServices", "Kvp",
           "Resources", "Replication", "Checkpoints"]  # fmt: skip
vm_objects = st.dictionaries(st.sampled_from(VM_KEYS), json_values, max_size=len(VM_KEYS))
documents = st.fixed_dictionaries(
    {"SchemaVersion": st.just(1)},
    optional={
        "Host": st.dictionaries(st.sampled_from(["ComputerName", "OSCaption", "OSVersion", "UICulture"]), json_values),
        "Sections": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        "VMs": st.lists(vm_objects, max_size=6) | json_values,
        "ClockStartTicks": json_values,
        "ClockEndTicks": json_values,
    },
)


# -- PowerShell JSON (report) -----------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=4096))
@example(b"H4sI" + b"A" * 100, 1024)
@example(b"\xef\xbb\xbf{}", 10)
def test_decode_output_never_crashes(data: bytes, cap: int) -> None:
    try:
        text = report.decode_output(data, cap)
    except report.ReportError as exc:
        assert exc.reason in ("parse", "output_too_large")
    else:
        assert isinstance(text, str)


@SETTINGS
@given(st.text(max_size=4000))
def test_decode_output_round_trips_gzip_base64(text: str) -> None:
    encoded = base64.b64encode(gzip.compress(text.encode("utf-8")))  # st.text() has no lone surrogates
    assert report.decode_output(encoded, 1 << 20) == text.removeprefix("\ufeff")
    with pytest.raises(report.ReportError) as info:
        report.decode_output(base64.b64encode(gzip.compress(b"x" * 5000)), 4999)
    assert info.value.reason == "output_too_large"


@SETTINGS
@given(st.text(max_size=500))
@example("[" * 100_000)
@example('{"SchemaVersion": 1, "VMs": ' + "[" * 50_000 + "]" * 50_000 + "}")
def test_parse_report_never_crashes_on_text(text: str) -> None:
    try:
        result = report.parse_report(text, KVP_FILTER)
    except report.ReportError as exc:
        assert exc.reason == "parse"
    else:
        assert isinstance(result, HostReport)


@SETTINGS
@given(documents)
def test_parse_report_survives_any_document_shape(doc: dict[str, Any]) -> None:
    result = report.parse_report(json.dumps(doc), KVP_FILTER)  # SchemaVersion 1: never a ReportError
    assert isinstance(result, HostReport)
    ids = [vm.id for vm in result.vms]
    assert len(ids) == len(set(ids))
    for vm in result.vms:
        assert vm.name and len(vm.name) <= report.MAX_TEXT
        for item in vm.kvp or ():
            assert item.key in KVP_FILTER.keys and len(item.value) <= 64


# -- CIM-XML (KVP items) ----------------------------------------------------------------------------

xml_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"),  # XML 1.0 allows neither surrogates nor C0 controls
        blacklist_characters="\ufffe\uffff",
    ),
    max_size=300,
)


_ITEM_ERROR_FORMS = re.compile(
    r"item of \d+ characters exceeds \d+|refused: \w+|not XML \([^<>]*line \d+, column \d+\)"
    r"|unexpected root element <[^\n]{0,40}>|item has no Name property"
)


@SETTINGS
@given(st.text(max_size=600))
@example('<!DOCTYPE x [<!ENTITY a "b">]><INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"/>')
@example('<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><INSTANCE/>')
@example("<INSTANCE" + " a='1'" * 5000 + "/>")
@example("x" * (cimxml.MAX_ITEM_CHARS + 1))
def test_parse_item_never_crashes(item: str) -> None:
    try:
        name, data = cimxml.parse_item(item)
    except cimxml.KvpItemError as exc:
        # Errors never quote the guest's text: each is one of the fixed forms below. Only a root element's
        # tag name (at most 40 characters, after "<") is echoed, so an operator can tell which document it was.
        assert _ITEM_ERROR_FORMS.fullmatch(str(exc)), str(exc)
        assert len(item) < 16 or item[:40] not in str(exc)
    else:
        assert isinstance(name, str) and isinstance(data, str)


@SETTINGS
@given(xml_text.filter(lambda s: s.strip() != ""), xml_text, st.sampled_from([0, 1, 2]))
def test_kvp_items_round_trip(name: str, data: str, source: int) -> None:
    parsed_name, parsed_data = cimxml.parse_item(kvp_item(name, data, source))
    # XML normalises line ends (CR LF and CR become LF); Name is stripped.
    assert parsed_name == name.replace("\r\n", "\n").replace("\r", "\n").strip()
    assert parsed_data == data.replace("\r\n", "\n").replace("\r", "\n")


@SETTINGS
@given(
    st.lists(st.one_of(st.text(max_size=200), json_scalars, xml_text.map(lambda d: kvp_item("OSName", d))), max_size=30)
)
def test_select_keeps_only_allowlisted_clean_values(items: list[object]) -> None:
    problems: list[str] = []
    for key, value in cimxml.select(items, KVP_FILTER, problems, "VM 'x'"):
        assert key in KVP_FILTER.keys
        assert len(value) <= KVP_FILTER.max_value_length
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]", value)
    assert len(problems) <= 1


# -- CLIXML stderr ----------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=2000))
@example(b"#< CLIXML\r\n<!DOCTYPE Objs [<!ENTITY a 'aaaa'>]><Objs><S S='Error'>&a;&a;</S></Objs>")
def test_clixml_errors_never_crash_and_stay_short(stderr: bytes) -> None:
    text = clixml_errors(b"#< CLIXML\r\n" + stderr) if stderr[:1] == b"<" else clixml_errors(stderr)
    assert len(text) <= 503


# -- guest: KVP pool files and NTP answers ----------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=3 * kvp_pool.RECORD_SIZE + 100))
def test_parse_pool_never_crashes(data: bytes) -> None:
    records = list(kvp_pool.parse_pool(data))
    assert len(records) <= len(data) // kvp_pool.RECORD_SIZE
    for key, value in records:
        assert key and "\0" not in key and "\0" not in value


pool_text = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=120)


@SETTINGS
@given(st.lists(st.tuples(pool_text.filter(bool), pool_text), max_size=8), st.binary(max_size=kvp_pool.RECORD_SIZE - 1))
def test_pool_records_round_trip(records: list[tuple[str, str]], torn_tail: bytes) -> None:
    data = b"".join(kvp_pool.encode_record(k, v) for k, v in records) + torn_tail
    assert list(kvp_pool.parse_pool(data)) == records  # a torn final record is ignored


@SETTINGS
@given(st.text(max_size=3000), st.integers(min_value=1, max_value=2048))
def test_guest_clean_value(value: str, limit: int) -> None:
    cleaned = kvp_pool.clean_value(value, limit)
    assert len(cleaned) <= limit
    assert not re.search("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]", cleaned)


@SETTINGS
@given(st.binary(min_size=0, max_size=120), st.integers(min_value=0, max_value=2**64 - 1))
@example(bytes(48), 0)
def test_ntp_answers_never_crash(data: bytes, nonce: int) -> None:
    try:
        reply = ntp.decode(data)
        ntp.validate(reply, nonce)
        sample = ntp.compute(reply, 1_700_000_000_000_000_000, 1_700_000_000_010_000_000)
    except ntp.Rejected as exc:
        assert exc.reason in ntp.REASONS
    else:
        assert sample is not None


@SETTINGS
@given(st.text(max_size=80))
def test_ntp_server_parsing(text: str) -> None:
    try:
        server = ntp.parse_server(text)
    except ValueError:
        return
    assert server.label


# -- web config -------------------------------------------------------------------------------------

WEB_KEYS = {
    "tls_server_config": ["cert_file", "key_file", "cert", "key", "client_auth_type", "client_ca_file", "client_ca",
                          "client_allowed_sans", "min_version", "max_version", "cipher_suites",
                          "prefer_server_cipher_suites", "curve_preferences"],
    "http_server_config": ["http2", "headers"],
    "basic_auth_users": ["alice", "bob"],
    "rate_limit": ["interval", "burst"],
}  # fmt: skip
yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "TLS12",
            "TLS13",
            "RequireAndVerifyClientCert",
            "1s",
            "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",
        ]
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
web_configs = st.dictionaries(
    st.sampled_from(list(WEB_KEYS)),
    st.one_of(
        yaml_values,
        st.dictionaries(st.sampled_from([key for keys in WEB_KEYS.values() for key in keys]), yaml_values, max_size=5),
    ),
    max_size=4,
)


@SETTINGS
@given(st.text(max_size=200))
@example("a: &x [*x]")
@example("tls_server_config: {cert_file: /nonexistent}")
def test_web_config_text_never_crashes(text: str) -> None:
    with contextlib.suppress(WebConfigError):
        parse_web_config(text, "/nonexistent/web.yml")


@SETTINGS
@given(web_configs)
def test_web_config_structures_never_crash(config: dict[str, Any]) -> None:
    with contextlib.suppress(WebConfigError):
        parse_web_config(yaml.safe_dump(config), "/nonexistent/web.yml")


# -- exporter config --------------------------------------------------------------------------------

MODULE_KEYS = ["targets", "timeout", "collectors", "kvp", "winrm", "endpoints", "cache_ttl", "refresh_interval"]
WINRM_KEYS = ["scheme", "port", "path", "transport", "username", "password_file", "password_env", "ca_file",
              "server_cert_validation", "allow_unencrypted", "message_encryption", "gzip", "max_output_bytes",
              "max_response_bytes", "shell_max_idle"]  # fmt: skip
config_values = st.one_of(
    yaml_values,
    st.sampled_from(["https", "http", "ntlm", "basic", "pw", "10s", "1MiB", "*.corp.example", "10.0.0.0/8"]),
)
modules = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(MODULE_KEYS, config_values),
        "winrm": st.dictionaries(st.sampled_from(WINRM_KEYS), config_values, max_size=6),
        "targets": st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["hv01", "*.x", "[::1]:1", "10.0.0.0/8"]))),
    },
)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("config")
    (directory / "pw").write_text("a-password\n")
    return directory


@SETTINGS
@given(text=st.text(max_size=200))
@example(text="modules:\n  m:\n    targets: ['hv[']\n    winrm: {username: u, password_file: pw}")
def test_parse_config_text_never_crashes(config_dir: Path, text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, "hyperv.yml", config_dir)


@settings(SETTINGS, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(max_size=8), modules, max_size=3))
def test_parse_config_structures_never_crash(config_dir: Path, mods: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(yaml.safe_dump({"modules": mods}), "hyperv.yml", config_dir)


hostnames = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True)


@settings(SETTINGS, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(hostnames, min_size=1, max_size=4, unique=True),
    timeout=st.integers(1, 600),
    cache=st.integers(0, 600),
    port=st.integers(1, 65535),
)
def test_valid_configs_round_trip(config_dir: Path, names: list[str], timeout: int, cache: int, port: int) -> None:
    text = yaml.safe_dump(
        {
            "modules": {
                "m": {
                    "targets": names,
                    "timeout": f"{timeout}s",
                    "cache_ttl": f"{cache}s",
                    "winrm": {"port": port, "username": "u", "password_file": "pw"},
                }
            }
        }
    )
    module = parse_config(text, "hyperv.yml", config_dir).modules["m"]
    assert (module.timeout, module.cache_ttl, module.winrm.port) == (timeout, cache, port)
    assert module.targets.describe() == sorted(names)
    assert all(module.targets.allows(n, port) for n in names)
    assert module.winrm.password is not None and module.winrm.password.get() == "a-password"


# -- targets -----------------------------------------------------------------------------------------

ALLOW_ANY = TargetAllowlist.parse(["*"])


@SETTINGS
@given(st.text(max_size=60) | st.text(alphabet=string.ascii_letters + string.digits + ".:-[]%@/ \t", max_size=40))
@example("127.0.0.1:5986")
@example("[::1]:5986")
@example("hv01.\n")
def test_accepted_targets_cannot_smuggle_anything_into_the_url(target: str) -> None:
    """Whatever passes validation yields a URL whose host and port are exactly the target's."""
    try:
        host, port = split_target(target)
    except ValueError:
        return
    from hyperv_exporter.host.transport.settings import WinRMSettings

    url = urlsplit(WinRMSettings().url(host, port))
    assert url.scheme == "https" and url.path == "/wsman" and not url.username and not url.query
    assert url.hostname is not None and canonical_host(url.hostname) == canonical_host(host)
    assert url.port == (port or 5986)
    assert ALLOW_ANY.allows(target) == (port in (None, 5986))  # '*' is any host, on the module's port


# -- the simulator's fleet file ---------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=200))
@example("hosts: [{ComputerName: a, VMs: [{Name: x, Id: y, Kvp: {GuestExchangeItems: {a: b}}}]}]")
def test_parse_fleet_never_crashes(text: str) -> None:
    with contextlib.suppress(YamlError):
        parse_fleet(text, "fleet.yml", Path("/nonexistent"))


@SETTINGS
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["ComputerName", "OSCaption", "OSVersion", "UICulture", "VMs", "Simulator", "ClockOffset"]),
            yaml_values,
        ),
        max_size=3,
    )
)
def test_parse_fleet_structures_never_crash(hosts: list[dict[str, Any]]) -> None:
    with contextlib.suppress(YamlError):
        parse_fleet(yaml.safe_dump({"hosts": hosts}), "fleet.yml", Path("/nonexistent"))


# -- nesting bombs ----------------------------------------------------------------------------------

DEEP = "[" * 10_000


def test_deeply_nested_exporter_config(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config("modules: " + DEEP, "hyperv.yml", config_dir)


def test_deeply_nested_web_config() -> None:
    with pytest.raises(WebConfigError, match="nested too deeply"):
        parse_web_config(DEEP, "/nonexistent/web.yml")


def test_deeply_nested_fleet_file() -> None:
    with pytest.raises(YamlError, match="nested too deeply"):
        parse_fleet(DEEP, "fleet.yml", Path("/nonexistent"))
