"""The server's frame: catalogs, sign-in, sessions, CSRF and problem details."""

from __future__ import annotations

import re
import string

import pytest

from portner.web.auth.signin import safe_next
from portner.web.i18n import LANGUAGES, catalog
from tests.web.conftest import CSRF_META


def test_every_message_has_both_languages_and_its_placeholders() -> None:
    for key, texts in catalog().items():
        assert set(texts) == set(LANGUAGES), key
        fields = [{f for _, f, _, _ in string.Formatter().parse(texts[lang]) if f} for lang in LANGUAGES]
        assert fields[0] == fields[1], f"{key}: placeholders differ between languages"
        assert all(texts[lang].strip() for lang in LANGUAGES), key


def test_templates_use_only_known_message_keys() -> None:
    from pathlib import Path

    import portner.web

    known = catalog()
    used: set[str] = set()
    for path in Path(portner.web.__file__).parent.glob("templates/**/*.html"):
        used |= set(re.findall(r"""_\(\s*['"]([a-z0-9_.]+)['"]\s*[,)]""", path.read_text()))
    assert used, "templates translate their words"
    assert sorted(used - set(known)) == []


@pytest.mark.parametrize("target,expected", [
    ("/portal", "/portal"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
    ("/\\evil.example", "/"), (None, "/"), ("", "/"),
])
def test_sign_in_redirects_only_to_this_site(target, expected) -> None:
    assert safe_next(target) == expected


def test_development_sign_in_and_out(client_for) -> None:
    anonymous = client_for(None)
    assert anonymous.get("/", follow_redirects=False).headers["location"] == "/signin"
    assert anonymous.get("/api/v1/visits").status_code == 401
    nurse = client_for("demo-nurse-1")
    assert nurse.get("/", follow_redirects=False).headers["location"] == "/nurse"
    page = nurse.get("/signin")
    token = CSRF_META.search(page.text).group(1)
    assert nurse.post("/signout", data={"csrf": "wrong"}).status_code == 403
    assert nurse.post("/signout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert nurse.get("/", follow_redirects=False).headers["location"] == "/signin"


def test_unknown_development_subject_is_an_error_not_a_new_account(client_for) -> None:
    client = client_for(None)
    token = CSRF_META.search(client.get("/signin").text).group(1)
    answer = client.post("/signin/dev", data={"subject": "nobody", "csrf": token}, follow_redirects=False)
    assert answer.headers["location"] == "/signin?error=unknown_account"
    assert "ikke knyttet til noen konto" in client.get(answer.headers["location"]).text


def test_cookie_authenticated_changes_need_the_csrf_header(client_for) -> None:
    admin = client_for("demo-admin")
    token = admin.headers.pop("X-CSRF-Token")
    refused = admin.post("/api/v1/grants", json={})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/csrf")
    admin.headers["X-CSRF-Token"] = token
    assert admin.post("/api/v1/grants", json={}).status_code != 403


def test_errors_are_problem_details(client_for) -> None:
    answer = client_for("demo-admin").get("/api/v1/no-such-thing")
    assert answer.status_code == 404
    body = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert body["status"] == 404 and body["instance"] == "/api/v1/no-such-thing"
    assert body["type"].startswith("https://") and body["title"] == "Not found"


def test_language_follows_query_cookie_and_accept_language(client_for) -> None:
    client = client_for(None)
    assert "<h1>Logg inn</h1>" in client.get("/signin").text
    assert "<h1>Sign in</h1>" in client.get("/signin", headers={"Accept-Language": "en-GB,en;q=0.8"}).text
    assert "<h1>Sign in</h1>" in client.get("/signin?lang=en").text
    # The choice is remembered over the browser's preference.
    assert "<h1>Sign in</h1>" in client.get("/signin", headers={"Accept-Language": "nb"}).text


def test_revoking_a_phone_ends_the_sessions_signed_in_before(client_for, portner_app, clock) -> None:
    """A lost phone may still be signed in: its session must not outlive the revocation."""
    from sqlalchemy import select

    from portner.credentials import DeviceKey
    from portner.services.devices import register_device
    from portner.services.ids import IdSource
    from portner.services.revocation import revoke_device
    from portner.storage import tables as t

    engine = portner_app.state.portner.engine
    nurse = client_for("demo-nurse-1")
    assert nurse.get("/api/v1/visits").status_code == 200
    with engine.connect() as conn:
        actor = conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == "demo-nurse-1")).scalar_one()
    device = register_device(engine, actor, DeviceKey.generate().public_key_bytes, now=clock(),
                             ids=IdSource(), by="test")
    revoke_device(engine, device.id, now=clock(), by="account:operator", reason="lost")
    assert nurse.get("/api/v1/visits").status_code == 401
    # Signing in again (on the new phone) works.
    again = client_for("demo-nurse-1")
    assert again.get("/api/v1/visits").status_code == 200


def test_access_log_lines_never_show_a_visitor_link_token() -> None:
    import logging

    from portner.web.serve import RedactSecretPaths

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/v1/visit/SECRETtoken123/challenge?x=1", "1.1", 200),
                               None)
    assert RedactSecretPaths().filter(record)
    line = record.getMessage()
    assert "SECRETtoken123" not in line and "/api/v1/visit/…/challenge?x=1" in line


def test_a_cookie_saved_before_sign_out_no_longer_works(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    saved = dict(nurse.cookies)
    token = CSRF_META.search(nurse.get("/signin").text).group(1)
    assert nurse.post("/signout", data={"csrf": token}, follow_redirects=False).status_code == 303
    replay = client_for(None)
    replay.cookies.update(saved)
    assert replay.get("/api/v1/visits").status_code == 401
    # Signing in again starts a new session that works.
    assert client_for("demo-nurse-1").get("/api/v1/visits").status_code == 200


def test_pages_and_api_answers_carry_security_headers(client_for) -> None:
    client = client_for(None)
    for path in ("/signin", "/api/v1/visits", "/openapi.json"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        # The nurse app may reach the lock radio bridge, and nothing else off-site.
        assert "connect-src 'self' http://127.0.0.1:8001" in csp


def test_an_unexpected_error_is_a_problem_that_says_nothing(portner_app, demo_settings) -> None:
    from fastapi.testclient import TestClient

    @portner_app.get("/api/v1/test-boom")
    def boom() -> None:
        raise RuntimeError("secret detail 12345678901")

    with TestClient(portner_app, raise_server_exceptions=False) as client:
        answer = client.get("/api/v1/test-boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "secret" not in answer.text and "12345678901" not in answer.text


def test_key_folders_are_private(demo_settings, portner_app) -> None:
    keys = demo_settings.data_dir / "keys"
    assert keys.is_dir() and keys.stat().st_mode & 0o077 == 0
