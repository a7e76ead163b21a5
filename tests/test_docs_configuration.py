"""docs/configuration.md names every configuration key and every command-line flag the code accepts.

The keys are read from the code itself: the key lists passed to ``Node.mapping`` in config.py and
discovery.py, and the web configuration parser's key tuples; the flags from the three argument
parsers. A key or flag added without documentation fails here.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from conftest import REPO
from hyperv_exporter.guest import cli as guest_cli
from hyperv_exporter.host import cli, discovery
from hyperv_exporter.sim import cli as sim_cli
from hyperv_exporter.web import config as web_config

CONFIGURATION_MD = REPO / "docs" / "configuration.md"
PACKAGE = REPO / "exporter" / "hyperv_exporter"


def mapping_keys(path: Path) -> set[str]:
    """String constants in the first argument (a list or tuple) of every ``.mapping(...)`` call."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "mapping":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.List | ast.Tuple):
                keys |= {e.value for e in first.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return keys


def documented(text: str, name: str) -> bool:
    return re.search(rf"`{re.escape(name)}[` ]", text) is not None


def config_keys() -> set[str]:
    keys = mapping_keys(PACKAGE / "host" / "config.py") | set(discovery.KEYS)
    assert {"modules", "targets", "winrm", "password_file", "keys", "discovery"} <= keys, "the extraction broke"
    return keys


def web_keys() -> set[str]:
    keys = set(web_config._TOP_KEYS) | set(web_config._TLS_KEYS) | set(web_config._HTTP_KEYS)
    return keys | set(web_config._RATE_LIMIT_KEYS)


@pytest.mark.parametrize("key", sorted(config_keys() | web_keys()))
def test_every_config_key_is_documented(key: str) -> None:
    assert documented(CONFIGURATION_MD.read_text(encoding="utf-8"), key), f"docs/configuration.md lacks `{key}`"


def flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-") and option != "--help"
    )


PARSERS = {
    "hyperv-exporter": cli.build_parser,
    "hyperv-sim": sim_cli.build_parser,
    "hyperv-guest-agent": guest_cli.build_parser,
}


@pytest.mark.parametrize(
    ("program", "flag"), [(program, flag) for program, build in PARSERS.items() for flag in flags(build())]
)
def test_every_flag_is_documented_in_its_programs_section(program: str, flag: str) -> None:
    text = CONFIGURATION_MD.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)
    (section,) = [s for s in sections if s.startswith(program + "\n")]
    assert documented(section, flag), f"docs/configuration.md, section {program}, lacks `{flag}`"


def test_defaults_in_the_doc_match_the_parsers() -> None:
    text = CONFIGURATION_MD.read_text(encoding="utf-8")
    assert f"| `--config.file FILE` | `{cli.DEFAULT_CONFIG}` |" in text
    assert f"| `--web.listen-address ADDRESS` | `:{cli.DEFAULT_PORT}` |" in text
    assert f"| `--web.listen-address ADDRESS` | `:{guest_cli.DEFAULT_PORT}` |" in text
    assert f"| `port` | `{discovery.DEFAULT_PORT}` |" in text
