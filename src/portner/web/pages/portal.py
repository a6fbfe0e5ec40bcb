"""The resident and relative portal: who can open my door, who came, notices, today's visits.

For residents and relatives (large text, simple words). A relative sees only the residents the
care record relates them to (services.authority); any other resident id in the URL gets the same
"not found" page as an id that does not exist, so ids cannot be probed. Reading "who came" is
itself audited (services.queries.access_log, by the reader's account). The worker makes the
notices (services.notices) every SWEEP_EVERY_S seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection, select

from portner.domain.access import AccountRole, Principal
from portner.domain.model import VisitStatus
from portner.services.authority import may_see_resident, visible_residents
from portner.services.notices import (
    KIND_GRANTED,
    instant,
    mark_read,
    notices_for,
    sweep_notices,
    unread_count,
    who_kind,
)
from portner.services.queries import ROLE_WORDS, access_log, who_can_open
from portner.services.threads import finish_in_thread
from portner.storage import tables as t
from portner.storage.repository import Repository
from portner.web.deps import check_form_csrf, portner, require_page
from portner.web.i18n import pick_language, translate
from portner.web.state import Portner
from portner.web.templating import render

log = logging.getLogger(__name__)

_NOTICE_ID = re.compile(r"[0-9]{1,18}", re.ASCII)  # a notice id fits a BIGINT
router = APIRouter(include_in_schema=False)
portal_user = require_page(AccountRole.RELATIVE, AccountRole.RESIDENT)

SWEEP_EVERY_S = 10.0
LOG_DAYS = 14
ROLE_BY_WORDS = {words: role for role, words in ROLE_WORDS.items()}  # access_log/who_can_open speak English


class ResidentNotFound(Exception):
    """Not a resident this person may see (or no such resident): answered with a 404 page."""


def install(app: FastAPI, runtime: Portner) -> None:
    @app.exception_handler(ResidentNotFound)
    async def _not_found(request: Request, exc: ResidentNotFound) -> Response:
        message = translate("error.not_found", pick_language(request))
        return render(request, "error.html", {"message": message}, status_code=404)


async def sweep_worker(p: Portner) -> None:
    """Make notices every few seconds for as long as the server runs; never die."""
    while True:
        try:
            await finish_in_thread(sweep_notices, p.engine, p.municipality.id, now=p.now())
        except Exception as exc:  # the next sweep tries again; the text may hold phone numbers
            log.warning("notice sweep failed: %s", type(exc).__name__)
        await asyncio.sleep(SWEEP_EVERY_S)


workers = [sweep_worker]


# --- words --------------------------------------------------------------------------------------


class Words:
    """Plain-language phrases in the reader's language."""

    def __init__(self, lang: str, zone: ZoneInfo, today: date) -> None:
        self.lang, self.zone, self.today = lang, zone, today

    def __call__(self, key: str, **params: Any) -> str:
        return translate(key, self.lang, **params)

    def day(self, d: date) -> str:
        """"tirsdag 3. desember" / "Tuesday 3 December"."""
        return self("portal.date", weekday=self(f"portal.weekday.{d.weekday()}"), day=d.day,
                    month=self(f"portal.month.{d.month}"))

    def when(self, at: datetime) -> str:
        """"tirsdag 3. desember kl. 10:32" / "Tuesday 3 December at 10:32"."""
        local = at.astimezone(self.zone) if at.tzinfo else at
        return self("portal.datetime", date=self.day(local.date()), time=f"{local:%H:%M}")

    def clock(self, at: datetime) -> str:
        """Only the time when it is today, otherwise the whole date."""
        local = at.astimezone(self.zone) if at.tzinfo else at
        return self("portal.at_time", time=f"{local:%H:%M}") if local.date() == self.today else self.when(local)

    def until(self, at: datetime) -> str:
        """"til kl. 21:05" / "until 21:05" today, otherwise with the whole date."""
        local = at.astimezone(self.zone) if at.tzinfo else at
        if local.date() == self.today:
            return self("portal.until_time", time=f"{local:%H:%M}")
        return self("portal.until", when=self.when(local))

    def doors(self, kinds: list[str]) -> str:
        names = [self(f"portal.door.{k}") for k in kinds]
        if len(names) <= 1:
            return "".join(names)
        return self("portal.and_list", first=", ".join(names[:-1]), last=names[-1])

    def role(self, role: str | None) -> str:
        return self(f"portal.role.{role}") if role in ROLE_WORDS else ""

    def who(self, role: str | None, origin: str | None, name: str) -> str:
        kind = who_kind(role, origin)
        if kind in ("one_time", "staff", "relative", "other") and name:
            return self(f"portal.who.{kind}_named", name=name, role=self.role(role))
        return self(f"portal.who.{kind}")


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- reads --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    resident_id: str
    name: str


