"""no-basis Appointment (R4) to a one-visit VisitPlanRecord.

Status booked, pending, arrived, checked-in or fulfilled: one occurrence start..end (or start +
minutesDuration). cancelled and noshow: the occurrence with `cancelled=True`. proposed, waitlist
and entered-in-error: the plan with no occurrence (not, or no longer, a planned visit). The Patient
participant is the subject; Practitioner participants (unless they declined) are the performers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from portner.domain.care_record import (
    Identifier,
    ImportProblem,
    PerformerRef,
    PlannedOccurrence,
    SourceRef,
    VisitPlanRecord,
)
from portner.fhir.context import (
    ReadContext,
    content_hash,
    identifier_key,
    key_part,
    normalise_reference,
    problem,
    read_performer,
    read_subject,
    utc_key,
    version_of,
)
from portner.fhir.identifiers import BadIdentifier
from portner.fhir.timing import TimingError, parse_bound
from portner.fhir.tree import decimal, items, one, text

_PLANNED = {"booked", "pending", "arrived", "checked-in", "fulfilled"}
_CANCELLED = {"cancelled", "noshow"}
_NOT_A_VISIT = {"proposed", "waitlist", "entered-in-error"}


def _plan_key(appointment: Any) -> str:
    key = identifier_key(appointment) or text(appointment, "id") or content_hash(appointment)
    return f"Appointment|{key}"


def _actor_type(actor: Any, ctx: ReadContext) -> str | None:
    """Say what a participant's actor is: its `type`, its reference's type or its target."""
    declared = text(actor, "type")
    if declared:
        return declared
    target = text(actor, "reference")
    if not target:
        return None
    ref = normalise_reference(target)
    if ref in ctx.patients or target in ctx.patients:
        return "Patient"
    if ref in ctx.practitioners or target in ctx.practitioners:
        return "Practitioner"
    return ref.split("/", 1)[0] if "/" in ref else None


def read_appointment(
    appointment: Any, source: SourceRef, ctx: ReadContext
) -> tuple[VisitPlanRecord | None, list[ImportProblem]]:
    """Map one Appointment; problems for what could not be imported, never an exception."""
    raw = appointment  # serialised by problem() only if needed
    status = text(appointment, "status")
    if status is None or status not in _PLANNED | _CANCELLED | _NOT_A_VISIT:
        return None, [problem(source, "status", f"unknown appointment status {status!r}", raw=raw)]

    subject: tuple[Identifier, ...] = ()
    subject_ref: str | None = None
    performers: list[PerformerRef] = []
    problems: list[ImportProblem] = []
    for index, participant in enumerate(items(appointment, "participant")):
        actor = one(participant, "actor")
        path = f"participant[{index}].actor"
        kind = _actor_type(actor, ctx)
        if kind == "Patient" and subject_ref is None and not subject:
            resolved = read_subject(actor, path, ctx)
            if isinstance(resolved, BadIdentifier):
                problems.append(problem(source, resolved.field, resolved.reason, raw=raw))
            else:
                subject, subject_ref = resolved
        elif kind == "Practitioner" and text(participant, "status") != "declined":
            performer = read_performer(actor, path, ctx)
            if isinstance(performer, BadIdentifier):
                problems.append(problem(source, performer.field, performer.reason, raw=raw))
            else:
                performers.append(performer)
    if problems:
        return None, problems
    if not subject and subject_ref is None:
        message = "appointment has no patient participant"
        return None, [problem(source, "participant", message, raw=raw)]

    key = _plan_key(appointment)
    occurrences: tuple[PlannedOccurrence, ...] = ()
    if status not in _NOT_A_VISIT:
        try:
            occurrence = _occurrence(appointment, key, performers, status in _CANCELLED, ctx)
        except TimingError as exc:
            return None, [problem(source, exc.field, exc.message, raw=raw)]
        occurrences = (occurrence,) if occurrence is not None else ()
    record = VisitPlanRecord(
        source=source,
        plan_key=key,
        subject=subject,
        subject_ref=subject_ref,
        status=status,
        occurrences=occurrences,
        version=version_of(appointment),
    )
    return record, []


def _occurrence(
    appointment: Any,
    key: str,
    performers: list[PerformerRef],
    cancelled: bool,
    ctx: ReadContext,
) -> PlannedOccurrence | None:
    """The visit, or None when it lies outside the horizon; raise TimingError when malformed."""
    start_raw, end_raw = text(appointment, "start"), text(appointment, "end")
    if start_raw is None:
        raise TimingError("start", "appointment has no start")
    start = parse_bound(start_raw, ctx.zone, is_end=False, field="start")
    if not start.has_time:
        raise TimingError("start", "no time of day")
    if end_raw is not None:
        end = parse_bound(end_raw, ctx.zone, is_end=True, field="end")
        if not end.has_time:
            raise TimingError("end", "no time of day")
        stop = end.at
    else:
        try:
            minutes = decimal(appointment, "minutesDuration")
        except ValueError as exc:
            raise TimingError("minutesDuration", str(exc)) from exc
        if minutes is None or minutes <= 0:
            raise TimingError("end", "appointment has no end and no minutesDuration")
        stop = start.at + timedelta(minutes=float(minutes))
    if stop < start.at:
        raise TimingError("end", "ends before it starts")
    if not ctx.horizon_start <= start.at < ctx.horizon_end:
        return None
    return PlannedOccurrence(
        key=f"{key_part(key)}#a0#{utc_key(start.at)}",
        start=start.at,
        end=stop,
        performers=tuple(performers),
        description=text(appointment, "description") or "",
        cancelled=cancelled,
    )
