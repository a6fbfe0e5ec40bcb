"""The phone and lock-gateway API: device registration, the shift's credentials, door-event upload.

- GET  /devices/registration-challenge  a one-time challenge bound to the signed-in nurse (5 min)
- POST /devices                          register a phone key with a proof of possession
- GET  /me/credentials?device_id=        the shift's credentials (portner.web.api.shift)
- POST /door-events                      batched lock-log uploads from phones and gateways
- GET  /revocation-list                  the newest signed revocation list (ETag = version)

Door-event batches are bounded before anything is parsed: the body (1 MB from a nurse's phone,
8 MB from a lock gateway; 413), at most 50 uploads and 2,000 events a request, 500 per lock (422
naming the field). Who may upload for which lock: a nurse for the locks of the homes her visit
grants of the last 2 days to the next day lead her to (her phone relays what it talked to); a
gateway with the upload scope for any lock of its municipality. Any other lock, existing or not,
is the same 403 naming `body/uploads/N/lock_id` (no oracle for lock ids). Then the whole batch is
checked (every event well formed); a malformed batch is a 422 naming `body/uploads/N/...` and
nothing of it is written. Chain anomalies (gaps, duplicates, reordering, tampering) are not input errors: they
are what the platform is there to find, so they are stored and reported per lock with a 200.
Uploads are idempotent by content: events the platform has already verified with the same hash
change nothing (services.door_events), so a retried batch changes nothing and an Idempotency-Key
is not needed (it is ignored). The whole batch is ingested in one transaction.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from portner.domain.access import SCOPE_EVENTS_UPLOAD, AccountRole, NotPermitted, Principal
from portner.services.accounts import session_account_query, session_actor_sql
from portner.services.device_registration import (
    RegistrationRefused,
    challenge_key,
    new_registration_challenge,
    register_verified_device,
    verify_registration_proof,
)
from portner.services.door_events import (
    HeadAttestation,
    LocksRefused,
    LockUpload,
    UploadAuthority,
    ingest_uploads,
    ingest_uploads_in,
)
from portner.services.lock_wire import WireError, event_from_wire
from portner.services.one_time import visitor_upload_locks
from portner.services.revocation import latest_revocation_list
from portner.storage.bulk import fetch_in, instant_writer, pipelined_transaction
from portner.web.api.common import IdempotencyKeyHeader, bounded_body, idempotent, problem_response
from portner.web.api.encoding import ID_PATTERN, b64url, from_b64url
from portner.web.api.shift import RevocationListOut
from portner.web.deps import PendingPrincipal, portner, principal, require, require_later
from portner.web.problems import Problem, field_problem, not_found
from portner.web.state import Portner

router = APIRouter(tags=["phones"])

# Upload bounds: a phone relays a few locks' logs since their last sync, a gateway a few more;
# anything bigger is a flood, refused before it costs parsing or a transaction.
MAX_UPLOADS = 50
MAX_EVENTS = 2_000  # per request
MAX_LOCK_EVENTS = 500  # per lock per request
MAX_NURSE_BYTES = 1_000_000
MAX_GATEWAY_BYTES = 8_000_000
# A nurse relays for the homes of her visit grants from two days back (a phone offline over a
# weekend night) to the next day.
RELAY_BACK = timedelta(days=2)
RELAY_AHEAD = timedelta(days=1)


# --- registration -------------------------------------------------------------------------------


class RegistrationChallengeOut(BaseModel):
    challenge: str = Field(description="base64url; sign it within 5 minutes")
    holder: str = Field(description="The account id the challenge is bound to; part of the signed message.")
    expires_at: datetime


class DeviceRegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(max_length=64, description="base64url of the raw 32-byte Ed25519 public key")
    challenge: str = Field(max_length=200, description="As received from the challenge endpoint")
    signature: str = Field(
        max_length=100,
        description='base64url Ed25519 signature over the CBOR array ["portner-device-registration-v1", '
        "challenge, public_key, holder]: challenge and public_key as byte strings (the bytes their "
        "base64url text decodes to, not that text), holder the text the challenge endpoint gave",
    )


class DeviceOut(BaseModel):
    id: str
    status: str
    registered_at: datetime | None
    public_key: str
    new: bool = Field(description="False when this key was already registered (a retry).")


def _nurse_holder(who: Principal) -> str:
    if who.actor_id is None:
        raise NotPermitted("this account has no staff member to register a phone for")
    return who.account_id


@router.get("/devices/registration-challenge", response_model=RegistrationChallengeOut)
def registration_challenge(
    request: Request, who: Principal = Depends(require(AccountRole.NURSE))
) -> RegistrationChallengeOut:
    """Get a one-time challenge for registering a phone key, bound to the signed-in nurse's
    account and valid for 5 minutes; sign it with the new key and send it to POST /devices.
    Nurses only (an account not linked to a staff member gets 403)."""
    p = portner(request)
    holder = _nurse_holder(who)
    challenge, expires = new_registration_challenge(challenge_key(p.secrets), holder, now=p.now())
    return RegistrationChallengeOut(challenge=b64url(challenge), holder=holder, expires_at=expires)


@router.post("/devices", status_code=201, response_model=DeviceOut)
async def register_device(
    request: Request,
    body: DeviceRegistrationIn,
    idempotency_key: IdempotencyKeyHeader = None,
    who: Principal = Depends(require(AccountRole.NURSE)),
) -> Response:
    """Register a phone's Ed25519 public key with a proof of possession: its signature over a
    challenge from GET /devices/registration-challenge; nurses only, and the registration is
    audited. Sending the same registration again returns the same device with `new: false` (an
    Idempotency-Key is honoured too); a used challenge with another key is refused."""
    p = portner(request)
    holder, actor_id = _nurse_holder(who), who.actor_id
    assert actor_id is not None
    public_key = from_b64url(body.public_key, "body/public_key")
    challenge = from_b64url(body.challenge, "body/challenge")
    signature = from_b64url(body.signature, "body/signature")
    now = p.now()
    try:
        verify_registration_proof(
            challenge_key(p.secrets), holder=holder, public_key=public_key, challenge=challenge,
            signature=signature, now=now,
        )
    except RegistrationRefused as exc:
        raise field_problem(f"body/{exc.field}", str(exc), status=exc.status) from None

    def handler(conn: Connection) -> DeviceOut:
        done = register_verified_device(
            conn, holder=holder, actor_id=actor_id, public_key=public_key, challenge=challenge,
            now=now, ids=p.ids, by=who.audit_actor,
        )
        d = done.device
        return DeviceOut(id=d.id, status=d.status.value, registered_at=d.registered_at,
                         public_key=b64url(d.public_key), new=done.created)

    try:
        return await idempotent(request, who, handler, status_code=201)
    except RegistrationRefused as exc:
        if exc.field == "account":
            raise Problem(403, "Forbidden", "this account may not register phones") from None
        raise field_problem(f"body/{exc.field}", str(exc), status=exc.status) from None


# --- door events --------------------------------------------------------------------------------


class WireEventIn(BaseModel):
    """One lock event as the lock sealed it (see portner.services.lock_wire)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int
    at: str = Field(max_length=40, description="ISO 8601 with offset, the lock's clock")
    kind: str = Field(max_length=32)
    allowed: bool | None = None
    reason: str = Field(max_length=64)
    credential_id: str | None = Field(None, max_length=64)
    subject: str | None = Field(None, max_length=64)
    prev_hash: str = Field(max_length=64, description="64 hex digits")
    hash: str = Field(max_length=64, description="64 hex digits")
    mac: str = Field(max_length=64, description="64 hex digits")