def _resident(request: Request, who: Principal, resident_id: str) -> Shown:
    p = portner(request)
    with p.engine.connect() as conn:
        if not may_see_resident(conn, who, resident_id, now=p.now()):
            raise ResidentNotFound()
        name = conn.execute(select(t.residents.c.display_name).where(t.residents.c.id == resident_id)).scalar()
    return Shown(resident_id, name or "")


def _words(request: Request) -> Words:
    p = portner(request)
    zone = ZoneInfo(p.municipality.timezone)
    return Words(pick_language(request), zone, p.now().astimezone(zone).date())


def _day_bounds(words: Words) -> tuple[datetime, datetime]:
    start = datetime.combine(words.today, datetime.min.time(), words.zone)
    return start, datetime.combine(words.today + timedelta(days=1), datetime.min.time(), words.zone)


def _visits_today(conn: Connection, resident_id: str, words: Words) -> list[dict[str, Any]]:
    start, end = _day_bounds(words)
    rows = conn.execute(
        select(t.visits).where(t.visits.c.resident_id == resident_id, t.visits.c.planned_start >= start,
                               t.visits.c.planned_start < end).order_by(t.visits.c.planned_start)
    ).all()
    staff_ids = sorted({s for r in rows for s in r.staff_ids})
    staff = {a.id: a for a in conn.execute(select(t.actors).where(t.actors.c.id.in_(staff_ids)))}
    out = []
    for r in rows:
        people = [staff[s] for s in r.staff_ids if s in staff]
        service = words.role(people[0].role) if people else ""
        out.append({
            "id": r.id,
            "time": words("portal.visit_time", start=f"{r.planned_start.astimezone(words.zone):%H:%M}",
                          end=f"{r.planned_end.astimezone(words.zone):%H:%M}"),
            "service": upper_first(service or words("portal.role.home_nursing")),
            "people": ", ".join(a.display_name for a in people if a.display_name),
            "status": words(f"portal.visit_status.{r.status}"),
            "cancelled": r.status == VisitStatus.CANCELLED.value,
            "arrived": words.clock(r.arrived_at) if r.arrived_at else "",
            "departed": words.clock(r.departed_at) if r.departed_at else "",
        })
    return out


def _who_can_open(request: Request, conn: Connection, resident_id: str, words: Words) -> list[dict[str, Any]]:
    """Per door in path order (building, stairwell, flat): who can open it now and later today."""
    p = portner(request)
    now = p.now()
    home = conn.execute(select(t.homes.c.id).where(t.homes.c.resident_id == resident_id)).scalar()
    doors = Repository(conn).doors_of_home(home) if home else []
    lines = who_can_open(p.engine, resident_id, at=now, timezone=p.municipality.timezone)
    # A visit grant's time is the visit's.
    visit_ids = [w.visit_id for w in lines if w.visit_id]
    visits = {r.id: r for r in conn.execute(
        select(t.visits.c.id, t.visits.c.planned_start, t.visits.c.status)
        .where(t.visits.c.id.in_(visit_ids)))}
    _, day_end = _day_bounds(words)
    lead = p.municipality.window_lead
    entries = []
    for w in lines:
        role = ROLE_BY_WORDS.get(w.role)
        visit = visits.get(w.visit_id) if w.visit_id else None
        until = datetime.strptime(w.until_local, "%Y-%m-%d %H:%M").replace(tzinfo=words.zone)
        if visit is not None:
            if visit.planned_start >= day_end or visit.status == VisitStatus.CANCELLED.value:
                continue  # a later day's visit: not "today"
            why = upper_first(words("portal.why.visit", service=words.role(role) or words("portal.role.home_nursing"),
                                    time=words.clock(visit.planned_start)))
            now_open = visit.planned_start - lead <= now
            sort_at = visit.planned_start
        else:
            why = words(f"portal.why.{w.origin}", name=w.name) if w.origin in ("one_time", "manual", "emergency") else w.why
            if w.origin == "manual" and role == "response_center":
                why = words("portal.why.response_center")
            starts = w.not_before
            if starts is not None and starts >= day_end:
                continue
            now_open = None if starts is None else starts <= now
            sort_at = starts or now
        entries.append({"doors": w.doors, "name": w.name, "role": words.role(role), "why": why,
                        "until": words.until(until), "now": now_open,
                        "sort": sort_at})
    entries.sort(key=lambda e: (e["now"] is not True, e["sort"]))
    return [
        {"kind": d.kind.value, "title": upper_first(words(f"portal.door.{d.kind.value}")),
         "who": [e for e in entries if d.id in e["doors"]]}
        for d in doors
    ]


