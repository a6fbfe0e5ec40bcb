"""OpenID Connect against a real provider (oidc-provider on loopback): sign-in, access tokens,
integrations with client credentials, and how fast a disabled account stops working.

A small route that answers "who am I" is added to each app: it depends on the same
`deps.principal` as every API route, so it shows what the API sees without depending on
another feature's endpoints.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from sqlalchemy import select

from portner.config import Settings
from portner.domain.access import (
    SCOPE_DIRECTORY_READ,
    SCOPE_EVENTS_UPLOAD,
    SCOPE_FHIR_IMPORT,
    AccountRole,
    Principal,
)
from portner.services.accounts import (
    DEV_ISSUER,
    create_account,
    principal_by_id,
    set_account_disabled,
)
from portner.services.authority import visible_residents
from portner.services.devices import DeviceRefused, register_device
from portner.services.ids import IdSource
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.storage import tables as t
from portner.web.app import StartupError, create_app
from portner.web.auth.oidc import AccessTokenVerifier
from portner.web.deps import principal
from portner.web.problems import Problem
from tests.support.clock import RunningClock
from tests.support.oidc import (
    API_AUDIENCE,
    CARE_RECORD,
    LOCK_GATEWAY,
    OTHER_AUDIENCE,
    TEST_CLIENT_URL,
    ProviderFactory,
    RunningProvider,
    free_port,
)
from tests.web.conftest import CSRF_META
from tests.web.conftest import sign_in as dev_sign_in

pytestmark = pytest.mark.oidc

WHOAMI = "/api/v1/test-whoami"

probe = APIRouter()


@probe.get(WHOAMI)
def whoami(who: Principal = Depends(principal)) -> dict[str, Any]:
    return {"account": who.account_id, "role": who.role.value, "via": who.via, "scopes": sorted(who.scopes)}


def oidc_app(provider: RunningProvider, settings: Settings, clock: RunningClock, **overrides: Any) -> FastAPI:
    app = create_app(provider.settings_for(settings, **overrides), clock=clock)
    app.include_router(probe)
    return app


def dev_actor(app: FastAPI, subject: str) -> str:
    """The actor behind a demo development account (a nurse or relative of the demo day)."""
    with app.state.portner.engine.connect() as conn:
        actor = conn.execute(select(t.accounts.c.actor_id).where(
            t.accounts.c.issuer == DEV_ISSUER, t.accounts.c.subject == subject)).scalar_one()
    assert actor
    return str(actor)


def add_account(app: FastAPI, issuer: str, subject: str, role: AccountRole, **links: Any) -> str:
    p = app.state.portner
    return create_account(p.engine, municipality_id=p.municipality.id, issuer=issuer, subject=subject,
                          role=role, now=p.now(), ids=IdSource(), by="test", **links)


def phone_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_invalid_token(answer: Any, token: str, words: str) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert words in answer.json()["detail"]
    assert not [part for part in token.split(".") if len(part) > 8 and part in answer.text]


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- (a) the authorization-code flow ------------------------------------------------------------


def test_nurse_signs_in_at_the_provider_and_the_api_knows_her(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    account = add_account(app, oidc_provider.issuer, "nurse-login", AccountRole.NURSE,
                          actor_id=dev_actor(app, "demo-nurse-1"))
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        assert client.get(WHOAMI).status_code == 401
        start = client.get("/auth/login", params={"next": "/nurse"}, follow_redirects=False)
        assert start.status_code == 302
        location = start.headers["location"]
        assert location.startswith(oidc_provider.issuer + "/")
        asked = parse_qs(urlsplit(location).query)
        assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
        assert asked["state"][0] and asked["nonce"][0] and asked["resource"] == ["urn:portner:api"]
        assert asked["redirect_uri"] == [f"{TEST_CLIENT_URL}/auth/callback"]

        back = oidc_provider.sign_in(location, "nurse-login")
        assert back.startswith(f"{TEST_CLIENT_URL}/auth/callback?")
        landed = client.get(back, follow_redirects=False)
        assert landed.status_code == 303 and landed.headers["location"] == "/nurse"

        me = client.get(WHOAMI)
        assert me.status_code == 200, me.text
        assert me.json() == {"account": account, "role": "nurse", "via": "session", "scopes": []}
        # The API, as her: the residents she serves, no others.
        residents = client.get("/api/v1/residents", params={"limit": 200})
        assert residents.status_code == 200, residents.text
        p = app.state.portner
        with p.engine.connect() as conn:
            who = principal_by_id(conn, account, via="session")
            assert who is not None
            serves = visible_residents(conn, who, now=p.now())
        shown = {r["id"] for r in residents.json()["items"]}
        assert shown and serves is not None and shown <= serves
        # The code is single-use and the state is gone from the session: a replay signs nobody in.
        again = client.get(back, follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == "/signin?error=signin_failed"


def test_callback_refuses_unknown_and_disabled_accounts_and_foreign_next(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    account = add_account(app, oidc_provider.issuer, "nurse-login", AccountRole.NURSE,
                          actor_id=dev_actor(app, "demo-nurse-1"))

    def sign_in(login: str, next_path: str) -> str:
        start = client.get("/auth/login", params={"next": next_path}, follow_redirects=False)
        answer = client.get(oidc_provider.sign_in(start.headers["location"], login), follow_redirects=False)
        assert answer.status_code == 303
        return answer.headers["location"]

    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        assert sign_in("somebody-else", "/nurse") == "/signin?error=unknown_account"
        assert client.get(WHOAMI).status_code == 401
        assert sign_in("nurse-login", "//evil.example/x") == "/nurse"  # only same-site paths
        p = app.state.portner
        set_account_disabled(p.engine, account, True, now=p.now(), by="test")
        client.cookies.clear()
        assert sign_in("nurse-login", "/nurse") == "/signin?error=disabled"
        assert client.get(WHOAMI).status_code == 401


def test_callback_without_a_started_sign_in_is_refused(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        answer = client.get("/auth/callback", params={"code": "made-up", "state": "made-up"},
                            follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/signin?error=signin_failed"
        denied = client.get("/auth/callback", params={"error": "access_denied"}, follow_redirects=False)
        assert denied.headers["location"] == "/signin?error=signin_failed"


# --- (b) integrations with client credentials ---------------------------------------------------


def test_integration_gets_a_token_with_a_signed_assertion_and_its_scopes_are_intersected(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    account = add_account(app, oidc_provider.issuer, CARE_RECORD, AccountRole.INTEGRATION,
                          scopes=[SCOPE_FHIR_IMPORT, SCOPE_DIRECTORY_READ, SCOPE_EVENTS_UPLOAD])
    full = oidc_provider.client_token(CARE_RECORD)["access_token"]
    narrow = oidc_provider.client_token(CARE_RECORD, scope=SCOPE_DIRECTORY_READ)["access_token"]
    assert unb64(full.split(".")[1])["client_id"] == CARE_RECORD
    plan = (demo_settings.data_dir / "care-record" / "plans" / "CarePlan-000001.json").read_bytes()
    push = {"Content-Type": "application/fhir+json"}
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        me = client.get(WHOAMI, headers=bearer(full))
        assert me.status_code == 200, me.text
        # The account may upload events too, but the provider never granted that scope.
        assert me.json() == {"account": account, "role": "integration", "via": "bearer",
                             "scopes": sorted([SCOPE_DIRECTORY_READ, SCOPE_FHIR_IMPORT])}
        pushed = client.post("/api/v1/fhir", content=plan, headers={**push, **bearer(full)})
        assert pushed.status_code == 200, pushed.text
        assert client.get(WHOAMI, headers=bearer(narrow)).json()["scopes"] == [SCOPE_DIRECTORY_READ]
        refused = client.post("/api/v1/fhir", content=plan, headers={**push, **bearer(narrow)})
        assert refused.status_code == 403 and SCOPE_FHIR_IMPORT in refused.json()["detail"]


def test_a_client_without_an_account_and_a_person_token_for_a_client_account_are_refused(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    # An integration account whose subject is a login name a person could type at the provider.
    add_account(app, oidc_provider.issuer, "nurse-login", AccountRole.INTEGRATION, scopes=[SCOPE_FHIR_IMPORT])
    person = oidc_provider.user_tokens("nurse-login")["access_token"]
    gateway = oidc_provider.client_token(LOCK_GATEWAY)["access_token"]
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        assert_invalid_token(client.get(WHOAMI, headers=bearer(gateway)), gateway, "no account")
        assert_invalid_token(client.get(WHOAMI, headers=bearer(person)), person, "no account")


# --- (c) tokens that must not work --------------------------------------------------------------


@pytest.fixture(scope="module")
def twins(oidc_provider: RunningProvider, start_oidc_provider: ProviderFactory) -> dict[str, RunningProvider]:
    """Providers with the real one's signing keys and clients: two claim the real issuer but run
    behind (tokens lived 300 s), one is another issuer altogether."""
    same = {"signing_jwks": oidc_provider.signing_jwks, "web_client": oidc_provider.web_client,
            "integration_clients": list(oidc_provider.integration_clients.values())}
    return {
        "late": start_oidc_provider(issuer=oidc_provider.issuer, clock_offset_seconds=-600, **same),
        # Its tokens expired 30 s ago: within the 60 s allowed for clock skew.
        "skewed": start_oidc_provider(issuer=oidc_provider.issuer, clock_offset_seconds=-330, **same),
        "other": start_oidc_provider(**same),
    }


def test_tokens_with_the_wrong_audience_issuer_expiry_signature_or_algorithm_are_refused(
    oidc_provider: RunningProvider, twins: dict[str, RunningProvider], demo_settings: Settings,
    clock: RunningClock,
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    add_account(app, oidc_provider.issuer, CARE_RECORD, AccountRole.INTEGRATION, scopes=[SCOPE_FHIR_IMPORT])
    good = oidc_provider.client_token(CARE_RECORD)["access_token"]
    header, payload, signature = good.split(".")
    claims = unb64(payload)
    other_audience = oidc_provider.client_token(CARE_RECORD, resource=OTHER_AUDIENCE)["access_token"]
    expired = twins["late"].client_token(CARE_RECORD)["access_token"]
    foreign = twins["other"].client_token(CARE_RECORD)["access_token"]
    assert unb64(expired.split(".")[1])["iss"] == oidc_provider.issuer
    assert unb64(foreign.split(".")[1])["iss"] == twins["other"].issuer != oidc_provider.issuer
    tampered = ".".join([header, b64({**claims, "scope": f"{SCOPE_FHIR_IMPORT} {SCOPE_EVENTS_UPLOAD}"}), signature])
    unsigned = ".".join([b64({"alg": "none", "typ": "at+jwt"}), payload, ""])
    id_token = oidc_provider.user_tokens("nurse-login")["id_token"]  # a valid JWT, not an access token

    skewed = twins["skewed"].client_token(CARE_RECORD)["access_token"]
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        assert client.get(WHOAMI, headers=bearer(good)).status_code == 200
        assert client.get(WHOAMI, headers=bearer(skewed)).status_code == 200
        for token, words in [
            (other_audience, "audience"),
            (expired, "expired"),
            (foreign, "another issuer"),
            (tampered, "signature"),
            (unsigned, "algorithm"),
            (id_token, "not an access token"),
            ("not-a-token", "not a signed JWT"),
        ]:
            assert_invalid_token(client.get(WHOAMI, headers=bearer(token)), token, words)


def test_a_new_signing_key_is_fetched_once_it_appears_but_at_most_once_a_minute(
    oidc_provider: RunningProvider, start_oidc_provider: ProviderFactory, demo_settings: Settings,
    clock: RunningClock,
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    p = app.state.portner
    clients = list(oidc_provider.integration_clients.values())
    port = free_port()
    before = start_oidc_provider(port=port, integration_clients=clients)
    add_account(app, before.issuer, CARE_RECORD, AccountRole.INTEGRATION, scopes=[SCOPE_FHIR_IMPORT])
    seconds = [0.0]
    verifier = AccessTokenVerifier(before.issuer, API_AUDIENCE, monotonic=lambda: seconds[0])
    assert verifier.refresh_keys()
    first = before.client_token(CARE_RECORD)["access_token"]
    assert verifier(first, p).role is AccountRole.INTEGRATION

    # The provider rotates: a new key signs, the old one is still published.
    before.stop()
    new_key = RSAKey.generate_key(2048, parameters={"kid": "rotated", "use": "sig", "alg": "RS256"})
    keys = {"keys": [new_key.as_dict(private=True), *before.signing_jwks["keys"]]}
    after = start_oidc_provider(port=port, integration_clients=clients, signing_jwks=keys)
    assert after.issuer == before.issuer
    rotated = after.client_token(CARE_RECORD)["access_token"]
    assert unb64(rotated.split(".")[0])["kid"] == "rotated"

    seconds[0] = 30.0  # the keys were fetched 30 s ago: no second fetch yet
    with pytest.raises(Problem) as refused:
        verifier(rotated, p)
    assert refused.value.status == 401 and "key" in refused.value.detail
    assert verifier(first, p).role is AccountRole.INTEGRATION  # known keys keep working
    seconds[0] = 61.0
    assert verifier(rotated, p).role is AccountRole.INTEGRATION


# --- (d) disabling takes effect at the next request ---------------------------------------------


def test_disabled_account_is_refused_at_its_next_request_and_gets_no_new_credentials(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock)
    p = app.state.portner
    actor = dev_actor(app, "demo-nurse-1")
    nurse = add_account(app, oidc_provider.issuer, "nurse-login", AccountRole.NURSE, actor_id=actor)
    gateway = add_account(app, oidc_provider.issuer, LOCK_GATEWAY, AccountRole.INTEGRATION,
                          scopes=[SCOPE_EVENTS_UPLOAD])
    device = register_device(p.engine, actor, phone_key(), now=p.now(), ids=IdSource(), by="test").id
    window = {"window_start": p.now(), "window_end": p.now() + timedelta(hours=8)}
    assert issue_for_shift(p.engine, p.secrets.issuer, [device], now=p.now(), ids=IdSource(), **window)

    person_token = oidc_provider.user_tokens("nurse-login")["access_token"]
    gateway_token = oidc_provider.client_token(LOCK_GATEWAY)["access_token"]
    with TestClient(app, base_url=TEST_CLIENT_URL) as browser:
        start = browser.get("/auth/login", follow_redirects=False)
        browser.get(oidc_provider.sign_in(start.headers["location"], "nurse-login"), follow_redirects=False)
        assert browser.get(WHOAMI).json()["account"] == nurse
        assert browser.get(WHOAMI, headers=bearer(person_token)).json()["via"] == "bearer"
        assert browser.get(WHOAMI, headers=bearer(gateway_token)).json()["account"] == gateway

        set_account_disabled(p.engine, nurse, True, now=p.now(), by="test")
        set_account_disabled(p.engine, gateway, True, now=p.now(), by="test")

        assert browser.get(WHOAMI).status_code == 401  # the session, at once
        for token in (person_token, gateway_token):  # tokens still valid for minutes at the provider
            answer = browser.get(WHOAMI, headers=bearer(token))
            assert answer.status_code == 401 and answer.json()["type"].endswith("/account-disabled")
        with pytest.raises(IssuanceRefused):
            issue_for_shift(p.engine, p.secrets.issuer, [device], now=p.now(), ids=IdSource(), **window)
        with pytest.raises(DeviceRefused):
            register_device(p.engine, actor, phone_key(), now=p.now(), ids=IdSource(), by="test")


# --- (e) production mode ------------------------------------------------------------------------


def test_production_without_a_provider_refuses_to_start(demo_settings: Settings, clock: RunningClock) -> None:
    with pytest.raises(StartupError, match="PORTNER_OIDC_ISSUER"):
        create_app(replace(demo_settings, mode="production"), clock=clock)


def test_production_needs_the_client_secret_and_has_no_development_sign_in(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    with pytest.raises(StartupError, match="PORTNER_OIDC_CLIENT_SECRET"):
        create_app(replace(oidc_provider.settings_for(demo_settings, mode="production"),
                           oidc_client_secret=None), clock=clock)
    app = oidc_app(oidc_provider, demo_settings, clock, mode="production")
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        page = client.get("/signin")
        assert page.status_code == 200 and "/auth/login" in page.text and "/signin/dev" not in page.text
        assert client.post("/signin/dev", data={"subject": "demo-admin"}).status_code in (404, 405)
        assert client.get("/auth/login", follow_redirects=False).status_code == 302


def test_production_honours_no_session_of_a_development_account_nor_one_without_a_gateway(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    # The same data directory (so the same session secret) served in development, then in
    # production: the development sign-in's cookie signs nobody in there.
    with TestClient(create_app(demo_settings, clock=clock), base_url=TEST_CLIENT_URL) as dev:
        dev_sign_in(dev, "demo-nurse-1")
        assert dev.get("/api/v1/municipalities/current").status_code == 200
        cookies = dict(dev.cookies)
    app = oidc_app(oidc_provider, demo_settings, clock, mode="production")
    with TestClient(app, base_url=TEST_CLIENT_URL, cookies=cookies) as client:
        assert client.get("/api/v1/municipalities/current").status_code == 401
        assert client.get("/nurse", follow_redirects=False).status_code == 303
    with pytest.raises(StartupError, match="PORTNER_SMS_GATEWAY"):
        create_app(replace(oidc_provider.settings_for(demo_settings, mode="production"),
                           sms_gateway="outbox"), clock=clock)


def provider_sign_in(client: TestClient, provider: RunningProvider, login: str) -> str:
    """Sign `client` in at the provider as `login`; the CSRF token of the new session."""
    start = client.get("/auth/login", follow_redirects=False)
    assert client.get(provider.sign_in(start.headers["location"], login), follow_redirects=False).status_code == 303
    return CSRF_META.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]


def test_production_makes_accounts_of_the_providers_issuer_alone_in_admin_and_the_api(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = oidc_app(oidc_provider, demo_settings, clock, mode="production")
    add_account(app, oidc_provider.issuer, "relative-login", AccountRole.ADMIN)  # the person, as admin here
    staff = dev_actor(app, "demo-nurse-2")
    token = oidc_provider.user_tokens("relative-login")["access_token"]
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        csrf = provider_sign_in(client, oidc_provider, "relative-login")
        form = {"csrf": csrf, "form": "account", "role": "nurse", "subject": "kari", "actor_id": staff}
        for other in (DEV_ISSUER, oidc_provider.issuer + "/"):  # could never sign in here
            page = client.post("/admin/accounts", data={**form, "issuer": other}, follow_redirects=False)
            assert page.status_code == 422 and 'id="account-issuer-error"' in page.text
            assert f'value="{other}"' in page.text and oidc_provider.issuer in page.text  # kept, and said which
            api = client.post("/api/v1/accounts", headers=bearer(token),
                              json={"role": "nurse", "issuer": other, "subject": "kari", "actor_id": staff})
            assert api.status_code == 422 and api.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in api.json()["errors"]] == ["body/issuer"]
            assert "PORTNER_OIDC_ISSUER" in api.json()["detail"]
        made = client.post("/admin/accounts", data={**form, "issuer": oidc_provider.issuer}, follow_redirects=False)
        assert made.status_code == 303, made.text
        api = client.post("/api/v1/accounts", headers=bearer(token),
                          json={"role": "nurse", "issuer": oidc_provider.issuer, "subject": "ola", "actor_id": staff})
        assert api.status_code == 201 and api.json()["issuer"] == oidc_provider.issuer


def test_production_offers_no_radio_bridge_unless_one_is_named(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    # The demo's settings, made in development, then served in production by create_app
    # itself (not through `portner serve`): no local bridge.
    assert demo_settings.named_bridge_url is None and demo_settings.bridge_url
    app = oidc_app(oidc_provider, demo_settings, clock, mode="production")
    add_account(app, oidc_provider.issuer, "nurse-login", AccountRole.NURSE, actor_id=dev_actor(app, "demo-nurse-1"))
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        provider_sign_in(client, oidc_provider, "nurse-login")
        nurse = client.get("/nurse")
        assert nurse.status_code == 200 and '<meta name="portner-bridge" content="">' in nurse.text
        assert "connect-src 'self';" in nurse.headers["content-security-policy"]
    named = oidc_app(oidc_provider, demo_settings, clock, mode="production",
                     named_bridge_url="https://radio.example.no")
    with TestClient(named, base_url=TEST_CLIENT_URL) as client:
        csp = client.get("/signin").headers["content-security-policy"]
        assert "connect-src 'self' https://radio.example.no;" in csp


@pytest.mark.parametrize("public_url", [
    "https://portner.kommune.no",
    "HTTPS://portner.kommune.no",
    " https://portner.kommune.no",
])
def test_production_at_an_https_url_sets_its_session_cookie_secure_or_refuses_to_start(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock, public_url: str
) -> None:
    # Whatever PORTNER_PUBLIC_URL check_settings lets through, the session cookie is Secure and
    # browsers are told to keep to https.
    try:
        app = oidc_app(oidc_provider, demo_settings, clock, mode="production", public_url=public_url)
    except StartupError as refused:
        assert "PORTNER_PUBLIC_URL" in str(refused)
        return
    with TestClient(app, base_url="https://portner.kommune.no") as client:
        login = client.get("/auth/login", follow_redirects=False)
        assert login.status_code == 302
        assert "secure" in login.headers["set-cookie"].lower()
        assert "strict-transport-security" in login.headers
        redirect = parse_qs(urlsplit(login.headers["location"]).query)["redirect_uri"]
        assert redirect == ["https://portner.kommune.no/auth/callback"]


def test_without_a_provider_bearer_tokens_and_openid_sign_in_are_unavailable(
    oidc_provider: RunningProvider, demo_settings: Settings, clock: RunningClock
) -> None:
    app = create_app(demo_settings, clock=clock)
    app.include_router(probe)
    token = oidc_provider.client_token(CARE_RECORD)["access_token"]
    with TestClient(app, base_url=TEST_CLIENT_URL) as client:
        assert client.get("/auth/login", follow_redirects=False).status_code == 404
        assert client.get(WHOAMI, headers=bearer(token)).status_code == 401