class HeadIn(BaseModel):
    """The lock's MACed log head for a nonce (exposes events a relay held back)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    nonce: str = Field(min_length=32, max_length=128, description="16..64 bytes as hex")
    seq: int = Field(ge=0, le=2**63 - 1)
    hash: str = Field(min_length=64, max_length=64)
    mac: str = Field(min_length=64, max_length=64)


class LockUploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    lock_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    events: list[WireEventIn] = Field(max_length=MAX_LOCK_EVENTS)
    head: HeadIn | None = None


class DoorEventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    uploads: list[LockUploadIn] = Field(min_length=1, max_length=MAX_UPLOADS)


class LockUploadResult(BaseModel):
    lock_id: str
    accepted: int = Field(description="Events that extended the verified chain now")
    pending: int = Field(description="Events held beyond a gap until the missing ones arrive")
    gaps_filled: int = 0
    opened: int
    denied: int
    arrivals: int
    departures: int
    anomalies: list[str]


class DoorEventBatchOut(BaseModel):
    results: list[LockUploadResult]


def _may_upload(who: Principal) -> int:
    """Refuse other roles; return the body size this uploader may send."""
    if who.role is AccountRole.NURSE:
        return MAX_NURSE_BYTES
    if who.role is AccountRole.INTEGRATION and SCOPE_EVENTS_UPLOAD in who.scopes:
        return MAX_GATEWAY_BYTES
    raise NotPermitted(f"uploading door events needs a nurse's phone or the {SCOPE_EVENTS_UPLOAD} scope")


def _parse_batch(raw: bytes) -> DoorEventBatchIn:
    try:
        batch = DoorEventBatchIn.model_validate_json(raw)
    except ValidationError as exc:
        # The same 422 as FastAPI's own body validation, naming body/...
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_input=False)]
        ) from None
    total, per_lock = 0, {}
    for n, upload in enumerate(batch.uploads):
        total += len(upload.events)
        per_lock[upload.lock_id] = per_lock.get(upload.lock_id, 0) + len(upload.events)
        if per_lock[upload.lock_id] > MAX_LOCK_EVENTS:
            raise field_problem(f"body/uploads/{n}/events", f"more than {MAX_LOCK_EVENTS} events of one lock in one request")
        if total > MAX_EVENTS:
            raise field_problem(f"body/uploads/{n}/events", f"more than {MAX_EVENTS} events in one request")
    return batch


def _hex(value: str, field: str) -> bytes:
    try:
        if any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise field_problem(field, "must be hex digits") from None


# Who may upload for which lock (see the module docstring), as SQL on the lock's home h with "?"
# parameters (door_events.UploadAuthority): a gateway, any lock of its municipality; a nurse,
# those of the homes her visit grants in the relay window lead her to, she named by her staff id
# or, for a session read in the same round trip, by accounts.session_actor_sql: nobody while
# the session may not act as a nurse, so a session that is over, or of another role, locks no
# lock's row before it is refused.
_OF_MUNICIPALITY = "h.resident_id IN (SELECT id FROM residents WHERE municipality_id = ?)"
_OF_NURSE = (
    _OF_MUNICIPALITY + " AND EXISTS (SELECT 1 FROM grants g JOIN visits v ON v.id = g.visit_id"
    " WHERE v.resident_id = h.resident_id AND g.actor_id = {actor}"
    " AND g.not_after >= ? AND g.not_before <= ?)"
)
# Which of the locks a batch names an uploader may upload for, in fetch_in's form.
_LOCKS_OF = (
    "SELECT l.id FROM locks l JOIN doors d ON d.id = l.door_id JOIN homes h ON h.id = d.home_id"
    " WHERE {where} AND l.id {{ids}}"
)


def _relay_window(conn: Connection, now: datetime) -> tuple[Any, Any]:
    stored = instant_writer(conn)
    return stored(now - RELAY_BACK), stored(now + RELAY_AHEAD)


def _session_authority(conn: Connection, municipality_id: str, account_id: str, signed_in: datetime,
                       issuers: frozenset[str] | None, now: datetime) -> UploadAuthority:
    """The locks a nurse's session may upload for, her account named by its id (of `issuers`,
    those whose accounts may sign in here, when given)."""
    actor, named = session_actor_sql(conn, account_id, municipality_id, AccountRole.NURSE, signed_in, issuers)
    return UploadAuthority(_OF_NURSE.format(actor=actor), (municipality_id, *named, *_relay_window(conn, now)))


def _authority_of(conn: Connection, who: Principal, now: datetime) -> UploadAuthority:
    """Which locks this uploader (may_upload passed) may upload for."""
    if who.role is not AccountRole.NURSE:
        return UploadAuthority(_OF_MUNICIPALITY, (who.municipality_id,))
    # A nurse's account without a staff member names no one: no lock is hers.
    return UploadAuthority(_OF_NURSE.format(actor="?"),
                           (who.municipality_id, who.actor_id, *_relay_window(conn, now)))


def _locks_for(conn: Connection, who: Principal, wanted: set[str], now: datetime) -> set[str]:
    """Which of `wanted` this uploader may upload for (see the module docstring)."""
    authority = _authority_of(conn, who, now)
    sql = _LOCKS_OF.format(where=authority.where)
    return {row[0] for row in fetch_in(conn, sql, wanted, *authority.params)}


def _not_yours(n: int) -> Problem:
    # The same answer for a lock that is not yours and one that does not exist.
    return Problem(403, "Forbidden", f"body/uploads/{n}/lock_id: not a lock you may upload for",
                   errors=[{"field": f"body/uploads/{n}/lock_id", "message": "not a lock you may upload for"}])


def _check_allowed(batch: DoorEventBatchIn, allowed: frozenset[str]) -> None:
    for n, upload in enumerate(batch.uploads):
        if upload.lock_id not in allowed:
            raise _not_yours(n)


def _decode_batch(batch: DoorEventBatchIn) -> list[tuple[str, list[Any], HeadAttestation | None]]:
    """The batch's events and heads as the domain takes them; a malformed one is a 422 naming it."""
    decoded = []
    for n, upload in enumerate(batch.uploads):
        base = f"body/uploads/{n}"
        events = []
        for m, ev in enumerate(upload.events):
            try:
                events.append(event_from_wire(ev.model_dump(), upload.lock_id))
            except WireError as exc:
                raise field_problem(f"{base}/events/{m}/{exc.field}", str(exc).split(": ", 1)[-1]) from None
        head = None
        if upload.head is not None:
            h = upload.head
            nonce = _hex(h.nonce, f"{base}/head/nonce")
            if not 16 <= len(nonce) <= 64:
                raise field_problem(f"{base}/head/nonce", "must be 16..64 bytes")
            head = HeadAttestation(nonce, h.seq, _hex(h.hash, f"{base}/head/hash"), _hex(h.mac, f"{base}/head/mac"))
        decoded.append((upload.lock_id, events, head))
    return decoded


