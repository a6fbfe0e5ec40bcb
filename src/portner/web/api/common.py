"""What every API module shares: pagination, conditional requests, idempotent POSTs, response shapes.

Pagination (keyset, never OFFSET)
    A list endpoint takes `params: PageParams = Depends(page_params)` (query `limit` 1..500,
    default 50, and an opaque `cursor`). The cursor is base64url of the JSON list of the last
    item's sort key; a cursor that does not decode is a 422 naming `query/cursor`.

    In SQL::

        stmt = select(...).order_by(t.residents.c.display_name, t.residents.c.id)
        stmt = keyset(stmt, params, t.residents.c.display_name, t.residents.c.id)  # WHERE (..) > after, LIMIT n+1
        rows = conn.execute(stmt).all()
        return page_of(request, response, params, [to_out(r) for r in rows],
                       key=lambda o: (o.display_name, o.id))

    In memory (a service already returns a list): `paginate(request, response, params, items, key)`
    sorts by `key`, skips to after the cursor and cuts the page. Both return `Page[T]`
    ({items, next_cursor}) and set `Link: <...>; rel="next"` when there is a next page.
    Declare the endpoint with `response_model=Page[ResidentOut]`.

Conditional requests
    `etag_for(obj)` is a strong ETag over the canonical JSON of a dict or pydantic model (the same
    representation GET returns). A GET of one resource returns `conditional(request, response,
    model)`: it sets ETag, and answers `If-None-Match` with 304. Declare it with
    `responses=SINGLE_RESPONSES`. An update (PATCH/PUT/DELETE) reads the current representation,
    then `require_if_match(request, etag_for(current))`: no If-Match -> 428, stale -> 412, both as
    problem details naming `header/If-Match`. Add `if_match: IfMatchHeader = None` to the
    signature so the header appears in the OpenAPI document.

Idempotency keys on POST
    ``return await idempotent(request, who, lambda conn: do_it(conn), status_code=201)``
    runs `handler(conn)` in ONE transaction that first inserts the key row (principal + key primary
    key); the answer (status and JSON body) is stored in the same transaction, so the change and
    the remembered answer commit together. A retry with the same key and body gets the stored
    answer with `Idempotency-Replayed: true`; the same key with another body (or another
    method/path) is a 422 naming `header/Idempotency-Key`. Concurrent retries are safe: the second
    insert waits for the first transaction and then hits the unique key, and reads the answer back.
    A handler that raises (a Problem, a domain error) rolls the key back too: errors are not
    remembered, a corrected retry may reuse the key. Keys are kept 24 hours. Without the header
    the handler just runs in a transaction. Add `idempotency_key: IdempotencyKeyHeader = None` to
    the signature so the header is documented. The handler returns a pydantic model or a
    JSON-able dict/list. For a service that opens its own transaction (takes the engine), use
    ``await idempotent_call(request, who, lambda: service(engine, ...))``: the key is committed
    as "in progress" first (a concurrent retry gets 409 + Retry-After), the answer stored after.

Problem details in the document
    `APIRouter(responses=PROBLEM_RESPONSES)` documents 401/403/404/422 as application/problem+json
    (`ProblemOut`); `CONDITIONAL_UPDATE_RESPONSES` (412, 428) and `IDEMPOTENT_RESPONSES` (409) for
    the routes that answer those, `problem_response(description)` for any other status.

Free text and days
    Request models type free text as `Text` (one line) or `MultilineText` (tab and line breaks
    allowed): C0 control characters (PostgreSQL refuses NUL) and lone surrogates are a 422 naming
    the field. Ids and words in paths and queries take `pattern=NO_CONTROL`. A `date` query goes
    through `check_day` (2000..2099, else a 422 naming query/date). Cursors are range-checked
    too (aware times within years 2..9998 in UTC, 64-bit ints, clean text of at most 200 chars).

Response models
    ResidentOut, HomeOut, DoorOut, LockOut, StaffOut, VisitOut, GrantOut, AccessLogLineOut,
    AuditEntryOut, MunicipalityOut, AccountOut (+ grant_out/visit_out/municipality_out to build
    them from rows). Single GETs return these, so an update's If-Match is checked against
    `etag_for(<the same model>)`. None of them carries a national id, HPR number or key
    material; keep it so. `resident_or_404(conn, who, resident_id, now=)` is the authority check
    that answers 404 (never 403) for a resident the caller may not see.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from portner.domain.access import Principal
from portner.services.authority import may_see_resident
from portner.storage import tables as t
from portner.web.deps import portner
from portner.web.problems import Problem, field_problem, not_found

T = TypeVar("T")

# --- problem details in the OpenAPI document ----------------------------------------------------


class FieldErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # a FHIR push adds file and resource

    field: str = Field(description="Where: query/limit, body/door_ids/1, header/If-Match, ...")
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details, as every error of this API is answered."""

    type: str
    title: str
    status: int
    instance: str
    detail: str | None = None
    errors: list[FieldErrorOut] | None = None


