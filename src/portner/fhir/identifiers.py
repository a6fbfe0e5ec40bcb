"""FHIR Identifier and Reference to Portner identifiers, with national id validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portner.domain.care_record import (
    OID_D_NUMBER,
    OID_HER_ID,
    OID_HPR_NUMBER,
    OID_NATIONAL_ID,
    Identifier,
    IdKind,
)
from portner.domain.errors import InvalidNationalId
from portner.domain.national_id import validate_national_id
from portner.fhir.tree import one, text

_KIND_BY_OID = {
    OID_NATIONAL_ID: IdKind.NATIONAL_ID,
    OID_D_NUMBER: IdKind.NATIONAL_ID,
    OID_HER_ID: IdKind.HER_ID,
    OID_HPR_NUMBER: IdKind.HPR_NUMBER,
}


def kind_of(system: str) -> IdKind:
    """Classify an identifier system (urn:oid:... or a bare OID) by the Norwegian OIDs."""
    oid = system.strip().removeprefix("urn:oid:")
    return _KIND_BY_OID.get(oid, IdKind.OTHER)


@dataclass(frozen=True, slots=True)
class BadIdentifier:
    """An identifier that failed validation; `reason` never contains the value."""

    field: str
    reason: str


def read_identifier(
    node: Any, field: str, *, accept_synthetic: bool
) -> Identifier | BadIdentifier | None:
    """Map one FHIR Identifier; None when it has no value, BadIdentifier when invalid."""
    value = text(node, "value")
    if value is None:
        return None
    system = text(node, "system") or ""
    kind = kind_of(system)
    if kind is IdKind.NATIONAL_ID:
        try:
            validate_national_id(value, accept_synthetic=accept_synthetic)
        except InvalidNationalId as exc:
            return BadIdentifier(field, f"invalid national id number: {exc}")
    return Identifier(kind=kind, value=value, system=system)


def read_identifiers(
    nodes: list[Any], field: str, *, accept_synthetic: bool
) -> tuple[list[Identifier], list[BadIdentifier]]:
    """Map a list of Identifiers; `field` is the element path without index."""
    good: list[Identifier] = []
    bad: list[BadIdentifier] = []
    for index, node in enumerate(nodes):
        result = read_identifier(node, f"{field}[{index}]", accept_synthetic=accept_synthetic)
        if isinstance(result, BadIdentifier):
            bad.append(result)
        elif result is not None:
            good.append(result)
    return good, bad


def reference_target(reference: Any) -> str | None:
    """Return the literal reference of a FHIR Reference ("Patient/1", "urn:uuid:..."), if any."""
    return text(reference, "reference")


def reference_identifier(
    reference: Any, field: str, *, accept_synthetic: bool
) -> Identifier | BadIdentifier | None:
    """Map Reference.identifier (a single Identifier in STU3 and R4)."""
    node = one(reference, "identifier")
    if node is None:
        return None
    return read_identifier(node, f"{field}.identifier", accept_synthetic=accept_synthetic)
