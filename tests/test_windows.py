"""Visit windows across DST and overnight."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portner.domain.errors import NaiveDatetimeError
from portner.domain.windows import visit_window

OSLO = ZoneInfo("Europe/Oslo")


def test_lead_and_grace_are_elapsed_time_across_spring_forward() -> None:
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Oslo.
    start = datetime(2026, 3, 29, 3, 10, tzinfo=OSLO)
    end = datetime(2026, 3, 29, 3, 40, tzinfo=OSLO)
    nb, na = visit_window(start, end, timedelta(minutes=15), timedelta(minutes=30))
    assert (start - nb) == timedelta(minutes=15)
    # 15 real minutes before 03:10 CEST is 01:55 CET on the wall clock.
    assert nb.astimezone(OSLO).strftime("%H:%M %Z") == "01:55 CET"
    assert na - end == timedelta(minutes=30)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(NaiveDatetimeError):
        visit_window(datetime(2026, 1, 1, 8), datetime(2026, 1, 1, 9), timedelta(0), timedelta(0))


def test_overnight_visit_window_spans_midnight() -> None:
    start = datetime(2026, 10, 24, 23, 30, tzinfo=OSLO)
    end = datetime(2026, 10, 25, 2, 30, tzinfo=OSLO)  # 02:30 first occurrence (CEST), fold=0
    nb, na = visit_window(start, end, timedelta(minutes=15), timedelta(minutes=30))
    assert nb.astimezone(OSLO).date().isoformat() == "2026-10-24"
    assert na.astimezone(OSLO).date().isoformat() == "2026-10-25"
