"""GET /me/credentials: the shift's credentials, visits and door paths, for the nurse's phone.

A phone reloads these often, so the read is built for it: one connection and one thread hop a
request, and one round trip (on PostgreSQL) for the session's account (see deps.PendingPrincipal)
and the one statement that reads the phone, its owner, every grant of the window with this
phone's credential and each visit's door path. The signed revocation list is read only
when its version is new to this process (a published list never changes). The answer is JSON
written straight from the rows; the tests hold it to the ShiftOut model byte for byte.
"""

from __future__ import annotations

import json
import weakref
from collections import namedtuple
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, and_, bindparam, func, select
from starlette.concurrency import run_in_threadpool

from portner.domain.access import AccountRole
from portner.domain.model import DeviceStatus, GrantStatus
from portner.services.issuing import IssuanceRefused, issue_for_shift, signed_credential
from portner.storage import tables as t
from portner.storage.bulk import fetch_together, id_tuple, instant_writer, read_instant
from portner.web.api.encoding import ID_PATTERN, b64url
from portner.web.deps import PendingPrincipal, portner, require_later
from portner.web.problems import Problem, not_found

router = APIRouter(tags=["phones"])

SHIFT_BEFORE = timedelta(hours=1)
SHIFT_AFTER = timedelta(hours=16)


class DoorOnPath(BaseModel):
    door_id: str
    kind: str = Field(description="building, stairwell, flat or other")
    position: int
    lock_id: str | None
    synced_seq: int = Field(0, description="How far the platform has verified this lock's log.")


class VisitOnPhone(BaseModel):
    id: str
    resident: str = Field(description="The resident's display name")
    address: str
    planned_start: datetime
    planned_end: datetime
    status: str
    doors: list[DoorOnPath] = Field(description="The door path in order, street first")


class CredentialOnPhone(BaseModel):
    credential: str = Field(description="base64url COSE_Sign1 (docs/credential-profile.md)")
    credential_id: str
    door_ids: list[str]
    not_before: datetime
    not_after: datetime
    visit: VisitOnPhone | None


class RevocationListOut(BaseModel):
    version: int = Field(description="0 when none has been published")
    list: str | None = Field(None, description="base64url of the signed list")


class ShiftOut(BaseModel):
    device_id: str
    server_time: datetime
    window_start: datetime
    window_end: datetime
    credentials: list[CredentialOnPhone]
    revocation_list: RevocationListOut
    bridge_url: str


_dv, _ac, _g, _c, _v = t.devices, t.actors, t.grants, t.credentials, t.visits
_r, _h, _d, _lk, _rl = t.residents, t.homes, t.doors, t.locks, t.revocation_lists
# The phone and its owner, with (outer joins: a phone with no grant still gets its row) each of
# the owner's active grants in the window, this phone's unrevoked credential for it, and the
# grant's visit with its resident, homes and door paths (street door first). Built once.
_SHIFT = (
    select(
        _dv.c.actor_id.label("owner"), _dv.c.public_key, _dv.c.status.label("device_status"),
        _ac.c.active.label("owner_active"),
        select(func.max(_rl.c.version)).where(_rl.c.municipality_id == bindparam("municipality_id"))
        .scalar_subquery().label("list_version"),
        _g.c.id.label("grant_id"), _g.c.door_ids, _g.c.visit_id,
        _c.c.id.label("credential_id"), _c.c.issued_at, _c.c.not_before, _c.c.not_after,
        _v.c.planned_start, _v.c.planned_end, _v.c.status.label("visit_status"), _r.c.display_name,
        _h.c.id.label("home_id"), _h.c.address, _d.c.id.label("door_id"), _d.c.kind, _d.c.position,
        _d.c.lock_id, _lk.c.synced_seq,
    )
    .select_from(_dv)
    .join(_ac, _ac.c.id == _dv.c.actor_id)
    .outerjoin(_g, and_(_g.c.actor_id == _dv.c.actor_id, _g.c.status == GrantStatus.ACTIVE.value,
                        _g.c.not_before < bindparam("end"), _g.c.not_after > bindparam("start")))
    .outerjoin(_c, and_(_c.c.grant_id == _g.c.id, _c.c.device_id == _dv.c.id, _c.c.revoked_at.is_(None)))
    .outerjoin(_v, _v.c.id == _g.c.visit_id)
    .outerjoin(_r, _r.c.id == _v.c.resident_id)
    .outerjoin(_h, _h.c.resident_id == _v.c.resident_id)
    .outerjoin(_d, _d.c.home_id == _h.c.id)
    .outerjoin(_lk, _lk.c.id == _d.c.lock_id)
    .where(_dv.c.id == bindparam("device_id"))
    .order_by(_g.c.id, _c.c.id, _h.c.id, _d.c.position)
)
# The rows as named tuples: the answer reads some twenty fields of each row, and a field of a
# SQLAlchemy Row costs about 0.3 µs by name, of a named tuple 0.04 (measured).
_ShiftRow = namedtuple("_ShiftRow", [c.key for c in _SHIFT.selected_columns])  # type: ignore[misc]
# _SHIFT as the driver takes it, per dialect ("?" parameters, as bulk.fetch_together takes them):
# sent in one round trip with the session's account. Its rows are the driver's own (instants
# and JSON as read_instant and id_tuple read them), so no SQLAlchemy type applies either way.
_SHIFT_SQL: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _shift_query(conn: Connection, params: dict[str, Any]) -> tuple[str, None, tuple[Any, ...]]:
    compiled = _SHIFT_SQL.get(conn.dialect.name)
    if compiled is None:
        done = _SHIFT.compile(dialect=type(conn.dialect)(paramstyle="qmark"))
        assert done.positiontup is not None
        # The values bound in the statement itself (the grant status); the rest come per request.
        bound = {name: bind.value for name, bind in done.binds.items()}
        compiled = _SHIFT_SQL[conn.dialect.name] = (str(done), tuple(done.positiontup), bound)
    sql, order, defaults = compiled
    values = {**defaults, **params}
    return sql, None, tuple(values[name] for name in order)