def problem_response(description: str) -> dict[str, Any]:
    return {"model": ProblemOut, "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}}}


# Pass as `APIRouter(responses=PROBLEM_RESPONSES)`: documents the errors as problem details (and
# replaces FastAPI's default 422 schema, which is not what this API answers).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem_response("Not signed in."),
    403: problem_response("Not allowed for your role (or a missing CSRF token)."),
    404: problem_response("No such resource that you may see."),
    422: problem_response("Invalid request; `errors` names each field."),
}


# --- free text and days ------------------------------------------------------------------------

# C0 control characters (and DEL): PostgreSQL refuses NUL in text, the others have no business
# in a name or a reason and can hide text in logs. Tab and line breaks only where text may span lines.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f]")


def text_problem(value: str, *, multiline: bool) -> str | None:
    """Why `value` is not acceptable free text (None when it is)."""
    if (_CONTROL if multiline else _CONTROL_SINGLE_LINE).search(value):
        return "must not contain control characters" + ("" if multiline else " or line breaks")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def _single_line(value: str) -> str:
    reason = text_problem(value, multiline=False)
    if reason:
        raise ValueError(reason)
    return value


def _multiline(value: str) -> str:
    reason = text_problem(value, multiline=True)
    if reason:
        raise ValueError(reason)
    return value


# Use these for every free-text field of a request model (names, reasons, ids, phone numbers):
# `reason: Text = Field(max_length=400)`. A refusal is a 422 naming the field.
Text = Annotated[str, AfterValidator(_single_line)]
MultilineText = Annotated[str, AfterValidator(_multiline)]

# For ids and search words in paths and queries: `Query(max_length=64, pattern=NO_CONTROL)`.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

# Days the API plans for; outside them a date is a typo (and day arithmetic near year 1 or 9999
# overflows).
FIRST_YEAR, LAST_YEAR = 2000, 2099
DATE_FIELD = "query/date"


def day_in_range(day: date) -> bool:
    return FIRST_YEAR <= day.year <= LAST_YEAR


def check_day(day: date, field: str = DATE_FIELD) -> date:
    """422 naming `field` unless the day is in 2000..2099."""
    if not day_in_range(day):
        raise field_problem(field, f"a day from {FIRST_YEAR} to {LAST_YEAR}")
    return day


# --- pagination ---------------------------------------------------------------------------------

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
CURSOR_FIELD = "query/cursor"


class Page(BaseModel, Generic[T]):
    """One page of a list. Pass `next_cursor` back as `cursor` to get the next page."""

    items: list[T]
    next_cursor: str | None = Field(None, description="Opaque; null on the last page.")


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    cursor: str | None
    after: tuple[Any, ...] | None  # the decoded sort key of the last item already seen


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


# What a cursor value may be: a forged cursor with values no column holds would otherwise reach
# the database (an overflowing date, an int beyond BIGINT, a lone surrogate) and fail there.
INT64 = (-(2**63), 2**63 - 1)
MAX_CURSOR_TEXT = 200


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        when = datetime.fromisoformat(value["t"])
        if when.tzinfo is None:
            raise ValueError("naive time")
        when = when.astimezone(UTC)  # OverflowError near year 1 or 9999
        if not 1 < when.year < 9999:  # leave room for any zone's offset
            raise ValueError("time out of range")
        return when
    return value