def _merged(decoded: list[tuple[str, list[Any], HeadAttestation | None]]) -> list[LockUpload]:
    """One upload per lock, in first-seen order: a phone may queue several reads of one lock.
    A later read repeats what an earlier one had (each starts from what the platform had
    verified): an event already there, the same in every field, is not added again, so two
    overlapping reads are not taken for a reordered log; one that differs in anything (a
    rewritten copy) is kept, for the chain check to find. Of their heads, the highest is checked."""
    events: dict[str, list[Any]] = {}
    seen: dict[str, set[Any]] = {}
    heads: dict[str, HeadAttestation | None] = {}
    for lock_id, evs, head in decoded:
        if lock_id not in events:
            events[lock_id], seen[lock_id] = list(evs), set(evs)
        else:
            known = seen[lock_id]
            for e in evs:
                if e not in known:  # LockEvent: frozen, equal field for field
                    known.add(e)
                    events[lock_id].append(e)
        if head is not None and (heads.get(lock_id) is None or head.seq >= heads[lock_id].seq):  # type: ignore[union-attr]
            heads[lock_id] = head
    return [LockUpload(lock_id, evs, b"", head=heads.get(lock_id)) for lock_id, evs in events.items()]


# Uploads stored at once per worker process; the others wait their turn, holding nothing. Each
# holds row locks (its locks' heads, then the audit chain's head) until it commits, and more at
# once only add threads that take turns at the interpreter lock while holding them: at 200
# uploads a second with no limit they queued into stalls (p99 0.9 to 1.5 s; with 2 turns 17 to
# 35 ms in most runs, with 4 41 to 77; measured with bench-service's load). A gateway's big
# batch waits for a turn of its own, so that phones never wait behind it; so does a one-time
# visitor's upload, whose link is checked only inside its turn: a flood of made-up links delays
# no one else.
_TURNS = {"small": 2, "big": 1, "visitor": 1}
# At most this many wait, each with its body in memory (up to 1 MB, a gateway's 8 MB); one more
# is told to come back in a second (503, nothing stored), as the nurse app and gateways do.
_WAITING_MOST = {"small": 64, "big": 8, "visitor": 16}
_SMALL = 64 * 1024  # bytes: a phone's upload of a visit or two is a few kB