_LIST = select(_rl.c.blob).where(_rl.c.municipality_id == bindparam("municipality_id"),
                                 _rl.c.version == bindparam("version"))

# Per database, the newest signed revocation list each municipality's phones were given, as
# (version, its JSON): a published list never changes, so its version says whether it is known.
_known_lists: weakref.WeakKeyDictionary[Engine, dict[str, tuple[int, dict[str, Any]]]] = weakref.WeakKeyDictionary()


def _iso(at: datetime) -> str:
    """An aware instant as pydantic writes it in JSON (UTC as "Z"), so the answer is unchanged."""
    text = at.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _revocation_list(conn: Connection, municipality_id: str, version: int | None) -> dict[str, Any]:
    if version is None:
        return {"version": 0, "list": None}
    lists = _known_lists.setdefault(conn.engine, {})
    known = lists.get(municipality_id)
    if known is None or known[0] != version:
        blob = conn.execute(_LIST, {"municipality_id": municipality_id, "version": version}).scalar_one()
        known = lists[municipality_id] = (version, {"version": int(version), "list": b64url(bytes(blob))})
    return known[1]


def _reading(engine: Engine) -> Connection:
    """A connection for the shift's reads. On PostgreSQL in autocommit: each statement reads a
    consistent snapshot by itself, and the two round trips of BEGIN and ROLLBACK are spared
    (SQLite keeps the engine's own transaction handling)."""
    conn = engine.connect()
    return conn.execution_options(isolation_level="AUTOCOMMIT") if engine.dialect.name == "postgresql" else conn


