"""What Portner takes from a care record, in its own words.

The FHIR adapter turns VKP and no-basis resources into these records; the import service turns
records into residents, visits and grants. Nothing here names a FHIR element except `field` paths
in problems, which point the person correcting the input at the right place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# OIDs of the Norwegian identifier systems (urn:oid: prefix stripped).
OID_NATIONAL_ID = "2.16.578.1.12.4.1.4.1"  # fødselsnummer
OID_D_NUMBER = "2.16.578.1.12.4.1.4.2"
OID_HER_ID = "2.16.578.1.12.4.1.2"
OID_HPR_NUMBER = "2.16.578.1.12.4.1.4.4"


class IdKind(StrEnum):
    NATIONAL_ID = "national_id"  # fødselsnummer or D-number: sensitive
    HER_ID = "her_id"
    HPR_NUMBER = "hpr_number"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Identifier:
    """An identifier as the record gave it. `value` may be a national id: never log it."""

    kind: IdKind
    value: str = field(repr=False)
    system: str = ""


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record came from: file, resource type and id (or position) inside it."""

    file: str
    resource_type: str
    resource_id: str

    def __str__(self) -> str:
        return f"{self.file}: {self.resource_type}/{self.resource_id}"


@dataclass(frozen=True, slots=True)
class Relative:
    name: str = field(repr=False)
    relationship: str = ""  # v2-0131 code or free text
    phone: str | None = field(repr=False, default=None)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    source: SourceRef
    identifiers: tuple[Identifier, ...]
    name: str = field(repr=False, default="")
    address: str = field(repr=False, default="")
    elock_system: str | None = None  # vkp-elock value; None means no e-lock installed
    zone_path: tuple[str, ...] = ()  # vkp-sone, split on "|"
    relatives: tuple[Relative, ...] = ()

    @property
    def national_id(self) -> str | None:
        return next((i.value for i in self.identifiers if i.kind is IdKind.NATIONAL_ID), None)


@dataclass(frozen=True, slots=True)
class PractitionerRecord:
    """A staff member as the care record knows them (for matching performers)."""

    source: SourceRef
    identifiers: tuple[Identifier, ...]
    name: str = field(repr=False, default="")
    organisation: str = ""


@dataclass(frozen=True, slots=True)
class PerformerRef:
    identifiers: tuple[Identifier, ...]
    display: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class PlannedOccurrence:
    """One concrete visit expanded from a plan activity; instants are aware and in UTC.

    `key` is stable across re-imports of the same plan: plan key, activity and occurrence start.
    """

    key: str
    start: datetime
    end: datetime
    performers: tuple[PerformerRef, ...] = ()
    description: str = field(repr=False, default="")
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class VisitPlanRecord:
    """A visit plan (CarePlan besoksplan/arbeidsplan, or an Appointment) for one resident.

    `occurrences` is the complete set the plan yields within the import horizon: an occurrence
    missing on re-import means the visit was removed from the plan.
    """

    source: SourceRef
    plan_key: str
    subject: tuple[Identifier, ...]  # identifies the resident (usually the national id)
    subject_ref: str | None  # literal reference such as "Patient/123" when no identifier given
    status: str
    occurrences: tuple[PlannedOccurrence, ...]
    version: str | None = None
    # Where the plan's own horizon ended expansion (open-ended plans); None when bounded.
    expanded_until: datetime | None = None


class Severity(StrEnum):
    ERROR = "error"  # rejected and quarantined for correction
    SKIPPED = "skipped"  # recognised and deliberately not imported (e.g. not a visit plan)


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A reason something was not imported. Messages never contain a national id."""

    source: SourceRef
    field: str  # path inside the resource, e.g. "activity[1].detail.performer[0].identifier"
    message: str
    severity: Severity = Severity.ERROR
    raw: str | None = field(repr=False, default=None)  # the entry as read, kept for correction

    def __str__(self) -> str:
        return f"{self.source} {self.field}: {self.message}"


@dataclass(slots=True)
class ParsedSource:
    """Everything one file yielded."""

    file: str
    patients: list[PatientRecord] = field(default_factory=list)
    practitioners: list[PractitionerRecord] = field(default_factory=list)
    plans: list[VisitPlanRecord] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)
