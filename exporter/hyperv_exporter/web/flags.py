"""The exporter-toolkit's web flags for argparse: ``--web.listen-address`` and ``--web.config.file``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

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


def add_web_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Add ``--web.listen-address`` (repeatable) and ``--web.config.file``, as the toolkit's kingpinflag does."""
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