# How a line from a keypad, Matter or vendor lock (lock_activity) reads: by its source when the
# holder is known, else by what the lock could tell. Never a slot number or a code.
_NAMED_HOW = {"keypad": "code", "rfid": "tag", "phone": "phone_named", "remote": "remote_named"}
_NAMELESS_HOW = {"keypad": "code_unknown_who", "rfid": "tag_unknown_who", "manual": "inside", "remote": "remote"}
_NAMELESS = frozenset({"unidentified", "unknown credential"})  # services.queries' words for "no holder"


def _how(ln: Any) -> tuple[str | None, bool]:
    """(message variant, named) for a lock_activity line; (None, True) for a phone door event."""
    if not ln.from_lock_activity:
        return None, True
    named = ln.attribution != "unknown_credential" and ln.who not in _NAMELESS
    if ln.outcome != "opened":
        if named:
            return "refused", True
        return ("wrong_code" if ln.source == "keypad" and ln.reason == "wrong_code" else "tried"), False
    if named:
        return _NAMED_HOW.get(ln.source, "opened"), True
    if ln.attribution == "unknown_credential":
        return ("unknown_code" if ln.source == "keypad" else "unknown_key"), False
    return _NAMELESS_HOW.get(ln.source, "plain"), False


def _who_came(request: Request, who: Principal, resident_id: str, words: Words) -> list[dict[str, Any]]:
    """The last LOG_DAYS days, newest first; one line per passage (a person through their doors).

    Phone door events and lock_activity come merged in time order (services.queries.access_log).
    A named person's openings through several doors within minutes make one passage; a nameless
    opening or a failed attempt stays a line of its own (two of them may be two people)."""
    p = portner(request)
    lines = access_log(p.engine, resident_id, municipality_id=p.municipality.id, reader=who.audit_actor,
                       now=p.now(), timezone=p.municipality.timezone)
    cutoff = (p.now().astimezone(words.zone) - timedelta(days=LOG_DAYS)).replace(tzinfo=None)
    recent = [(datetime.strptime(ln.at_local, "%Y-%m-%d %H:%M"), ln) for ln in lines]
    recent = [(at, ln) for at, ln in recent if at >= cutoff]
    visit_ids = sorted({ln.visit_id for _, ln in recent if ln.visit_id})
    with p.engine.connect() as conn:
        departed = {r.id: r.departed_at for r in conn.execute(
            select(t.visits.c.id, t.visits.c.departed_at).where(t.visits.c.id.in_(visit_ids)))}
    passages: list[dict[str, Any]] = []
    for at, ln in recent:
        how, named = _how(ln)
        last = passages[-1] if passages else None
        same = (named and last is not None and last["named"]
                and (last["who_raw"], last["visit"], last["outcome"], last["how"]) == (ln.who, ln.visit_id, ln.outcome, how)
                and at - last["last_at"] <= timedelta(minutes=10))
        kind = ln.door.removesuffix(" door")
        if same:
            assert last is not None
            if kind not in last["doors"]:
                last["doors"].append(kind)
            last["last_at"] = at
            continue
        passages.append({"at": at, "last_at": at, "who_raw": ln.who, "role": ROLE_BY_WORDS.get(ln.role),
                         "visit": ln.visit_id, "outcome": ln.outcome, "planned": ln.planned, "doors": [kind],
                         "how": how, "named": named})
    out = []
    for ps in reversed(passages):
        role = words.role(ps["role"])
        person = words("portal.person_with_role", name=ps["who_raw"], role=role) if role else ps["who_raw"]
        opened = ps["outcome"] == "opened"
        verb = f"portal.came.{ps['how'] or ('opened' if opened else 'refused')}"
        left = departed.get(ps["visit"]) if ps["visit"] else None
        out.append({
            "when": upper_first(words.when(ps["at"])),
            "text": upper_first(words(verb, who=person, doors=words.doors(ps["doors"]))),
            "left": words("portal.came.left", time=f"{left.astimezone(words.zone):%H:%M}") if left else "",
            # Someone Portner knows, outside a plan; a thumb-turn or an unknown code is not "a visit".
            "outside": opened and ps["named"] and not ps["planned"],
            "refused": not opened,
        })
    return out


