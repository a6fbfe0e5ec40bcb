"""The nurse opens a door with the platform unreachable, and the door events arrive afterwards."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from portner.storage import tables as t
from tests.e2e.conftest import LiveServer, axe_check, sign_in

pytestmark = pytest.mark.e2e


def key_window(live: LiveServer, visit_id: str) -> tuple[object, object]:
    """When the nurse's credential for this visit is valid: (not before, not after)."""
    with live.engine.connect() as conn:
        row = conn.execute(
            select(t.credentials.c.not_before, t.credentials.c.not_after)
            .join(t.grants, t.grants.c.id == t.credentials.c.grant_id)
            .where(t.grants.c.visit_id == visit_id, t.credentials.c.revoked_at.is_(None))
        ).first()
    assert row is not None, "the shown visit has a credential"
    return row.not_before, row.not_after


def wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_nurse_opens_a_door_offline_and_the_events_arrive_later(page, live: LiveServer) -> None:
    from playwright.sync_api import expect

    sign_in(page, live, "demo-nurse-1", next_path="/nurse")
    assert page.url.startswith(f"{live.url}/nurse")
    # First use: the browser makes the key, registers it and loads the shift into IndexedDB.
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#connection")).to_contain_text("Tilkoblet")
    expect(page.locator("ol.visits button.open-door").first).to_be_visible()
    axe_check(page)
    with live.engine.connect() as conn:
        device = conn.execute(select(t.devices).order_by(t.devices.c.registered_at.desc()).limit(1)).one()
    assert len(device.public_key) == 32

    first = page.locator("ol.visits > li").first
    visit_id = first.locator("h2").get_attribute("id").removeprefix("visit-")
    nbf, exp = key_window(live, visit_id)
    # The server clock is the demo day's morning; put it inside the first visit's key window.
    now = live.clock()
    if not nbf <= now < exp - timedelta(minutes=5):
        live.clock.advance(nbf + timedelta(minutes=2) - now)

    # The platform becomes unreachable; the lock bridge (the radio) is another origin and stays.
    page.route("**/api/**", lambda route: route.abort())
    page.get_by_role("button", name="Oppdater nå").click()
    expect(page.locator("#connection")).to_contain_text("Ingen forbindelse")

    button = first.locator("button.open-door").first
    door_id = button.get_attribute("data-door")
    button.click()
    expect(page.locator("#door-result")).to_contain_text("Åpnet")
    expect(page.locator("#queue-status")).to_contain_text("venter på å bli sendt")
    with live.engine.connect() as conn:
        lock_id = conn.execute(select(t.doors.c.lock_id).where(t.doors.c.id == door_id)).scalar_one()
        assert conn.execute(select(t.door_events).where(t.door_events.c.lock_id == lock_id)).first() is None
    axe_check(page)

    # The network is back: the app uploads the queue by itself.
    page.unroute("**/api/**")
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(page.locator("#queue-status")).to_contain_text("Alle dørhendelser er sendt")

    def opened_event():
        with live.engine.connect() as conn:
            return conn.execute(select(t.door_events).where(
                t.door_events.c.lock_id == lock_id, t.door_events.c.action == "unlock",
                t.door_events.c.allowed.is_(True))).first()

    event = wait_for(opened_event, "the door event in the database")
    assert event.visit_id == visit_id
    with live.engine.connect() as conn:
        visit = conn.execute(select(t.visits).where(t.visits.c.id == visit_id)).one()
    assert visit.arrived_at is not None and visit.status == "in_progress"


def test_the_app_starts_from_its_cache_with_the_platform_down(page, live: LiveServer) -> None:
    from playwright.sync_api import expect

    sign_in(page, live, "demo-nurse-1", next_path="/nurse")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    count = page.locator("ol.visits > li").count()
    assert count > 0
    # No network at all now, the page included: the service worker serves the shell and the
    # visits come from IndexedDB.
    page.context.set_offline(True)
    page.reload()
    expect(page.locator("h1")).to_have_text("Dagens besøk")
    expect(page.locator("#connection")).to_contain_text("Ingen forbindelse")
    assert page.locator("ol.visits > li").count() == count
