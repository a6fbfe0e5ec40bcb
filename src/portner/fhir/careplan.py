"""VKP CarePlan (STU3 v0.5/v0.6 and R4 v0.9.0) to VisitPlanRecord.

Which plans are visit plans: the VKP category code system (vkp-careplan-category, any version)
code 3. In v0.5 code 3 is displayed "arbeidsplan" (work plan), in v0.6 and v0.9.0 "besoksplan"
(visit plan); both list the visits at the resident's home. Codes 0, 1 and 2 (annen type,
tiltaksplan/behandlingsplan, tjeneste/egenbehandlingsplan) are not a source of visits.

Statuses: only an `active` plan yields occurrences; any other plan status (draft, suspended,
on-hold, completed, revoked, cancelled, entered-in-error, unknown) yields the plan with no
occurrences, so that re-importing it removes its visits. Activity statuses cancelled, stopped,
on-hold and completed yield the occurrences with `cancelled=True` (the import service cancels the
visits it already has); entered-in-error yields nothing.

STU3 and R4 differ in CarePlan mostly by renamed elements we do not read (context/encounter,
definition/instantiatesCanonical) and status values; activity.detail.scheduled[x], performer and
Timing are the same in both, so one mapping serves both.
"""

from __future__ import annotations

import re
from typing import Any

from portner.domain.care_record import (
    ImportProblem,
    PerformerRef,
    PlannedOccurrence,
    Severity,
    SourceRef,
    VisitPlanRecord,
)
from portner.fhir.context import (
    ReadContext,
    content_hash,
    identifier_key,
    key_part,
    problem,
    read_performer,
    read_subject,
    utc_key,
    version_of,
)
from portner.fhir.identifiers import BadIdentifier
from portner.fhir.timing import TimingError, ends_before_start, expand, optional_bound
from portner.fhir.tree import items, one, text, texts

_VKP_CATEGORY = re.compile(r"^https?://ehelse\.no/fhir/CodeSystem/vkp-careplan-category(?:-v\d+)?$")
_KNOWN_PROFILES = re.compile(
    r"^(?:https?://ehelse\.no/fhir/StructureDefinition/vkp-CarePlan(?:-v\d+)?"
    r"|https?://hl7\.org/fhir/StructureDefinition/CarePlan"
    r"|https?://hl7\.no/fhir/StructureDefinition/no-basis-CarePlan)$"
)
VISIT_PLAN_CODE = "3"
_CANCELLED_ACTIVITY = {"cancelled", "stopped", "on-hold", "completed"}


def _category(plan: Any) -> tuple[str | None, str]:
    """Return (VKP category code, label for messages)."""
    for category in items(plan, "category"):
        for coding in items(category, "coding"):
            system = text(coding, "system") or ""
            if _VKP_CATEGORY.match(system):
                code = text(coding, "code")
                display = text(coding, "display")
                return code, " ".join(p for p in (code, display) if p)
    return None, "no VKP category"


def _plan_key(plan: Any) -> str:
    """Identifier "system|value", else "CarePlan/<id>", else a hash of the content."""
    key = identifier_key(plan)
    if key:
        return key
    resource_id = text(plan, "id")
    return f"CarePlan/{resource_id}" if resource_id else content_hash(plan)


