"""One tree shape for FHIR XML and JSON: the XML normaliser and tolerant accessors.

FHIR JSON writes a repeated element as a list and a single one as a value; the XML form does not
say which is which without the schema. The normaliser therefore turns every XML child element into
a list, and the mapping code reads both shapes through `items`, `one` and `text`, which accept a
list or a single value alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as DefusedET

FHIR_NS = "http://hl7.org/fhir"
_NS_PREFIX = "{" + FHIR_NS + "}"

Node = Mapping[str, Any]


class NotFhir(ValueError):
    """The text parsed, but is not a FHIR resource; the message says why."""


def parse_xml(document: str | bytes) -> dict[str, Any]:
    """Parse FHIR XML (with defusedxml: no DTDs, no entities) into the JSON dict shape."""
    root = DefusedET.fromstring(document)
    if not root.tag.startswith(_NS_PREFIX):
        raise NotFhir(f"root element <{_local(root.tag)}> is not in the FHIR namespace")
    return _resource(root)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _resource(element: Element) -> dict[str, Any]:
    """Convert a resource element (<Patient>...) into {"resourceType": "Patient", ...}."""
    result = _complex(element)
    result["resourceType"] = _local(element.tag)
    return result


def _complex(element: Element) -> dict[str, Any]:
    """Convert an element with children into a dict of lists (see module docstring)."""
    result: dict[str, Any] = {}
    for attr in ("url", "id"):  # extension url and element id are attributes in XML
        if attr in element.attrib:
            result[attr] = element.attrib[attr]
    for child in element:
        if not isinstance(child.tag, str) or not child.tag.startswith(_NS_PREFIX):
            continue  # comments, processing instructions and XHTML narrative (text.div)
        name = _local(child.tag)
        result.setdefault(name, []).append(_value(child))
    return result


def _value(element: Element) -> Any:
    """Convert one child element: primitive (value attribute), contained resource or complex."""
    children = [c for c in element if isinstance(c.tag, str) and c.tag.startswith(_NS_PREFIX)]
    if "value" in element.attrib:
        # A primitive; its own extensions (rare) are dropped, as JSON keeps them under "_name".
        return element.attrib["value"]
    if len(children) == 1 and _local(children[0].tag)[:1].isupper():
        # Only resources have capitalised element names: <resource><Patient>..</Patient></resource>.
        return _resource(children[0])
    return _complex(element)


def items(node: Any, key: str) -> list[Any]:
    """Return the values of `key` in `node` as a list, whatever shape the source used."""
    # Trees from json.loads and from our XML normaliser hold only dicts and lists, so exact
    # type checks suffice (and are several times cheaper than isinstance against an ABC).
    if type(node) is not dict:
        return []
    value = node.get(key)
    if value is None:
        return []
    if type(value) is list:
        return [v for v in value if v is not None]
    return [value]


def one(node: Any, key: str) -> Any:
    """Return the first value of `key`, or None."""
    if type(node) is not dict:
        return None
    value = node.get(key)
    if type(value) is list:
        return next((v for v in value if v is not None), None)
    return value


def text(node: Any, key: str) -> str | None:
    """Return the primitive value of `key` as a stripped string, or None when absent/empty."""
    # `one` inlined, and plain strings (almost every value) first: this runs ~40 times a plan.
    if type(node) is not dict:
        return None
    value = node.get(key)
    if type(value) is str:
        return value.strip() or None
    if type(value) is list:  # the XML shape: the first non-null item
        value = next((v for v in value if v is not None), None)
        if type(value) is str:
            return value.strip() or None
    if value is None or type(value) in (dict, list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    result = str(value).strip()
    return result or None


def texts(node: Any, key: str) -> list[str]:
    """Return all primitive values of `key` as stripped, non-empty strings."""
    result = []
    for value in items(node, key):
        if isinstance(value, Mapping | list):
            continue
        s = str(value).strip()
        if s:
            result.append(s)
    return result


def decimal(node: Any, key: str) -> Decimal | None:
    """Return a FHIR decimal/integer primitive as Decimal; raise ValueError if not a number."""
    raw = text(node, key)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ValueError(f"{key} is not a number") from exc
    if not value.is_finite():
        raise ValueError(f"{key} is not a number")
    return value


def extension_value(node: Any, url_matches: Any) -> tuple[bool, str | None]:
    """Find an extension whose url satisfies `url_matches`; return (found, valueString-ish)."""
    for ext in items(node, "extension"):
        url = text(ext, "url")
        if url is not None and url_matches(url):
            for key in ("valueString", "valueCode", "valueUri"):
                value = text(ext, key)
                if value is not None:
                    return True, value
            return True, None
    return False, None
