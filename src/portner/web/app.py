"""The composition root of the server: settings in, one ASGI app out.

Every feature module under portner.web (API resources, the apps' pages, sign-in) exposes a
`router`; it may also expose `install(app, portner)` (to add handlers or state at start-up) and
`workers` (coroutine functions run for the server's lifetime, e.g. the SMS sender). Adding a
module to FEATURES is the only wiring there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from portner.bootstrap import open_app, utcnow
from portner.config import Settings
from portner.domain.access import NotPermitted
from portner.domain.errors import PortnerError
from portner.services.ids import IdSource
from portner.services.keys import load_or_create_secrets
from portner.web import openapi
from portner.web.deps import SESSION_LIFETIME, SignInRequired
from portner.web.headers import SecurityHeaders
from portner.web.problems import install_problem_handlers
from portner.web.state import Portner

API_PREFIX = "/api/v1"

# (module, URL prefix). API modules are mounted under /api/v1 and appear in /openapi.json; page
# modules are not in the schema. A request is matched against the routes in this order, and no
# two routes match the same request (tests/web/test_api_infra.py), so the order changes only how
# long finding one takes: the phones' calls, the busiest, come first (matching the upload behind
# four modules' routes cost 0.12 ms a request, measured).
FEATURES: list[tuple[str, str]] = [
    ("portner.web.api.phone", API_PREFIX),
    ("portner.web.api.shift", API_PREFIX),
    ("portner.web.api.directory", API_PREFIX),
    ("portner.web.api.directory_admin", API_PREFIX),
    ("portner.web.api.planning", API_PREFIX),
    ("portner.web.api.records", API_PREFIX),
    ("portner.web.api.keypad", API_PREFIX),
    ("portner.web.api.access", API_PREFIX),
    ("portner.web.api.fleet", API_PREFIX),
    ("portner.web.api.lock_callbacks", API_PREFIX),
    ("portner.web.auth.signin", ""),
    ("portner.web.auth.oidc", ""),
    ("portner.web.pages.nurse", ""),
    ("portner.web.pages.console", ""),
    ("portner.web.pages.fleet", ""),
    ("portner.web.pages.portal", ""),
    ("portner.web.pages.admin", ""),
]


class StartupError(PortnerError):
    """The server cannot start as configured (the message says what to change)."""


def _session_secret(data_dir: Path) -> str:
    path = data_dir / "keys" / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker process of this server made it a moment ago
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def check_settings(settings: Settings, adapters: dict[str, object] | None = None,
                   also: Sequence[str] = ()) -> None:
    """Refuse to start as configured when the server could not do its job: one StartupError
    that says everything to set (with `also`, the caller's own findings, first), so a new
    installation learns the whole list in one try. `portner serve` asks before it says what it
    serves."""
    problems = [*also, *settings_problems(settings, adapters)]
    if len(problems) == 1:
        raise StartupError(problems[0])
    if problems:
        raise StartupError("cannot start as configured:\n" + "\n".join(f"  - {p}" for p in problems))


def settings_problems(settings: Settings, adapters: dict[str, object] | None = None) -> list[str]:
    """What keeps the server from doing its job as configured (empty: nothing), each saying what
    to set."""
    from portner.services.messaging import gateway_from_setting

    if settings.mode not in ("development", "production"):
        return [f"PORTNER_MODE must be development or production, not {settings.mode!r}"]
    problems = []
    production = not settings.development
    client = {"PORTNER_OIDC_CLIENT_ID": settings.oidc_client_id,
              "PORTNER_OIDC_CLIENT_SECRET": settings.oidc_client_secret}
    if settings.oidc_issuer and (missing := [name for name, value in client.items() if not value]):
        problems.append(f"PORTNER_OIDC_ISSUER is set: also set {' and '.join(missing)} (this "
                        "server's client at the provider)")
    elif production and not settings.oidc_issuer:
        problems.append("production mode needs an OpenID provider: set PORTNER_OIDC_ISSUER, "
                        "PORTNER_OIDC_CLIENT_ID and PORTNER_OIDC_CLIENT_SECRET (the development "
                        "sign-in is off)")
    if settings.oidc_issuer and not settings.api_audience.strip():
        # Access tokens are verified against it (and sign-in asks the provider for it): with
        # none, every integration's and person's token would be refused.
        problems.append("PORTNER_API_AUDIENCE is empty: set it to the audience (resource "
                        "indicator) the provider puts in this API's access tokens, such as urn:portner:api")
    if production and not _public_url_served_safely(settings.public_url):
        problems.append(
            f"PORTNER_PUBLIC_URL is {settings.public_url!r}: production needs where people reach "
            "this server as an absolute https:// URL, such as https://portner.kommune.no (http:// "
            "only on a loopback host, for a local trial): sign-in redirects, the session cookie's "
            "Secure flag and the links sent by SMS are made from it"
        )
    if "sms" not in (adapters or {}):
        try:
            gateway_from_setting(settings.sms_gateway)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if production and settings.sms_gateway.strip() == "outbox":
                problems.append(
                    "production mode needs an SMS gateway: set PORTNER_SMS_GATEWAY to its https:// "
                    "URL or to smtp://host:port (one-time access codes would stay in the outbox, "
                    "which only development shows)"
                )
    return problems


def _public_url_served_safely(url: str) -> bool:
    """An absolute https:// URL (http:// on a loopback host only) of the site's root, written as
    the session cookie's Secure flag and HSTS read it (lowercase "https://", no spaces)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port past 65535 raises)
    except ValueError:  # "https://[::1", "https://x.no:99999"
        return False
    if url != url.strip() or "\\" in url or not parts.hostname or parts.username is not None:
        return False  # a browser reads a backslash as "/": http://evil.example\@127.0.0.1 is not loopback
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        return False  # the apps' links and redirects are root-relative
    if url.startswith("https://"):
        return True
    if not url.startswith("http://"):
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    adapters: dict[str, object] | None = None,
) -> FastAPI:
    """Build the server for one municipality (which must exist; `portner serve` makes the demo)."""
    check_settings(settings, adapters)
    opened = open_app(settings)
    with opened.engine.begin() as conn:
        keys = load_or_create_secrets(conn, settings.data_dir, opened.municipality.id, now=clock())
    runtime = Portner(
        settings=settings,
        engine=opened.engine,
        municipality=opened.municipality,
        secrets=keys,
        clock=clock,
        ids=IdSource(),
        adapters=dict(adapters or {}),
    )
    modules = [(importlib.import_module(name), prefix) for name, prefix in FEATURES]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What the server holds from its start (modules, routes, schemas, the demo's data) is
        # kept out of the collector's full passes: each walked all of it, stopping the worker
        # for 94 ms in a 12 s run of uploads (gc.callbacks), a stall every request of the
        # moment waited out. Python's own advice for pre-fork servers (gc.freeze). Not collected
        # first: a full pass per start cost the test suite minutes; a stopped app lets all go.
        gc.freeze()
        tasks = [
            asyncio.create_task(worker(runtime), name=f"{module.__name__}.{worker.__name__}")
            for module, _ in modules
            for worker in getattr(module, "workers", [])
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            runtime.engine.dispose()
            gc.unfreeze()

    app = FastAPI(
        title="Portner API",
        version="1",
        summary="Door access for municipal home care: visits, credentials, door events, audit.",
        openapi_url="/openapi.json",
        # No Swagger UI: it loads its scripts from a CDN at run time. /openapi.json is the document.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.portner = runtime
    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_secret(settings.data_dir),
        session_cookie="portner_session",
        max_age=int(SESSION_LIFETIME.total_seconds()),
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    app.add_middleware(SecurityHeaders, bridge_url=settings.bridge_url,
                       https=settings.public_url.startswith("https://"))
    install_problem_handlers(app)
    _install_page_handlers(app)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    for module, prefix in modules:
        _include(app, module, prefix, runtime)
    openapi.install(app, [(module, prefix) for module, prefix in modules if prefix == API_PREFIX])
    return app


def _include(app: FastAPI, module: ModuleType, prefix: str, runtime: Portner) -> None:
    from portner.web.api.common import PROBLEM_RESPONSES

    # Every API error is problem details: say so in the OpenAPI document of each operation.
    extra: dict[str, Any] = {"responses": PROBLEM_RESPONSES} if prefix == API_PREFIX else {}
    app.include_router(module.router, prefix=prefix, **extra)
    if runtime.settings.development and hasattr(module, "dev_router"):
        app.include_router(module.dev_router, prefix=prefix, **extra)
    install = getattr(module, "install", None)
    if install is not None:
        install(app, runtime)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(API_PREFIX) and "text/html" in request.headers.get("accept", "")


def _install_page_handlers(app: FastAPI) -> None:
    from portner.web.templating import render

    @app.exception_handler(SignInRequired)
    async def _signin(request: Request, exc: SignInRequired) -> Response:
        from urllib.parse import quote

        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)

    problem_for_forbidden = app.exception_handlers[NotPermitted]

    @app.exception_handler(NotPermitted)
    async def _forbidden(request: Request, exc: NotPermitted) -> Response:
        if _wants_html(request):
            from portner.web.i18n import pick_language, translate

            message = translate("error.forbidden", pick_language(request))
            return render(request, "error.html", {"message": message}, status_code=403)
        return await problem_for_forbidden(request, exc)


__all__ = ["create_app", "check_settings", "StartupError", "HTMLResponse"]
