"""KVP items: the CIM-XML strings Hyper-V stores for each Msvm_KvpExchangeDataItem.

An item looks like (one line on the wire; PROPERTY order is not guaranteed and some hosts omit
the PROPAGATED properties)::

    <INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" TYPE="string">
    <VALUE>10.0.0.21;169.254.12.7</VALUE></PROPERTY><PROPERTY NAME="Name" TYPE="string">
    <VALUE>NetworkAddressIPv4</VALUE></PROPERTY><PROPERTY NAME="Source" TYPE="uint16">
    <VALUE>2</VALUE></PROPERTY></INSTANCE>

Keys and values are written by the guest, so they are untrusted: items are parsed with
defusedxml (no DTDs, entities or external references), only allowlisted keys are kept, values are
cleaned of control characters and capped. KVP also carries provisioning data (secrets included),
so a key outside the allowlist is never returned, logged or put into an error message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

# Hyper-V caps Name and Data at 1,024 characters (MAXLEN in Msvm_KvpExchangeDataItem); anything far
# larger is not a real item and is refused before parsing, so a hostile guest cannot make us parse
# megabytes per item.
MAX_ITEM_CHARS = 16384

# C0 and C1 control characters, DEL and lone surrogates: nothing a label value should carry.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]+")


@dataclass(frozen=True)
class KvpFilter:
    """Which keys to keep and how to clean their values."""

    keys: frozenset[str]
    max_value_length: int = 256
    # An item that does not contain an allowlisted key as text anywhere cannot be an allowlisted
    # item, so most items are skipped with a substring test instead of an XML parse.
    needles: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needles", tuple(escape(k) for k in self.keys))

    def may_match(self, item: str) -> bool:
        return any(n in item for n in self.needles)


class KvpItemError(ValueError):
    """An item that is not well-formed CIM-XML for Msvm_KvpExchangeDataItem (message never holds item text)."""


def clean_value(value: str, max_length: int) -> str:
    """Make guest-written text safe and bounded as a label value."""
    value = _UNPRINTABLE.sub(" ", value).strip()
    if len(value) > max_length:
        value = value[:max_length].rstrip()
    return value


def _property_value(instance: Element, name: str) -> str | None:
    for prop in instance.iter("PROPERTY"):
        if prop.get("NAME") == name:
            value = prop.find("VALUE")
            return "" if value is None else (value.text or "")
    return None


def parse_item(item: str) -> tuple[str, str]:
    """One CIM-XML item -> (Name, Data). Raises :class:`KvpItemError` for anything else."""
    if len(item) > MAX_ITEM_CHARS:
        raise KvpItemError(f"item of {len(item)} characters exceeds {MAX_ITEM_CHARS}")
    try:
        root = fromstring(item, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise KvpItemError(f"refused: {type(exc).__name__}") from None
    except (ParseError, ValueError) as exc:
        # ParseError messages carry only position information, never the offending text.
        raise KvpItemError(f"not XML ({exc})") from None
    if root.tag != "INSTANCE" or root.get("CLASSNAME") != "Msvm_KvpExchangeDataItem":
        raise KvpItemError(f"unexpected root element <{root.tag[:40]}>")
    name = _property_value(root, "Name")
    if name is None:
        raise KvpItemError("item has no Name property")
    return name.strip(), _property_value(root, "Data") or ""


def select(items: Iterable[object], kvp_filter: KvpFilter, problems: list[str], where: str) -> list[tuple[str, str]]:
    """Allowlisted (key, cleaned value) pairs from one KVP array; bad items are counted in ``problems``."""
    selected: list[tuple[str, str]] = []
    bad = 0
    for item in items:
        if not isinstance(item, str):
            bad += 1
            continue
        if not kvp_filter.may_match(item):
            continue
        try:
            key, data = parse_item(item)
        except KvpItemError:
            bad += 1
            continue
        if key in kvp_filter.keys:
            selected.append((key, clean_value(data, kvp_filter.max_value_length)))
    if bad:
        problems.append(f"{where}: skipped {bad} malformed KVP item(s)")
    return selected


def allowlist(keys: Collection[str], max_value_length: int) -> KvpFilter:
    return KvpFilter(frozenset(keys), max_value_length)
