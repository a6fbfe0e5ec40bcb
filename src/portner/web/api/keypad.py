"""A nurse's keypad codes: the codes for her visits at doors whose lock takes codes, not phone keys.

Each code is shown once: the first answer that includes it marks it delivered, and later answers
say when it was delivered instead (the nurse app keeps it on the phone). A code that was never
delivered because the phone was lost is withdrawn by the operator (revoking the grant), never
shown again. Answers are never cached by a browser or proxy.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from portner.domain.access import NotPermitted, Principal
from portner.services.keypad import AlreadyDelivered, KeypadKeys, reveal_once
from portner.storage import tables as t
from portner.web.api.common import PROBLEM_RESPONSES
from portner.web.deps import portner, principal

router = APIRouter(tags=["phones"], responses=PROBLEM_RESPONSES)


class KeypadCodeOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    grant_id: str | None
    lock_ids: list[str] = Field(description="The locks (in the door path's order) this code opens.")
    not_before: datetime | None
    not_after: datetime | None
    code: str | None = Field(None, description="The digits, in the first answer only; null afterwards.")
    delivered_at: datetime | None = Field(None, description="When the code was first shown.")


@router.get("/me/keypad-codes", response_model=list[KeypadCodeOut],
            summary="My keypad codes for doors without phone keys (each code shown once)")
def my_keypad_codes(request: Request, response: Response, who: Principal = Depends(principal)) -> list[KeypadCodeOut]:
    """The signed-in person's keypad codes for their visits at doors whose lock takes codes
    instead of phone keys, each with the locks it opens and its time window. A code's digits are
    in the first answer only (the delivery is audited); later answers say when it was delivered,
    and no answer is cached. Any signed-in account linked to a person; others get 403."""
    if who.actor_id is None:
        raise NotPermitted("keypad codes are for staff with visits")
    p = portner(request)
    now = p.now()
    keys = KeypadKeys.from_secrets(p.secrets, p.municipality.id)
    k, pl = t.keypad_codes.c, t.code_placements.c
    out: list[KeypadCodeOut] = []
    with p.engine.begin() as conn:
        rows = conn.execute(
            select(k.id, k.grant_id, k.not_before, k.not_after, k.delivered_at)
            .where(k.actor_id == who.actor_id, k.municipality_id == p.municipality.id, k.revoked_at.is_(None),
                   k.not_after.is_(None) | (k.not_after > now))
            .order_by(k.not_before, k.id)
        ).all()
        locks_of: dict[str, list[str]] = {}
        for code_id, lock_id in conn.execute(select(pl.code_id, pl.lock_id)
                                             .where(pl.code_id.in_([r.id for r in rows])).order_by(pl.id)):
            locks_of.setdefault(code_id, []).append(lock_id)
        for row in rows:
            lock_ids = locks_of.get(row.id, [])
            code, delivered = None, row.delivered_at
            if delivered is None:
                try:
                    code = reveal_once(conn, row.id, now=now, key=keys, actor=who.audit_actor).reveal()
                    delivered = now
                except AlreadyDelivered:  # another request of hers took it a moment ago
                    delivered = conn.execute(select(k.delivered_at).where(k.id == row.id)).scalar()
            out.append(KeypadCodeOut(id=row.id, grant_id=row.grant_id, lock_ids=lock_ids, not_before=row.not_before,
                                     not_after=row.not_after, code=code, delivered_at=delivered))
    response.headers["Cache-Control"] = "no-store"
    return out