_BUSY = problem_response("Too many uploads are waiting: nothing was stored; send it again after "
                         "Retry-After seconds.")


class _Turns:
    """The turns of one event loop (a test client runs several, one after another)."""

    def __init__(self) -> None:
        self.gates = {kind: asyncio.Semaphore(n) for kind, n in _TURNS.items()}
        self.waiting = dict.fromkeys(_TURNS, 0)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


async def _stored(request: Request, uploader: Principal | PendingPrincipal | None, raw: bytes,
                  token: str | None = None) -> Response:
    """`_ingest` in a thread, in turn (see _TURNS)."""
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns()
    kind = "visitor" if uploader is None else "small" if len(raw) <= _SMALL else "big"
    gate = turns.gates[kind]
    if gate.locked() and turns.waiting[kind] >= _WAITING_MOST[kind]:
        raise Problem(503, "Busy", "too many uploads are waiting here; nothing was stored, send "
                      "them again in a moment", kind="busy", headers={"Retry-After": "1"})
    turns.waiting[kind] += 1
    try:
        await gate.acquire()
    finally:
        turns.waiting[kind] -= 1
    try:
        return await run_in_threadpool(_ingest, request, uploader, raw, token)
    finally:
        gate.release()


def _uploader_authority(conn: Connection, p: Portner, uploader: Principal | PendingPrincipal,
                        now: datetime) -> UploadAuthority:
    """Which locks the uploader may upload for, and for a session, its account: read with the
    batch's first reads and checked as _may_upload checks before anything else is done. A
    session's uploader is taken to be a nurse; another who may upload (a gateway signed in by
    the development sign-in), for whom that read locked nothing, has its locks read again by its
    own authority."""
    if isinstance(uploader, PendingPrincipal):
        session = uploader.session()
        if session is None:  # nothing to read with the batch (a session with no sign-in time)
            uploader = uploader.resolve(conn)
        else:
            pending = uploader

            def check(first: list[list[tuple[Any, ...]]]) -> UploadAuthority | None:
                who = pending.resolve_read(conn, first[0])
                _may_upload(who)
                return None if who.role is AccountRole.NURSE else _authority_of(conn, who, now)

            mine = _session_authority(conn, p.municipality.id, *session, pending.session_issuers(), now)
            return replace(mine, reads=[session_account_query(conn, *session)], check=check)
    _may_upload(uploader)
    return _authority_of(conn, uploader, now)


