"""OpenID Connect: staff and families sign in at the municipality's provider; the API takes its tokens.

Sign-in is the authorization-code flow with PKCE, state and nonce, done by Authlib's Starlette
client (it also validates the ID token). The provider's subject becomes a Portner account through
`principal_for_subject`; the session then holds only the account id, as with every sign-in.

API calls may carry a Bearer access token instead of a session: a JWT (RFC 9068) from the same
provider for our audience. `AccessTokenVerifier` checks it locally against the provider's signing
keys (cached; fetched again only for an unknown key id, at most once a minute), so the request
path makes no network call otherwise. People are mapped by (issuer, sub), integrations using
client credentials by (issuer, client_id); an integration gets the scopes its account has *and*
its token carries. The account is looked up on every request, so disabling it takes effect on
the next one even while the token is still valid.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import authlib.deprecate  # noqa: F401  (its import adds a warnings filter; ours below must follow it)
import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool

from portner.bootstrap import utcnow
from portner.domain.access import AccountRole, Principal
from portner.services.accounts import AccountDisabled, principal_for_subject
from portner.web.auth.signin import safe_next, start_session
from portner.web.deps import portner
from portner.web.problems import Problem, not_found
from portner.web.state import Portner
from portner.web.templating import HOME_FOR_ROLE

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` fork and warns when it falls back to httpx, which is
    # our declared (and working) dependency; the warning says nothing about our use.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.starlette_client import OAuth, OAuthError

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

CLIENT_NAME = "provider"
SESSION_NEXT = "oidc_next"
# Asymmetric algorithms only: never "none", never HS* (a shared secret would let anyone holding
# the client secret mint tokens, and HS with a public key as secret is the classic confusion).
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                      "Ed25519", "EdDSA")
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068: tells access from ID tokens
LEEWAY_SECONDS = 60
JWKS_REFRESH_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 5.0


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def redirect_uri(p: Portner) -> str:
    return p.settings.public_url.rstrip("/") + "/auth/callback"


# --- sign-in ------------------------------------------------------------------------------------


def _oauth_client(request: Request) -> Any:
    client = getattr(request.app.state, "oidc_client", None)
    if client is None:
        raise not_found("sign-in with OpenID Connect is not configured on this server")
    return client


@router.get("/auth/login")
async def login(request: Request, next: str | None = None) -> Response:
    client = _oauth_client(request)
    p = portner(request)
    request.session[SESSION_NEXT] = safe_next(next)
    try:
        # Authlib adds state, nonce and the PKCE challenge, and keeps their secrets in the session.
        return await client.authorize_redirect(request, redirect_uri(p), resource=p.settings.api_audience)
    except (httpx.HTTPError, OAuthError, ValueError) as exc:
        log.warning("OpenID provider unavailable for sign-in: %s", type(exc).__name__)
        raise Problem(503, "Sign-in unavailable", "the sign-in service cannot be reached; try again soon",
                      kind="signin-unavailable") from None


def _to_signin(error: str) -> RedirectResponse:
    return RedirectResponse(f"/signin?error={error}", status_code=303)


def _account_for(p: Portner, subject: str) -> Principal | None:
    with p.engine.connect() as conn:
        return principal_for_subject(conn, p.settings.oidc_issuer or "", subject, via="oidc")


@router.get("/auth/callback")
async def callback(request: Request) -> Response:
    client = _oauth_client(request)
    p = portner(request)
    target = safe_next(request.session.get(SESSION_NEXT))
    try:
        token = await client.authorize_access_token(request)
    except (OAuthError, httpx.HTTPError, JoseError, ValueError) as exc:
        # The reason is for the operator's log; it never contains the code or a token.
        log.info("OpenID sign-in failed: %s %s", type(exc).__name__, getattr(exc, "error", ""))
        return _to_signin("signin_failed")
    claims = token.get("userinfo") or {}
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        return _to_signin("signin_failed")
    try:
        who = await run_in_threadpool(_account_for, p, subject)
    except AccountDisabled:
        return _to_signin("disabled")
    if who is None or who.municipality_id != p.municipality.id or who.role is AccountRole.INTEGRATION:
        return _to_signin("unknown_account")
    start_session(request, who.account_id)
    return RedirectResponse(target if target != "/" else HOME_FOR_ROLE.get(who.role, "/"), status_code=303)


# --- access tokens ------------------------------------------------------------------------------


def _invalid(detail: str) -> Problem:
    # RFC 6750: the header tells the client to get a new token; the detail never echoes the token.
    return Problem(401, "Invalid access token", detail, kind="invalid-token",
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class AccessTokenVerifier:
    """Checks Bearer JWT access tokens from one provider and maps them to accounts."""

    def __init__(self, issuer: str, audience: str, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.audience = audience
        self._monotonic = monotonic  # paces JWKS fetches; tests pass their own
        self._jwks_uri: str | None = None
        self._cache: tuple[KeySet, frozenset[str]] = (KeySet([]), frozenset())
        self._fetched_at: float | None = None  # monotonic time of the last fetch attempt
        self._lock = threading.Lock()

    # The signing keys ---------------------------------------------------------------------------

    def refresh_keys(self) -> bool:
        """Fetch the provider's JWKS (and the discovery document when needed). False if it failed."""
        self._fetched_at = self._monotonic()
        try:
            with httpx.Client(timeout=FETCH_TIMEOUT_SECONDS) as http:
                if self._jwks_uri is None:
                    meta = http.get(discovery_url(self.issuer))
                    meta.raise_for_status()
                    self._jwks_uri = str(meta.json()["jwks_uri"])
                answer = http.get(self._jwks_uri)
                answer.raise_for_status()
                keys = KeySet.import_key_set(answer.json())
        except (httpx.HTTPError, KeyError, ValueError, JoseError) as exc:
            log.warning("could not fetch the OpenID provider's signing keys: %s", type(exc).__name__)
            return False
        self._cache = (keys, frozenset(str(k.kid) for k in keys.keys if k.kid))
        return True

    def _known(self, kid: str | None) -> KeySet | None:
        keys, kids = self._cache  # one read: a refresh swaps both together
        return keys if (kid in kids if kid else bool(keys.keys)) else None

    def _key_set_for(self, kid: str | None) -> KeySet:
        keys = self._known(kid)
        if keys is not None:
            return keys
        with self._lock:  # one refresh at a time; the others then find the new keys
            keys = self._known(kid)
            due = self._fetched_at is None or self._monotonic() - self._fetched_at >= JWKS_REFRESH_SECONDS
            if keys is None and due:
                # A new kid means the provider rotated its keys; anything else waits a minute so
                # that made-up kids cannot make us hammer the provider.
                self.refresh_keys()
                keys = self._known(kid)
        if keys is None:
            raise _invalid("the access token is signed with a key this server does not know")
        return keys

    # Verification -------------------------------------------------------------------------------

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of the token, or Problem(401)."""
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise _invalid("the access token is not a signed JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise _invalid("the access token's signing algorithm is not accepted")
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise _invalid("this is not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        keys = self._key_set_for(kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=[alg])
        except BadSignatureError:
            raise _invalid("the access token's signature does not verify") from None
        except (JoseError, ValueError):
            raise _invalid("the access token cannot be verified") from None
        registry = jwt.JWTClaimsRegistry(
            # The provider stamps tokens in real time; the server's own clock may run on a
            # demo day, so tokens are checked against the wall clock.
            now=lambda: int(utcnow().timestamp()),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except ExpiredTokenError:
            raise _invalid("the access token has expired") from None
        except MissingClaimError as exc:
            raise _invalid(f"the access token lacks the claim(s) {exc.claim}") from None
        except JoseError as exc:
            claim = getattr(exc, "claim", None) or ""
            what = {"iss": "is from another issuer", "aud": "is not for this API (audience)",
                    "nbf": "is not valid yet", "iat": "is issued in the future"}.get(claim, "has invalid claims")
            raise _invalid(f"the access token {what}") from None
        return dict(decoded.claims)

    def __call__(self, token: str, p: Portner) -> Principal:
        claims = self.claims(token)
        sub = claims.get("sub")
        client_id = claims.get("client_id")
        is_client = client_id is not None and (sub is None or sub == client_id)
        subject = client_id if is_client else sub
        if not isinstance(subject, str) or not subject:
            raise _invalid("the access token names no subject")
        with p.engine.connect() as conn:
            try:
                who = principal_for_subject(conn, self.issuer, subject, via="bearer")
            except AccountDisabled:
                raise Problem(401, "Account disabled", "this account is disabled", kind="account-disabled",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        # A person's token never reaches an integration account, nor a client's a person's.
        if who is None or (who.role is AccountRole.INTEGRATION) != is_client:
            raise _invalid("no account here for this token's subject")
        if is_client:
            who = replace(who, scopes=who.scopes & _token_scopes(claims))
        return who


def _token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope", "")
    if isinstance(scope, list):  # some providers send a list ("scp" style)
        return frozenset(str(s) for s in scope)
    return frozenset(str(scope).split())


# --- start-up -----------------------------------------------------------------------------------


def install(app: FastAPI, p: Portner) -> None:
    """With an OpenID provider configured: the sign-in client and the Bearer token verifier."""
    settings = p.settings
    if not settings.oidc_issuer:
        return
    if not settings.oidc_client_id or not settings.oidc_client_secret:
        from portner.web.app import StartupError  # app imports this module: import at use

        raise StartupError("PORTNER_OIDC_ISSUER is set: also set PORTNER_OIDC_CLIENT_ID and "
                           "PORTNER_OIDC_CLIENT_SECRET (this server's client at the provider)")
    oauth = OAuth()
    oauth.register(
        CLIENT_NAME,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=discovery_url(settings.oidc_issuer),
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256",
                       "token_endpoint_auth_method": "client_secret_basic"},
    )
    app.state.oidc_client = oauth.create_client(CLIENT_NAME)
    verifier = AccessTokenVerifier(settings.oidc_issuer, settings.api_audience)
    # Fetched now so that requests find the keys; a provider that is down at start-up is
    # tried again by the first token (and then at most once a minute).
    verifier.refresh_keys()
    app.state.token_verifier = verifier
