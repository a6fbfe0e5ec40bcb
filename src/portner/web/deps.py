"""Request dependencies: the runtime, who is asking, and the checks every route shares.

Who is asking comes from the session cookie (the web apps) or a Bearer access token (the API,
verified by the OpenID adapter installed at start-up). The account is looked up on every request,
so a disabled account is refused at its next request, not when its session or token expires.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from fastapi import Depends, Request
from sqlalchemy import Connection

from portner.domain.access import AccountRole, NotPermitted, Principal
from portner.services.accounts import principal_by_id, session_ended
from portner.web.problems import Problem
from portner.web.state import Portner

SESSION_ACCOUNT = "account"
SESSION_CSRF = "csrf"
SESSION_SIGNED_IN_AT = "signed_in_at"
# A session lasts one shift (the signed cookie's max_age; the live stream ends with it too).
SESSION_LIFETIME = timedelta(hours=12)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenVerifier(Protocol):
    """Turns a Bearer access token into a principal; raises Problem(401) when it does not verify."""

    def __call__(self, token: str, portner: Portner) -> Principal: ...


class SignInRequired(Exception):
    """A page needs a signed-in person: the handler redirects to the sign-in page."""


def portner(request: Request) -> Portner:
    return request.app.state.portner


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def current_principal(request: Request) -> Principal | None:
    """The principal, or None when nobody is signed in. Raises AccountDisabled."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    p = portner(request)
    token = _bearer(request)
    found: Principal | None = None
    if token is not None:
        verifier: TokenVerifier | None = getattr(request.app.state, "token_verifier", None)
        if verifier is None:
            raise Problem(401, "Not signed in", "this server accepts no access tokens (no OpenID provider configured)",
                          kind="not-signed-in", headers={"WWW-Authenticate": "Bearer"})
        found = verifier(token, p)
    elif "session" in request.scope:
        account_id = request.session.get(SESSION_ACCOUNT)
        if account_id:
            with p.engine.connect() as conn:
                found = principal_by_id(conn, account_id, via="session")
                if found is not None and _session_over(conn, found, request):
                    found = None
            if found is None:
                request.session.clear()
    if found is not None and found.municipality_id != p.municipality.id:
        found = None  # an account of another tenant on this server: not signed in here
    request.state.principal = found
    return found


def _session_over(conn: Connection, who: Principal, request: Request) -> bool:
    """The session ended: signed out (everywhere), or a phone of its person was revoked since
    sign-in (the revoked phone may be in a finder's hands, still signed in)."""
    try:
        signed_in = datetime.fromisoformat(request.session.get(SESSION_SIGNED_IN_AT, ""))
    except ValueError:
        return True  # a session without its sign-in time predates these rules: sign in again
    if signed_in.utcoffset() is None:
        return True
    return session_ended(conn, who, signed_in)


def principal(request: Request) -> Principal:
    """API routes: the principal, or 401 as problem details."""
    found = current_principal(request)
    if found is None:
        raise Problem(401, "Not signed in", "sign in, or send an access token as Bearer",
                      kind="not-signed-in", headers={"WWW-Authenticate": "Bearer"})
    _check_csrf(request, found)
    return found


def page_principal(request: Request) -> Principal:
    """Page routes: the principal, or a redirect to the sign-in page."""
    found = current_principal(request)
    if found is None:
        raise SignInRequired()
    return found


def require(*roles: AccountRole) -> Callable[[Request], Principal]:
    """A dependency that lets only these roles through (API: 403 problem)."""

    def dependency(who: Principal = Depends(principal)) -> Principal:
        if who.role not in roles:
            raise NotPermitted("this needs the " + " or ".join(r.value for r in roles) + " role")
        return who

    return dependency


def require_page(*roles: AccountRole) -> Callable[[Request], Principal]:
    """Like `require`, for pages (sign-in redirect when nobody is signed in)."""

    def dependency(who: Principal = Depends(page_principal)) -> Principal:
        if who.role not in roles:
            raise NotPermitted("this page is for the " + " or ".join(r.value for r in roles) + " role")
        return who

    return dependency


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); pages put it in forms and a meta tag."""
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(24)
        request.session[SESSION_CSRF] = token
    return token


def _check_csrf(request: Request, who: Principal) -> None:
    """A cookie-authenticated change must carry the session's token (header); tokens need not."""
    if who.via == "bearer" or request.method in SAFE_METHODS:
        return
    expected = request.session.get(SESSION_CSRF, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected, given):
        raise Problem(403, "Forbidden", "missing or wrong CSRF token (send the X-CSRF-Token header)",
                      kind="csrf")


async def check_form_csrf(request: Request) -> None:
    """For HTML form posts: the hidden `csrf` field must match the session's token."""
    form = await request.form()
    expected = request.session.get(SESSION_CSRF, "")
    given = str(form.get(CSRF_FIELD, ""))
    if not expected or not hmac.compare_digest(expected, given):
        raise Problem(403, "Forbidden", "the form has expired; reload the page and try again", kind="csrf")