def _allowed_locks(conn: Connection, uploader: Principal | PendingPrincipal | None,
                   batch: DoorEventBatchIn | None, malformed: Exception | None, token: str | None,
                   now: datetime) -> frozenset[str]:
    """Who is asking and which of the batch's locks they may upload for, read on `conn` apart
    from the batch's transaction and checked in this order: who is asking (401, 403), a batch
    that does not parse (`malformed`, `batch` None: 422), a visitor's link (404), a lock not
    theirs (403). So a stranger hears 401, not 422, and nobody learns which lock ids exist."""
    who = uploader.resolve(conn) if isinstance(uploader, PendingPrincipal) else uploader
    if who is not None:
        _may_upload(who)
    if batch is None:
        assert malformed is not None
        raise malformed
    if who is None:
        allowed = visitor_upload_locks(conn, token or "", now=now)
        if allowed is None:
            raise not_found("no invitation for this link that may upload")
    else:
        allowed = frozenset(_locks_for(conn, who, {u.lock_id for u in batch.uploads}, now))
    _check_allowed(batch, allowed)
    return allowed


def _ingest(request: Request, uploader: Principal | PendingPrincipal | None, raw: bytes,
            token: str | None = None) -> Response:
    """Store a batch. `uploader` is who is asking (PendingPrincipal: a session's account, read
    with the batch's first reads and checked as _may_upload checks), or None for a one-time
    visitor's `token`."""
    p = portner(request)
    now = p.now()

    # Parsed and decoded before any connection is taken (a gateway's batch may be 8 MB); one
    # that does not is refused only after the checks that come first (_allowed_locks).
    batch: DoorEventBatchIn | None = None
    try:
        batch = _parse_batch(raw)
        uploads = [replace(u, lock_key=p.secrets.lock_key(u.lock_id)) for u in _merged(_decode_batch(batch))]
    except (RequestValidationError, Problem) as exc:
        with p.engine.connect() as conn:
            _allowed_locks(conn, uploader, batch, exc, token, now)
        raise  # an event or a head that does not decode (422)

    # The whole batch is stored in one transaction, or (on a failure) none of it.
    if p.engine.dialect.name == "postgresql" and uploader is not None:
        # Who may upload for which lock is decided in it, with its first reads: its BEGIN, the
        # session's account and the heads of the locks it may upload for (their rows locked) in
        # one round trip; its COMMIT goes with the writes.
        try:
            with pipelined_transaction(p.engine) as conn:
                authority = _uploader_authority(conn, p, uploader, now)
                reports = ingest_uploads_in(conn, uploads, now=now, ends_transaction=True, authority=authority)
        except LocksRefused as exc:
            raise _not_yours(next(n for n, u in enumerate(batch.uploads) if u.lock_id in exc.lock_ids)) from None
    else:
        # SQLite cannot turn a read transaction into a write one once another writer has
        # committed, so the reads go apart (a refusal never waits for the write lock) and the
        # batch takes the write lock first; a visitor's link is read apart on either.
        with p.engine.connect() as conn:
            _allowed_locks(conn, uploader, batch, None, token, now)
        reports = ingest_uploads(p.engine, uploads, now=now)
    out = DoorEventBatchOut(results=[
        LockUploadResult(lock_id=r.lock_id, accepted=r.accepted, pending=r.pending, opened=r.opened,
                         denied=r.denied, arrivals=r.arrivals, departures=r.departures,
                         gaps_filled=r.gaps_filled, anomalies=list(r.anomalies))
        for r in reports
    ])
    # Serialized here, by the model that made it (the route's response_model still documents
    # it): FastAPI would validate it again and then encode it, on the event loop.
    return Response(out.model_dump_json(), media_type="application/json")


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its $defs inlined (the body is read by hand, so FastAPI does
    not list the model among the document's components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


@router.post(
    "/door-events", response_model=DoorEventBatchOut,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_schema(DoorEventBatchIn)}}}},
    responses={413: problem_response("The body is larger than 1 MB (a nurse) or 8 MB (a gateway)."),
               503: _BUSY},
)
async def upload_door_events(
    request: Request,
    pending: PendingPrincipal = Depends(require_later(AccountRole.NURSE, AccountRole.INTEGRATION)),
) -> Response:
    """Upload the lock logs a nurse's phone or a lock gateway has read, as one batch (at most 50
    uploads, 2,000 events, 500 per lock) stored in one transaction or not at all. Nurses may
    upload for the locks of the homes their visit grants lead them to (2 days back to 1 day
    ahead), up to 1 MB; integrations with the portner.events.upload scope for any lock of the
    municipality, up to 8 MB; any other lock is a 403. Uploads are idempotent by content (no
    Idempotency-Key needed), chain anomalies (gaps, reordering, tampering) are reported per lock
    with a 200, and a 503 with Retry-After means nothing was stored."""
    # The body is read here, within the uploader's size limit, not by FastAPI. An access token
    # is verified already (require_later), so its bound is known. A session's body that declares
    # at most a nurse's bound is within every uploader's: it is read from the holder of a session
    # cookie this server signed (and, for a change, its CSRF token), and the session's account
    # is read with the batch, in its transaction (one connection a request). A bigger or chunked
    # one waits until the account, and so its bound, is known.
    if pending.verified is not None:
        raw = await bounded_body(request, _may_upload(pending.verified))
        return await _stored(request, pending.verified, raw)
    declared = request.headers.get("content-length", "")
    if not (declared.isdigit() and int(declared) <= MAX_NURSE_BYTES):
        who = await run_in_threadpool(pending.resolve, None)
        raw = await bounded_body(request, _may_upload(who))
        return await _stored(request, who, raw)
    raw = await bounded_body(request, MAX_NURSE_BYTES)
    return await _stored(request, pending, raw)


