"""Request dependencies: the runtime, who is asking, and the checks every route shares.

Who is asking comes from the session cookie (the web apps) or a Bearer access token (the API,
verified by the OpenID adapter installed at start-up). The account is looked up on every request,
so a disabled account is refused at its next request, not when its session or token expires.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from fastapi import Depends, Request
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from portner.domain.access import AccountRole, NotPermitted, Principal
from portner.services.accounts import (
    principal_by_id,
    principal_for_session,
    principal_from_session_rows,
    session_account_query,
    sign_in_issuers,
)
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


def current_principal(request: Request, conn: Connection | None = None,
                      session_rows: Sequence[Sequence[Any]] | None = None) -> Principal | None:
    """The principal, or None when nobody is signed in. Raises AccountDisabled.

    The session's account is read on `conn` when given (the handler's own connection), else on
    a connection of its own; or it was read already, `session_rows` (see PendingPrincipal)."""
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
            signed_in = _signed_in_at(request)
            with contextlib.nullcontext(conn) if conn is not None else p.engine.connect() as c:
                if signed_in is None:
                    # A session without a usable sign-in time predates these rules: it is over
                    # (but a disabled account still hears that it is disabled).
                    principal_by_id(c, account_id, via="session")
                elif session_rows is not None:
                    found = principal_from_session_rows(session_rows, signed_in, via="session",
                                                        issuers=_session_issuers(p))
                else:
                    found = principal_for_session(c, account_id, signed_in, via="session",
                                                  issuers=_session_issuers(p))
            if found is None:
                request.session.clear()
    if found is not None and found.municipality_id != p.municipality.id:
        found = None  # an account of another tenant on this server: not signed in here
    request.state.principal = found
    return found


def _session_issuers(p: Portner) -> frozenset[str] | None:
    """Whose accounts a session may be of: those that can sign in here (in production, the
    OpenID provider's alone: a cookie the development sign-in made on the same data directory
    signs nobody in)."""
    return sign_in_issuers(p.settings.oidc_issuer, development=p.settings.development)


def _signed_in_at(request: Request) -> datetime | None:
    """When the session signed in, or None when it does not say (aware) when.

    The session ends when signed out (everywhere), or when a phone of its person was revoked
    since sign-in (the revoked phone may be in a finder's hands, still signed in):
    accounts.principal_for_session checks both in the query that reads the account.
    """
    try:
        signed_in = datetime.fromisoformat(request.session.get(SESSION_SIGNED_IN_AT, ""))
    except ValueError:
        return None
    return None if signed_in.utcoffset() is None else signed_in


def _not_signed_in() -> Problem:
    return Problem(401, "Not signed in", "sign in, or send an access token as Bearer",
                   kind="not-signed-in", headers={"WWW-Authenticate": "Bearer"})


def principal(request: Request) -> Principal:
    """API routes: the principal, or 401 as problem details."""
    return principal_on(request, None)


def principal_on(request: Request, conn: Connection | None,
                 session_rows: Sequence[Sequence[Any]] | None = None) -> Principal:
    """`principal`, with the session's account read on `conn` (None: a connection of its own),
    or read already (`session_rows`)."""
    found = current_principal(request, conn, session_rows)
    if found is None:
        raise _not_signed_in()
    _check_csrf(request, found)
    return found


def check_role(who: Principal, roles: tuple[AccountRole, ...]) -> Principal:
    if who.role not in roles:
        raise NotPermitted("this needs the " + " or ".join(r.value for r in roles) + " role")
    return who


@dataclass(frozen=True, slots=True)
class PendingPrincipal:
    """Who is asking, before a session's account is read: the handler reads it on the connection
    it opens anyway (`resolve`), so the busiest routes take one connection and one thread hop a
    request instead of two. What needs no database is decided before the handler: no session
    and no token is a 401, a session's change without its CSRF token a 403. An access token is
    verified before the handler (its verifier reads the account on a connection of its own), so
    a handler never holds one connection while waiting for another."""

    request: Request
    roles: tuple[AccountRole, ...]
    verified: Principal | None = None  # an access token's principal, known already

    def resolve(self, conn: Connection | None) -> Principal:
        """The principal with one of the roles (401, 403 and AccountDisabled as `require`), a
        session's account read on `conn` (None: on a connection of its own)."""
        if self.verified is not None:
            return self.verified
        return check_role(principal_on(self.request, conn), self.roles)

    def session_query(self, conn: Connection) -> tuple[str, None, tuple[Any, ...]] | None:
        """The statement that reads the session's account (accounts.session_account_query), for
        a handler that sends it in one round trip with its own first reads and then calls
        `resolve_read` with its rows; None when there is nothing to read that way (a verified
        token, a principal known already, a session without a usable sign-in time): `resolve`."""
        session = self.session()
        return None if session is None else session_account_query(conn, *session)

    def session(self) -> tuple[str, datetime] | None:
        """The account id the session names and when it signed in (its account not read yet),
        or None when there is nothing to read that way (see session_query)."""
        if self.verified is not None or getattr(self.request.state, "principal", None) is not None:
            return None
        if "session" not in self.request.scope:
            return None
        account_id = self.request.session.get(SESSION_ACCOUNT) or None
        signed_in = _signed_in_at(self.request) if account_id else None
        return None if account_id is None or signed_in is None else (account_id, signed_in)

    def session_issuers(self) -> frozenset[str] | None:
        """Whose accounts a session may be of here (None: any)."""
        return _session_issuers(portner(self.request))

    def resolve_read(self, conn: Connection, session_rows: Sequence[Sequence[Any]]) -> Principal:
        """`resolve`, with the rows of `session_query` read already."""
        return check_role(principal_on(self.request, conn, session_rows), self.roles)


def require_later(*roles: AccountRole) -> Callable[..., Awaitable[PendingPrincipal]]:
    """Like `require`, but a session's account is read by the handler (see PendingPrincipal)."""

    async def dependency(request: Request) -> PendingPrincipal:
        if _bearer(request) is not None:
            who = await run_in_threadpool(principal, request)
            return PendingPrincipal(request, roles, check_role(who, roles))
        if not ("session" in request.scope and request.session.get(SESSION_ACCOUNT)):
            raise _not_signed_in()
        if request.method not in SAFE_METHODS:
            # A session's change must carry its CSRF token: refused before anything is read.
            _check_csrf_token(request)
        return PendingPrincipal(request, roles)

    return dependency


def page_principal(request: Request) -> Principal:
    """Page routes: the principal, or a redirect to the sign-in page."""
    found = current_principal(request)
    if found is None:
        raise SignInRequired()
    return found


def require(*roles: AccountRole) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only these roles through (API: 403 problem)."""

    # async: a check with no I/O, run on the event loop (a sync dependency costs a thread hop).
    async def dependency(who: Principal = Depends(principal)) -> Principal:
        return check_role(who, roles)

    return dependency


def require_page(*roles: AccountRole) -> Callable[..., Awaitable[Principal]]:
    """Like `require`, for pages (sign-in redirect when nobody is signed in)."""

    async def dependency(who: Principal = Depends(page_principal)) -> Principal:
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
    _check_csrf_token(request)


def _check_csrf_token(request: Request) -> None:
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
