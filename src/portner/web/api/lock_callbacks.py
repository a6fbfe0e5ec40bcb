"""Signed callbacks from vendor lock clouds: `POST /api/v1/lock-callbacks/{backend_name}`.

Machine to machine: no session, no CSRF token, no access token. The Standard Webhooks signature
(checked by the backend's `handle_callback` with the callback secret it was configured with) is
the authority. The backend is looked up in the runtime's adapters (`adapters["lock_backends"]`,
name -> LockBackend); only a backend that takes callbacks (has `handle_callback`) answers here.

The adapter's refusals become problem details naming the field: 401 a bad or missing signature,
400 a stale timestamp or a malformed body, 409 a webhook-id already accepted (the vendor stops
retrying it). Accepted events go to the activity log (services.lock_activity.record_events),
which deduplicates on (lock, event key), so a vendor's redelivery changes nothing. When an event
cannot be kept (it fails the activity log's checks, or the database is down), the webhook-id is
released again so that the vendor's retry of the same message is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from portner.locks.port import HealthEvent, LockEvent
from portner.locks.webhook import CallbackRejected, MalformedCallback
from portner.locks.webhook.callbacks import checked
from portner.services import lock_activity
from portner.web.api.common import NO_CONTROL, bounded_body, problem_response
from portner.web.deps import portner
from portner.web.problems import Problem, not_found

log = logging.getLogger("portner.web.lock_callbacks")

router = APIRouter(tags=["lock callbacks"])

# A callback carries one event (a few hundred bytes); anything much bigger is not one.
MAX_CALLBACK_BYTES = 64_000
BackendName = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]

_TITLES = {401: "Bad signature", 409: "Already delivered"}


@runtime_checkable
class CallbackReceiver(Protocol):
    """A lock backend that takes signed callbacks (portner.locks.webhook.WebhookBackend)."""

    def handle_callback(self, headers: Mapping[str, str], body: bytes
                        ) -> list[LockEvent | HealthEvent]: ...


class LockCallbackOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: int = Field(description="Events the callback carried (0 for a command result).")
    recorded: int = Field(description="New entries in the activity log.")
    duplicates: int = Field(description="Events the activity log already had (a redelivery).")
    health: int = Field(0, description="Health events applied to the lock's status.")
    unknown_locks: list[str] = Field(
        default_factory=list,
        description="Lock addresses no lock of this municipality has; their events were not kept.")


class _CallbackIn(BaseModel):
    """For the document only: the body is read raw, because the signature covers its bytes."""

    type: str = Field(description="lock.event, lock.health or command.result")
    timestamp: str = Field(description="ISO 8601 with offset")
    data: dict[str, Any]


@router.post(
    "/lock-callbacks/{backend_name}",
    response_model=LockCallbackOut,
    summary="Take a signed callback from a vendor lock cloud",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _CallbackIn.model_json_schema()}}}},
    responses={
        400: problem_response("Stale webhook-timestamp or a malformed body; `errors` names the field."),
        401: problem_response("Missing or wrong Standard Webhooks signature."),
        404: problem_response("No lock backend of this name takes callbacks."),
        409: problem_response("This webhook-id was already accepted; do not retry it."),
        413: problem_response("The body is larger than 64 kB."),
    },
)
async def receive_lock_callback(request: Request, backend_name: BackendName) -> LockCallbackOut:
    """A vendor lock cloud reports a lock event, a health report or a command result; accepted
    events go to the lock activity log, and a redelivered event changes nothing. Signed with
    Standard Webhooks v1: headers `webhook-id`, `webhook-timestamp` (Unix seconds,
    within 5 minutes of our clock) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
    "{id}.{timestamp}.{body}" under the backend's callback secret). No session or token."""
    p = portner(request)
    backend = (p.adapters.get("lock_backends") or {}).get(backend_name)
    if not isinstance(backend, CallbackReceiver):
        raise not_found(f"no lock backend {backend_name!r} takes callbacks here")
    body = await bounded_body(request, MAX_CALLBACK_BYTES)
    headers = dict(request.headers)
    try:
        # On the event loop, not in a thread: a command.result completes a future of this loop.
        events = backend.handle_callback(headers, body)
    except CallbackRejected as exc:
        raise _problem(exc) from None
    try:
        _check_events(events)
        # The vendor speaks only for its own locks in this municipality (by backend and address).
        result = await run_in_threadpool(lock_activity.record_events, p.engine, events, now=p.now(),
                                         backend=backend_name, municipality_id=p.municipality.id)
    except BaseException:
        release = getattr(backend, "release_callback", None)
        if release is not None:
            release(headers)
        raise
    if result.unknown_locks:
        log.warning("lock callback for unknown lock address(es) on backend %s: %d",
                    backend_name, len(result.unknown_locks))
    return LockCallbackOut(events=len(events), recorded=result.recorded,
                           duplicates=result.duplicates, health=result.health,
                           unknown_locks=result.unknown_locks)


def _problem(exc: CallbackRejected) -> Problem:
    status = exc.http_status
    title = _TITLES.get(status, "Invalid callback")
    kind = {401: "bad-signature", 409: "replayed"}.get(status, "invalid-callback")
    errors = [{"field": exc.field, "message": str(exc)}] if exc.field else []
    return Problem(status, title, str(exc), kind=kind, errors=errors)


def _check_events(events: Sequence[LockEvent | HealthEvent]) -> None:
    """What the activity log would refuse (a slot outside 1..65535, an over-long key...), as a
    400 naming the field, before anything is written. The webhook backend already refuses these
    while parsing; this covers any other backend that takes callbacks."""
    for event in events:
        try:
            checked(event)
        except MalformedCallback as exc:
            raise _problem(exc) from None
