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
import sys
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

# The exact single-line layout Hyper-V stores (reference §2.2), for which an XML parser can only
# ever produce one result: text made of characters XML 1.0 allows in content without any
# normalisation (no CR, no raw "<", "&", ">" or "]", so no "]]>", no surrogates, no U+FFFE/FFFF)
# and the five predefined entities. Items in this layout are read with this expression (about 30x
# faster than building an element tree, which was most of the parse time of a 1,000-VM host);
# every other item, including anything a hostile host could craft to differ, goes through
# defusedxml as before, so the result is the same either way (tests/test_perf_equivalence.py).
_TEXT = r"((?:[^<>&\]\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]++|&(?:amp|lt|gt|quot|apos);)*+)"
_PROPAGATED = '<PROPERTY NAME="{}" PROPAGATED="true" TYPE="string"></PROPERTY>'
_CANONICAL_ITEM = re.compile(
    '<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">'
    f"(?:{_PROPAGATED.format('Caption')})?"
    f'<PROPERTY NAME="Data" TYPE="string"><VALUE>{_TEXT}</VALUE></PROPERTY>'
    f"(?:{_PROPAGATED.format('Description')})?"
    f"(?:{_PROPAGATED.format('ElementName')})?"
    f'<PROPERTY NAME="Name" TYPE="string"><VALUE>{_TEXT}</VALUE></PROPERTY>'
    '(?:<PROPERTY NAME="Source" TYPE="uint16"><VALUE>[0-9]{1,5}</VALUE></PROPERTY>)?'
    "</INSTANCE>"
)
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'"}
_ENTITY = re.compile("&(?:amp|lt|gt|quot|apos);")


def _unescape(text: str) -> str:
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text) if "&" in text else text


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
        # map over the bound method keeps the loop in C (a generator expression costs twice as much).
        return any(map(item.__contains__, self.needles))


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
    canonical = _CANONICAL_ITEM.fullmatch(item)
    if canonical is not None:
        return _unescape(canonical.group(2)).strip(), _unescape(canonical.group(1))
    return _parse_xml(item)


def _parse_xml(item: str) -> tuple[str, str]:
    """The general path: any layout, through defusedxml (no DTDs, entities or external references)."""
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
            # Interned: keys and most values (OS names, versions) repeat across VMs and reports.
            selected.append((sys.intern(key), sys.intern(clean_value(data, kvp_filter.max_value_length))))
    if bad:
        problems.append(f"{where}: skipped {bad} malformed KVP item(s)")
    return selected


def allowlist(keys: Collection[str], max_value_length: int) -> KvpFilter:
    return KvpFilter(frozenset(keys), max_value_length)
