"""The nurse app (/nurse): today's visits in order with their door paths, and an Open button per door.

The page is a shell; the script (static/nurse/nurse.js, door logic in door.js) makes the phone's
key, fetches the shift's credentials into IndexedDB and opens doors through the lock radio bridge.
The service worker (served from /nurse/sw.js so that it may control /nurse) keeps the shell, so
the app starts and opens doors with the platform unreachable.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from portner.domain.access import AccountRole, Principal
from portner.web.deps import portner, require_page
from portner.web.i18n import catalog, pick_language, translate
from portner.web.templating import render

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static" / "nurse"


def _words(lang: str) -> dict[str, str]:
    """The app's words for the script, in the reader's language (placeholders left for it)."""
    return {key: translate(key, lang) for key in catalog() if key.startswith("nurse.")}


@router.get("/nurse")
def nurse_app(request: Request, who: Principal = Depends(require_page(AccountRole.NURSE))) -> Response:
    p = portner(request)
    zone = p.municipality.timezone
    today = p.now().astimezone(ZoneInfo(zone)).date()
    response = render(request, "nurse/app.html", {
        "words": _words(pick_language(request)),
        "account_id": who.account_id,
        "timezone": zone,
        "today": today.isoformat(),
        "bridge_url": p.settings.bridge_url,
    })
    # The service worker keeps its own copy for offline use; the browser's HTTP cache must not
    # keep a signed-in page.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/nurse/sw.js")
def service_worker() -> Response:
    # Served from /nurse/ (not /static/) and allowed the /nurse scope, so it controls the app page.
    return FileResponse(STATIC / "sw.js", media_type="text/javascript",
                        headers={"Service-Worker-Allowed": "/nurse", "Cache-Control": "no-cache"})


@router.get("/nurse/manifest.webmanifest")
def manifest() -> Response:
    return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")
