"""How /openapi.json says to authenticate: the schemes, and which operations need one.

An integration presents an access token from the municipality's OpenID provider (client
credentials with a signed client assertion); the web apps' requests carry the signed session
cookie, and a change through a session also its CSRF token. The few operations that need
neither carry their own authority: a one-time visitor's link (its token is in the path) and a
lock vendor's callback (signed with the vendor's webhook secret). Which operation is which is
read off the routes' dependencies, so a new operation is documented by how it is guarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from portner.web import deps

SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from the municipality's OpenID provider: for integrations, "
                       "got with client credentials and a signed client assertion (private_key_jwt).",
    },
    "session": {
        "type": "apiKey", "in": "cookie", "name": "portner_session",
        "description": "A signed-in session of the web apps. A change (POST, PUT, PATCH, DELETE) "
                       "also needs the session's CSRF token in the X-CSRF-Token header.",
    },
}
SIGNED_IN = [{"bearer": []}, {"session": []}]
_GUARDS = {deps.principal.__qualname__, "require.<locals>.dependency", "require_later.<locals>.dependency"}


def _guarded(dependant: Dependant) -> bool:
    """Whether the operation asks who is calling (deps.principal, require or require_later)."""
    for dependency in dependant.dependencies:
        call: Callable[..., Any] | None = dependency.call
        if getattr(call, "__module__", None) == deps.__name__ and getattr(call, "__qualname__", "") in _GUARDS:
            return True
        if _guarded(dependency):
            return True
    return False


def operations(modules: Iterable[tuple[ModuleType, str]]) -> dict[tuple[str, str], bool]:
    """(path, method) of every API operation of `modules` → whether it needs a signed-in caller."""
    found: dict[tuple[str, str], bool] = {}
    for module, prefix in modules:
        routers = [module.router, *([module.dev_router] if hasattr(module, "dev_router") else [])]
        for router in routers:
            for route in router.routes:
                if isinstance(route, APIRoute) and route.include_in_schema:
                    for method in route.methods:
                        found[(prefix + route.path, method.lower())] = _guarded(route.dependant)
    return found


def install(app: FastAPI, modules: Iterable[tuple[ModuleType, str]]) -> None:
    """Add the schemes to the document, and to each operation the ones it accepts ([]: none)."""
    guarded = operations(modules)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # (FastAPI keeps it as app.openapi_schema)
            schema.setdefault("components", {})["securitySchemes"] = SCHEMES
            for path, item in schema.get("paths", {}).items():
                for method, operation in item.items():
                    if (path, method) in guarded:
                        operation["security"] = SIGNED_IN if guarded[(path, method)] else []
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