@router.post(
    "/visit/{token}/door-events", response_model=DoorEventBatchOut, tags=["one-time access"],
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_schema(DoorEventBatchIn)}}}},
    responses={413: problem_response("The body is larger than 1 MB."),
               404: problem_response("No redeemed invitation for this link, or its time is long past."),
               503: _BUSY},
)
async def upload_visitor_door_events(
    request: Request, token: Annotated[str, Path(min_length=16, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")],
) -> Response:
    """A one-time visitor's phone hands in the logs it read at the doors its link opens. The
    link's token is the authority (the visitor has no account); only those doors' locks."""
    raw = await bounded_body(request, MAX_NURSE_BYTES)
    return await _stored(request, None, raw, token)


# --- revocation list ----------------------------------------------------------------------------


@router.get("/revocation-list", response_model=RevocationListOut,
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "Not modified"}})
def revocation_list(request: Request, who: Principal = Depends(principal)) -> Response:
    """The municipality's newest signed revocation list, for phones and gateways to carry to
    offline locks; any signed-in caller. The ETag is the list's version (If-None-Match answers
    304), and version 0 means none has been published; send Accept: application/octet-stream for
    the signed list's raw bytes instead of JSON."""
    p = portner(request)
    latest = latest_revocation_list(p.engine, p.municipality.id)
    out = RevocationListOut(version=latest[0], list=b64url(latest[1])) if latest else RevocationListOut(version=0)
    etag = f'"v{out.version}"'
    if etag in [tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    if "application/octet-stream" in request.headers.get("accept", "") and out.list is not None:
        return Response(from_b64url(out.list, "list"), media_type="application/octet-stream",
                        headers={"ETag": etag})
    return JSONResponse(jsonable_encoder(out), headers={"ETag": etag})
