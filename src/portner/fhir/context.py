"""What the resource mappers share while reading one file: settings, lookups, small helpers."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from portner.domain.care_record import (
    Identifier,
    ImportProblem,
    PatientRecord,
    PerformerRef,
    PractitionerRecord,
    Severity,
    SourceRef,
)
from portner.domain.national_id import mask
from portner.fhir.identifiers import BadIdentifier, reference_identifier, reference_target
from portner.fhir.timing import Window
from portner.fhir.tree import items, one, text

# A visit whose plan gives no duration lasts this long (the usual home-care slot).
DEFAULT_VISIT_LENGTH = timedelta(minutes=30)

_ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")


@dataclass(slots=True)
class ReadContext:
    """Settings for one file plus the Patients and Practitioners found in it, by reference."""

    file: str
    zone: ZoneInfo
    horizon_start: datetime
    horizon_end: datetime
    accept_synthetic: bool
    default_duration: timedelta = DEFAULT_VISIT_LENGTH
    patients: dict[str, PatientRecord] = field(default_factory=dict)
    practitioners: dict[str, PractitionerRecord] = field(default_factory=dict)

    def window(self, **plan: Any) -> Window:
        """A timing window over this context's horizon."""
        return Window(self.zone, self.horizon_start, self.horizon_end, **plan)


def reference_keys(resource_type: str, resource_id: str | None, full_url: str | None) -> list[str]:
    """The keys a resource can be referenced by inside one file."""
    keys = []
    if full_url:
        keys.append(full_url)
        keys.append(normalise_reference(full_url))
    if resource_id:
        keys.append(f"{resource_type}/{resource_id}")
    return keys


def normalise_reference(reference: str) -> str:
    """Reduce "https://x/fhir/Patient/1/_history/2" to "Patient/1"; keep urn:uuid: as is."""
    ref = reference.strip()
    if ref.startswith("urn:"):
        return ref
    parts = [p for p in ref.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


def _is_relative(reference: str) -> bool:
    ref = reference.strip()
    return "://" not in ref and not ref.startswith(("urn:", "#"))


def key_part(value: str) -> str:
    """Escape a value for an occurrence key, whose parts are separated by "#"."""
    return value.replace("%", "%25").replace("#", "%23")


def scrub(value: str) -> str:
    """Mask every 11-digit run: text echoed from input (ids, codes) could be a national id."""
    return _ELEVEN_DIGITS.sub(lambda m: mask(m.group()), value)


def resource_label(resource: Any, fallback: str) -> str:
    """The id to show in a SourceRef: resource id (scrubbed), else the given position."""
    resource_id = text(resource, "id")
    return scrub(resource_id) if resource_id else fallback


def raw_json(node: Any) -> str:
    """Serialise a (normalised) element for the quarantine; may contain national ids."""
    return json.dumps(node, ensure_ascii=False, sort_keys=True, default=str)


def content_hash(node: Any) -> str:
    """A stable key for content without an identifier or id."""
    digest = hashlib.sha256(raw_json(node).encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def version_of(resource: Any) -> str | None:
    """meta.versionId, else meta.lastUpdated."""
    meta = one(resource, "meta")
    return text(meta, "versionId") or text(meta, "lastUpdated")


def identifier_key(resource: Any) -> str | None:
    """"system|value" of the first identifier with a value, both stripped."""
    for ident in items(resource, "identifier"):
        value = text(ident, "value")
        if value:
            return f"{text(ident, 'system') or ''}|{value}"
    return None


def utc_key(instant: datetime) -> str:
    """The occurrence-key form of an instant: second precision, UTC, "Z"."""
    if instant.tzinfo is UTC:  # as every expanded slot is; zoned values are not cache keys
        return _utc_key(instant)
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=65536)
def _utc_key(instant: datetime) -> str:
    # strftime is slow, and a day's visits share a few hundred slot times.
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def problem(
    source: SourceRef,
    field_path: str,
    message: str,
    severity: Severity = Severity.ERROR,
    raw: Any = None,
) -> ImportProblem:
    """Build an ImportProblem; the message is scrubbed in case it echoes input.

    `raw` is the element itself: it is serialised for the quarantine only here, when something
    is wrong, because serialising every valid activity was a third of the reading time.
    """
    text_raw = raw if raw is None or isinstance(raw, str) else raw_json(raw)
    return ImportProblem(
        source=source, field=field_path, message=scrub(message), severity=severity, raw=text_raw
    )


def read_performer(
    reference: Any, field_path: str, ctx: ReadContext
) -> PerformerRef | BadIdentifier:
    """Map a performer/actor Reference: its identifier, else the referenced Practitioner's."""
    display = text(reference, "display") or ""
    ident = reference_identifier(reference, field_path, accept_synthetic=ctx.accept_synthetic)
    if isinstance(ident, BadIdentifier):
        return ident
    identifiers: tuple[Identifier, ...] = (ident,) if ident is not None else ()
    target = reference_target(reference)
    if target:
        known = ctx.practitioners.get(normalise_reference(target)) or ctx.practitioners.get(target)
        if known is not None:
            # Keep both the reference's own identifier and the referenced Practitioner's: if
            # they name different people, matching reports the performer as ambiguous.
            identifiers = identifiers + tuple(i for i in known.identifiers if i not in identifiers)
            display = display or known.name
    return PerformerRef(identifiers=identifiers, display=display)


def read_subject(
    reference: Any, field_path: str, ctx: ReadContext
) -> tuple[tuple[Identifier, ...], str | None] | BadIdentifier:
    """Map a subject Reference to (identifiers, literal reference), resolving in-file Patients."""
    ident = reference_identifier(reference, field_path, accept_synthetic=ctx.accept_synthetic)
    if isinstance(ident, BadIdentifier):
        return ident
    identifiers: tuple[Identifier, ...] = (ident,) if ident is not None else ()
    target = reference_target(reference)
    # Only a relative reference names a Patient of this record; an absolute URL is another
    # server's, and is passed on as given so that the import refuses it (unless it resolves to a
    # Patient in the same Bundle, whose identifiers then decide).
    subject_ref = None
    if target:
        subject_ref = normalise_reference(target) if _is_relative(target) else target.strip()
    if target:
        known = ctx.patients.get(normalise_reference(target)) or ctx.patients.get(target)
        if known is not None:
            # Identifiers from the resolved Patient come first; keep the reference's own too.
            extra = tuple(i for i in identifiers if i not in known.identifiers)
            identifiers = known.identifiers + extra
    return identifiers, subject_ref

