"""The response center's API and console pages, on the demo municipality.

Authority (nurses and relatives are refused), one-time access by SMS (queued with the grant,
idempotent, phone masked), a lost phone revoked in one action (the next credential request is
refused), who can open a door and why, physical keys, and the live event stream over a real
server (Server-Sent Events need a real socket: the test client buffers whole responses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from sqlalchemy import select

from portner.config import Settings
from portner.locks.simulated import LockClock, SimulatedLock
from portner.services.devices import register_device
from portner.services.door_events import ingest_upload
from portner.services.ids import IdSource
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.services.keys import trusted_issuers
from portner.storage import tables as t
from portner.web.app import create_app
from portner.web.state import Portner
from tests.e2e.conftest import _ThreadServer, free_port
from tests.support.clock import RunningClock
from tests.web.conftest import CSRF_META, OSLO, sign_in

STAFF_PAGES = ["/console", "/console/residents?q=a", "/console/one-time", "/console/devices", "/console/keys"]


def runtime(app: FastAPI) -> Portner:
    return app.state.portner


def resident_with_elock(p: Portner) -> tuple[str, list[str]]:
    with p.engine.connect() as conn:
        row = conn.execute(
            select(t.homes.c.id, t.homes.c.resident_id).where(t.homes.c.elock_system.is_not(None))
            .order_by(t.homes.c.resident_id).limit(1)
        ).one()
        doors = list(conn.execute(select(t.doors.c.id).where(t.doors.c.home_id == row.id)
                                  .order_by(t.doors.c.position)).scalars())
    return row.resident_id, doors


def nurse_actor(p: Portner, subject: str = "demo-nurse-1") -> str:
    with p.engine.connect() as conn:
        return conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == subject)).scalar_one()


def access_body(p: Portner, **overrides: Any) -> dict[str, Any]:
    resident, doors = resident_with_elock(p)
    start = p.now().astimezone(OSLO).replace(microsecond=0) + timedelta(minutes=5)
    body = {"resident_id": resident, "door_ids": doors, "name": "Rørlegger Berg", "phone": "912 34 567",
            "starts": start.isoformat(), "ends": (start + timedelta(hours=2)).isoformat()}
    body.update(overrides)
    return body


# --- authority ----------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["demo-nurse-1", "demo-relative"])
def test_nurses_and_relatives_cannot_use_the_console_or_its_api(client_for, portner_app, subject: str) -> None:
    c = client_for(subject)
    p = runtime(portner_app)
    door = resident_with_elock(p)[1][0]
    assert c.get("/console").status_code == 403
    for method, url, body in [
        ("GET", "/api/v1/one-time-access", None),
        ("POST", "/api/v1/one-time-access", access_body(p)),
        ("POST", "/api/v1/devices/dev-x/revoke", None),
        ("GET", f"/api/v1/doors/{door}/who-can-open", None),
        ("GET", "/api/v1/physical-keys", None),
        ("GET", "/api/v1/events/stream", None),
    ]:
        answer = c.request(method, url, json=body)
        assert answer.status_code == 403, (url, answer.status_code)
        assert answer.headers["content-type"].startswith("application/problem+json")
    with p.engine.connect() as conn:
        assert conn.execute(select(t.invitations)).first() is None


def test_not_signed_in_is_sent_to_sign_in(client_for) -> None:
    c = client_for(None)
    assert c.get("/console", follow_redirects=False).headers["location"].startswith("/signin")
    assert c.get("/api/v1/one-time-access").status_code == 401


@pytest.mark.parametrize("subject", ["demo-operator", "demo-admin"])
def test_console_pages_render_in_both_languages(client_for, subject: str) -> None:
    c = client_for(subject)
    for url in STAFF_PAGES:
        for lang, word in (("nb", "Responssenteret"), ("en", "Response center")):
            page = c.get(url, params={"lang": lang})
            assert page.status_code == 200, url
            assert f'<html lang="{lang}">' in page.text and word in page.text
            assert page.text.count("<h1") == 1


# --- one-time access ----------------------------------------------------------------------------


def test_operator_gives_one_time_access_through_the_api(client_for, portner_app) -> None:
    c = client_for("demo-operator")
    p = runtime(portner_app)
    body = access_body(p)
    first = c.post("/api/v1/one-time-access", json=body, headers={"Idempotency-Key": "ot-1"})
    assert first.status_code == 201, first.text
    out = first.json()
    assert out["phone"] == "*********67" and out["state"] == "open" and out["message"] == "queued"
    assert out["door_ids"] == body["door_ids"] and "token" not in first.text
    again = c.post("/api/v1/one-time-access", json=body, headers={"Idempotency-Key": "ot-1"})
    assert again.status_code == 201 and again.json() == out and again.headers["Idempotency-Replayed"] == "true"
    with p.engine.connect() as conn:
        invitations = conn.execute(select(t.invitations)).all()
        [message] = conn.execute(select(t.messages).where(t.messages.c.recipient == "+4791234567")).all()
        grant = conn.execute(select(t.grants).where(t.grants.c.id == out["grant_id"])).one()
    assert len(invitations) == 1 and grant.origin == "one_time"
    assert f"{p.settings.public_url}/visit/" in message.body
    listed = c.get("/api/v1/one-time-access").json()["items"]
    assert [i["id"] for i in listed] == [out["id"]] and listed[0]["phone"] == "*********67"
    assert "91234567" not in json.dumps(listed)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"ends": "2026-12-03T20:00:00+01:00", "starts": "2026-12-03T07:30:00+01:00"}, "body/ends"),
     ({"phone": "123"}, "body/phone"),
     ({"door_ids": ["d-not-hers"]}, "body/door_ids"),
     ({"starts": "2026-12-03T09:00:00"}, "body/starts")],
)
def test_bad_one_time_access_is_a_422_naming_the_field(client_for, portner_app, overrides, field) -> None:
    c = client_for("demo-operator")
    answer = c.post("/api/v1/one-time-access", json=access_body(runtime(portner_app), **overrides))
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]]
    assert "91234567" not in answer.text


def test_console_form_gives_access_and_shows_the_sms(client_for, portner_app) -> None:
    c = client_for("demo-operator")
    p = runtime(portner_app)
    body = access_body(p)
    page = c.get(f"/console/residents/{body['resident_id']}")
    csrf = CSRF_META.search(page.text).group(1)  # type: ignore[union-attr]
    start = datetime.fromisoformat(body["starts"]).astimezone(OSLO)
    form = {"csrf": csrf, "name": "Kari Besøk", "phone": "91234567", "door_ids": body["door_ids"][:1],
            "starts": start.strftime("%Y-%m-%dT%H:%M"), "ends": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")}
    done = c.post(f"/console/residents/{body['resident_id']}/one-time", data=form, follow_redirects=False)
    assert done.status_code == 303, done.text
    shown = c.get(done.headers["location"])
    assert "Engangstilgang gitt til Kari Besøk" in shown.text and "i kø" in shown.text
    # Development with the outbox gateway: the SMS and its link are shown to the developer.
    assert "Utboks" in shown.text and f"{p.settings.public_url}/visit/" in shown.text
    bad = c.post(f"/console/residents/{body['resident_id']}/one-time", data={**form, "phone": "12"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text and 'href="#ot-phone"' in bad.text
    no_csrf = c.post(f"/console/residents/{body['resident_id']}/one-time", data={**form, "csrf": "x"})
    assert no_csrf.status_code == 403


# --- a lost phone -------------------------------------------------------------------------------


def test_revoking_a_lost_phone_refuses_its_next_credentials(client_for, portner_app) -> None:
    c = client_for("demo-operator")
    p = runtime(portner_app)
    actor = nurse_actor(p)
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device = register_device(p.engine, actor, key, now=p.now(), ids=IdSource(), by="test")
    day = p.now().astimezone(OSLO).replace(hour=0, minute=0)
    window = {"window_start": day, "window_end": day + timedelta(days=1)}
    assert issue_for_shift(p.engine, p.secrets.issuer, [device.id], now=p.now(), ids=IdSource(), **window)
    answer = c.post(f"/api/v1/devices/{device.id}/revoke")
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["revoked"] and out["credentials_revoked"] >= 1 and out["locks_updated_within_s"] <= 60
    assert out["revocation_list_version"] > 0 and "sekunder" in out["explanation"]
    with pytest.raises(IssuanceRefused, match="revoked"):
        issue_for_shift(p.engine, p.secrets.issuer, [device.id], now=p.now(), ids=IdSource(), **window)
    assert c.post("/api/v1/devices/dev-nope/revoke").status_code == 404


def test_console_revokes_a_phone_after_a_confirm_step(client_for, portner_app) -> None:
    c = client_for("demo-operator")
    p = runtime(portner_app)
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device = register_device(p.engine, nurse_actor(p), key, now=p.now(), ids=IdSource(), by="test")
    listing = c.get("/console/devices")
    assert f'href="/console/devices/{device.id}/revoke"' in listing.text
    confirm = c.get(f"/console/devices/{device.id}/revoke")
    assert "Ja, trekk tilbake telefonen" in confirm.text
    with p.engine.connect() as conn:  # the confirm page changes nothing
        assert conn.execute(select(t.devices.c.status).where(t.devices.c.id == device.id)).scalar() == "active"
    csrf = CSRF_META.search(confirm.text).group(1)  # type: ignore[union-attr]
    done = c.post(f"/console/devices/{device.id}/revoke", data={"csrf": csrf})
    assert done.status_code == 200 and 'id="revoke-result"' in done.text and "innen 5 sekunder" in done.text
    with p.engine.connect() as conn:
        assert conn.execute(select(t.devices.c.status).where(t.devices.c.id == device.id)).scalar() == "revoked"


# --- who can open, physical keys ----------------------------------------------------------------


def test_who_can_open_a_door_now_and_why(client_for, portner_app) -> None:
    p = runtime(portner_app)
    now = p.now()
    with p.engine.connect() as conn:
        grant = conn.execute(
            select(t.grants).where(t.grants.c.origin == "visit", t.grants.c.status == "active",
                                   t.grants.c.not_before <= now, t.grants.c.not_after > now).limit(1)
        ).first()
    assert grant is not None, "the demo has a visit going on at 08:00"
    door = grant.door_ids[0]
    answer = client_for("demo-operator").get(f"/api/v1/doors/{door}/who-can-open", params={"lang": "en"})
    assert answer.status_code == 200
    items = answer.json()["items"]
    mine = [i for i in items if i["actor_id"] == grant.actor_id and i["now"]]
    assert mine and mine[0]["origin"] == "visit" and mine[0]["why"].startswith("planned visit ")
    assert items[0]["now"]  # those who can open now come first
    assert client_for("demo-operator").get("/api/v1/doors/d-nope/who-can-open").status_code == 404


def test_physical_keys_today(client_for, portner_app) -> None:
    answer = client_for("demo-operator").get("/api/v1/physical-keys", params={"date": "2026-12-03"})
    assert answer.status_code == 200
    visits = answer.json()
    assert visits and all(v["start"] and v["name"] for v in visits) and any(v["staff"] for v in visits)
    page = client_for("demo-operator").get("/console/keys", params={"date": "2026-12-03"})
    assert visits[0]["name"] in page.text


# --- the live event stream, on a real server ----------------------------------------------------


@pytest.fixture
def live_app(demo_settings: Settings) -> Iterator[tuple[str, Portner]]:
    port = free_port()
    clock = RunningClock(datetime(2026, 12, 3, 8, 0, tzinfo=OSLO))
    app = create_app(demo_settings, clock=clock)
    server = _ThreadServer(app, port)
    server.start()
    yield f"http://127.0.0.1:{port}", app.state.portner
    server.stop()


class DemoLock:
    """A demo lock that a phone talks to; every refused opening is uploaded at once."""

    def __init__(self, p: Portner) -> None:
        with p.engine.connect() as conn:
            lock = conn.execute(select(t.locks.c.id, t.locks.c.door_id).where(t.locks.c.synced_seq == 0)
                                .order_by(t.locks.c.id).limit(1)).one()
            issuers = trusted_issuers(conn, p.municipality.id)
        self.p, self.lock_id, self.door_id = p, lock.id, lock.door_id
        self.sim = SimulatedLock(lock_id=lock.id, door_id=lock.door_id, issuers=issuers,
                                 lock_key=p.secrets.lock_key(lock.id), clock=LockClock(p.now))
        self.uploaded = 0

    def refuse(self) -> None:
        self.sim.present(b"not a credential", bytes(64), challenge=self.sim.challenge())
        events = self.sim.events_since(self.uploaded)
        ingest_upload(self.p.engine, self.lock_id, events, lock_key=self.p.secrets.lock_key(self.lock_id),
                      now=self.p.now())
        self.uploaded = events[-1].seq


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    event_id = None
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["id"] == event_id
            yield data


def test_the_event_stream_sends_new_door_events_and_resumes(live_app) -> None:
    url, p = live_app
    lock = DemoLock(p)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0)) as client:
        sign_in(client, "demo-operator")  # type: ignore[arg-type]
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 0}) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")  # connected: the stream has begun
            lock.refuse()
            event = next(_events(lines))
        assert event["door_id"] == lock.door_id and not event["opened"] and event["outcome"] == "avvist"
        assert event["reason"] == "ugyldig nøkkel" and event["resident"] and event["door"].endswith("dør")
        with p.engine.connect() as conn:
            national_ids = [n for n in conn.execute(select(t.residents.c.national_id)).scalars() if n]
        text = json.dumps(event)
        assert national_ids and not any(n in text for n in national_ids)  # never a national id
        # Reconnecting with Last-Event-ID sends only what came after it.
        with client.stream("GET", "/api/v1/events/stream", headers={"Last-Event-ID": event["id"]}) as stream:
            lines = stream.iter_lines()
            next(lines)
            lock.refuse()
            second = next(_events(lines))
        assert second["id"] != event["id"] and second["door_id"] == lock.door_id
        # A new connection without Last-Event-ID starts with the recent events, oldest first.
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 5}) as stream:
            lines = stream.iter_lines()
            next(lines)
            recent = _events(lines)
            assert [next(recent)["id"], next(recent)["id"]] == [event["id"], second["id"]]


# --- the visitor's link -------------------------------------------------------------------------


def test_the_visitor_redeems_the_link_once(client_for, portner_app) -> None:
    from portner.services.device_registration import registration_message
    from portner.web.api.encoding import b64url, from_b64url

    p = runtime(portner_app)
    made = client_for("demo-operator").post("/api/v1/one-time-access", json=access_body(p))
    assert made.status_code == 201
    with p.engine.connect() as conn:
        body = conn.execute(select(t.messages.c.body).where(t.messages.c.recipient == "+4791234567")).scalar_one()
    token = re.search(r"/visit/(\S+)", body).group(1)  # type: ignore[union-attr]
    visitor = client_for(None)
    page = visitor.get(f"/visit/{token}")
    assert page.status_code == 200 and "Rørlegger Berg" in page.text and "button" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert visitor.get("/visit/not-a-link").status_code == 404

    def redeem() -> Any:
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        got = visitor.get(f"/api/v1/visit/{token}/challenge")
        if got.status_code != 200:
            return got
        challenge = got.json()
        signature = key.sign(registration_message(from_b64url(challenge["challenge"], "c"), public,
                                                  challenge["holder"]))
        return visitor.post(f"/api/v1/visit/{token}/redeem", json={
            "public_key": b64url(public), "challenge": challenge["challenge"], "signature": b64url(signature)})

    first = redeem()
    assert first.status_code == 201, first.text
    out = first.json()
    assert out["doors"] and len(out["credentials"]) == 1 and out["bridge_url"] == p.settings.bridge_url
    assert set(out["credentials"][0]["door_ids"]) == {d["door_id"] for d in out["doors"]}
    second = redeem()
    assert second.status_code == 409 and "redeemed" in second.text
    forged = visitor.post(f"/api/v1/visit/{token}/redeem", json={
        "public_key": b64url(bytes(32)), "challenge": b64url(bytes(72)), "signature": b64url(bytes(64))})
    assert forged.status_code in (409, 422)
