"""Records: a resident's door log, the audit log and its verification, and FHIR plan pushes.

Every read of a resident's door log is itself written to the audit log (services.queries does it
in the same transaction as the read). The log holds both the phone-credential locks' door events and
what keypad and vendor locks report (lock_activity), each line with its `source`. A FHIR push runs the same import as `portner import`: one
transaction, rejected entries quarantined for correction, the import report as the answer. A body
that yields nothing importable at all is a 422 and writes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from portner.domain.access import SCOPE_FHIR_IMPORT, AccountRole, NotPermitted, Principal
from portner.domain.care_record import Severity
from portner.fhir import read_text
from portner.services.checkpoints import check_checkpoints, cross_check, write_checkpoint
from portner.services.importing import import_sources
from portner.services.queries import UnknownResident, access_log
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository
from portner.web.api.common import (
    IDEMPOTENT_RESPONSES,
    PROBLEM_RESPONSES,
    AccessLogLineOut,
    AuditEntryOut,
    IdempotencyKeyHeader,
    Page,
    PageParams,
    bounded_body,
    idempotent_call,
    keyset,
    page_of,
    page_params,
    paginate,
    problem_response,
    resident_or_404,
)
from portner.web.deps import portner, principal, require
from portner.web.problems import Problem, not_found

router = APIRouter(responses=PROBLEM_RESPONSES)

Id = Annotated[str, Path(min_length=1, max_length=64)]
MAX_FHIR_BYTES = 5 * 1024 * 1024
FHIR_MEDIA = {"application/fhir+json": "json", "application/fhir+xml": "xml",
              "application/json": "json", "application/xml": "xml"}


# --- access log ---------------------------------------------------------------------------------


class _Line(AccessLogLineOut):
    position: int = Field(description="Place in the log (oldest first); the page order.")
    source: str = Field(
        description="How the door was opened or tried: phone (a Portner phone credential on the lock's own "
                    "log), keypad, remote, manual (thumb-turn or key), auto, rfid or unknown. A refused keypad "
                    "line is a failed attempt (reason wrong_code...), never a visit; who is 'unidentified' when "
                    "the lock did not say whose code, 'unknown credential' for a code Portner did not set.")


@router.get("/residents/{resident_id}/access-log", response_model=Page[_Line], tags=["records"],
            summary="Who came to the resident's doors and when (the read itself is audited)")
def resident_access_log(request: Request, response: Response, resident_id: Id,
                        params: PageParams = Depends(page_params),
                        who: Principal = Depends(principal)) -> Page[_Line]:
    """Who came to the resident's doors and when: every opening and refusal, from phone
    credentials on the locks' own logs and from keypad and vendor locks, oldest first, one page
    at a time. Any signed-in caller who may see the resident (see GET /residents); otherwise
    404. Every read is itself written to the audit log."""
    p = portner(request)
    now = p.now()
    with p.engine.connect() as conn:
        resident_or_404(conn, who, resident_id, now=now)
    try:
        lines = access_log(p.engine, resident_id, municipality_id=p.municipality.id, reader=who.audit_actor,
                           now=now, timezone=p.municipality.timezone)
    except UnknownResident:
        raise not_found(f"no resident {resident_id} that you may see") from None
    items = [_Line(position=i, **line.as_dict()) for i, line in enumerate(lines)]  # type: ignore[arg-type]
    return paginate(request, response, params, items, key=lambda line: (line.position,))


# --- audit --------------------------------------------------------------------------------------


@router.get("/audit", response_model=Page[AuditEntryOut], tags=["audit"],
            summary="The audit log, oldest first (admin)")
def audit_entries(
    request: Request, response: Response,
    action: Annotated[str | None, Query(max_length=64, description="Only this action, e.g. grant:created.")] = None,
    subject: Annotated[str | None, Query(max_length=200, description="Only entries about this id.")] = None,
    actor: Annotated[str | None, Query(max_length=100, description="Only entries by this actor.")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(require(AccountRole.ADMIN)),
) -> Page[AuditEntryOut]:
    """The audit log, oldest first, one page at a time; filter by `action`, `subject` or
    `actor`. Administrators only."""
    p = portner(request)
    a = t.audit_events
    stmt = select(a.c.seq, a.c.at, a.c.actor, a.c.action, a.c.subject, a.c.details).where(a.c.seq > 0)
    for column, value in ((a.c.action, action), (a.c.subject, subject), (a.c.actor, actor)):
        if value is not None:
            stmt = stmt.where(column == value)
    stmt = stmt.order_by(a.c.seq)
    with p.engine.connect() as conn:
        rows = conn.execute(keyset(stmt, params, a.c.seq)).all()
    items = [AuditEntryOut(seq=r.seq, at=r.at, actor=r.actor, action=r.action, subject=r.subject,
                           details=r.details if isinstance(r.details, dict) else {}) for r in rows]
    return page_of(request, response, params, items, key=lambda e: (e.seq,))


class AuditVerificationOut(BaseModel):
    ok: bool = Field(description="The chain, the signed checkpoints and the cross-checks all hold.")
    entries: int
    chain_ok: bool
    first_bad_seq: int | None = None
    chain_problem: str = ""
    checkpoints: int = Field(description="Signed checkpoints checked against the chain.")
    checkpoint_problems: list[str] = Field(default_factory=list)
    cross_check_problems: list[str] = Field(
        default_factory=list, description="Grants, credentials or door events without their audit entry.")


@router.get("/audit/verify", response_model=AuditVerificationOut, tags=["audit"],
            summary="Verify the audit chain, its signed checkpoints and cross-checks (admin)")
def audit_verify(request: Request, who: Principal = Depends(require(AccountRole.ADMIN))) -> AuditVerificationOut:
    """Verify the audit log: its hash chain, the signed checkpoints against it, and that every
    grant, credential and door event has its audit entry; `ok` is true when all hold.
    Administrators only."""
    p = portner(request)
    with p.engine.connect() as conn:
        chain = verify_audit(conn)
        count, checkpoint_problems = check_checkpoints(conn, p.settings.data_dir)
        missing = cross_check(conn)
    return AuditVerificationOut(
        ok=chain.ok and not checkpoint_problems and not missing, entries=chain.count, chain_ok=chain.ok,
        first_bad_seq=chain.first_bad_seq, chain_problem=chain.problem, checkpoints=count,
        checkpoint_problems=checkpoint_problems, cross_check_problems=missing,
    )


# --- FHIR push ----------------------------------------------------------------------------------


class ImportProblemOut(BaseModel):
    file: str
    resource: str = Field(description="Type/id of the resource, e.g. CarePlan/abc.")
    field: str = Field(description="Path inside the resource, e.g. activity[1].detail.performer[0].")
    message: str
    severity: str = Field(description="error (quarantined) or skipped (deliberately not imported).")


class ImportReportOut(BaseModel):
    files: int
    patients: int
    practitioners: int
    plans_seen: int
    plans_unchanged: int
    plans_rejected: int
    visits_added: int
    visits_moved: int
    visits_cancelled: int
    grants_created: int
    grants_revoked: int
    quarantined: int
    skipped: int
    physical_key_visits: int
    problems: list[ImportProblemOut]


def _importer(who: Principal = Depends(principal)) -> Principal:
    if who.role is AccountRole.ADMIN:
        return who
    if who.role is AccountRole.INTEGRATION and SCOPE_FHIR_IMPORT in who.scopes:
        return who
    raise NotPermitted(f"pushing visit plans needs the admin role or the {SCOPE_FHIR_IMPORT} scope")




def _problem_field(p: Any) -> dict[str, str]:
    resource = f"{p.source.resource_type}/{p.source.resource_id}"
    field = "/".join(part for part in ("body", resource if resource != "-/-" else "", p.field) if part)
    return {"field": field, "message": p.message, "file": p.source.file, "resource": resource}


@router.post(
    "/fhir", response_model=ImportReportOut, tags=["records"],
    summary="Push visit plans as FHIR (a resource or Bundle; same import as `portner import`)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/fhir+json": {"schema": {"type": "object", "description": "A FHIR R4 resource or Bundle."}},
        "application/fhir+xml": {"schema": {"type": "string", "description": "A FHIR STU3/R4 XML resource or Bundle."}},
    }}},
    responses={**IDEMPOTENT_RESPONSES,
               413: problem_response("The body is larger than 5 MB."),
               415: problem_response("Not a FHIR media type."),
               422: problem_response("Nothing importable in the body; `errors` name resource and field.")},
)
async def push_fhir(request: Request, idempotency_key: IdempotencyKeyHeader = None,
                    who: Principal = Depends(_importer)) -> Any:
    """Push visit plans as a FHIR resource or Bundle (FHIR JSON or XML, at most 5 MB): the same
    import as `portner import`, in one transaction, answered with the import report; rejected
    entries are quarantined for correction, and a body with nothing importable is a 422 that
    writes nothing. Administrators, and integrations with the portner.fhir.import scope. Send an
    Idempotency-Key so that a retry gets the same report (409 with Retry-After while the first
    still runs)."""
    p = portner(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = FHIR_MEDIA.get(media)
    if kind is None:
        raise Problem(415, "Unsupported media type", "send application/fhir+json or application/fhir+xml",
                      kind="unsupported-media-type",
                      errors=[{"field": "header/Content-Type", "message": "not a FHIR media type"}])
    raw = await bounded_body(request, MAX_FHIR_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(422, "Invalid request", "body: not UTF-8 text", kind="invalid-request",
                      errors=[{"field": "body", "message": "not UTF-8 text"}]) from None
    now = p.now()
    name = f"api-push.{kind}"

    def run() -> dict[str, object]:
        with p.engine.connect() as conn:
            m = Repository(conn).get_municipality(p.municipality.id)
        assert m is not None
        source = read_text(text, name, timezone=m.timezone, horizon_start=now - timedelta(days=1),
                           horizon_end=now + m.plan_horizon, accept_synthetic_ids=m.accept_synthetic_ids)
        if not (source.patients or source.practitioners or source.plans) and source.problems:
            errors = [p for p in source.problems if p.severity is Severity.ERROR]
            if errors:  # nothing to import at all: refuse, write nothing
                fields = [_problem_field(e) for e in errors]
                raise Problem(422, "Invalid FHIR", "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5]),
                              kind="invalid-fhir", errors=fields)
        report = import_sources(p.engine, m, [source], now=now, ids=p.ids)
        write_checkpoint(p.engine, p.settings.data_dir, now=now)
        return report.as_dict()

    return await idempotent_call(request, who, run, body=raw)

