"""The portal in a browser: a relative signs in, sees today's visits and who can open, reads who
came and the notices; every page passes axe-core in bokmål and in English."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from portner.domain.model import Actor, ActorId, GrantOrigin, MunicipalityId, Role
from portner.services.notices import sweep_notices
from portner.storage import tables as t
from portner.storage.repository import Repository
from tests.e2e.conftest import LiveServer, axe_check, sign_in
from tests.web.conftest import DEMO_DAY, OSLO

pytestmark = pytest.mark.e2e


def _relative_resident(live: LiveServer) -> str:
    with live.engine.connect() as conn:
        actor = conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == "demo-relative")).scalar_one()
        return conn.execute(select(t.relations.c.resident_id).where(t.relations.c.actor_id == actor)).scalar_one()


def _visits_today(live: LiveServer, resident: str) -> list[str]:
    start = datetime.combine(DEMO_DAY, datetime.min.time(), OSLO)
    with live.engine.connect() as conn:
        return list(conn.execute(
            select(t.visits.c.id).where(t.visits.c.resident_id == resident, t.visits.c.planned_start >= start,
                                        t.visits.c.planned_start < start + timedelta(days=1))
            .order_by(t.visits.c.planned_start)).scalars())


def _give_one_time_access(live: LiveServer, resident: str) -> None:
    now = live.portner.now()
    with live.engine.begin() as conn:
        repo = Repository(conn)
        home = conn.execute(select(t.homes.c.id).where(t.homes.c.resident_id == resident)).scalar_one()
        doors = [d.id for d in repo.doors_of_home(home)]
        repo.upsert_actor(Actor(ActorId("ext-e2e"), MunicipalityId(live.portner.municipality.id),
                                Role.EXTERNAL_PROVIDER, "Rør AS", display_name="Rørlegger Berg"))
        conn.execute(insert(t.grants).values(
            id="grt-e2e", actor_id="ext-e2e", door_ids=doors, not_before=now + timedelta(hours=1),
            not_after=now + timedelta(hours=3), origin=GrantOrigin.ONE_TIME.value, visit_id=None,
            status="active", reason="", created_at=now))
    # The server's own worker sweeps too; the sweep is idempotent, so at most one notice results.
    sweep_notices(live.engine, live.portner.municipality.id, now=live.portner.now())


def test_a_relative_sees_the_visit_and_who_can_open_and_every_page_is_accessible(page, live: LiveServer) -> None:
    resident = _relative_resident(live)
    visits = _visits_today(live, resident)
    assert visits, "the demo relative's resident has visits on the demo day"
    _give_one_time_access(live, resident)

    sign_in(page, live, "demo-relative")
    assert page.url == f"{live.url}/portal/{resident}"
    shown = page.locator("[data-visit-id]")
    assert [shown.nth(i).get_attribute("data-visit-id") for i in range(shown.count())] == visits
    assert page.get_by_role("heading", name="Hvem kan åpne døren min").is_visible()
    assert page.locator(".door").first.get_by_text("Engangstilgang for Rørlegger Berg").is_visible()
    axe_check(page)

    page.get_by_role("link", name="Hvem kom").click()
    assert page.locator("h1").inner_text() == "Hvem kom"
    axe_check(page)

    page.get_by_role("link", name="Varsler").click()
    assert page.locator("h1").inner_text() == "Varsler"
    notice = page.locator("li.notice.unread")
    assert notice.count() == 1 and "Rørlegger Berg" in notice.inner_text()
    axe_check(page)
    notice.get_by_role("button", name="Merk som lest").click()
    assert page.get_by_role("status").inner_text() == "Merket som lest."
    assert page.locator("li.notice.unread").count() == 0
    axe_check(page)

    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Notices"
    axe_check(page)
    for link, heading in (("Who came", "Who came"), ("Today", None)):
        page.get_by_role("navigation", name="Pages about the door").get_by_role("link", name=link).click()
        if heading:
            assert page.locator("h1").inner_text() == heading
        axe_check(page)
    assert page.get_by_role("heading", name="Who can open my door").is_visible()
    assert page.locator("[data-visit-id]").count() == len(visits)
