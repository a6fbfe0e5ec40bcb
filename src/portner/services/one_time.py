"""One-time, time-boxed door access for a person outside the staff, sent as a link by SMS.

The response center gives a plumber or a relative from away access to some of a resident's doors
for at most 12 hours. That makes, in one transaction with its audit entries: an actor for the
person, a grant (origin ONE_TIME), an invitation holding only the SHA-256 of a random link token,
and the queued SMS with the link. The person opens the link on their phone, which makes a key
(WebCrypto) and redeems the invitation once: the phone is registered as the actor's device (with a
proof of possession over a server challenge) and gets the credentials for the box.

The actor's role is EXTERNAL_PROVIDER: the existing role for people outside municipal staff who
may receive access for a task. A relative from away gets the same role here, because what they
receive is the task-bound access of an outsider, not the standing relationship RELATIVE stands for
(which lets the portal show them the resident's door log); the grant's ONE_TIME origin tells the
resident and the console why the access exists.

Privacy: the audit log names the invitation, grant and actor, never the phone number or the token;
the person's name lives only on the actor row, like every other actor's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Row, insert, select, update

from portner.domain.errors import PortnerError
from portner.domain.model import (
    Actor,
    ActorId,
    Door,
    DoorKind,
    GrantOrigin,
    GrantStatus,
    Role,
)
from portner.services.device_registration import (
    challenge_key,
    new_registration_challenge,
    register_verified_device,
    verify_registration_proof,
)
from portner.services.ids import IdSource
from portner.services.issuing import IssuedCredential, issue_for_shift
from portner.services.keys import MunicipalitySecrets
from portner.services.messaging import queue_message
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit, take_write_lock
from portner.storage.repository import Repository

MAX_BOX = timedelta(hours=12)
# A form filled in a few minutes ago may start a little in the past; further back is a mistake.
START_SLACK = timedelta(minutes=10)
MAX_AHEAD = timedelta(days=14)
ONE_TIME_ROLE = Role.EXTERNAL_PROVIDER
ORGANISATION = "one-time access"
# A visitor's actor id is "otp-..."; the directory hides these visitors from nurses (not staff).
ONE_TIME_ID_PREFIX = "otp"
DEFAULT_COUNTRY = "+47"
TOKEN_BYTES = 32

_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_SEPARATORS = re.compile(r"[\s\-().]")

SMS_TEXT = {
    "nb": "Hei {name}. Du har fått tilgang til dør hos en av våre brukere {day} kl. {start}–{end}. "
          "Åpne døren med denne lenken: {link}",
    "en": "Hello {name}. You have been given door access at one of our clients' homes on {day}, "
          "{start}–{end}. Open the door with this link: {link}",
}


class OneTimeRefused(PortnerError):
    """The one-time access cannot be given as asked; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvitationRefused(PortnerError):
    """The link cannot be used (unknown, revoked, expired, already used, or a bad proof)."""


@dataclass(frozen=True, slots=True)
class OneTimeAccess:
    invitation_id: str
    grant_id: str
    actor_id: str
    message_id: int
    not_before: datetime
    not_after: datetime
    token: str = field(repr=False)  # only the SMS carries it; never stored, logged or shown
    link: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InvitationView:
    """What the visitor's page shows: the person's doors and window, and whether it is usable."""

    invitation_id: str
    name: str
    doors: tuple[Door, ...]
    not_before: datetime
    not_after: datetime
    state: str  # open | redeemed | expired | revoked


@dataclass(frozen=True, slots=True)
class Redemption:
    invitation_id: str
    device_id: str
    doors: tuple[Door, ...]
    not_before: datetime
    not_after: datetime
    credentials: tuple[IssuedCredential, ...]


