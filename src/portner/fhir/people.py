"""Patient and Practitioner resources to PatientRecord and PractitionerRecord.

VKP puts `vkp-sone` (service zone, "Municipality|District|Zone|SubZone") on the Patient and
`vkp-elock` (name of the installed e-lock system) on the Patient's home Address (vkp-Address). The
urls carry a version (-v05, -v06, -v090); any version is accepted, and vkp-elock is also accepted
directly on the Patient, which the v0.9.0 extension context allows. No vkp-elock means no e-lock.
"""

from __future__ import annotations

import re
from typing import Any

from portner.domain.care_record import (
    ImportProblem,
    PatientRecord,
    PractitionerRecord,
    Relative,
    Severity,
    SourceRef,
)
from portner.fhir.identifiers import read_identifiers
from portner.fhir.tree import extension_value, items, text, texts

_VKP_EXT = r"^https?://ehelse\.no/fhir/(?:[A-Za-z]+/)*StructureDefinition/{name}(?:-v\d+)?/?$"
_ELOCK = re.compile(_VKP_EXT.format(name="vkp-elock"))
_SONE = re.compile(_VKP_EXT.format(name="vkp-sone"))


def _is_middlename(url: str) -> bool:
    return url.rstrip("/").endswith("middlename")


def human_name(names: list[Any]) -> str:
    """Pick the official (or usual, or first) HumanName and render it given middle family.

    Norwegian middle names sit in the no-basis-middlename extension, not in `given`.
    """
    if not names:
        return ""
    chosen = next(
        (n for use in ("official", "usual") for n in names if text(n, "use") == use), names[0]
    )
    middle = [
        value
        for ext in items(chosen, "extension")
        if _is_middlename(text(ext, "url") or "")
        for value in [text(ext, "valueString")]
        if value
    ]
    parts = [*texts(chosen, "given"), *middle, *texts(chosen, "family")]
    return " ".join(parts) if parts else (text(chosen, "text") or "")


def _address(addresses: list[Any]) -> Any:
    """Choose the home address (else the first one)."""
    if not addresses:
        return None
    return next((a for a in addresses if text(a, "use") == "home"), addresses[0])


def address_text(address: Any) -> str:
    """Render an Address as "line, line, postcode city" (or its text)."""
    if address is None:
        return ""
    lines = texts(address, "line")
    place = " ".join(texts(address, "postalCode") + texts(address, "city"))
    rendered = ", ".join([*lines, place] if place else lines)
    return rendered or (text(address, "text") or "")


def _elock(patient: Any, home: Any) -> str | None:
    """Return the vkp-elock value; "" if the extension is present without a name."""
    candidates = [home, *items(patient, "address"), patient]
    for node in candidates:
        found, value = extension_value(node, _ELOCK.match)
        if found:
            return value or ""
    return None


def _zone(patient: Any) -> tuple[str, ...]:
    found, value = extension_value(patient, _SONE.match)
    if not found or not value:
        return ()
    return tuple(p.strip() for p in value.split("|") if p.strip())


def _relationship(contact: Any) -> str:
    """Prefer a coded v2-0131 relationship; fall back to display, then free text."""
    for rel in items(contact, "relationship"):
        for coding in items(rel, "coding"):
            value = text(coding, "code") or text(coding, "display")
            if value:
                return value
    for rel in items(contact, "relationship"):
        value = text(rel, "text")
        if value:
            return value
    return ""


def _phone(node: Any) -> str | None:
    for telecom in items(node, "telecom"):
        if text(telecom, "system") == "phone" and text(telecom, "value"):
            return text(telecom, "value")
    return None


def _relatives(patient: Any) -> tuple[Relative, ...]:
    result = []
    for contact in items(patient, "contact"):
        name = human_name(items(contact, "name"))
        relationship = _relationship(contact)
        result.append(Relative(name=name, relationship=relationship, phone=_phone(contact)))
    return tuple(result)


def read_patient(
    patient: Any, source: SourceRef, *, accept_synthetic: bool, raw: str
) -> PatientRecord | list[ImportProblem]:
    """Map a Patient; an invalid national id rejects it with ERROR problems."""
    identifiers, bad = read_identifiers(
        items(patient, "identifier"), "identifier", accept_synthetic=accept_synthetic
    )
    if bad:
        return [ImportProblem(source, b.field, b.reason, Severity.ERROR, raw) for b in bad]
    home = _address(items(patient, "address"))
    return PatientRecord(
        source=source,
        identifiers=tuple(identifiers),
        name=human_name(items(patient, "name")),
        address=address_text(home),
        elock_system=_elock(patient, home),
        zone_path=_zone(patient),
        relatives=_relatives(patient),
    )


def read_practitioner(
    practitioner: Any, source: SourceRef, *, accept_synthetic: bool, raw: str
) -> PractitionerRecord | list[ImportProblem]:
    """Map a Practitioner; an invalid national id rejects it with ERROR problems."""
    identifiers, bad = read_identifiers(
        items(practitioner, "identifier"), "identifier", accept_synthetic=accept_synthetic
    )
    if bad:
        return [ImportProblem(source, b.field, b.reason, Severity.ERROR, raw) for b in bad]
    # Practitioner has no organisation element (that is PractitionerRole): left empty.
    return PractitionerRecord(
        source=source,
        identifiers=tuple(identifiers),
        name=human_name(items(practitioner, "name")),
    )
