"""Expansion of activity timings into visits: DST, weekdays, overnight, count, horizon, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fhir_helpers import DATA, read_data, utc

from portner.domain.care_record import ParsedSource, PlannedOccurrence, Severity
from portner.fhir import read_source, read_text

OSLO = ZoneInfo("Europe/Oslo")


def of_activity(parsed: ParsedSource, index: int) -> list[PlannedOccurrence]:
    (plan,) = parsed.plans
    return [o for o in plan.occurrences if f"#a{index}#" in o.key]


def local_hhmm(instant: datetime) -> str:
    return instant.astimezone(OSLO).strftime("%H:%M")


def test_daily_0800_keeps_wall_clock_across_spring_change() -> None:
    parsed = read_data("r4-daily-dst.json")
    assert parsed.problems == []
    starts = [o.start for o in of_activity(parsed, 0)]
    # CET (+01:00) before 2026-03-29, CEST (+02:00) from that day on.
    assert starts == [
        utc(2026, 3, 27, 7),
        utc(2026, 3, 28, 7),
        utc(2026, 3, 29, 6),
        utc(2026, 3, 30, 6),
        utc(2026, 3, 31, 6),  # the date-only end includes the whole last day
    ]
    assert {local_hhmm(s) for s in starts} == {"08:00"}


def test_daily_0800_keeps_wall_clock_across_autumn_change() -> None:
    parsed = read_data("r4-daily-dst.json")
    starts = [o.start for o in of_activity(parsed, 1)]
    assert starts == [
        utc(2026, 10, 23, 6),
        utc(2026, 10, 24, 6),
        utc(2026, 10, 25, 7),
        utc(2026, 10, 26, 7),
        utc(2026, 10, 27, 7),
    ]


def test_occurrences_are_utc_with_stable_keys_and_default_length() -> None:
    parsed = read_data("r4-daily-dst.json")
    (plan,) = parsed.plans
    first = plan.occurrences[0]
    assert plan.plan_key == "urn:ietf:rfc:3986|urn:uuid:0d6f5a2e-1111-4000-8000-000000000001"
    assert first.key == f"{plan.plan_key}#a0#2026-03-27T07:00:00Z"
    assert first.start.tzinfo is UTC
    assert first.end - first.start == timedelta(minutes=30)  # no duration given: the default
    assert plan.version == "3"
    assert first.description == "Morgenstell (spring)"
    # Reading again gives the same keys: re-imports find the same visits.
    again = read_data("r4-daily-dst.json")
    assert [o.key for o in again.plans[0].occurrences] == [o.key for o in plan.occurrences]


def test_default_visit_length_is_a_parameter() -> None:
    parsed = read_source(
        DATA / "r4-daily-dst.json",
        timezone="Europe/Oslo",
        horizon_start=utc(2026, 1, 1),
        horizon_end=utc(2027, 1, 1),
        accept_synthetic_ids=True,
        default_visit_length=timedelta(minutes=50),
    )
    occurrence = parsed.plans[0].occurrences[0]
    assert occurrence.end - occurrence.start == timedelta(minutes=50)


def test_day_of_week_and_every_second_week() -> None:
    parsed = read_data("stu3-weekly.xml")
    assert parsed.problems == []
    mon_thu = of_activity(parsed, 0)
    assert [o.start.astimezone(OSLO).day for o in mon_thu] == [2, 6, 9, 13, 16, 20, 23, 27, 30]
    assert {o.start.astimezone(OSLO).strftime("%a %H:%M") for o in mon_thu} == {
        "Mon 09:30",
        "Thu 09:30",
    }
    assert all(o.end - o.start == timedelta(minutes=45) for o in mon_thu)
    fridays = of_activity(parsed, 1)
    assert [o.start.astimezone(OSLO).date().isoformat() for o in fridays] == [
        "2026-04-03",
        "2026-04-17",
        "2026-05-01",
        "2026-05-15",
        "2026-05-29",
    ]
    # Weekly with no dayOfWeek: the weekday of the start (RFC 5545), here Wednesday.
    wednesdays = of_activity(parsed, 2)
    assert [o.start.astimezone(OSLO).strftime("%a %d") for o in wednesdays] == [
        "Wed 01",
        "Wed 08",
        "Wed 15",
        "Wed 22",
    ]


def test_xml_narrative_is_ignored_and_lastupdated_is_the_version() -> None:
    (plan,) = read_data("stu3-weekly.xml").plans
    assert plan.plan_key == "CarePlan/weekly"
    assert plan.version == "2026-03-01T10:00:00+01:00"
    (performer,) = plan.occurrences[1].performers
    assert [i.kind.value for i in performer.identifiers] == ["national_id"]


def test_overnight_visits_cross_midnight() -> None:
    parsed = read_data("r4-overnight.json")
    assert parsed.problems == []
    recurring = of_activity(parsed, 0)
    assert [(o.start, o.end) for o in recurring] == [
        (utc(2026, 2, 10, 22, 30), utc(2026, 2, 11, 0, 0)),
        (utc(2026, 2, 11, 22, 30), utc(2026, 2, 12, 0, 0)),
    ]
    (single,) = of_activity(parsed, 1)
    assert (local_hhmm(single.start), local_hhmm(single.end)) == ("23:30", "01:00")
    assert single.end - single.start == timedelta(minutes=90)


def test_time_in_the_spring_gap_moves_forward_and_ambiguous_takes_the_first() -> None:
    parsed = read_data("stu3-dst-gap.xml")
    assert parsed.problems == []
    spring = of_activity(parsed, 0)
    # 02:30 does not exist on 2026-03-29: read with the offset before the gap (RFC 5545 3.3.5),
    # which is 01:30Z, shown as 03:30 summer time.
    assert [o.start for o in spring] == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    assert local_hhmm(spring[1].start) == "03:30"
    autumn = of_activity(parsed, 1)
    # 02:30 happens twice on 2026-10-25: the first (summer time, 00:30Z) is taken.
    assert [o.start for o in autumn] == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_count_limits_occurrences_and_the_horizon_does_not_shift_them() -> None:
    full = read_data("r4-count.json")
    assert [o.start for o in full.plans[0].occurrences] == [
        utc(2026, 5, 1, 10),
        utc(2026, 5, 2, 10),
        utc(2026, 5, 3, 10),
    ]
    assert full.plans[0].expanded_until is None
    later = read_data("r4-count.json", (utc(2026, 5, 2), utc(2027, 1, 1)))
    # Counting starts at the first occurrence, not at the horizon: still ends on 3 May.
    assert [o.key for o in later.plans[0].occurrences] == [
        o.key for o in full.plans[0].occurrences[1:]
    ]


def test_open_ended_plan_is_bounded_by_the_horizon() -> None:
    horizon = (utc(2026, 6, 1), utc(2026, 6, 15))
    parsed = read_data("stu3-open-ended.xml", horizon)
    assert parsed.problems == []
    (plan,) = parsed.plans
    assert plan.plan_key == "urn:ietf:rfc:3986|urn:uuid:0d6f5a2e-2222-4000-8000-000000000002"
    assert plan.version == "7"
    assert len(plan.occurrences) == 14
    assert plan.occurrences[0].start == utc(2026, 6, 1, 5, 15)
    assert plan.occurrences[-1].start == utc(2026, 6, 14, 5, 15)
    assert all(horizon[0] <= o.start < horizon[1] for o in plan.occurrences)
    assert plan.expanded_until == horizon[1]


def test_activity_problems_reject_only_their_activity() -> None:
    parsed = read_data("r4-activity-problems.json")
    (plan,) = parsed.plans
    assert [o.key.split("#")[1] for o in plan.occurrences] == ["a0", "a0", "a6"]
    assert plan.occurrences[2].cancelled is True
    assert not plan.occurrences[0].cancelled
    found = {(p.field, p.message) for p in parsed.problems}
    assert found == {
        ("activity[1].detail.scheduledTiming.repeat.boundsPeriod", "ends before it starts"),
        ("activity[2].detail.scheduledTiming.repeat.timeOfDay", "no time of day"),
        (
            "activity[3].detail.scheduledTiming.repeat.frequency",
            "frequency 2 per day but 1 time(s) of day",
        ),
        (
            "activity[4].detail.performer[0].identifier",
            "invalid national id number: check digit mismatch",
        ),
        (
            "activity[5].detail.scheduledTiming.repeat.periodUnit",
            "periodUnit 'mo' is not supported",
        ),
        ("activity[7].detail.scheduledTiming.repeat.boundsPeriod", "no time of day"),
        ("activity[8].detail.scheduled[x]", "activity has no scheduledTiming or scheduledPeriod"),
        (
            "activity[9].detail.scheduledTiming.repeat.boundsPeriod.start",
            "date-time has a time but no time zone",
        ),
    }
    assert all(p.severity is Severity.ERROR for p in parsed.problems)
    # The quarantine keeps the activity as read, so it can be corrected.
    bad_performer = next(p for p in parsed.problems if "performer" in p.field)
    assert bad_performer.raw is not None and '"bad performer"' in bad_performer.raw


def test_cancelled_plan_yields_the_plan_without_occurrences() -> None:
    parsed = read_data("stu3-cancelled-plan.xml")
    assert parsed.problems == []
    (plan,) = parsed.plans
    assert plan.status == "cancelled"
    assert plan.occurrences == ()


NATIONAL_ID_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"


def activity(timing: dict[str, object], status: str = "scheduled") -> dict[str, object]:
    return {"detail": {"status": status, "scheduledTiming": timing}}


def visit_plan(**changes: object) -> dict[str, object]:
    """A minimal valid R4 visit plan as a dict, with top-level elements replaced."""
    plan: dict[str, object] = {
        "resourceType": "CarePlan",
        "id": "inline",
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category-v090",
                        "code": "3",
                    }
                ]
            }
        ],
        "subject": {"identifier": {"system": NATIONAL_ID_SYSTEM, "value": "15869012332"}},
        "activity": [activity({"event": ["2026-06-01T10:00:00+02:00"]})],
    }
    plan.update(changes)
    return plan


def read_plan(plan: dict[str, object]) -> ParsedSource:
    return read_text(
        json.dumps(plan),
        "inline.json",
        timezone="Europe/Oslo",
        horizon_start=utc(2026, 1, 1),
        horizon_end=utc(2027, 1, 1),
        accept_synthetic_ids=True,
    )


def test_timing_event_gives_the_visit() -> None:
    (plan,) = read_plan(visit_plan()).plans
    (visit,) = plan.occurrences
    assert (visit.start, visit.end) == (utc(2026, 6, 1, 8), utc(2026, 6, 1, 8, 30))


def test_plan_period_ending_before_it_starts_rejects_the_plan() -> None:
    parsed = read_plan(visit_plan(period={"start": "2026-06-02", "end": "2026-06-01"}))
    assert parsed.plans == []
    assert [(p.field, p.message) for p in parsed.problems] == [
        ("period", "plan period ends before it starts")
    ]


def test_plan_period_end_caps_a_recurring_activity() -> None:
    timing = {"repeat": {"boundsPeriod": {"start": "2026-06-01"}, "timeOfDay": ["09:00:00"]}}
    period = {"start": "2026-05-01", "end": "2026-06-03"}
    parsed = read_plan(visit_plan(period=period, activity=[activity(timing)]))
    (plan,) = parsed.plans
    assert [o.start.day for o in plan.occurrences] == [1, 2, 3]
    assert plan.expanded_until is None  # the plan's own end, not the horizon, stopped it


def test_entered_in_error_activity_yields_nothing() -> None:
    entered = activity({"event": ["2026-06-01T10:00:00Z"]}, status="entered-in-error")
    parsed = read_plan(visit_plan(activity=[entered]))
    assert parsed.problems == [] and parsed.plans[0].occurrences == ()


def test_plan_without_subject_is_an_error() -> None:
    plan = visit_plan()
    del plan["subject"]
    parsed = read_plan(plan)
    assert parsed.plans == []
    assert [(p.field, p.message) for p in parsed.problems] == [("subject", "plan has no subject")]


def test_absurd_plans_are_refused_not_expanded_forever() -> None:
    times = [f"{h:02d}:00:00" for h in range(20)]
    timing = {"repeat": {"boundsPeriod": {"start": "2026-01-01"}, "timeOfDay": times}}
    parsed = read_plan(visit_plan(activity=[activity(timing)]))
    assert parsed.plans[0].occurrences == ()
    assert [p.message for p in parsed.problems] == ["more than 5000 visits in the horizon"]
