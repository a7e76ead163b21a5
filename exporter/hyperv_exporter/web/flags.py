"""The exporter-toolkit's web flags for argparse: ``--web.listen-address`` and ``--web.config.file``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .server import DEFAULT_MAX_CONNECTIONS

TOOLKIT_DOCS = "https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md"


class _AppendOverridingDefault(argparse.Action):
    """Like ``action="append"``, except that the first use replaces the default instead of adding to it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        if current is self.default or current is None:
            current = []
        setattr(namespace, self.dest, [*current, values])


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (both programs' counts and sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_web_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Add ``--web.listen-address`` (repeatable) and ``--web.config.file``, as the toolkit's kingpinflag does,
    and ``--web.max-connections`` (named in the same style)."""
    default = f":{default_port}"
    parser.add_argument(
        "--web.listen-address",
        dest="web_listen_address",
        action=_AppendOverridingDefault,
        default=[default],
        metavar="ADDRESS",
        help=(
            "Addresses on which to expose metrics and web interface. Repeatable for multiple addresses. "
            f"Examples: `{default}` or `[::1]{default}`. (default: {default})"
        ),
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="FILE",
        help=f"Path to configuration file that can enable TLS or authentication. See: {TOOLKIT_DOCS}",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="web_max_connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=(
            "Maximum number of connections served at once; above it, the connection that has waited "
            f"longest for a request is closed to make room. (default: {DEFAULT_MAX_CONNECTIONS})"
        ),
    )
