"""A relative signs in through the OpenID provider's own login page and sees their resident's visit.

The whole path is real: headless Chromium, the Portner server on loopback, oidc-provider on
loopback; nobody makes a token by hand. The server is started here (not with `live`) because the
provider must know the server's callback URL, and so its port, before the server starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portner.config import Settings
from portner.domain.access import AccountRole
from portner.services.accounts import DEV_ISSUER, create_account
from portner.services.ids import IdSource
from portner.storage import tables as t
from portner.web.app import create_app
from tests.e2e.conftest import (
    DEMO_DAY,
    OSLO,
    LiveServer,
    _ThreadServer,
    axe_check,
    copy_demo,
    free_port,
)
from tests.support.clock import RunningClock
from tests.support.oidc import ProviderFactory, RunningProvider

pytestmark = [pytest.mark.e2e, pytest.mark.oidc]

RELATIVE_LOGIN = "relative-login"


@pytest.fixture
def oidc_live(demo_template: Settings, tmp_path: Path,
              start_oidc_provider: ProviderFactory) -> Iterator[tuple[LiveServer, RunningProvider]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = start_oidc_provider(redirect_uris=[f"{url}/auth/callback"])
    settings = provider.settings_for(copy_demo(demo_template, tmp_path / "live"), public_url=url,
                                     mode="production")
    clock = RunningClock(datetime.combine(DEMO_DAY, time(8, 0), OSLO))
    app = create_app(settings, clock=clock)
    server = _ThreadServer(app, port)
    server.start()
    try:
        yield LiveServer(url, settings.bridge_url, settings, app.state.portner, clock), provider
    finally:
        server.stop()
        provider.stop()


def relative_and_visit(live: LiveServer) -> tuple[str, Any]:
    """The demo relative's actor, and a visit to their resident on the demo day."""
    day_start = datetime.combine(DEMO_DAY, time(0), OSLO)
    with live.engine.connect() as conn:
        actor = conn.execute(select(t.accounts.c.actor_id).where(
            t.accounts.c.issuer == DEV_ISSUER, t.accounts.c.subject == "demo-relative")).scalar_one()
        resident = conn.execute(select(t.relations.c.resident_id).where(
            t.relations.c.actor_id == actor)).scalars().first()
        visit = conn.execute(
            select(t.visits).where(t.visits.c.resident_id == resident,
                                   t.visits.c.planned_start >= day_start,
                                   t.visits.c.planned_start < day_start + timedelta(days=1))
            .order_by(t.visits.c.planned_start)
        ).first()
    assert actor and visit is not None, "the demo relative's resident has a visit on the demo day"
    return str(actor), visit


def test_relative_signs_in_at_the_provider_and_sees_the_visit(
    page: Any, oidc_live: tuple[LiveServer, RunningProvider]
) -> None:
    live, provider = oidc_live
    actor, visit = relative_and_visit(live)
    p = live.portner
    create_account(p.engine, municipality_id=p.municipality.id, issuer=provider.issuer,
                   subject=RELATIVE_LOGIN, role=AccountRole.RELATIVE, actor_id=actor, now=p.now(),
                   ids=IdSource(), by="test", display_name="Per Testpårørende")

    page.goto(f"{live.url}/signin")
    assert page.locator("form[action='/signin/dev']").count() == 0  # production: no shortcut
    page.locator("a[href^='/auth/login']").click()
    # The provider's own login page (its development interaction): any login name, any password.
    page.wait_for_url(f"{provider.url}/**")
    page.fill("input[name=login]", RELATIVE_LOGIN)
    page.fill("input[name=password]", "whatever")
    page.locator("button[type=submit]").click()

    page.wait_for_url(f"{live.url}/portal**")
    shown = page.locator(f"[data-visit-id='{visit.id}']")
    shown.wait_for()
    start = visit.planned_start.astimezone(OSLO).strftime("%H:%M")
    assert start in shown.inner_text()
    axe_check(page)


def test_a_person_without_an_account_is_told_so(
    page: Any, oidc_live: tuple[LiveServer, RunningProvider]
) -> None:
    live, provider = oidc_live
    page.goto(f"{live.url}/auth/login?next=/portal")
    page.wait_for_url(f"{provider.url}/**")
    page.fill("input[name=login]", "nobody-here")
    page.fill("input[name=password]", "whatever")
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{live.url}/signin?error=unknown_account")
    assert page.get_by_role("alert").count() == 1
