"""The response center end to end, in Chromium against a real server, lock bridge and SMS gateway.

(a) The operator gives one-time access in the console; the SMS reaches the test HTTP gateway with
    a link; the visitor opens the link on "their phone" (another browser), and the door opens.
(b) The operator revokes a nurse's phone in the console; the next attempt at the lock is denied
    "revoked" (a Python phone key registered for the nurse, talking to the bridge's HTTP API).
axe-core runs on every console page and on the visitor's page.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import insert, select

from portner.credentials import DeviceKey
from portner.services.devices import register_device
from portner.services.ids import IdSource
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.services.messaging import HttpSmsGateway
from portner.services.revocation import latest_revocation_list
from portner.storage import tables as t
from tests.e2e.conftest import LiveServer, axe_check, sign_in
from tests.services.test_messaging import SmsGatewayServer

pytestmark = pytest.mark.e2e

DEADLINE_S = 30.0  # only a bound on waiting for background work; nothing here measures speed


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    end = time.monotonic() + DEADLINE_S
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resident_with_elock(live: LiveServer) -> tuple[str, str]:
    with live.engine.connect() as conn:
        row = conn.execute(
            select(t.residents.c.id, t.residents.c.display_name)
            .join(t.homes, t.homes.c.resident_id == t.residents.c.id)
            .join(t.doors, t.doors.c.home_id == t.homes.c.id)
            .where(t.homes.c.elock_system.is_not(None), t.doors.c.lock_id.is_not(None))
            .order_by(t.residents.c.id).limit(1)
        ).one()
    return row.id, row.display_name


def test_operator_gives_one_time_access_and_the_visitor_opens_the_door(live_server, browser, page) -> None:
    gateway = SmsGatewayServer().start()
    try:
        live = live_server(adapters={"sms": HttpSmsGateway(gateway.url)})
        resident_id, name = resident_with_elock(live)
        sign_in(page, live, "demo-operator", next_path="/console")
        assert page.url.startswith(f"{live.url}/console")
        expect(page.locator("#live-status")).to_have_text("Tilkoblet. Viser nye hendelser.")
        axe_check(page)
        page.fill("#q", name)
        page.get_by_role("button", name="Søk").click()
        axe_check(page)
        page.click(f'a[href="/console/residents/{resident_id}"]')
        expect(page.locator("h1")).to_have_text(name)
        axe_check(page)
        page.fill("#ot-name", "Rørlegger Berg")
        page.fill("#ot-phone", "912 34 567")
        page.get_by_role("button", name="Send tilgang på SMS").click()
        page.wait_for_url(re.compile(r".*/console/one-time\?given=inv-.*"))
        expect(page.locator("#given")).to_contain_text("Engangstilgang gitt til Rørlegger Berg")
        axe_check(page)

        sms = wait_for("the SMS at the gateway", lambda: gateway.received)[0]
        assert sms["to"] == "+4791234567" and "Rørlegger Berg" in sms["text"]
        link = re.search(r"https?://\S+", sms["text"]).group(0)  # type: ignore[union-attr]
        assert link.startswith(f"{live.url}/visit/")
        page.reload()
        expect(page.locator("td.sms-sent")).to_have_count(1)

        # The visitor's phone: another browser, nobody signed in.
        phone = browser.new_context(locale="nb-NO", timezone_id="Europe/Oslo").new_page()
        try:
            phone.goto(link)
            expect(phone.locator("h1")).to_have_text("Din tilgang")
            axe_check(phone)
            phone.locator("button.open-door").first.click()
            expect(phone.locator("#visit-status")).to_have_text("Døren er åpen. Gå inn nå.")
            axe_check(phone)
        finally:
            phone.context.close()
        with live.engine.connect() as conn:
            invitation = conn.execute(select(t.invitations)).one()
        assert invitation.redeemed_at is not None and invitation.device_id is not None
        # The visitor's phone hands the lock's log in with the link as authority: the opening
        # is on the platform (and so in the resident's "who came") without waiting for staff.
        deadline = time.monotonic() + 15
        opened = None
        while opened is None and time.monotonic() < deadline:
            with live.engine.connect() as conn:
                opened = conn.execute(
                    select(t.door_events.c.seq).where(t.door_events.c.actor_id == invitation.actor_id,
                                                      t.door_events.c.action == "unlock",
                                                      t.door_events.c.allowed.is_(True))
                ).first()
            time.sleep(0.3)
        assert opened is not None, "the visitor's opening reached the platform"
        # The same link on a second phone is refused: it has been used.
        other = browser.new_context(locale="nb-NO").new_page()
        try:
            other.goto(link)
            other.locator("button.open-door").first.click()
            expect(other.locator("#visit-status")).to_contain_text("allerede tatt i bruk")
        finally:
            other.context.close()
    finally:
        gateway.stop()


def _nurse_with_a_visit_now(live: LiveServer) -> Any:
    now = live.portner.now()
    with live.engine.connect() as conn:
        return conn.execute(
            select(t.grants.c.id, t.grants.c.actor_id, t.grants.c.door_ids, t.actors.c.display_name)
            .join(t.actors, t.actors.c.id == t.grants.c.actor_id)
            .where(t.actors.c.role == "home_nursing", t.grants.c.origin == "visit",
                   t.grants.c.status == "active", t.grants.c.not_before <= now,
                   t.grants.c.not_after > now + timedelta(minutes=10))
            .order_by(t.grants.c.not_after.desc()).limit(1)
        ).one()


def _attempt(live: LiveServer, door: str, key: DeviceKey, credential: bytes) -> dict[str, Any]:
    """What the nurse's phone does at the door: challenge, proof, present (over the bridge)."""
    challenge = httpx.get(f"{live.bridge_url}/doors/{door}/challenge", timeout=10).json()["challenge"]
    proof = key.sign_proof(unb64(challenge), door, "unlock")
    answer = httpx.post(f"{live.bridge_url}/doors/{door}/present", timeout=10, json={
        "credential": b64(credential), "proof": b64(proof), "challenge": challenge, "action": "unlock"})
    answer.raise_for_status()
    return answer.json()


