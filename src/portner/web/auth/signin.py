"""The sign-in page, the development sign-in, sign-out, and the landing redirect.

The development sign-in lists the accounts made with the development issuer and signs in as one
without a password. It exists only when the server runs in development mode: the routes are not
mounted otherwise, and the handler checks the mode again so that a misconfiguration cannot
expose it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from portner.services.accounts import (
    DEV_ISSUER,
    AccountDisabled,
    end_sessions,
    principal_for_subject,
)
from portner.storage import tables as t
from portner.web.deps import (
    SESSION_ACCOUNT,
    SESSION_SIGNED_IN_AT,
    check_form_csrf,
    current_principal,
    portner,
)
from portner.web.templating import HOME_FOR_ROLE, render

router = APIRouter(include_in_schema=False)
dev_router = APIRouter(include_in_schema=False)

def safe_next(target: str | None) -> str:
    """Only same-site paths: a sign-in link must not redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"

def start_session(request: Request, account_id: str) -> None:
    # A new session at sign-in: nothing from before it (a planted cookie) survives.
    request.session.clear()
    request.session[SESSION_ACCOUNT] = account_id
    request.session[SESSION_SIGNED_IN_AT] = portner(request).now().isoformat()


@router.get("/")
def landing(request: Request) -> Response:
    try:
        who = current_principal(request)
    except AccountDisabled:
        request.session.clear()
        who = None
    if who is None:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(HOME_FOR_ROLE.get(who.role, "/signin"), status_code=303)

@router.get("/signin")
def signin_page(request: Request, next: str | None = None, error: str | None = None) -> Response:
    p = portner(request)
    dev_accounts = []
    if p.settings.development:
        with p.engine.connect() as conn:
            dev_accounts = conn.execute(
                select(t.accounts.c.subject, t.accounts.c.display_name, t.accounts.c.role)
                .where(t.accounts.c.issuer == DEV_ISSUER, t.accounts.c.municipality_id == p.municipality.id,
                       t.accounts.c.disabled_at.is_(None))
                .order_by(t.accounts.c.role, t.accounts.c.display_name)
            ).all()
    return render(request, "signin.html", {
        "oidc": bool(p.settings.oidc_issuer),
        "dev_accounts": dev_accounts,
        "next": safe_next(next),
        "error": error if error in ("unknown_account", "disabled", "signin_failed") else None,
    })

@router.post("/signout")
async def signout(request: Request) -> Response:
    await check_form_csrf(request)
    try:
        who = current_principal(request)
    except AccountDisabled:
        who = None
    if who is not None:
        # The cookie is signed, not stored: the server remembers that its sessions are over.
        p = portner(request)
        end_sessions(p.engine, who.account_id, now=p.now())
    request.session.clear()
    return RedirectResponse("/signin", status_code=303)

@dev_router.post("/signin/dev", dependencies=[Depends(check_form_csrf)])
def dev_signin(request: Request, subject: str = Form(...), next: str = Form("/")) -> Response:
    p = portner(request)
    if not p.settings.development:
        return RedirectResponse("/signin", status_code=303)
    with p.engine.connect() as conn:
        try:
            who = principal_for_subject(conn, DEV_ISSUER, subject, via="dev")
        except AccountDisabled:
            return RedirectResponse("/signin?error=disabled", status_code=303)
    if who is None or who.municipality_id != p.municipality.id:
        return RedirectResponse("/signin?error=unknown_account", status_code=303)
    start_session(request, who.account_id)
    target = safe_next(next)
    return RedirectResponse(target if target != "/" else HOME_FOR_ROLE.get(who.role, "/"), status_code=303)