def _shift(request: Request, pending: PendingPrincipal, device_id: str) -> Response:
    p = portner(request)
    now = p.now()
    start, end = now - SHIFT_BEFORE, now + SHIFT_AFTER
    for attempt in range(2):
        with _reading(p.engine) as conn:
            stored = instant_writer(conn)
            shift = _shift_query(conn, {"device_id": device_id, "municipality_id": p.municipality.id,
                                        "start": stored(start), "end": stored(end)})
            session = pending.session_query(conn)
            if session is None:
                who = pending.resolve(conn)
                found = fetch_together(conn, [shift])[0]
            else:
                # The session's account and the shift: one round trip.
                account, found = fetch_together(conn, [session, shift])
                who = pending.resolve_read(conn, account)
            rows = list(map(_ShiftRow._make, found))
            if not rows or rows[0].owner != who.actor_id:
                # The same answer for someone else's phone and for no phone: ids are not confirmed.
                raise not_found(f"no device {device_id} of yours")
            phone = rows[0]
            if phone.device_status != DeviceStatus.ACTIVE.value:
                raise Problem(403, "Device revoked", "this phone has been revoked; register it again",
                              kind="device-revoked")
            if not phone.owner_active:
                # What issue_for_shift refuses with: the owner is disabled.
                raise Problem(403, "Forbidden", f"account {phone.owner} is disabled", kind="issuance-refused")
            lacking = any(r.grant_id is not None and r.credential_id is None for r in rows)
            if attempt == 1 or not lacking:
                listed = _revocation_list(conn, p.municipality.id, phone.list_version)
                return _answer(p, device_id, bytes(phone.public_key), rows, listed, now, start, end)
        # A grant without this phone's credential: issue it, then read again. Outside the read:
        # issuing is its own write transaction (credentials and their audit entries together),
        # and SQLite's reader would not see its commit.
        try:
            issue_for_shift(p.engine, p.secrets.issuer, [device_id], window_start=start,
                            window_end=end, now=now, ids=p.ids)
        except IssuanceRefused as exc:
            raise Problem(403, "Forbidden", str(exc), kind="issuance-refused") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _answer(p: Any, device_id: str, public_key: bytes, rows: list[Any], listed: dict[str, Any],
            now: datetime, start: datetime, end: datetime) -> Response:
    """The ShiftOut document as JSON, built straight from the rows (no model round trip)."""
    issuer = p.secrets.issuer
    visits = _visits(rows)
    items: dict[str, tuple[tuple[datetime, str], dict[str, Any]]] = {}
    for r in rows:
        if r.credential_id is None or r.credential_id in items:
            continue
        nbf, exp, iat = (read_instant(x) for x in (r.not_before, r.not_after, r.issued_at))
        if exp <= now:
            continue  # issued for this phone earlier and over now
        doors = id_tuple(r.door_ids)
        # Issued on this or an earlier call: signing the stored claims gives the very same
        # credential (same cti); it is signed once per process and kept.
        blob = signed_credential(issuer, r.credential_id, r.owner, public_key, doors, nbf, exp, iat)
        visit = visits.get(r.visit_id) if r.visit_id else None
        items[r.credential_id] = ((visit["_start"] if visit else nbf, r.credential_id), {
            "credential": b64url(blob), "credential_id": r.credential_id, "door_ids": list(doors),
            "not_before": _iso(nbf), "not_after": _iso(exp),
            "visit": None if visit is None else visit["out"],
        })
    body = {
        "device_id": device_id, "server_time": _iso(now), "window_start": _iso(start),
        "window_end": _iso(end), "credentials": [item for _, item in sorted(items.values(), key=lambda i: i[0])],
        "revocation_list": listed, "bridge_url": p.settings.bridge_url,
    }
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


def _visits(rows: list[Any]) -> dict[str, dict[str, Any]]:
    """Each visit as VisitOnPhone's JSON ("out") and its planned start for ordering. A visit's
    rows repeat once per credential of its grant: each door is taken once."""
    out: dict[str, dict[str, Any]] = {}
    home_of: dict[str, str | None] = {}
    doors_of: dict[str, set[str]] = {}
    for row in rows:
        if row.visit_id is None or row.credential_id is None:
            continue
        visit = out.get(row.visit_id)
        if visit is None:
            planned_start = read_instant(row.planned_start)
            visit = out[row.visit_id] = {"_start": planned_start, "out": {
                "id": row.visit_id, "resident": row.display_name or "", "address": row.address or "",
                "planned_start": _iso(planned_start),  # type: ignore[arg-type]
                "planned_end": _iso(read_instant(row.planned_end)),  # type: ignore[arg-type]
                "status": row.visit_status, "doors": [],
            }}
            home_of[row.visit_id], doors_of[row.visit_id] = row.home_id, set()
        if row.home_id != home_of[row.visit_id] or row.door_id is None or row.door_id in doors_of[row.visit_id]:
            continue  # a resident with two homes: the visit shows the first
        doors_of[row.visit_id].add(row.door_id)
        visit["out"]["doors"].append({
            "door_id": row.door_id, "kind": row.kind, "position": row.position,
            "lock_id": row.lock_id, "synced_seq": int(row.synced_seq or 0),
        })
    return out


@router.get("/me/credentials", response_model=ShiftOut)
async def my_credentials(
    request: Request,
    device_id: Annotated[str, Query(max_length=64, pattern=ID_PATTERN, description="The phone's device id")],
    pending: PendingPrincipal = Depends(require_later(AccountRole.NURSE)),
) -> Response:
    """The shift's door credentials for one of the signed-in nurse's own phones (`device_id`):
    one for each active grant in the window from 1 hour ago to 16 hours ahead, each with its
    visit and door path (street first), and the newest signed revocation list. Nurses only; a
    phone that is not theirs is a 404 and a revoked phone a 403. Credentials the phone lacks are
    issued (and audited) on the call, so the app may fetch this as often as it needs."""
    return await run_in_threadpool(_shift, request, pending, device_id)
