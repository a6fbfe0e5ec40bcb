"""The administrator in the browser: every page passes axe-core, the grace time is changed through
the settings form, and a quarantined demo plan is corrected by pasting the fixed resource."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from portner.storage import tables as t
from tests.e2e.conftest import LiveServer, axe_check, sign_in

pytestmark = pytest.mark.e2e

PAGES = ["/admin", "/admin/residents", "/admin/locks", "/admin/staff", "/admin/accounts", "/admin/settings",
         "/admin/imports", "/admin/quarantine"]


def test_every_admin_page_is_accessible(page, live: LiveServer) -> None:
    sign_in(page, live, "demo-admin", next_path="/admin")
    urls = list(PAGES)
    page.goto(f"{live.url}/admin/locks")
    urls.append(page.locator("table a[href^='/admin/residents/']").first.get_attribute("href"))
    page.goto(f"{live.url}/admin/staff")
    urls.append(page.locator("table a[href^='/admin/staff/']").first.get_attribute("href"))
    page.goto(f"{live.url}/admin/quarantine")
    urls.append(page.locator("table a[href^='/admin/quarantine/']").first.get_attribute("href"))
    for url in urls:
        page.goto(f"{live.url}{url}")
        assert page.locator("h1").count() == 1, url
        axe_check(page)
    page.goto(f"{live.url}/admin/settings?lang=en")
    assert page.locator("h1").inner_text() == "The municipality's settings"
    axe_check(page)


def test_the_admin_changes_the_grace_time(page, live: LiveServer) -> None:
    sign_in(page, live, "demo-admin", next_path="/admin")
    page.get_by_role("navigation", name="Administrasjon: deler").get_by_role("link", name="Innstillinger").click()
    grace = page.get_by_label("Minutter døren fortsatt åpner etter besøket")
    assert grace.input_value() == "30"
    grace.fill("45")
    page.get_by_role("button", name="Lagre").click()
    page.wait_for_url(re.compile(r".*/admin/settings\?done=saved$"))
    assert page.get_by_role("status").inner_text() == "Lagret."
    assert page.get_by_label("Minutter døren fortsatt åpner etter besøket").input_value() == "45"
    assert live.portner.municipality.window_grace.total_seconds() == 45 * 60  # the running server uses it
    with live.engine.connect() as conn:
        assert conn.execute(select(t.municipalities.c.window_grace_s)).scalar() == 45 * 60
    # A value out of bounds is refused at the field, with the typed value kept.
    page.get_by_label("Minutter døren fortsatt åpner etter besøket").fill("999")
    page.evaluate("document.querySelector('form[action=\"/admin/settings\"]').noValidate = true")
    page.get_by_role("button", name="Lagre").click()
    field = page.get_by_label("Minutter døren fortsatt åpner etter besøket")
    assert field.get_attribute("aria-invalid") == "true"
    assert "Må være fra 0 til 240." in page.locator("#settings-grace_minutes-error").inner_text()
    assert "settings-grace_minutes-error" in (field.get_attribute("aria-describedby") or "")
    axe_check(page)


def test_the_admin_corrects_a_quarantined_plan(page, live: LiveServer) -> None:
    sign_in(page, live, "demo-admin", next_path="/admin/quarantine")
    row = page.locator("tr", has_text="CarePlan/cp-bad-end-before-start")
    row.get_by_role("link").click()
    assert "ends before it starts" in page.locator("dl.facts").inner_text()
    plan_file = Path(live.settings.data_dir) / "care-record" / "plans" / "CarePlan-bad-end-before-start.json"
    plan = json.loads(plan_file.read_text())
    bounds = plan["activity"][0]["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"]
    bounds["start"], bounds["end"] = bounds["end"], bounds["start"]
    page.get_by_label("Rettet ressurs").fill(json.dumps(plan, indent=2))
    page.get_by_role("button", name="Importer rettelsen").click()
    page.wait_for_url(re.compile(r".*/admin/quarantine\?done=corrected$"))
    assert "oppføringen er løst" in page.get_by_role("status").inner_text()
    assert page.locator("tr", has_text="CarePlan/cp-bad-end-before-start").count() == 0
    plan_key = f"{plan['identifier'][0]['system']}|{plan['identifier'][0]['value']}"
    with live.engine.connect() as conn:
        visits = conn.execute(select(t.visits.c.id).where(t.visits.c.plan_key == plan_key)).all()
    assert len(visits) == 1
    axe_check(page)
