"""The home-care door domain: who may open which door, when, and why.

Plain dataclasses and enums only. Nothing here knows about databases, FHIR, CBOR or any lock
vendor; adapters translate to and from these types at their edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NewType

MunicipalityId = NewType("MunicipalityId", str)
ZoneId = NewType("ZoneId", str)
ResidentId = NewType("ResidentId", str)
HomeId = NewType("HomeId", str)
DoorId = NewType("DoorId", str)
LockId = NewType("LockId", str)
ActorId = NewType("ActorId", str)
DeviceId = NewType("DeviceId", str)
VisitId = NewType("VisitId", str)
GrantId = NewType("GrantId", str)
CredentialId = NewType("CredentialId", str)


class ServiceModel(StrEnum):
    """How a municipality runs door access."""

    CENTRAL = "central"  # a response center opens doors remotely and hands out one-time access
    DISTRIBUTED = "distributed"  # staff open at the door with keys on their phones


class Role(StrEnum):
    """What an actor is to the resident; decides which kinds of access they may receive."""

    HOME_NURSING = "home_nursing"
    HOME_HELP = "home_help"
    OTHER_MUNICIPAL = "other_municipal"
    EXTERNAL_PROVIDER = "external_provider"
    RELATIVE = "relative"
    RESPONSE_CENTER = "response_center"
    EMERGENCY_SERVICE = "emergency_service"
    LOCKSMITH = "locksmith"
    CARETAKER = "caretaker"


class DoorKind(StrEnum):
    """Where a door sits on the path from the street to the resident's flat."""

    BUILDING = "building"
    STAIRWELL = "stairwell"
    FLAT = "flat"
    OTHER = "other"


class VisitStatus(StrEnum):
    PLANNED = "planned"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    MISSED = "missed"


class GrantStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class GrantOrigin(StrEnum):
    """Why a grant exists; shown to residents and used to flag emergency access."""

    VISIT = "visit"
    MANUAL = "manual"
    ONE_TIME = "one_time"
    EMERGENCY = "emergency"


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Municipality:
    """The tenant. Windows are evaluated in its time zone; instants are stored in UTC."""

    id: MunicipalityId
    name: str
    timezone: str = "Europe/Oslo"
    service_model: ServiceModel = ServiceModel.DISTRIBUTED
    window_lead: timedelta = timedelta(minutes=15)
    window_grace: timedelta = timedelta(minutes=30)
    # Minutes each staff member spends per shift fetching and returning physical keys today;
    # the benefit report measures savings against this (the SINTEF report quotes about 25).
    baseline_key_minutes_per_shift: float = 25.0
    # Accept synthetic national ids from the national test registry (month + 40 or + 80).
    # Only test and demo environments should turn this on.
    accept_synthetic_ids: bool = False
    # Open-ended visit plans are expanded this far ahead.
    plan_horizon: timedelta = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Resident:
    """A person receiving care at home. `national_id` is sensitive: never log or print it."""

    id: ResidentId
    municipality_id: MunicipalityId
    national_id: str | None = field(repr=False)
    display_name: str = field(repr=False, default="")
    zone_id: ZoneId | None = None
    source_ref: str | None = None  # the care record's logical id for the Patient


@dataclass(frozen=True, slots=True)
class Home:
    """Where a resident lives. `elock_system` is None when no e-lock is installed."""

    id: HomeId
    resident_id: ResidentId
    address: str = field(repr=False, default="")
    elock_system: str | None = None

    @property
    def has_elock(self) -> bool:
        return self.elock_system is not None


@dataclass(frozen=True, slots=True)
class Door:
    """One door on a home's path; `position` orders the path from the street inwards."""

    id: DoorId
    home_id: HomeId
    position: int
    kind: DoorKind
    lock_id: LockId | None = None


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock mounted on a door, served by one backend (adapter) chosen by configuration."""

    id: LockId
    door_id: DoorId
    backend: str = "simulated"
    model: str = ""


@dataclass(frozen=True, slots=True)
class Actor:
    """Anyone who may be given access: staff, relatives, emergency services, craftspeople.

    `id` is pseudonymous and is what credentials carry. The national id, HER-id and HPR number
    are used only to match the care record's performers to actors.
    """

    id: ActorId
    municipality_id: MunicipalityId
    role: Role
    organisation: str
    display_name: str = field(repr=False, default="")
    her_id: str | None = None
    hpr_number: str | None = None
    national_id: str | None = field(repr=False, default=None)
    active: bool = True


@dataclass(frozen=True, slots=True)
class Device:
    """A staff member's phone; credentials are bound to its public key (RFC 8747 cnf)."""

    id: DeviceId
    actor_id: ActorId
    public_key: bytes = field(repr=False)  # raw Ed25519 public key, 32 bytes
    status: DeviceStatus = DeviceStatus.ACTIVE
    registered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Visit:
    """One planned visit at a resident's home, expanded from a care-plan activity.

    `source_key` identifies the occurrence in the care record (plan, activity, occurrence) so that
    re-importing the same plan finds the same visit again.
    """

    id: VisitId
    municipality_id: MunicipalityId
    resident_id: ResidentId
    source_key: str
    planned_start: datetime
    planned_end: datetime
    staff_ids: tuple[ActorId, ...] = ()
    status: VisitStatus = VisitStatus.PLANNED
    description: str = field(repr=False, default="")
    arrived_at: datetime | None = None
    departed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for one actor to open a set of doors between two instants."""

    id: GrantId
    actor_id: ActorId
    door_ids: tuple[DoorId, ...]
    not_before: datetime
    not_after: datetime
    origin: GrantOrigin
    visit_id: VisitId | None = None
    status: GrantStatus = GrantStatus.ACTIVE
    reason: str = ""