def _notice_view(n: Any, words: Words) -> dict[str, Any]:
    params = n.params
    who = words.who(params.get("role"), params.get("origin"), params.get("name", ""))
    doors = words.doors(list(params.get("doors", [])))
    if n.kind == KIND_GRANTED:
        start, end = instant(params, "from"), instant(params, "until")
        same_day = start and end and start.astimezone(words.zone).date() == end.astimezone(words.zone).date()
        end_text = words("portal.end_time", time=f"{end.astimezone(words.zone):%H:%M}") if same_day and end else (
            words.when(end) if end else "")
        text = words("portal.notice.granted", who=upper_first(who), doors=doors,
                     start=words.when(start) if start else "", end=end_text)
        title = words("portal.notice.granted_title")
    else:
        at = instant(params, "at")
        text = words("portal.notice.outside", who=upper_first(who), doors=doors, when=words.when(at) if at else "")
        title = words("portal.notice.outside_title")
    return {"id": n.id, "title": title, "text": text, "unread": n.unread,
            "made": upper_first(words.when(n.created_at))}


# --- pages --------------------------------------------------------------------------------------


def _base(request: Request, shown: Shown, section: str, conn: Connection) -> dict[str, Any]:
    return {"resident": shown, "section": section, "unread": unread_count(conn, shown.resident_id)}


@router.get("/portal")
def portal_start(request: Request, who: Principal = Depends(portal_user)) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        visible = visible_residents(conn, who, now=p.now())
        ids = sorted(visible or ())
        rows = conn.execute(
            select(t.residents.c.id, t.residents.c.display_name)
            .where(t.residents.c.id.in_(ids), t.residents.c.municipality_id == p.municipality.id)
            .order_by(t.residents.c.display_name, t.residents.c.id)
        ).all()
    if len(rows) == 1:
        return RedirectResponse(f"/portal/{rows[0].id}", status_code=303)
    return render(request, "portal/choose.html", {"residents": rows})


@router.get("/portal/{resident_id}")
def portal_home(request: Request, resident_id: str, who: Principal = Depends(portal_user)) -> Response:
    shown = _resident(request, who, resident_id)
    words = _words(request)
    with portner(request).engine.connect() as conn:
        context = _base(request, shown, "home", conn)
        context["visits"] = _visits_today(conn, resident_id, words)
        context["doors"] = _who_can_open(request, conn, resident_id, words)
    context["today"] = words.day(words.today)
    return render(request, "portal/home.html", context)


@router.get("/portal/{resident_id}/who-came")
def portal_who_came(request: Request, resident_id: str, who: Principal = Depends(portal_user)) -> Response:
    shown = _resident(request, who, resident_id)
    words = _words(request)
    lines = _who_came(request, who, resident_id, words)
    with portner(request).engine.connect() as conn:
        context = _base(request, shown, "who-came", conn)
    context.update({"lines": lines, "days": LOG_DAYS})
    return render(request, "portal/who_came.html", context)


@router.get("/portal/{resident_id}/notices")
def portal_notices(request: Request, resident_id: str, who: Principal = Depends(portal_user)) -> Response:
    shown = _resident(request, who, resident_id)
    words = _words(request)
    with portner(request).engine.connect() as conn:
        context = _base(request, shown, "notices", conn)
        context["notices"] = [_notice_view(n, words) for n in notices_for(conn, resident_id)]
    context["marked"] = request.query_params.get("marked") == "1"
    return render(request, "portal/notices.html", context)


@router.post("/portal/{resident_id}/notices/read", dependencies=[Depends(check_form_csrf)])
def portal_mark_read(request: Request, resident_id: str, notice: str = Form("all"),
                     who: Principal = Depends(portal_user)) -> Response:
    shown = _resident(request, who, resident_id)
    # Strict ASCII digits, bounded: str.isdigit() accepts "²", and int() of 5000 digits raises.
    ids = None if notice == "all" else [int(notice)] if _NOTICE_ID.fullmatch(notice) else []
    mark_read(portner(request).engine, shown.resident_id, ids, now=portner(request).now(), by=who.audit_actor)
    return RedirectResponse(f"/portal/{shown.resident_id}/notices?marked=1", status_code=303)
