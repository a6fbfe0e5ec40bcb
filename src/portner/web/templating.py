"""Server-rendered pages: one Jinja environment, every page gets the frame's context.

Templates live in portner/web/templates/<app>/; each extends base.html, which gives the skip
link, the language switch, the role's navigation, and a <main> landmark.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse

from portner.domain.access import AccountRole
from portner.web.deps import csrf_token, current_principal
from portner.web.i18n import LANGUAGE_COOKIE, LANGUAGES, pick_language, translate

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

# Which app each role lands in, and the navigation it sees.
HOME_FOR_ROLE = {
    AccountRole.NURSE: "/nurse",
    AccountRole.OPERATOR: "/console",
    AccountRole.ADMIN: "/admin",
    AccountRole.RELATIVE: "/portal",
    AccountRole.RESIDENT: "/portal",
}
NAV_FOR_ROLE = {
    AccountRole.NURSE: [("nav.nurse", "/nurse")],
    AccountRole.OPERATOR: [("nav.console", "/console")],
    AccountRole.ADMIN: [("nav.admin", "/admin"), ("nav.console", "/console")],
    AccountRole.RELATIVE: [("nav.portal", "/portal")],
    AccountRole.RESIDENT: [("nav.portal", "/portal")],
}


def local_time(value: datetime | None, request: Request, fmt: str = "%H:%M") -> str:
    """An instant shown in the municipality's zone (never the server's)."""
    if value is None:
        return ""
    zone = ZoneInfo(request.app.state.portner.municipality.timezone)
    return value.astimezone(zone).strftime(fmt)


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:
    lang = pick_language(request)
    who = current_principal(request)
    ctx: dict[str, Any] = {
        "lang": lang,
        "languages": LANGUAGES,
        "_": lambda key, **kw: translate(key, lang, **kw),
        "who": who,
        "nav": NAV_FOR_ROLE.get(who.role, []) if who else [],
        "csrf": csrf_token(request),
        "local_time": lambda value, fmt="%H:%M": local_time(value, request, fmt),
        "development": request.app.state.portner.settings.development,
        "path": request.url.path,
    }
    ctx.update(context or {})
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status_code)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax")
    return response