def test_operator_revokes_a_nurses_phone_and_the_next_attempt_is_denied(live, page) -> None:
    nurse = _nurse_with_a_visit_now(live)
    p = live.portner
    key = DeviceKey.generate()
    device = register_device(live.engine, nurse.actor_id, key.public_key_bytes, now=p.now(),
                             ids=IdSource(), by="test:e2e")
    window = {"window_start": p.now() - timedelta(hours=1), "window_end": p.now() + timedelta(hours=16)}
    issued = issue_for_shift(live.engine, p.secrets.issuer, [device.id], now=p.now(), ids=IdSource(), **window)
    credential = next(c.blob for c in issued if c.grant.id == nurse.id)
    door = nurse.door_ids[0]
    assert _attempt(live, door, key, credential)["opened"], "the phone opens before it is revoked"

    sign_in(page, live, "demo-operator", next_path="/console/devices")
    page.goto(f"{live.url}/console/devices?q={nurse.display_name}")
    axe_check(page)
    page.click(f'a[href="/console/devices/{device.id}/revoke"]')
    expect(page.locator("h1")).to_have_text("Trekke tilbake telefonen?")
    axe_check(page)
    page.click("#confirm-revoke")
    expect(page.locator("#revoke-result")).to_contain_text("er trukket tilbake kl.")
    expect(page.locator("#revoke-result")).to_contain_text("innen 5 sekunder")
    axe_check(page)

    latest = latest_revocation_list(live.engine, p.municipality.id)
    assert latest is not None
    wait_for("the bridge to install the new revocation list", lambda: httpx.get(
        f"{live.bridge_url}/health", timeout=10).json()["revocation_version"] >= latest[0])
    verdict = _attempt(live, door, key, credential)
    assert not verdict["opened"] and verdict["reason"] == "revoked"
    with pytest.raises(IssuanceRefused):
        issue_for_shift(live.engine, p.secrets.issuer, [device.id], now=p.now(), ids=IdSource(), **window)


@pytest.mark.parametrize("lang", ["nb", "en"])
def test_every_console_page_is_accessible(live, page, lang: str) -> None:
    sign_in(page, live, "demo-operator", next_path="/console")
    for path in ["/console", "/console/residents?q=a", "/console/one-time", "/console/devices",
                 "/console/keys"]:
        page.goto(f"{live.url}{path}{'&' if '?' in path else '?'}lang={lang}")
        assert page.locator("html").get_attribute("lang") == lang
        axe_check(page)
    resident_id, _ = resident_with_elock(live)
    page.goto(f"{live.url}/console/residents/{resident_id}")
    axe_check(page)
    page.goto(f"{live.url}/visit/not-a-real-link")
    expect(page.locator(".notice")).to_be_visible()
    axe_check(page)


KEEP_CODE = {"nb": "Behold koden (den er kjent); Portner bruker ikke plassen",
             "en": "Keep the code (it is known); Portner does not use the slot"}


@pytest.mark.parametrize("lang", ["nb", "en"])
def test_lock_fleet_pages_are_accessible(live, page, lang: str) -> None:
    with live.engine.begin() as conn:
        lock_id = conn.execute(select(t.locks.c.id).order_by(t.locks.c.id).limit(1)).scalar_one()
        at = live.portner.now()
        conn.execute(insert(t.lock_alarms).values(lock_id=lock_id, kind="removal_overdue", subject="slot 2",
                                                  detail="", raised_at=at))
        conn.execute(insert(t.lock_slots).values(lock_id=lock_id, slot=9, observed="masked", unreadable_reads=0,
                                                 observed_at=at, quarantined_at=at, quarantine_reason="foreign"))
    sign_in(page, live, "demo-operator", next_path="/console/locks")
    for path in ["/console/locks", f"/console/locks/{lock_id}"]:
        page.goto(f"{live.url}{path}?lang={lang}")
        assert page.locator("html").get_attribute("lang") == lang
        axe_check(page)
    page.get_by_label(KEEP_CODE[lang]).check()
    page.get_by_role("button", name="Lagre" if lang == "nb" else "Save").click()
    expect(page.get_by_text("Ingen koder i karantene." if lang == "nb" else "No codes in quarantine.")).to_be_visible()
