"""``add_web_flags`` and the listen address syntax."""

from __future__ import annotations

import argparse

import pytest

from hyperv_exporter.web import WebServer, add_web_flags
from hyperv_exporter.web.flags import TOOLKIT_DOCS
from hyperv_exporter.web.listen import ListenAddress, parse_listen_address


def parser(port: int = 10020) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperv-exporter")
    add_web_flags(p, port)
    return p


def test_defaults() -> None:
    args = parser().parse_args([])
    assert args.web_listen_address == [":10020"]
    assert args.web_config_file is None
    assert parser(10021).parse_args([]).web_listen_address == [":10021"]


def test_listen_address_is_repeatable_and_replaces_the_default() -> None:
    args = parser().parse_args(["--web.listen-address", "127.0.0.1:9000", "--web.listen-address=[::1]:9001"])
    assert args.web_listen_address == ["127.0.0.1:9000", "[::1]:9001"]
    # Parsing again starts from the default, not from the previous result.
    assert parser().parse_args(["--web.listen-address", ":1"]).web_listen_address == [":1"]


def test_config_file_flag() -> None:
    assert parser().parse_args(["--web.config.file", "/etc/web.yml"]).web_config_file == "/etc/web.yml"


def test_help_texts_follow_the_toolkit() -> None:
    text = parser().format_help()
    assert "Addresses on which to expose metrics and web interface. Repeatable for multiple addresses." in " ".join(
        text.split()
    )
    assert ":10020" in text
    assert "Path to configuration file that can enable TLS or authentication." in " ".join(text.split())
    assert TOOLKIT_DOCS in "".join(text.split())  # argparse may wrap the URL at a hyphen


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":10020", "", 10020),
        ("0.0.0.0:10020", "0.0.0.0", 10020),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::1]:10020", "::1", 10020),
        ("[::]:10020", "::", 10020),
        ("localhost:10020", "localhost", 10020),
        ("exporter.example.net:65535", "exporter.example.net", 65535),
    ],
)
def test_listen_address_forms(text: str, host: str, port: int) -> None:
    assert parse_listen_address(text) == ListenAddress(host=host, port=port, text=text)


@pytest.mark.parametrize(
    "text",
    [
        "10020",
        "localhost",
        "::1:10020",
        "[::1]",
        "[127.0.0.1]:80",
        "host:http",
        "host:65536",
        "host:-1",
        ":",
        "a b:1",
        "[::1:80",
    ],
)
def test_bad_listen_addresses_name_the_address(text: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address") as info:
        parse_listen_address(text)
    assert repr(text) in str(info.value)


def test_web_server_validates_addresses_up_front() -> None:
    with pytest.raises(ValueError, match="'nonsense'"):
        WebServer(["127.0.0.1:0", "nonsense"], lambda request: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="no listen address"):
        WebServer([], lambda request: None)  # type: ignore[arg-type, return-value]