def _sane(value: Any) -> bool:
    """Values a column can hold: bounded ints, finite floats, clean bounded text."""
    if isinstance(value, bool) or value is None or isinstance(value, datetime):
        return True
    if isinstance(value, int):
        return INT64[0] <= value <= INT64[1]
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, str):
        return len(value) <= MAX_CURSOR_TEXT and text_problem(value, multiline=False) is None
    return False


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps([_plain(v) for v in key], separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> Problem:
    return field_problem(CURSOR_FIELD, "not a cursor this server gave out; start again without it")


def decode_cursor(cursor: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        if not isinstance(value, list) or not value:
            raise ValueError
        key = tuple(_unplain(v) for v in value)
    except (binascii.Error, ValueError, UnicodeDecodeError, TypeError, OverflowError, RecursionError):
        raise _bad_cursor() from None
    if any(isinstance(v, (dict, list)) or not _sane(v) for v in key):
        raise _bad_cursor()
    return key


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1..500).")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the previous page.")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor, after=decode_cursor(cursor) if cursor else None)


def _python_type(column: Any) -> type | None:
    kind = getattr(column, "type", None)
    kind = getattr(kind, "impl", kind)  # a TypeDecorator (UtcDateTime) compares as what it wraps
    try:
        return kind.python_type  # type: ignore[union-attr]
    except (NotImplementedError, AttributeError):
        return None


def _fits(expected: type | None, value: Any) -> bool:
    if value is None or not _sane(value):
        return False
    if isinstance(value, datetime) and value.tzinfo is None:
        return False
    if expected is None:
        return True
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def keyset(stmt: Select[Any], params: PageParams, *columns: Any) -> Select[Any]:
    """Add `WHERE (columns) > after` and `LIMIT limit + 1` (the extra row tells there is more).

    The statement must already be ordered by exactly these columns, ascending, none nullable.
    The cursor's values are checked against the columns' types so a forged cursor is a 422, not
    a database error.
    """
    if params.after is not None:
        after = params.after
        if len(after) != len(columns):
            raise _bad_cursor()
        for column, value in zip(columns, after, strict=True):
            if not _fits(_python_type(column), value):
                raise _bad_cursor()
        # Expanded row-value comparison: portable across SQLite and PostgreSQL.
        clauses = []
        for i, column in enumerate(columns):
            equal = [columns[j] == after[j] for j in range(i)]
            clauses.append(and_(*equal, column > after[i]))
        stmt = stmt.where(or_(*clauses))
    return stmt.limit(params.limit + 1)


def _link_next(request: Request, response: Response, cursor: str) -> None:
    url = request.url.include_query_params(cursor=cursor)
    response.headers["Link"] = f'<{url}>; rel="next"'


def page_of(
    request: Request, response: Response, params: PageParams, items: Sequence[T], *, key: Callable[[T], Sequence[Any]]
) -> Page[T]:
    """Items fetched with `keyset` (up to limit + 1) -> the page, with next_cursor and Link."""
    items = list(items)
    if len(items) <= params.limit:
        return Page(items=items, next_cursor=None)
    items = items[: params.limit]
    cursor = encode_cursor(key(items[-1]))
    _link_next(request, response, cursor)
    return Page(items=items, next_cursor=cursor)


def paginate(
    request: Request, response: Response, params: PageParams, items: Sequence[T], *, key: Callable[[T], Sequence[Any]]
) -> Page[T]:
    """Paginate a list already in memory, ordered by `key` (which must be unique per item)."""
    ordered = sorted(items, key=lambda item: tuple(key(item)))
    if params.after is not None and ordered:
        after = params.after
        sample = tuple(key(ordered[0]))
        if len(sample) != len(after) or not all(_fits(type(s), a) for s, a in zip(sample, after, strict=True)):
            raise _bad_cursor()  # a cursor made for another list
        ordered = [item for item in ordered if tuple(key(item)) > after]
    return page_of(request, response, params, ordered[: params.limit + 1], key=key)


# --- conditional requests -----------------------------------------------------------------------

IF_MATCH_FIELD = "header/If-Match"
IfMatchHeader = Annotated[
    str | None, Header(alias="If-Match", description="The ETag of the representation you changed (required).")
]

SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": {"ETag": {"description": "Strong validator; send it as If-Match to update.",
                               "schema": {"type": "string"}}}},
    304: {"description": "Not modified (If-None-Match matched)."},
}
# For updates (PATCH/PUT/DELETE with If-Match).
CONDITIONAL_UPDATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: problem_response("The resource changed since you read it (If-Match is stale)."),
    428: problem_response("If-Match is required."),
}
IDEMPOTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: problem_response("Refused by the rules; or a request with this Idempotency-Key is still running "
                          "(retry after Retry-After), or was cut off long ago with its outcome unknown "
                          "(idempotency-outcome-unknown: look at the state, then use a new key)."),
}


def canonical_json(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(jsonable_encoder(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def etag_for(obj: Any) -> str:
    """A strong ETag over the canonical JSON of a dict or pydantic model."""
    return '"' + hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:32] + '"'


def _tags(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


def require_if_match(request: Request, current_etag: str) -> None:
    """428 when If-Match is missing, 412 when it names another version (strong comparison)."""
    header = request.headers.get("if-match")
    if header is None or not header.strip():
        raise Problem(428, "Precondition required",
                      "send If-Match with the ETag from a GET of this resource",
                      kind="precondition-required",
                      errors=[{"field": IF_MATCH_FIELD, "message": "required for updates"}])
    tags = _tags(header)
    if "*" in tags or current_etag in tags:
        return
    raise Problem(412, "Precondition failed",
                  "the resource changed since you read it; GET it again and retry",
                  kind="precondition-failed",
                  errors=[{"field": IF_MATCH_FIELD, "message": "does not match the current ETag"}],
                  headers={"ETag": current_etag})


def conditional(request: Request, response: Response, model: BaseModel) -> Any:
    """Return `model` with its ETag, or a bare 304 when If-None-Match already has it."""
    etag = etag_for(model)
    header = request.headers.get("if-none-match")
    if header is not None:
        tags = [tag.removeprefix("W/") for tag in _tags(header)]  # weak comparison for GET
        if "*" in tags or etag in tags:
            return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return model


# --- idempotency keys ---------------------------------------------------------------------------

IDEMPOTENCY_FIELD = "header/Idempotency-Key"
IDEMPOTENCY_TTL = timedelta(hours=24)
REPLAYED_HEADER = "Idempotency-Replayed"
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200,
           description="Any unique string (a UUID); a retry with the same key and body is answered once."),
]


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _json_text(result: Any) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(jsonable_encoder(result), separators=(",", ":"), ensure_ascii=False)


def _answer(status: int, text: str, *, replayed: bool) -> Response:
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def _purge(engine: Any, now: datetime) -> None:
    with engine.begin() as conn:  # forget expired keys (their own short transaction)
        conn.execute(delete(t.idempotency_keys).where(t.idempotency_keys.c.created_at < now - IDEMPOTENCY_TTL))


def _key_row(who: str, key: str) -> Any:
    return and_(t.idempotency_keys.c.principal == who, t.idempotency_keys.c.key == key)


def _reserve(conn: Connection, who: str, key: str, method_path: str, digest: str, now: datetime) -> bool:
    """Insert the key row (in a savepoint); False when the key exists already."""
    try:
        with conn.begin_nested():
            # Insert first: a concurrent retry blocks here until we commit, then hits the key.
            conn.execute(t.idempotency_keys.insert().values(
                principal=who, key=key, method_path=method_path, request_hash=digest,
                status_code=0, response="", created_at=now))
    except IntegrityError:
        return False
    return True


# No request here runs this long (a remote unlock waits 8 s for its lock, an import of 5 MB
# takes seconds): a key still "in progress" after it was cut off without an answer (an
# unexpected error after a door may have opened, a stopping server), and "retry" would have a
# client retry it until the key expires.
IN_PROGRESS_AT_MOST = timedelta(minutes=10)


def _replay(engine: Any, who: str, key: str, method_path: str, digest: str,
            now: datetime) -> tuple[int, str, bool]:
    with engine.connect() as conn:
        row = conn.execute(select(t.idempotency_keys).where(_key_row(who, key))).first()
    if row is None:  # it was rolled back meanwhile; the client may retry
        raise Problem(409, "Conflict", "a request with this Idempotency-Key failed just now; retry",
                      kind="idempotency-in-progress", headers={"Retry-After": "1"})
    if row.request_hash != digest or row.method_path != method_path:
        raise field_problem(IDEMPOTENCY_FIELD, "this key was used with another request; use a new key")
    if row.status_code == 0 and now - row.created_at > IN_PROGRESS_AT_MOST:
        raise Problem(409, "Outcome unknown",
                      "the request with this Idempotency-Key was cut off before it answered, and what "
                      "it did is not known: look at the current state, then send a new key if it is "
                      "still wanted", kind="idempotency-outcome-unknown")
    if row.status_code == 0:
        raise Problem(409, "Conflict", "a request with this Idempotency-Key is still running; retry",
                      kind="idempotency-in-progress", headers={"Retry-After": "1"})
    return row.status_code, row.response, True


def _run_once(
    engine: Any, who: str, key: str | None, method_path: str, digest: str,
    handler: Callable[[Connection], Any], status_code: int, now: datetime,
) -> tuple[int, str, bool]:
    if key is None:
        with engine.begin() as conn:
            return status_code, _json_text(handler(conn)), False
    _purge(engine, now)
    with engine.begin() as conn:
        fresh = _reserve(conn, who, key, method_path, digest, now)
        if fresh:
            text = _json_text(handler(conn))
            conn.execute(update(t.idempotency_keys).where(_key_row(who, key)).values(
                status_code=status_code, response=text))
    if fresh:
        return status_code, text, False
    return _replay(engine, who, key, method_path, digest, now)


def _reserve_apart(engine: Any, who: str, key: str, method_path: str, digest: str,
                   now: datetime) -> tuple[int, str, bool] | None:
    """Commit the key as "in progress"; None when it is ours to run, else the stored answer."""
    _purge(engine, now)
    with engine.begin() as conn:
        fresh = _reserve(conn, who, key, method_path, digest, now)
    return None if fresh else _replay(engine, who, key, method_path, digest, now)


def _forget(engine: Any, who: str, key: str) -> None:
    with engine.begin() as conn:  # not done: a retry with this key may run it again
        conn.execute(delete(t.idempotency_keys).where(_key_row(who, key)))


def _store(engine: Any, who: str, key: str, status_code: int, text: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(t.idempotency_keys).where(_key_row(who, key)).values(
            status_code=status_code, response=text))


def _call_once(
    engine: Any, who: str, key: str | None, method_path: str, digest: str,
    handler: Callable[[], Any], status_code: int, now: datetime,
) -> tuple[int, str, bool]:
    if key is None:
        return status_code, _json_text(handler()), False
    stored = _reserve_apart(engine, who, key, method_path, digest, now)
    if stored is not None:
        return stored
    try:
        text = _json_text(handler())
    except BaseException:
        _forget(engine, who, key)
        raise
    _store(engine, who, key, status_code, text)
    return status_code, text, False


def valid_idempotency_key(key: str) -> bool:
    return _KEY_PATTERN.match(key) is not None


def _header_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not valid_idempotency_key(key):
        raise field_problem(IDEMPOTENCY_FIELD, "1 to 200 visible ASCII characters")
    return key


async def _prepare(request: Request, body: bytes | None) -> tuple[str | None, str, str]:
    return (_header_key(request), *await _request_digest(request, body))


async def _request_digest(request: Request, body: bytes | None) -> tuple[str, str]:
    if body is None:
        body = await request.body()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{request.method} {path}"[:400], request_hash(request.method, path, body)


async def idempotent(
    request: Request, who: Principal, handler: Callable[[Connection], Any], *, status_code: int = 200,
    body: bytes | None = None,
) -> Response:
    """Run `handler(conn)` once per (principal, Idempotency-Key), in the key's transaction.

    `body`: the raw body when the route has already read it from `request.stream()`."""
    key, method_path, digest = await _prepare(request, body)
    p = portner(request)
    status, text, replayed = await run_in_threadpool(
        _run_once, p.engine, who.audit_actor, key, method_path, digest, handler, status_code, p.now())
    return _answer(status, text, replayed=replayed)


async def idempotent_call(
    request: Request, who: Principal, handler: Callable[[], Any], *, status_code: int = 200,
    body: bytes | None = None,
) -> Response:
    """Like `idempotent`, for a handler that runs its own transaction (a service taking the engine).

    The key is committed first as "in progress" (a concurrent retry gets 409 with Retry-After),
    the answer is stored after the handler returns, and a handler that raises forgets the key.
    """
    key, method_path, digest = await _prepare(request, body)
    p = portner(request)
    status, text, replayed = await run_in_threadpool(
        _call_once, p.engine, who.audit_actor, key, method_path, digest, handler, status_code, p.now())
    return _answer(status, text, replayed=replayed)


async def idempotent_await(
    request: Request, who: Principal, handler: Callable[[], Awaitable[Any]], *, status_code: int = 200,
) -> Response:
    """Like `idempotent_call`, for a handler that awaits (one that talks to a lock); see
    awaited_once."""
    status, text, replayed = await awaited_once(request, who, _header_key(request), handler,
                                                status_code=status_code)
    return _answer(status, text, replayed=replayed)


async def awaited_once(
    request: Request, who: Principal, key: str | None, handler: Callable[[], Awaitable[Any]], *,
    status_code: int = 200, body: bytes | None = None,
) -> tuple[int, str, bool]:
    """Run `handler` once per (principal, `key`) and this request's method, path and body: its
    answer as JSON text, and whether it was stored before (replayed). A handler that refuses
    (raises a `Problem`: nothing was done) forgets the key; one that fails otherwise (a backend's
    network error after the lock was sent the command) or is cancelled midway (the server
    stopping) keeps it "in progress" until it expires, as what it did (a door opened?) is not
    known: a retry is told 409, never run twice. `key` None: run it, nothing kept. `body`: what
    stands for the request's body once a route has read it (a form, parsed)."""
    if key is None:
        return status_code, _json_text(await handler()), False
    method_path, digest = await _request_digest(request, body)
    p = portner(request)
    stored = await run_in_threadpool(_reserve_apart, p.engine, who.audit_actor, key, method_path, digest,
                                     p.now())
    if stored is not None:
        return stored
    try:
        text = _json_text(await handler())
    except Problem:  # a refusal: nothing was done, a retry may run it
        await run_in_threadpool(_forget, p.engine, who.audit_actor, key)
        raise
    await run_in_threadpool(_store, p.engine, who.audit_actor, key, status_code, text)
    return status_code, text, False


# --- authority --------------------------------------------------------------------------------


def resident_or_404(conn: Connection, who: Principal, resident_id: str, *, now: datetime) -> None:
    """404 unless `who` may see the resident: the same answer whether it exists or not, so that a
    403 never confirms that an id is real."""
    if not may_see_resident(conn, who, resident_id, now=now):
        raise not_found(f"no resident {resident_id} that you may see")


# --- response models ----------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ResidentOut(_Out):
    id: str
    display_name: str
    zone: str | None = Field(None, description="The zone's path, e.g. 'Sentrum/Nord'.")
    has_elock: bool = False


class LockOut(_Out):
    id: str
    door_id: str
    backend: str
    model: str = ""
    battery_percent: float | None = None
    last_sync_at: datetime | None = None
    synced_seq: int = 0
    clock_offset_s: float | None = None
    open_anomalies: int = Field(0, description="Gaps or forks in the lock's own event log.")
    address: str | None = Field(None, description="How the backend finds the lock; null for a simulated "
                                                  "lock found by its id.")
    enforcement: str | None = Field(None, description="lock or server: where keypad code windows are kept; "
                                                      "null: chosen from the lock's capabilities.")


class DoorOut(_Out):
    id: str
    home_id: str
    position: int = Field(description="Order on the path from the street inwards (1 = street).")
    kind: str = Field(description="building, stairwell, flat or other.")
    lock_id: str | None = None
    lock: LockOut | None = None


class HomeOut(_Out):
    id: str
    resident_id: str
    address: str = ""
    elock_system: str | None = None
    doors: list[DoorOut] = Field(default_factory=list, description="The door path, street first.")


class StaffOut(_Out):
    id: str
    role: str
    organisation: str
    display_name: str = ""
    active: bool = True


class VisitOut(_Out):
    id: str
    resident_id: str
    planned_start: datetime
    planned_end: datetime
    staff_ids: list[str] = Field(default_factory=list)
    status: str
    description: str = ""
    arrived_at: datetime | None = None
    departed_at: datetime | None = None


class GrantOut(_Out):
    id: str
    actor_id: str
    door_ids: list[str]
    not_before: datetime
    not_after: datetime
    origin: str = Field(description="visit, manual, one_time or emergency.")
    visit_id: str | None = None
    status: str = Field(description="active or revoked.")
    reason: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None


class AccessLogLineOut(_Out):
    at: str = Field(description="Local time (municipality's zone), YYYY-MM-DD HH:MM.")
    door: str
    who: str
    role: str
    outcome: str = Field(description="opened or refused.")
    reason: str
    visit: str | None = None
    planned_visit: bool


class AuditEntryOut(_Out):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = Field(default_factory=dict)


class MunicipalityOut(_Out):
    id: str
    name: str
    timezone: str
    service_model: str = Field(description="central (a response center opens) or distributed (phones open).")
    lead_minutes: float = Field(description="How early before a planned visit a door opens.")
    grace_minutes: float = Field(description="How long after a planned visit a door still opens.")
    baseline_key_minutes_per_shift: float = Field(description="Minutes per shift spent on physical keys before.")
    plan_horizon_days: float
    accept_synthetic_ids: bool


class AccountOut(_Out):
    id: str
    role: str
    issuer: str
    subject: str
    actor_id: str | None = None
    resident_id: str | None = None
    display_name: str = ""
    scopes: list[str] = Field(default_factory=list)
    disabled: bool = False


def municipality_out(m: Any) -> MunicipalityOut:
    """A domain Municipality as the API shows it (the ETag of settings updates is over this)."""
    return MunicipalityOut(
        id=m.id, name=m.name, timezone=m.timezone, service_model=str(m.service_model),
        lead_minutes=m.window_lead.total_seconds() / 60, grace_minutes=m.window_grace.total_seconds() / 60,
        baseline_key_minutes_per_shift=m.baseline_key_minutes_per_shift,
        plan_horizon_days=m.plan_horizon.total_seconds() / 86400, accept_synthetic_ids=m.accept_synthetic_ids,
    )


def grant_out(row: Any) -> GrantOut:
    """A `grants` row (or Grant-like object) as the API shows it."""
    m = row._mapping if hasattr(row, "_mapping") else row.__dict__
    return GrantOut(
        id=m["id"], actor_id=m["actor_id"], door_ids=list(m["door_ids"]), not_before=m["not_before"],
        not_after=m["not_after"], origin=str(m["origin"]), visit_id=m.get("visit_id"), status=str(m["status"]),
        reason=m.get("reason") or "", created_at=m.get("created_at"), revoked_at=m.get("revoked_at"),
    )


def visit_out(row: Any) -> VisitOut:
    m = row._mapping
    return VisitOut(
        id=m["id"], resident_id=m["resident_id"], planned_start=m["planned_start"], planned_end=m["planned_end"],
        staff_ids=list(m["staff_ids"] or []), status=m["status"], description=m["description"] or "",
        arrived_at=m["arrived_at"], departed_at=m["departed_at"],
    )


__all__ = [
    "ProblemOut", "FieldErrorOut", "PROBLEM_RESPONSES", "problem_response",
    "Page", "PageParams", "page_params", "keyset", "page_of", "paginate", "encode_cursor", "decode_cursor",
    "Text", "MultilineText", "NO_CONTROL", "text_problem", "check_day", "day_in_range", "FIRST_YEAR", "LAST_YEAR",
    "etag_for", "require_if_match", "conditional", "IfMatchHeader", "SINGLE_RESPONSES",
    "CONDITIONAL_UPDATE_RESPONSES", "IDEMPOTENT_RESPONSES",
    "idempotent", "idempotent_call", "IdempotencyKeyHeader", "REPLAYED_HEADER", "resident_or_404",
    "ResidentOut", "HomeOut", "DoorOut", "LockOut", "StaffOut", "VisitOut", "GrantOut",
    "AccessLogLineOut", "AuditEntryOut", "MunicipalityOut", "AccountOut",
    "grant_out", "visit_out", "municipality_out",
]


async def bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413 problem) as soon as it is larger than `limit`: by its
    declared length, and by counting while reading (a chunked body declares none)."""
    too_big = Problem(413, "Content too large", f"the body is larger than {limit} bytes",
                      kind="content-too-large", errors=[{"field": "body", "message": "too large"}])
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
