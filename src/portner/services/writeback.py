"""Write finished visits back to the care record as VKP Encounters (R4 JSON), via an outbox.

The Encounter is queued in the same transaction that completes the visit, so no finished visit is
lost or written twice: delivery retries until the sink confirms, and the outbox row's idempotency
key (the visit id) becomes the Encounter's identifier, so a repeated delivery replaces, not adds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from sqlalchemy import Connection, Engine, insert, select, update

from portner.domain.care_record import OID_HER_ID, OID_HPR_NUMBER, OID_NATIONAL_ID
from portner.domain.model import Visit
from portner.storage import tables as t
from portner.storage.repository import Repository

ENCOUNTER_PROFILE = "http://ehelse.no/fhir/StructureDefinition/vkp-Encounter-v090"
KIND = "fhir:Encounter"


def build_encounter(
    visit: Visit, resident_national_id: str | None, staff: list[Mapping[str, str | None]]
) -> dict[str, Any]:
    """Return the VKP Encounter for a finished visit (the participant is named by HPR or HER-id)."""
    period: dict[str, str] = {}
    if visit.arrived_at:
        period["start"] = _instant(visit.arrived_at)
    if visit.departed_at:
        period["end"] = _instant(visit.departed_at)
    subject: dict[str, Any] = {}
    if resident_national_id:
        subject["identifier"] = {
            "system": f"urn:oid:{OID_NATIONAL_ID}",
            "value": resident_national_id,
        }
    participants = []
    for s in staff:
        ident = (
            {"system": f"urn:oid:{OID_HPR_NUMBER}", "value": s["hpr_number"]}
            if s.get("hpr_number")
            else {"system": f"urn:oid:{OID_HER_ID}", "value": s["her_id"]}
            if s.get("her_id")
            else None
        )
        participant: dict[str, Any] = {
            # The VKP encounter-mode value set is not published with the profile; we say
            # "physical visit" in text until it is, rather than invent a code.
            "type": [{"text": "fysisk besøk"}],
        }
        if ident:
            participant["individual"] = {"identifier": ident}
        participants.append(participant)
    return {
        "resourceType": "Encounter",
        "meta": {"profile": [ENCOUNTER_PROFILE]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:portner:visit:{visit.id}"}],
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "HH",
            "display": "home health",
        },
        "type": [{"text": visit.description or "hjemmebesøk"}],
        "subject": subject,
        "participant": participants,
        "period": period,
    }


def _instant(at: datetime) -> str:
    """FHIR instant in UTC to the second (lock clocks tick finer than the record cares about)."""
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def queue_encounter(conn: Connection, visit: Visit, *, now: datetime) -> None:
    """Put the visit's Encounter in the outbox (idempotent per visit)."""
    repo = Repository(conn)
    resident = repo.get_resident(visit.resident_id)
    staff = []
    for actor_id in visit.staff_ids:
        actor = repo.get_actor(actor_id)
        if actor:
            staff.append({"hpr_number": actor.hpr_number, "her_id": actor.her_id})
    encounter = build_encounter(visit, resident.national_id if resident else None, staff)
    key = f"encounter:{visit.id}"
    if conn.execute(select(t.outbox.c.id).where(t.outbox.c.idempotency_key == key)).first():
        return
    conn.execute(
        insert(t.outbox).values(
            idempotency_key=key,
            municipality_id=visit.municipality_id,
            kind=KIND,
            payload=encounter,
            created_at=now,
            attempts=0,
        )
    )


class EncounterSink(Protocol):
    """Where Encounters go: a folder by default, a FHIR server when configured."""

    def deliver(self, key: str, encounter: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class FolderSink:
    folder: Path

    def deliver(self, key: str, encounter: Mapping[str, Any]) -> None:
        # An Encounter names the resident by national id: owner-only folder and files.
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = key.replace(":", "-") + ".json"
        # mkstemp opens a new, unpredictable name with O_EXCL: a planted link is never followed.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".encounter-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(encounter, indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, self.folder / name)  # atomic: a reader never sees half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class DeliveryTimeout(httpx.TimeoutException):
    """The FHIR server took longer than the whole-request deadline."""


@dataclass(frozen=True, slots=True)
class FhirEndpointSink:
    """PUT each Encounter by its identifier (conditional update), so a retry is harmless."""

    base_url: str
    client: httpx.Client
    # A deadline for the whole exchange: httpx's timeouts are per read, so a server trickling one
    # byte at a time could otherwise hold the outbox forever.
    deadline_s: float = 30.0

    def deliver(self, key: str, encounter: Mapping[str, Any]) -> None:
        ident = encounter["identifier"][0]
        started = time.monotonic()
        with self.client.stream(
            "PUT",
            f"{self.base_url.rstrip('/')}/Encounter",
            params={"identifier": f"{ident['system']}|{ident['value']}"},
            json=encounter,
            headers={"Content-Type": "application/fhir+json", "Idempotency-Key": key},
        ) as resp:
            for _ in resp.iter_bytes():
                if time.monotonic() - started > self.deadline_s:
                    raise DeliveryTimeout(f"no complete answer within {self.deadline_s:.0f} s")
            resp.raise_for_status()


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivered: int
    failed: int


def deliver_outbox(
    engine: Engine,
    sink: EncounterSink,
    *,
    municipality_id: str,
    now: datetime,
    limit: int = 10_000,
) -> DeliveryReport:
    """Deliver one municipality's queued Encounters; a failure is recorded and retried later."""
    with engine.connect() as conn:
        pending = list(
            conn.execute(
                select(t.outbox)
                .where(
                    t.outbox.c.delivered_at.is_(None),
                    t.outbox.c.kind == KIND,
                    t.outbox.c.municipality_id == municipality_id,
                )
                .order_by(t.outbox.c.id)
                .limit(limit)
            )
        )
    delivered = failed = 0
    for row in pending:
        try:
            sink.deliver(row.idempotency_key, row.payload)
        except (OSError, httpx.HTTPError) as exc:
            failed += 1
            with engine.begin() as conn:
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.id == row.id)
                    .values(attempts=row.attempts + 1, last_error=type(exc).__name__)
                )
            continue
        delivered += 1
        visit_id = row.idempotency_key.split(":", 1)[1]
        with engine.begin() as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row.id)
                .values(delivered_at=now, attempts=row.attempts + 1, last_error=None)
            )
            conn.execute(update(t.visits).where(t.visits.c.id == visit_id).values(written_back_at=now))
    return DeliveryReport(delivered, failed)
