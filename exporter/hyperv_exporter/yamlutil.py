"""Strict YAML loading with line numbers, shared by the exporter config and the simulator's fleet file.

Errors name the file, the line and the dotted key path (``hyperv.yml:12: modules.default.timeout:
expected a duration like 30s``) so that a bad config line is found at once. Unknown keys and
duplicate keys are errors: a typo must not silently turn a setting off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

T = TypeVar("T")
N = TypeVar("N", int, float)


class YamlError(ValueError):
    """A problem in a YAML file, with its location in the message."""


class YamlMap(dict[str, Any]):
    line: int = 0
    key_lines: dict[str, int]


class YamlList(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    def construct_yaml_map_with_lines(self, node: yaml.MappingNode) -> YamlMap:
        result = YamlMap()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in result:
                raise YamlError(f"line {line}: duplicate key {key!r}")
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_yaml_seq_with_lines(self, node: yaml.SequenceNode) -> YamlList:
        result = YamlList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map_with_lines)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq_with_lines)


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of a file, or a :class:`YamlError` that names it (``what``: "config file")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise YamlError(f"{path}: {what} is not UTF-8") from None


def load(text: str, filename: str) -> Any:
    """Parse YAML text; syntax errors and duplicate keys become :class:`YamlError` naming the file."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except YamlError as exc:
        raise YamlError(f"{filename}: {exc}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise YamlError(f"{filename}: nested too deeply to be a configuration") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"{filename}{where}: invalid YAML: {problem}") from None


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_duration(text: str) -> float:
    """Prometheus-style duration (``30s``, ``1m30s``, ``500ms``) -> seconds."""
    if not _DURATION.match(text):
        raise ValueError(f"expected a duration like 30s, 1m30s or 500ms, got {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


class Node:
    """A value in a loaded YAML document with the path and line it came from."""

    def __init__(self, value: Any, path: str, line: int, filename: str) -> None:
        self.value = value
        self.path = path
        self.line = line
        self.filename = filename

    def fail(self, message: str) -> NoReturn:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        raise YamlError(f"{where}: {self.path or '(top level)'}: {message}")

    def _child(self, key: str | int, value: Any, line: int) -> Node:
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        return Node(value, path, line or self.line, self.filename)

    def mapping(self, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Node]:
        """Check this is a mapping with only ``allowed`` keys (and all ``required`` ones)."""
        if self.value is None:
            self.value = YamlMap()
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {_kind(self.value)}")
        allowed = list(allowed)
        lines = getattr(self.value, "key_lines", {})
        for key in self.value:
            if key not in allowed:
                self._child(key, None, lines.get(key, 0)).fail(
                    f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"
                )
        for key in required:
            if key not in self.value:
                self.fail(f"missing required key {key!r}")
        return {k: self._child(k, v, lines.get(k, 0)) for k, v in self.value.items()}

    def entries(self) -> Iterator[tuple[str, Node]]:
        """Items of a mapping whose keys are free-form names (modules, hosts)."""
        if self.value is None:
            return
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {_kind(self.value)}")
        lines = getattr(self.value, "key_lines", {})
        for key, value in self.value.items():
            yield key, self._child(key, value, lines.get(key, 0))

    def items(self) -> list[Node]:
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_kind(self.value)}")
        lines = getattr(self.value, "item_lines", [])
        return [self._child(i, v, lines[i] if i < len(lines) else 0) for i, v in enumerate(self.value)]

    def string(self, choices: Iterable[str] | None = None) -> str:
        if isinstance(self.value, bool) or not isinstance(self.value, str | int | float):
            self.fail(f"expected a string, got {_kind(self.value)}")
        text = str(self.value)
        if choices is not None:
            options = list(choices)
            if text not in options:
                self.fail(f"expected one of {', '.join(options)}, got {text!r}")
        return text

    def strings(self) -> list[str]:
        return [item.string() for item in self.items()]

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail(f"expected true or false, got {_kind(self.value)}")
        return self.value

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.fail(f"expected an integer, got {_kind(self.value)}")
        return self._bounded(self.value, minimum, maximum)

    def number(self, minimum: float | None = None, maximum: float | None = None) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            self.fail(f"expected a number, got {_kind(self.value)}")
        return self._bounded(float(self.value), minimum, maximum)

    def duration(self, minimum: float = 0.0) -> float:
        """A Prometheus duration string, or a plain number of seconds."""
        if isinstance(self.value, int | float) and not isinstance(self.value, bool):
            seconds = float(self.value)
        elif isinstance(self.value, str):
            try:
                seconds = parse_duration(self.value.strip())
            except ValueError as exc:
                self.fail(str(exc))
        else:
            self.fail(f"expected a duration like 30s, got {_kind(self.value)}")
        return self._bounded(seconds, minimum, None)

    def size(self) -> int:
        """A byte size: an integer, or ``64MiB``-style text."""
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            return self._bounded(self.value, 1, None)
        match = _SIZE.match(str(self.value).strip()) if isinstance(self.value, str) else None
        if match is None:
            self.fail(f"expected a size like 64MiB, got {self.value!r}")
        return int(match.group(1)) * _SIZE_UNITS[match.group(2)]

    def convert(self, func: Callable[[Any], T]) -> T:
        """Apply ``func``; a ValueError it raises becomes an error at this node."""
        try:
            return func(self.value)
        except ValueError as exc:
            self.fail(str(exc))

    def _bounded(self, value: N, minimum: float | None, maximum: float | None) -> N:
        if minimum is not None and value < minimum:
            self.fail(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(f"must be at most {maximum}, got {value}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def document(text: str, filename: str) -> Node:
    return Node(load(text, filename), "", 1, filename)