def read_careplan(
    plan: Any, source: SourceRef, ctx: ReadContext
) -> tuple[VisitPlanRecord | None, list[ImportProblem]]:
    """Map one CarePlan; problems for what could not be imported, never an exception."""
    raw = plan  # serialised by problem() only if needed
    profiles = [p.split("|", 1)[0] for p in texts(one(plan, "meta"), "profile")]
    if profiles and not any(_KNOWN_PROFILES.match(p) for p in profiles):
        message = f"unknown CarePlan profile {', '.join(profiles)}"
        return None, [problem(source, "meta.profile", message, raw=raw)]
    code, label = _category(plan)
    if code != VISIT_PLAN_CODE:
        note = problem(source, "category", f"not a visit plan (category {label})", Severity.SKIPPED)
        return None, [note]

    subject = one(plan, "subject")
    if subject is None:
        return None, [problem(source, "subject", "plan has no subject", raw=raw)]
    resolved = read_subject(subject, "subject", ctx)
    if isinstance(resolved, BadIdentifier):
        return None, [problem(source, resolved.field, resolved.reason, raw=raw)]
    subject_ids, subject_ref = resolved
    if not subject_ids and subject_ref is None:
        return None, [problem(source, "subject", "subject has no identifier or reference", raw=raw)]

    period = one(plan, "period")
    try:
        plan_start = optional_bound(period, "start", ctx.zone, field="period")
        plan_end = optional_bound(period, "end", ctx.zone, field="period")
    except TimingError as exc:
        return None, [problem(source, exc.field, exc.message, raw=raw)]
    if plan_start and plan_end and ends_before_start(plan_start, plan_end):
        return None, [problem(source, "period", "plan period ends before it starts", raw=raw)]

    key = _plan_key(plan)
    status = text(plan, "status") or "unknown"
    problems: list[ImportProblem] = []
    occurrences: list[PlannedOccurrence] = []
    truncated = False
    if status == "active":
        window = ctx.window(plan_start=plan_start, plan_end=plan_end)
        for index, activity in enumerate(items(plan, "activity")):
            found, cut, issues = _activity(activity, index, key, source, ctx, window)
            occurrences.extend(found)
            truncated = truncated or cut
            problems.extend(issues)
    record = VisitPlanRecord(
        source=source,
        plan_key=key,
        subject=subject_ids,
        subject_ref=subject_ref,
        status=status,
        occurrences=tuple(_unique(occurrences)),
        version=version_of(plan),
        expanded_until=ctx.horizon_end if truncated else None,
    )
    return record, problems


def _unique(occurrences: list[PlannedOccurrence]) -> list[PlannedOccurrence]:
    """Drop repeated keys (the same instant listed twice), keeping the first."""
    seen: dict[str, PlannedOccurrence] = {}
    for occurrence in occurrences:
        seen.setdefault(occurrence.key, occurrence)
    return sorted(seen.values(), key=lambda o: (o.start, o.key))


def _activity(
    activity: Any,
    index: int,
    plan_key: str,
    source: SourceRef,
    ctx: ReadContext,
    window: Any,
) -> tuple[list[PlannedOccurrence], bool, list[ImportProblem]]:
    """Expand one activity; an invalid performer or timing rejects this activity only."""
    path = f"activity[{index}]"
    raw = activity  # serialised by problem() only if needed
    detail = one(activity, "detail")
    if detail is None:
        note = f"{path} has no detail (referenced activities are not expanded)"
        return [], False, [problem(source, path, note, Severity.SKIPPED, raw)]
    status = text(detail, "status") or "scheduled"
    if status == "entered-in-error":
        return [], False, []

    performers: list[PerformerRef] = []
    problems: list[ImportProblem] = []
    for p_index, reference in enumerate(items(detail, "performer")):
        result = read_performer(reference, f"{path}.detail.performer[{p_index}]", ctx)
        if isinstance(result, BadIdentifier):
            problems.append(problem(source, result.field, result.reason, raw=raw))
        else:
            performers.append(result)
    if problems:
        return [], False, problems

    timing = one(detail, "scheduledTiming")
    if timing is None and one(detail, "scheduledPeriod") is not None:
        timing = {"repeat": {"boundsPeriod": one(detail, "scheduledPeriod")}}
    if timing is None:
        message = "activity has no scheduledTiming or scheduledPeriod"
        return [], False, [problem(source, f"{path}.detail.scheduled[x]", message, raw=raw)]
    try:
        expansion = expand(
            timing, field="scheduledTiming", window=window, default_duration=ctx.default_duration
        )
    except TimingError as exc:
        return [], False, [problem(source, f"{path}.detail.{exc.field}", exc.message, raw=raw)]

    description = text(detail, "description") or text(one(detail, "code"), "text") or ""
    # The activity's element id survives a care system adding or removing other activities;
    # its position does not, so the position is only the fallback.
    element_id = activity.get("id") if isinstance(activity, dict) else None
    activity_key = (
        f"id:{key_part(element_id)}" if isinstance(element_id, str) and element_id else f"a{index}"
    )
    occurrences = [
        PlannedOccurrence(
            key=f"{key_part(plan_key)}#{activity_key}#{utc_key(slot.start)}",
            start=slot.start,
            end=slot.end,
            performers=tuple(performers),
            description=description,
            cancelled=status in _CANCELLED_ACTIVITY,
        )
        for slot in expansion.slots
    ]
    return occurrences, expansion.truncated, []
