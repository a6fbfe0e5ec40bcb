"""Errors as RFC 9457 problem details (application/problem+json) that name the field.

Handlers raise `Problem` (or a domain error, mapped here); FastAPI's validation errors become a 422
listing every bad field as a JSON pointer-like path ("body/events/3/seq"). Web pages get the same
information as an HTML page; the API always gets JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from portner.domain.access import NotPermitted
from portner.domain.errors import PortnerError
from portner.services.accounts import AccountDisabled

PROBLEM_TYPE_BASE = "https://portner.example/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("portner.web")


class Problem(Exception):
    """An error answer. `errors` lists field-level problems: [{"field": ..., "message": ...}]."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        kind: str | None = None,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors = list(errors)
        self.headers = headers or {}

    def body(self, instance: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "instance": instance,
        }
        if self.detail:
            doc["detail"] = self.detail
        if self.errors:
            doc["errors"] = self.errors
        return doc


# A field at fault is not always malformed: a proof that does not verify (401), a refusal of who
# is asking (403), a state that does not allow it (409). Titled by what went wrong, not all
# "Invalid request".
_FIELD_PROBLEMS = {
    401: ("Proof not accepted", "proof-not-accepted"),
    403: ("Forbidden", "forbidden"),
    409: ("Conflict", "conflict"),
}


def field_problem(field: str, message: str, *, status: int = 422) -> Problem:
    """One field at fault, named."""
    title, kind = _FIELD_PROBLEMS.get(status, ("Invalid request", "invalid-request"))
    return Problem(status, title, f"{field}: {message}", kind=kind,
                   errors=[{"field": field, "message": message}])


def not_found(what: str) -> Problem:
    return Problem(404, "Not found", what, kind="not-found")


def _response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path), status_code=problem.status, media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


def _field_path(loc: Sequence[Any]) -> str:
    return "/".join(str(part) for part in loc)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            # Never echo the rejected input: it may be a national id or a key.
            {"field": _field_path(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return _response(Problem(422, "Invalid request", detail, kind="invalid-request", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {401: "Not signed in", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
        title = titles.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else ""
        return _response(Problem(exc.status_code, title, detail, headers=dict(exc.headers or {})), request)

    @app.exception_handler(NotPermitted)
    async def _forbidden(request: Request, exc: NotPermitted) -> JSONResponse:
        return _response(Problem(403, "Forbidden", str(exc)), request)

    @app.exception_handler(AccountDisabled)
    async def _disabled(request: Request, exc: AccountDisabled) -> JSONResponse:
        return _response(Problem(401, "Account disabled", str(exc), kind="account-disabled"), request)

    @app.exception_handler(PortnerError)
    async def _domain(request: Request, exc: PortnerError) -> JSONResponse:
        return _response(Problem(409, "Refused", str(exc), kind="refused"), request)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        if "locked" in str(exc.orig).lower() or "busy" in str(exc.orig).lower():
            # SQLite: another request holds the write lock. Nothing was written; try again.
            return _response(Problem(503, "Busy", "the database is busy; nothing was changed, try again",
                                     kind="busy", headers={"Retry-After": "1"}), request)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The message and the traceback may hold personal data (a SQL parameter, a name): the
        # answer says nothing, the log names only the type and where (the engine hides
        # parameters, see storage.db).
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path,
                  exc_info=exc)
        return _response(Problem(500, "Internal error", "something went wrong on our side; "
                                 "nothing you sent was echoed or kept half-written", kind="internal"),
                         request)