def normalise_phone(raw: str, default_country: str = DEFAULT_COUNTRY) -> str:
    """Return an E.164 number: spaces and dashes dropped, 00 -> +, 8 digits -> +47 (Norway)."""
    value = _SEPARATORS.sub("", raw or "")
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+"):
        if not value.isdigit() or len(value) != 8:
            raise OneTimeRefused("phone", "give a Norwegian number of 8 digits, or +country code")
        value = default_country + value
    if not _PHONE.match(value):
        raise OneTimeRefused("phone", "not a phone number (+ and 7 to 15 digits)")
    if value.startswith("+47") and len(value) != 11:
        raise OneTimeRefused("phone", "a Norwegian number has 8 digits after +47")
    return value


def mask_phone(phone: str) -> str:
    """Everything but the last two digits hidden: "*********12"."""
    return "*" * max(len(phone) - 2, 0) + phone[-2:]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _check_box(starts: datetime, ends: datetime, now: datetime) -> None:
    for name, value in (("starts", starts), ("ends", ends)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise OneTimeRefused(name, "needs a time zone")
    if ends <= starts:
        raise OneTimeRefused("ends", "must be after the start")
    if ends - starts > MAX_BOX:
        raise OneTimeRefused("ends", "one-time access lasts at most 12 hours")
    if ends <= now:
        raise OneTimeRefused("ends", "is already past")
    if starts < now - START_SLACK:
        raise OneTimeRefused("starts", "is in the past")
    if starts > now + MAX_AHEAD:
        raise OneTimeRefused("starts", "is more than 14 days ahead")


def _clean_name(name: str) -> str:
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise OneTimeRefused("name", "give the person's name")
    if len(cleaned) > 100 or any(not ch.isprintable() for ch in cleaned):
        raise OneTimeRefused("name", "at most 100 printable characters")
    return cleaned


def _resident_doors(conn: Connection, municipality_id: str, resident_id: str) -> list[Door]:
    repo = Repository(conn)
    resident = repo.get_resident(resident_id)
    if resident is None or resident.municipality_id != municipality_id:
        raise OneTimeRefused("resident_id", "no such resident")
    home = conn.execute(select(t.homes.c.id).where(t.homes.c.resident_id == resident_id)).scalar()
    return repo.doors_of_home(home) if home else []


def grant_one_time_access(engine: Engine, **kwargs: Any) -> OneTimeAccess:
    """Give `name` access to the resident's `door_ids` from `starts` to `ends`; queue the SMS.

    One transaction; the arguments are those of `grant_one_time_access_in`.
    """
    with engine.begin() as conn:
        return grant_one_time_access_in(conn, **kwargs)


def grant_one_time_access_in(
    conn: Connection,
    *,
    municipality_id: str,
    by: str,
    resident_id: str,
    door_ids: Sequence[str],
    name: str,
    phone: str,
    starts: datetime,
    ends: datetime,
    public_url: str,
    now: datetime,
    ids: IdSource,
    channel: str = "sms",
    language: str = "nb",
) -> OneTimeAccess:
    """`grant_one_time_access` in the caller's transaction (an idempotent API request's)."""
    if channel != "sms":
        raise OneTimeRefused("channel", "one-time access is sent by SMS")
    person = _clean_name(name)
    number = normalise_phone(phone)
    _check_box(starts, ends, now)
    wanted = list(dict.fromkeys(door_ids))
    if not wanted:
        raise OneTimeRefused("door_ids", "choose at least one door")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = f"{public_url.rstrip('/')}/visit/{token}"
    repo = Repository(conn)
    doors = {d.id: d for d in _resident_doors(conn, municipality_id, resident_id)}
    for door_id in wanted:
        door = doors.get(door_id)
        if door is None:
            raise OneTimeRefused("door_ids", f"{door_id} is not a door of this resident's home")
        if door.lock_id is None:
            raise OneTimeRefused("door_ids", f"{door_id} has no electronic lock")
    municipality = repo.get_municipality(municipality_id)
    zone = ZoneInfo(municipality.timezone if municipality else "Europe/Oslo")
    actor = Actor(ActorId(ids.new(ONE_TIME_ID_PREFIX)), municipality_id, ONE_TIME_ROLE, ORGANISATION,
                  display_name=person)
    repo.upsert_actor(actor)
    grant_id = ids.new("grt")
    conn.execute(insert(t.grants).values(
        id=grant_id, actor_id=actor.id, door_ids=wanted, not_before=starts, not_after=ends,
        origin=GrantOrigin.ONE_TIME.value, visit_id=None, status=GrantStatus.ACTIVE.value,
        reason="", created_at=now,
    ))
    local_start, local_end = starts.astimezone(zone), ends.astimezone(zone)
    body = SMS_TEXT.get(language, SMS_TEXT["nb"]).format(
        name=person, day=local_start.strftime("%d.%m"), start=local_start.strftime("%H:%M"),
        end=local_end.strftime("%H:%M") if local_end.date() == local_start.date()
        else local_end.strftime("%d.%m %H:%M"),
        link=link,
    )
    message_id = queue_message(conn, municipality_id, channel, number, body, now)
    invitation_id = ids.new("inv")
    conn.execute(insert(t.invitations).values(
        id=invitation_id, municipality_id=municipality_id, grant_id=grant_id, actor_id=actor.id,
        token_hash=token_hash(token), phone=number, channel=channel, created_by=by,
        created_at=now, expires_at=ends, redeemed_at=None, device_id=None, message_id=message_id,
    ))
    append_audit(conn, [
        AuditEntry(now, by, "actor:registered", actor.id,
                   {"role": actor.role.value, "origin": GrantOrigin.ONE_TIME.value}),
        AuditEntry(now, by, "grant:created", grant_id, {
            "actor": actor.id, "resident": resident_id, "doors": wanted,
            "not_before": _iso(starts), "not_after": _iso(ends),
            "origin": GrantOrigin.ONE_TIME.value,
        }),
        AuditEntry(now, by, "invitation:created", invitation_id, {
            "grant": grant_id, "actor": actor.id, "channel": channel, "message": message_id,
        }),
    ])
    return OneTimeAccess(invitation_id, grant_id, actor.id, message_id, starts, ends, token, link)


# --- the visitor's side ---------------------------------------------------------------------------


def _invitation_row(conn: Connection, token: str) -> Row[Any] | None:
    return conn.execute(
        select(t.invitations, t.grants.c.status.label("grant_status"),
               t.grants.c.not_before, t.grants.c.not_after, t.grants.c.door_ids,
               t.actors.c.display_name)
        .join(t.grants, t.grants.c.id == t.invitations.c.grant_id)
        .join(t.actors, t.actors.c.id == t.invitations.c.actor_id)
        .where(t.invitations.c.token_hash == token_hash(token))
    ).first()


def _state(row: Any, now: datetime) -> str:
    if row.grant_status != GrantStatus.ACTIVE.value:
        return "revoked"
    if row.expires_at <= now:
        return "expired"
    return "redeemed" if row.redeemed_at is not None else "open"


def _doors_of(conn: Connection, door_ids: Sequence[str]) -> tuple[Door, ...]:
    rows = conn.execute(select(t.doors).where(t.doors.c.id.in_(list(door_ids))))
    doors = [Door(r.id, r.home_id, r.position, DoorKind(r.kind), r.lock_id) for r in rows]
    return tuple(sorted(doors, key=lambda d: d.position))


def find_invitation(engine: Engine, token: str, *, now: datetime) -> InvitationView | None:
    """The invitation a link names, or None when the link is not one we gave out."""
    if not token or len(token) > 200:
        return None
    with engine.connect() as conn:
        row = _invitation_row(conn, token)
        if row is None:
            return None
        doors = _doors_of(conn, row.door_ids)
    return InvitationView(row.id, row.display_name, doors, row.not_before, row.not_after,
                          _state(row, now))


# A visitor's phone may hand in the lock logs it read for a day after its access ended.
VISITOR_RELAY = timedelta(days=1)


def visitor_upload_locks(conn: Connection, token: str, *, now: datetime) -> frozenset[str] | None:
    """The locks a redeemed invitation's phone may upload door events for (the locks of its
    grant's doors), or None when the token is unknown, not redeemed, or long past its window."""
    row = _invitation_row(conn, token)
    if row is None or row.redeemed_at is None or now > row.not_after + VISITOR_RELAY:
        return None
    locks = conn.execute(
        select(t.doors.c.lock_id).where(t.doors.c.id.in_(list(row.door_ids)), t.doors.c.lock_id.is_not(None))
    ).scalars()
    return frozenset(locks)


def holder_of(invitation_id: str) -> str:
    """What the visitor's registration challenge and proof are bound to."""
    return f"invitation:{invitation_id}"


def redemption_challenge(secrets: MunicipalitySecrets, invitation_id: str, *, now: datetime) -> bytes:
    """A fresh registration challenge for the visitor's phone (services.device_registration)."""
    challenge, _expires = new_registration_challenge(
        challenge_key(secrets), holder_of(invitation_id), now=now)
    return challenge


def redeem_invitation(
    engine: Engine,
    token: str,
    *,
    public_key: bytes,
    challenge: bytes,
    proof: bytes,
    secrets: MunicipalitySecrets,
    now: datetime,
    ids: IdSource,
) -> Redemption:
    """Register the visitor's phone once and issue its credentials for the box.

    The proof is the nurse app's: CBOR ["portner-device-registration-v1", challenge, public key,
    "invitation:<id>"] signed with the new key, over a challenge from `redemption_challenge`.
    Raises RegistrationRefused (naming the field) for a bad proof, InvitationRefused for a link
    that cannot be used. A second redemption is refused, whatever key it brings.
    """
    with engine.connect() as conn:
        found = _invitation_row(conn, token) if token and len(token) <= 200 else None
    if found is None:
        raise InvitationRefused("this link is not valid")
    holder = holder_of(found.id)
    verify_registration_proof(challenge_key(secrets), holder=holder, public_key=public_key,
                              challenge=challenge, signature=proof, now=now)
    with engine.begin() as conn:
        take_write_lock(conn)  # read, then written: the SMS sender's worker writes too (SQLite)
        row = _invitation_row(conn, token)
        state = _state(row, now) if row is not None else "revoked"
        if state != "open":
            raise InvitationRefused(f"this link is {state}")
        registration = register_verified_device(
            conn, holder=holder, actor_id=row.actor_id, public_key=public_key,
            challenge=challenge, now=now, ids=ids, by=holder)
        # The condition on redeemed_at makes a concurrent second redemption update nothing.
        done = conn.execute(
            update(t.invitations)
            .where(t.invitations.c.id == row.id, t.invitations.c.redeemed_at.is_(None))
            .values(redeemed_at=now, device_id=registration.device.id)
        )
        if done.rowcount != 1 or not registration.created:
            raise InvitationRefused("this link is redeemed")
        append_audit(conn, [AuditEntry(now, holder, "invitation:redeemed", row.id,
                                       {"device": registration.device.id})])
        doors = _doors_of(conn, row.door_ids)
        window = (row.not_before, row.not_after)
    device_id = registration.device.id
    credentials = issue_for_shift(engine, secrets.issuer, [device_id], window_start=window[0],
                                  window_end=window[1], now=now, ids=ids)
    return Redemption(row.id, device_id, doors, window[0], window[1], tuple(credentials))


class UnknownInvitation(LookupError):
    """No invitation with that id in this municipality."""


@dataclass(frozen=True, slots=True)
class RevokedInvitation:
    invitation_id: str
    grant_id: str
    credentials: int
    device_id: str | None
    already: bool


def revoke_invitation(
    engine: Engine, invitation_id: str, *, municipality_id: str, by: str, now: datetime,
    reason: str = "revoked by the response center",
) -> RevokedInvitation:
    """Revoke the invitation's grant, its credentials and the visitor's phone; audited.

    The actor is turned off too, so no credential is issued to it again. Revoking twice changes
    nothing the second time.
    """
    with engine.begin() as conn:
        row = conn.execute(
            select(t.invitations, t.grants.c.status.label("grant_status"))
            .join(t.grants, t.grants.c.id == t.invitations.c.grant_id)
            .where(t.invitations.c.id == invitation_id,
                   t.invitations.c.municipality_id == municipality_id)
        ).first()
        if row is None:
            raise UnknownInvitation(invitation_id)
        if row.grant_status != GrantStatus.ACTIVE.value:
            return RevokedInvitation(row.id, row.grant_id, 0, row.device_id, True)
        repo = Repository(conn)
        repo.revoke_grants([row.grant_id], now, reason)
        live = [c.id for c in repo.credentials_of_grants([row.grant_id])
                if c.revoked_at is None and c.not_after > now]
        repo.revoke_credentials(live, now)
        conn.execute(update(t.actors).where(t.actors.c.id == row.actor_id).values(active=False))
        entries = [
            AuditEntry(now, by, "grant:revoked", row.grant_id, {"reason": reason}),
            AuditEntry(now, by, "invitation:revoked", row.id,
                       {"grant": row.grant_id, "credentials": len(live)}),
        ]
        if row.device_id is not None:
            # On the revocation list by its key: a lock offline learns the phone is out.
            repo.set_device_revoked(row.device_id, now)
            entries.append(AuditEntry(now, by, "device:revoked", row.device_id,
                                      {"actor": row.actor_id, "reason": reason,
                                       "credentials": len(live)}))
        append_audit(conn, entries)
    return RevokedInvitation(row.id, row.grant_id, len(live), row.device_id, False)


# --- the console's side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvitationLine:
    invitation_id: str
    grant_id: str
    resident_id: str | None
    name: str
    phone_masked: str
    door_ids: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    state: str
    created_at: datetime
    message: str  # queued | sent | failed | none
    message_error: str | None


def list_invitations(
    engine: Engine, municipality_id: str, *, now: datetime, limit: int = 200
) -> list[InvitationLine]:
    """The municipality's one-time accesses, newest first, phone numbers masked."""
    i, g, m = t.invitations, t.grants, t.messages
    with engine.connect() as conn:
        rows = conn.execute(
            select(i, g.c.status.label("grant_status"), g.c.not_before, g.c.not_after,
                   g.c.door_ids, t.actors.c.display_name)
            .join(g, g.c.id == i.c.grant_id)
            .join(t.actors, t.actors.c.id == i.c.actor_id)
            .where(i.c.municipality_id == municipality_id)
            .order_by(i.c.created_at.desc(), i.c.id)
            .limit(limit)
        ).all()
        first_doors = {r.door_ids[0] for r in rows if r.door_ids}
        resident_of_door = dict(conn.execute(
            select(t.doors.c.id, t.homes.c.resident_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id)
            .where(t.doors.c.id.in_(sorted(first_doors)))
        ).all()) if first_doors else {}
        wanted_messages = sorted({r.message_id for r in rows if r.message_id is not None})
        messages = {
            r.id: r
            for r in conn.execute(
                select(m.c.id, m.c.sent_at, m.c.attempts, m.c.last_error).where(m.c.id.in_(wanted_messages))
            )
        } if wanted_messages else {}
    out = []
    for r in rows:
        msg = messages.get(r.message_id) if r.message_id is not None else None
        if msg is None:
            status, error = "none", None
        elif msg.sent_at is not None:
            status, error = "sent", None
        else:
            status, error = ("failed" if msg.last_error else "queued"), msg.last_error
        out.append(InvitationLine(
            r.id, r.grant_id, resident_of_door.get(r.door_ids[0]) if r.door_ids else None,
            r.display_name, mask_phone(r.phone),
            tuple(r.door_ids), r.not_before, r.not_after, _state(r, now), r.created_at,
            status, error,
        ))
    return out
