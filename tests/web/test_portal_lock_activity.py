"""What keypad, Matter and vendor locks report (lock_activity), as residents and relatives read it.

"Who came" merges the lock's own reports with the phone-credential door events in time order, in
plain words: a named holder's code, a thumb-turn, a failed attempt (an attempt, never a visit),
an unknown code, a code the lock did not attribute. Never a slot number or a code. The rows are
inserted directly, as services.lock_activity stores them.
"""

from __future__ import annotations

import html
import re
import secrets
from datetime import datetime, timedelta
from itertools import count
from typing import Any

from fastapi import FastAPI
from sqlalchemy import insert, select

from portner.storage import tables as t
from tests.web.conftest import OSLO
from tests.web.test_portal import _another_resident, _relative_resident

_keys = count(1)
# A slot number no line may show (no time or date on the demo day contains it).
SLOT = 917


def _engine(app: FastAPI) -> Any:
    return app.state.portner.engine


def lock_of(app: FastAPI, resident_id: str) -> tuple[str, str]:
    """(lock id, door kind) of the resident's first door with a lock."""
    with _engine(app).connect() as conn:
        row = conn.execute(
            select(t.locks.c.id, t.doors.c.kind).join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id).where(t.homes.c.resident_id == resident_id)
            .order_by(t.doors.c.position, t.locks.c.id).limit(1)
        ).one()
    return row.id, row.kind


def nurse(app: FastAPI, subject: str = "demo-nurse-1") -> tuple[str, str]:
    """(actor id, display name) of a demo nurse."""
    with _engine(app).connect() as conn:
        row = conn.execute(select(t.actors.c.id, t.actors.c.display_name)
                           .join(t.accounts, t.accounts.c.actor_id == t.actors.c.id)
                           .where(t.accounts.c.subject == subject)).one()
    return row.id, row.display_name


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 12, 3, hour, minute, tzinfo=OSLO)


def add_activity(app: FastAPI, lock_id: str, *, lock_time: datetime | None, operation: str = "unlock",
                 source: str = "keypad", success: bool = True, attribution: str = "unidentified",
                 actor_id: str | None = None, slot: int | None = None, failure: str = "",
                 visit_id: str | None = None, received_at: datetime | None = None) -> int:
    row = {"lock_id": lock_id, "key": f"test-{next(_keys)}-{secrets.token_hex(4)}", "operation": operation,
           "source": source, "success": success, "slot": slot, "code_id": None, "actor_id": actor_id,
           "visit_id": visit_id, "attribution": attribution, "failure": failure, "lock_time": lock_time,
           "received_at": received_at or lock_time or at(7, 59)}
    with _engine(app).begin() as conn:
        return int(conn.execute(insert(t.lock_activity).values(row).returning(t.lock_activity.c.id)).scalar_one())


def lines_of(page: str) -> list[str]:
    """The who-came cards' text, newest first, tags stripped and whitespace squeezed."""
    cards = re.findall(r'<li class="card">(.*?)</li>', page, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cards]


def _reads(app: FastAPI, resident_id: str) -> list[Any]:
    with _engine(app).connect() as conn:
        return conn.execute(select(t.audit_events).where(t.audit_events.c.action == "accesslog:read",
                                                         t.audit_events.c.subject == resident_id)
                            .order_by(t.audit_events.c.seq)).all()


def _mixed_morning(app: FastAPI, resident: str) -> str:
    """A morning of lock reports at the resident's door; returns the nurse's display name."""
    lock_id, _ = lock_of(app, resident)
    actor_id, name = nurse(app)
    add_activity(app, lock_id, lock_time=at(3, 10), success=False, failure="wrong_code")
    add_activity(app, lock_id, lock_time=at(6, 0), attribution="unknown_credential", slot=SLOT)
    add_activity(app, lock_id, lock_time=at(6, 30))  # a keypad unlock the lock did not attribute
    add_activity(app, lock_id, lock_time=at(7, 2), attribution="event", actor_id=actor_id, slot=SLOT)
    add_activity(app, lock_id, lock_time=at(7, 5), operation="lock", source="auto", attribution="unidentified")
    add_activity(app, lock_id, lock_time=None, received_at=at(7, 40), source="manual")  # no lock clock
    return name


