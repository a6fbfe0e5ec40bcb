"""The directory API: residents, homes and door paths, doors, locks, staff, accounts, settings.

Against the demo municipality (tests/web/conftest.py), signed in through the development sign-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from portner.services.accounts import DEV_ISSUER, principal_for_subject
from portner.services.authority import visible_residents
from portner.storage import tables as t

API = "/api/v1"
ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")
Client = Callable[[str | None], TestClient]


def walk(client: TestClient, path: str) -> list[dict[str, Any]]:
    """Follow the Link headers from the first page to the last; check body and header agree."""
    items: list[dict[str, Any]] = []
    url: str | None = path
    pages = 0
    while url is not None:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items.extend(body["items"])
        link = answer.headers.get("link")
        if body["next_cursor"] is None:
            assert link is None
            url = None
        else:
            match = re.fullmatch(r'<([^>]+)>; rel="next"', link or "")
            assert match, link
            assert f"cursor={body['next_cursor']}" in match.group(1)
            url = match.group(1)
        pages += 1
        assert pages < 1000
    return items


def engine_of(app: FastAPI) -> Any:
    return app.state.portner.engine


def visible_ids(app: FastAPI, subject: str) -> frozenset[str] | None:
    p = app.state.portner
    with p.engine.connect() as conn:
        who = principal_for_subject(conn, DEV_ISSUER, subject, via="dev")
        assert who is not None
        return visible_residents(conn, who, now=p.now())


def all_resident_ids(app: FastAPI) -> set[str]:
    with engine_of(app).connect() as conn:
        return set(conn.execute(select(t.residents.c.id)).scalars())


def test_an_admin_walks_every_resident_once_in_name_order(client_for: Client, portner_app: FastAPI) -> None:
    admin = client_for("demo-admin")
    items = walk(admin, f"{API}/residents?limit=37")
    ids = [r["id"] for r in items]
    assert len(ids) == len(set(ids)), "no resident twice"
    assert set(ids) == all_resident_ids(portner_app)
    keys = [(r["display_name"], r["id"]) for r in items]
    assert keys == sorted(keys)
    assert not any("national_id" in r for r in items)


def test_a_nurse_sees_exactly_the_residents_she_serves(client_for: Client, portner_app: FastAPI) -> None:
    nurse = client_for("demo-nurse-1")
    seen = {r["id"] for r in walk(nurse, f"{API}/residents?limit=10")}
    expected = visible_ids(portner_app, "demo-nurse-1")
    assert expected is not None and seen == set(expected)
    everyone = all_resident_ids(portner_app)
    assert 0 < len(seen) < len(everyone)
    other = sorted(everyone - seen)[0]
    hidden = nurse.get(f"{API}/residents/{other}")
    missing = nurse.get(f"{API}/residents/res-does-not-exist")
    # A resident she may not see is indistinguishable from one that does not exist.
    assert hidden.status_code == missing.status_code == 404
    assert hidden.headers["content-type"] == "application/problem+json"
    assert hidden.json()["title"] == missing.json()["title"] == "Not found"
    assert nurse.get(f"{API}/residents/{other}/homes").status_code == 404
    mine = sorted(seen)[0]
    assert nurse.get(f"{API}/residents/{mine}").json()["id"] == mine


def test_a_relative_sees_only_their_own_resident(client_for: Client, portner_app: FastAPI) -> None:
    relative = client_for("demo-relative")
    items = walk(relative, f"{API}/residents")
    expected = visible_ids(portner_app, "demo-relative")
    assert expected is not None and len(expected) >= 1
    assert {r["id"] for r in items} == set(expected)
    assert relative.get(f"{API}/locks").status_code == 403
    assert relative.get(f"{API}/staff").status_code == 403
    assert relative.get(f"{API}/accounts").status_code == 403


def test_operators_search_residents_by_name(client_for: Client) -> None:
    operator = client_for("demo-operator")
    first = operator.get(f"{API}/residents?limit=1").json()["items"][0]
    part = first["display_name"].split()[-1].upper()
    found = walk(operator, f"{API}/residents?q={part}")
    assert first["id"] in {r["id"] for r in found}
    assert all(part.lower() in r["display_name"].lower() for r in found)
    assert operator.get(f"{API}/residents?q=%25%25nobody-has-this%25").json()["items"] == []
    # Case folding beyond ASCII: Norwegian letters.
    everyone = walk(operator, f"{API}/residents?limit=500")
    nordic = [r for r in everyone if any(c in r["display_name"] for c in "ÆØÅ")]
    assert nordic, "the demo has names that start with Æ, Ø or Å"
    word = next(w for w in nordic[0]["display_name"].split() if w[0] in "ÆØÅ").lower()
    found = {r["id"] for r in walk(operator, f"{API}/residents?q={word}")}
    assert {r["id"] for r in nordic if word in r["display_name"].lower()} == found


def test_homes_list_the_door_path_street_first_with_lock_status(client_for: Client, portner_app: FastAPI) -> None:
    admin = client_for("demo-admin")
    with engine_of(portner_app).connect() as conn:
        # A resident whose home has more than one door, so that the order means something.
        home_id = conn.execute(
            select(t.doors.c.home_id).group_by(t.doors.c.home_id).having(func.count() > 1).limit(1)
        ).scalar_one()
        resident_id = conn.execute(select(t.homes.c.resident_id).where(t.homes.c.id == home_id)).scalar_one()
        lock_id = conn.execute(
            select(t.doors.c.lock_id).where(t.doors.c.home_id == home_id, t.doors.c.lock_id.is_not(None)).limit(1)
        ).scalar_one()
    with engine_of(portner_app).begin() as conn:
        conn.execute(insert(t.lock_log_anomalies).values(
            lock_id=lock_id, kind="gap", first_seq=3, last_seq=4, detail="test",
            detected_at=portner_app.state.portner.now()))
    homes = admin.get(f"{API}/residents/{resident_id}/homes").json()["items"]
    home = next(h for h in homes if h["id"] == home_id)
    positions = [d["position"] for d in home["doors"]]
    assert positions == sorted(positions) and len(positions) > 1
    door = next(d for d in home["doors"] if d["lock_id"] == lock_id)
    assert door["lock"]["open_anomalies"] == 1
    assert admin.get(f"{API}/homes/{home_id}").json() == home
    assert admin.get(f"{API}/doors/{door['id']}").json() == door
    lock = admin.get(f"{API}/locks/{lock_id}").json()
    assert lock["open_anomalies"] == 1 and lock["door_id"] == door["id"]


def test_a_nurse_cannot_read_homes_or_doors_of_residents_she_does_not_serve(
    client_for: Client, portner_app: FastAPI
) -> None:
    nurse = client_for("demo-nurse-1")
    mine = visible_ids(portner_app, "demo-nurse-1") or frozenset()
    with engine_of(portner_app).connect() as conn:
        other = conn.execute(
            select(t.homes.c.id, t.doors.c.id.label("door_id"))
            .join(t.doors, t.doors.c.home_id == t.homes.c.id)
            .where(t.homes.c.resident_id.not_in(sorted(mine))).limit(1)
        ).one()
    assert nurse.get(f"{API}/homes/{other.id}").status_code == 404
    assert nurse.get(f"{API}/doors/{other.door_id}").status_code == 404
    assert nurse.get(f"{API}/locks").status_code == 403


def test_locks_are_paginated_for_operators(client_for: Client, portner_app: FastAPI) -> None:
    operator = client_for("demo-operator")
    locks = walk(operator, f"{API}/locks?limit=101")
    ids = [lock["id"] for lock in locks]
    with engine_of(portner_app).connect() as conn:
        assert sorted(ids) == ids == sorted(conn.execute(select(t.locks.c.id)).scalars())


def test_staff_lists_hide_relatives_from_nurses(client_for: Client) -> None:
    nurse = client_for("demo-nurse-2")
    admin = client_for("demo-admin")
    seen_by_nurse = walk(nurse, f"{API}/staff?limit=200")
    assert seen_by_nurse and all(s["role"] != "relative" for s in seen_by_nurse)
    relatives = walk(admin, f"{API}/staff?role=relative&limit=200")
    assert relatives and all(s["role"] == "relative" for s in relatives)
    assert nurse.get(f"{API}/staff/{relatives[0]['id']}").status_code == 404
    assert admin.get(f"{API}/staff/{relatives[0]['id']}").json()["id"] == relatives[0]["id"]
    one = seen_by_nurse[0]
    assert nurse.get(f"{API}/staff/{one['id']}").json() == one
    bad = admin.get(f"{API}/staff?role=wizard")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query/role"


def test_accounts_are_for_admins_only(client_for: Client) -> None:
    admin = client_for("demo-admin")
    accounts = walk(admin, f"{API}/accounts?limit=3")
    subjects = {a["subject"] for a in accounts}
    assert {"demo-admin", "demo-operator", "demo-nurse-1", "demo-relative"} <= subjects
    assert len(accounts) == len({a["id"] for a in accounts})
    nurses = admin.get(f"{API}/accounts?role=nurse").json()["items"]
    assert nurses and all(a["role"] == "nurse" for a in nurses)
    for who in ("demo-operator", "demo-nurse-1", "demo-relative"):
        answer = client_for(who).get(f"{API}/accounts")
        assert answer.status_code == 403
        assert answer.json()["type"].endswith("/forbidden")


def test_municipality_settings_carry_an_etag_and_answer_304(client_for: Client) -> None:
    nurse = client_for("demo-nurse-1")
    first = nurse.get(f"{API}/municipalities/current")
    assert first.status_code == 200
    settings = first.json()
    assert settings["service_model"] in ("central", "distributed")
    assert settings["lead_minutes"] == 15 and settings["grace_minutes"] == 30
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = nurse.get(f"{API}/municipalities/current", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = nurse.get(f"{API}/municipalities/current", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


@pytest.mark.parametrize("path", ["/residents", "/locks", "/staff", "/accounts", "/municipalities/current"])
def test_no_national_id_reaches_any_directory_answer(client_for: Client, portner_app: FastAPI, path: str) -> None:
    with engine_of(portner_app).connect() as conn:
        ids = {n for n in conn.execute(select(t.residents.c.national_id)).scalars() if n}
        ids |= {n for n in conn.execute(select(t.actors.c.national_id)).scalars() if n}
    assert ids, "the demo has national ids to leak"
    text = client_for("demo-admin").get(f"{API}{path}?limit=500" if path != "/municipalities/current"
                                        else f"{API}{path}").text
    assert not any(n in text for n in ids)


def test_without_a_session_the_directory_is_a_401_problem(client_for: Client) -> None:
    anonymous = client_for(None)
    answer = anonymous.get(f"{API}/residents")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
