"""The frame every app shares: sign-in, language switch, accessibility of the sign-in page."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LiveServer, axe_check, sign_in

pytestmark = pytest.mark.e2e


def test_sign_in_page_is_accessible_in_both_languages(page, live: LiveServer) -> None:
    page.goto(f"{live.url}/signin")
    assert page.locator("html").get_attribute("lang") == "nb"
    assert page.locator("h1").inner_text() == "Logg inn"
    axe_check(page)
    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Sign in"
    assert page.locator("html").get_attribute("lang") == "en"
    axe_check(page)


def test_development_sign_in_lands_each_role_in_its_app(page, live: LiveServer) -> None:
    for subject, path in [("demo-nurse-1", "/nurse"), ("demo-operator", "/console"),
                          ("demo-admin", "/admin"), ("demo-relative", "/portal")]:
        sign_in(page, live, subject)
        assert page.url.startswith(f"{live.url}{path}"), (subject, page.url)
        page.context.clear_cookies()