def test_who_came_shows_the_locks_own_reports_in_plain_words_newest_first(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    name = _mixed_morning(portner_app, resident)
    before = len(_reads(portner_app, resident))
    page = client_for("demo-relative").get(f"/portal/{resident}/who-came")
    assert page.status_code == 200
    lines = lines_of(page.text)
    assert lines == [
        "Torsdag 3. desember kl. 07:40: Leilighetsdøren ble åpnet innenfra eller med vanlig nøkkel",
        f"Torsdag 3. desember kl. 07:02: {name} (hjemmesykepleien) åpnet leilighetsdøren med kode "
        "Utenom et planlagt besøk",
        "Torsdag 3. desember kl. 06:30: Leilighetsdøren ble åpnet med kode (ukjent hvem)",
        "Torsdag 3. desember kl. 06:00: Leilighetsdøren ble åpnet med en kode Portner ikke kjenner",
        "Torsdag 3. desember kl. 03:10: Noen prøvde en feil kode på leilighetsdøren Ikke åpnet",
    ]
    # The auto-lock is not "who came"; no slot number anywhere on the page.
    assert "låst" not in page.text.lower() and str(SLOT) not in page.text
    # The read itself is logged, counting the lock's reports.
    reads = _reads(portner_app, resident)
    assert len(reads) == before + 1 and reads[-1].details["lock_activity"] == 5


def test_who_came_in_english(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    name = _mixed_morning(portner_app, resident)
    lines = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came?lang=en").text)
    assert lines == [
        "Thursday 3 December at 07:40: The flat door was opened from inside or with an ordinary key",
        f"Thursday 3 December at 07:02: {name} (home nursing) opened the flat door with a code "
        "Outside a planned visit",
        "Thursday 3 December at 06:30: The flat door was opened with a code (unknown who)",
        "Thursday 3 December at 06:00: The flat door was opened with a code Portner does not know",
        "Thursday 3 December at 03:10: Someone tried a wrong code at the flat door Not opened",
    ]


def test_a_failed_attempt_by_a_known_holder_is_an_attempt_not_a_visit(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    actor_id, name = nurse(portner_app)
    add_activity(portner_app, lock_id, lock_time=at(5, 0), success=False, failure="outside_schedule",
                 attribution="event", actor_id=actor_id, slot=SLOT)
    (line,) = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came").text)
    assert line == (f"Torsdag 3. desember kl. 05:00: {name} (hjemmesykepleien) prøvde å åpne leilighetsdøren, "
                    "men fikk ikke Ikke åpnet")


def test_a_code_opening_in_a_planned_visit_is_not_outside_the_plan(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    actor_id, name = nurse(portner_app)
    with _engine(portner_app).connect() as conn:
        visit = conn.execute(select(t.visits.c.id).where(t.visits.c.resident_id == resident)
                             .order_by(t.visits.c.planned_start).limit(1)).scalar_one()
    add_activity(portner_app, lock_id, lock_time=at(7, 2), attribution="event", actor_id=actor_id,
                 slot=SLOT, visit_id=visit)
    (line,) = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came").text)
    assert line.startswith(f"Torsdag 3. desember kl. 07:02: {name} (hjemmesykepleien) åpnet leilighetsdøren med kode")
    assert "Utenom" not in line


def test_nameless_openings_are_never_merged_into_one_passage(portner_app, client_for) -> None:
    """Two unattributed code openings a minute apart may be two people: two lines."""
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    add_activity(portner_app, lock_id, lock_time=at(6, 30))
    add_activity(portner_app, lock_id, lock_time=at(6, 31))
    lines = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came").text)
    assert [ln.split(": ", 1)[0] for ln in lines] == ["Torsdag 3. desember kl. 06:31", "Torsdag 3. desember kl. 06:30"]


def test_lock_reports_merge_with_phone_door_events_in_time_order(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    actor_id, name = nurse(portner_app)
    with _engine(portner_app).begin() as conn:
        conn.execute(insert(t.door_events).values(
            lock_id=lock_id, seq=1, lock_time=at(6, 45), received_at=at(6, 45), action="unlock", allowed=True,
            reason="ok", credential_id=None, actor_id=actor_id, visit_id=None, hash=secrets.token_bytes(32)))
    add_activity(portner_app, lock_id, lock_time=at(6, 30))
    add_activity(portner_app, lock_id, lock_time=at(7, 0), source="manual")
    lines = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came").text)
    assert [ln.split(": ", 1)[1] for ln in lines] == [
        "Leilighetsdøren ble åpnet innenfra eller med vanlig nøkkel",
        f"{name} (hjemmesykepleien) åpnet leilighetsdøren Utenom et planlagt besøk",
        "Leilighetsdøren ble åpnet med kode (ukjent hvem)",
    ]


def test_another_residents_lock_reports_are_not_shown(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    other = _another_resident(portner_app, resident)
    with _engine(portner_app).connect() as conn:
        other_lock = conn.execute(
            select(t.locks.c.id).join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id).where(t.homes.c.resident_id != resident)
            .order_by(t.locks.c.id).limit(1)).scalar_one()
    add_activity(portner_app, other_lock, lock_time=at(6, 30))
    page = client_for("demo-relative").get(f"/portal/{resident}/who-came")
    assert lines_of(page.text) == []
    assert client_for("demo-relative").get(f"/portal/{other}/who-came").status_code == 404


def test_old_lock_reports_fall_out_of_the_two_weeks(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    add_activity(portner_app, lock_id, lock_time=at(6, 30) - timedelta(days=15))
    add_activity(portner_app, lock_id, lock_time=at(6, 30) - timedelta(days=2))
    lines = lines_of(client_for("demo-relative").get(f"/portal/{resident}/who-came").text)
    assert [ln.split(": ", 1)[0] for ln in lines] == ["Tirsdag 1. desember kl. 06:30"]
