"""The append-only, hash-chained audit log, written in the transaction of the change it records.

Entry n carries hash_n = SHA-256(hash_{n-1} || canonical_bytes(entry n)), with hash_0 = 32 zero
bytes (the genesis, held by the audit_head row before the first append). The canonical bytes are
the UTF-8 encoding of the JSON array

    [seq, at, actor, action, subject, details]

serialised with sorted object keys, separators "," and ":" (no whitespace), non-ASCII characters
written as themselves (ensure_ascii=False), NaN and infinities refused, where `at` is the instant in
UTC as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (always six fraction digits). For example, entry 1 at
2026-01-05 08:00 UTC by "system" with details {"b": 1, "a": "ø"} has the canonical bytes
`[1,"2026-01-05T08:00:00.000000Z","system","grant:created","grant:g1",{"a":"ø","b":1}]`.

What is hashed is what is stored: the details column holds exactly the canonical details text
(PostgreSQL's `json` type, unlike `jsonb`, keeps text verbatim), and verification hashes the stored
text, so even a meaning-preserving rewrite of it counts as an edit. Keys that are not strings
become strings, as JSON has it; tuples become lists.

The audit_head row (seq and hash of the last entry) is updated with every append, so a deleted
tail shows up as a head that points past the last row. An attacker who can rewrite every row from
some point on *and* the head can forge a consistent chain; anchoring the head outside the database
(signed or published checkpoints) is what closes that, and is not done here.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import accumulate, chain
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _encode_string  # what ensure_ascii=False uses
from typing import Any

from psycopg.pq import PipelineStatus
from sqlalchemy import Text, bindparam, cast, select, update
from sqlalchemy.engine import Connection

from portner.storage.bulk import (
    as_sqlalchemy_error,
    copy_text,
    copy_writer,
    dialect_insert,
    driver_pipeline,
)
from portner.storage.tables import audit_events, audit_head

GENESIS_HASH = bytes(32)
_HEAD_ID = 1
_ACTION = re.compile(r"[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*")  # "subject:action", lower case
# A standalone run of 11 digits (or the printed form "DDMMYY NNNNN") looks like a national id.
# Letters count as part of a token so that digit runs inside hex hashes and ids do not match.
_NATIONAL_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\d{11}|\d{6} \d{5})(?![0-9A-Za-z])")
# The same, in JSON text: a digit run may also follow an escape such as \n or \u001f.
_NATIONAL_ID_IN_JSON = re.compile(
    r"(?:(?<![0-9A-Za-z])|(?<=\\[nrtbf])|(?<=\\u[0-9a-fA-F]{4}))"
    r"(?:\d{11}|\d{6} \d{5})(?![0-9A-Za-z])"
)
_ELEVEN_DIGITS = re.compile(r"\d{6} ?\d{5}")
_MAX_LEN = {"actor": 100, "action": 64, "subject": 200}  # the column widths in tables.py


@lru_cache(maxsize=256)
def _valid_action(action: str) -> bool:
    return _ACTION.fullmatch(action) is not None


class AuditPrivacyError(ValueError):
    """An audit entry appears to contain a national id number (the message never repeats it)."""


@dataclass(frozen=True)
class AuditEntry:
    """One audited fact: who (actor) did what (action, "subject:action") to what (subject), when."""

    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:  # naive, or a zone without an offset
            raise ValueError("audit entries need an aware datetime")
        if not _valid_action(self.action):
            raise ValueError(f"audit action must look like 'subject:action', got {self.action!r}")
        # Checked in the order of _MAX_LEN (actor, action, subject), without a loop: thousands
        # of entries are built per import.
        if len(self.actor) > 100 or len(self.action) > 64 or len(self.subject) > 200:
            for name, limit in _MAX_LEN.items():
                if len(getattr(self, name)) > limit:
                    raise ValueError(f"audit {name} is longer than {limit} characters")


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of verify_audit: ok, how many entries were checked, and the first bad one."""

    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str = ""


def format_instant(at: datetime) -> str:
    """The canonical UTC text of an instant, as hashed: YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_DETAILS_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _make_c_encoder() -> Any:
    """The C encoder that _DETAILS_ENCODER.encode builds afresh on every call, built once."""
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return None
    enc = _DETAILS_ENCODER
    return c_make_encoder(
        {}, enc.default, _encode_string, enc.indent, enc.key_separator, enc.item_separator,
        enc.sort_keys, enc.skipkeys, enc.allow_nan,
    )


_C_ENCODER = _make_c_encoder()


def _details_json(details: Mapping[str, Any]) -> str:
    """Canonical JSON text of the details; also what is stored, so it is serialised only once."""
    global _C_ENCODER
    if _C_ENCODER is not None and type(details) is dict:
        try:
            # Exactly what JSONEncoder.encode does for a dict (the same C encoder, one shot).
            return "".join(_C_ENCODER(details, 0))
        except Exception:
            # The encoder's circular-reference markers may be left dirty: start afresh, and let
            # the standard path raise its own, documented error.
            _C_ENCODER = _make_c_encoder()
    return _DETAILS_ENCODER.encode(details)


def _entry_bytes(
    seq: int, instant: str, actor: str, action: str, subject: str, details: str
) -> bytes:
    # Byte for byte what json.dumps of the whole array gives (the test suite checks this), built
    # by hand because this runs once per entry: json's own string encoder, items joined by ",".
    return b"[%d" % int(seq) + _entry_tail(instant, actor, action, subject, details)


def _entry_tail(instant: str, actor: str, action: str, subject: str, details: str) -> bytes:
    """The entry's bytes after "[" and its seq (which the server adds in _PG_APPEND_FEW)."""
    quote = _encode_string
    return f",{quote(instant)},{quote(actor)},{quote(action)},{quote(subject)},{details}]".encode()


def canonical_bytes(
    seq: int, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
) -> bytes:
    """The exact bytes hashed for one entry (see the module docstring)."""
    return _entry_bytes(seq, format_instant(at), actor, action, subject, _details_json(details))


def chain_hash(prev_hash: bytes, payload: bytes) -> bytes:
    """SHA-256 of the previous entry's hash followed by this entry's canonical bytes."""
    return hashlib.sha256(prev_hash + payload).digest()


def _id_path(value: Any, where: str) -> str | None:
    """Where in `value` an id-like string or number sits (slow; run only after a match)."""
    if isinstance(value, str):
        return where if _NATIONAL_ID_LIKE.search(value) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return where if _NATIONAL_ID_LIKE.search(json.dumps(value)) else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _NATIONAL_ID_LIKE.search(str(key)):
                return f"a key of {where}"
            found = _id_path(item, f"{where}[{key!r}]")
            if found:
                return found
    if isinstance(value, list | tuple):
        for position, item in enumerate(value):
            found = _id_path(item, f"{where}[{position}]")
            if found:
                return found
    return None


@lru_cache(maxsize=256)
def _actor_looks_like_id(actor: str) -> bool:
    # Cached: a batch has thousands of entries from one or two actors.
    return _NATIONAL_ID_LIKE.search(actor) is not None


def _guard(index: int, entry: AuditEntry, details: str) -> None:
    """Refuse entries that look like they hold a national id; the message never repeats it."""
    if _actor_looks_like_id(entry.actor):
        raise AuditPrivacyError(f"audit entry {index}: actor looks like a national id number")
    if _NATIONAL_ID_LIKE.search(entry.subject):
        raise AuditPrivacyError(f"audit entry {index}: subject looks like a national id number")
    # One regex pass over the serialised details covers strings, keys and numbers at once; the
    # cheap pattern without look-arounds rules out almost every entry first.
    if _ELEVEN_DIGITS.search(details) and _NATIONAL_ID_IN_JSON.search(details):
        where = _id_path(entry.details, "details") or "details"
        raise AuditPrivacyError(f"audit entry {index}: {where} looks like a national id number")


def _guard_all(entries: Sequence[AuditEntry], details: Sequence[str]) -> None:
    """_guard for a whole batch, as if entry by entry: one regex pass over all subjects and one
    over all details (joined by a newline, which no pattern matches across), and _guard itself
    only for the entries a pass found something in (a hex digest may hold eleven digits in a
    row), in order, so the first entry that is refused is named, as before."""
    suspects: set[int] = set()
    id_like_actors = {a for a in {e.actor for e in entries} if _actor_looks_like_id(a)}
    if id_like_actors:
        suspects.update(i for i, e in enumerate(entries) if e.actor in id_like_actors)
    for pattern, texts in ((_NATIONAL_ID_LIKE, [e.subject for e in entries]), (_ELEVEN_DIGITS, details)):
        joined = "\n".join(texts)
        hits = pattern.finditer(joined)
        first = next(hits, None)
        if first is None:
            continue
        starts = list(accumulate((len(text) + 1 for text in texts[:-1]), initial=0))
        for hit in chain([first], hits):
            suspects.add(bisect_right(starts, hit.start()) - 1)
    for index in sorted(suspects):
        _guard(index, entries[index], details[index])


# The head's statements, built once: every audited change runs them.
_HEAD_WHERE = audit_head.c.id == _HEAD_ID
_READ_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(_HEAD_WHERE)
_READ_HEAD_FOR_UPDATE = _READ_HEAD.with_for_update()
_TOUCH_HEAD = update(audit_head).where(_HEAD_WHERE).values(seq=audit_head.c.seq)
_MOVE_HEAD = update(audit_head).where(_HEAD_WHERE).values(
    seq=bindparam("new_seq"), hash=bindparam("new_hash")
)


def take_write_lock(conn: Connection) -> None:
    """On SQLite, this transaction takes the database's one write lock now, before it reads: an
    audited change that reads and then writes would otherwise fail ("database is locked", at
    once, without waiting) when another connection commits in between, as its reads' snapshot is
    then too old to write from. It waits its turn instead. PostgreSQL locks rows where needed."""
    if conn.dialect.name == "sqlite" and conn.execute(_TOUCH_HEAD).rowcount == 0:
        _insert_genesis(conn)


def _lock_head(conn: Connection) -> tuple[int, bytes]:
    """Lock the head row for this transaction and return (last seq, last hash)."""
    if conn.dialect.name == "sqlite":
        # A no-op write takes SQLite's single write lock now, before we read the head, so a
        # competing writer waits (busy_timeout) instead of reading the same head.
        locked = conn.execute(_TOUCH_HEAD)
        if locked.rowcount == 0:
            _insert_genesis(conn)
        row = conn.execute(_READ_HEAD).one()
    else:
        query = _READ_HEAD_FOR_UPDATE
        found = conn.execute(query).one_or_none()
        if found is None:
            # The migration inserts the genesis row; this covers metadata.create_all databases.
            _insert_genesis(conn)
            found = conn.execute(query).one()
        row = found
    return int(row.seq), bytes(row.hash)


def _insert_genesis(conn: Connection) -> None:
    values = {"id": _HEAD_ID, "seq": 0, "hash": GENESIS_HASH}
    # ON CONFLICT DO NOTHING: two first-ever appenders may race to create the row.
    conn.execute(dialect_insert(conn)(audit_head).values(values).on_conflict_do_nothing())


# Bulk insert straight through the driver: SQLAlchemy's per-row bind processing would cost more
# than everything else here together on a 50,000-visit import. The details go in as the canonical
# JSON text computed for the hash (PostgreSQL's json type keeps the text exactly as given).
_COLUMNS = "seq, at, actor, action, subject, details, prev_hash, hash"
_SQLITE_INSERT = f"INSERT INTO audit_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# On PostgreSQL, COPY streams all rows in one statement: several times faster than executemany,
# even pipelined.
_PG_COPY = f"COPY audit_events ({_COLUMNS}) FROM STDIN"
# Up to this many entries are chained by the server in one statement instead (_PG_APPEND_FEW).
_FEW = 64


@dataclass(frozen=True, slots=True)
class PreparedAudit:
    """Entries serialised and checked, ready to be chained: see prepare_audit."""

    dialect: str
    rows: list[tuple[str, Any, AuditEntry, str]]  # (hashed instant, stored instant, entry, details)
    middles: list[str]  # PostgreSQL: each row's COPY text but its seq and hashes


def append_audit(conn: Connection, entries: Sequence[AuditEntry]) -> int:
    """Append `entries` to the chain inside the caller's transaction; return the last seq."""
    return append_prepared(conn, prepare_audit(entries, conn.dialect.name))


def prepare_audit(entries: Sequence[AuditEntry], dialect: str) -> PreparedAudit:
    """Everything of an append that needs no connection: the details serialised, the privacy
    guard, the instants converted and (PostgreSQL) the COPY text. A caller may do this while the
    server is busy with something else of its transaction (door_events does, during its COPY).
    Raises AuditPrivacyError (naming the entry by its index in `entries`)."""
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the audit log supports SQLite and PostgreSQL, not {dialect}")
    # A batch usually shares one instant: convert each distinct one once. Keys are UTC: two
    # wall times in one zone compare equal across a DST fold, so zoned values must not be keys.
    instants: dict[datetime, tuple[str, Any]] = {}
    prepared: list[tuple[str, Any, AuditEntry, str]] = []
    all_details = [_details_json(entry.details) for entry in entries]
    _guard_all(entries, all_details)
    for entry, details in zip(entries, all_details, strict=True):
        at = entry.at if entry.at.tzinfo is UTC else entry.at.astimezone(UTC)
        known = instants.get(at)
        if known is None:
            utc = at.replace(tzinfo=None)
            # SQLite gets UtcDateTime's stored form (naive UTC text), PostgreSQL aware UTC.
            stored: Any = (
                utc.isoformat(sep=" ", timespec="microseconds")
                if dialect == "sqlite"
                else utc.replace(tzinfo=UTC)
            )
            known = instants[at] = (utc.isoformat(timespec="microseconds") + "Z", stored)
        prepared.append((known[0], known[1], entry, details))
    middles: list[str] = []
    if dialect == "postgresql":
        # The values' types are known, so each is written as it is (copy_rows would dispatch
        # per value).
        copy_instants = {stored: stored.isoformat(sep=" ") for _, stored in instants.values()}
        middles = [
            f"\t{copy_instants[at]}\t{copy_text(e.actor)}\t{e.action}\t{copy_text(e.subject)}"
            f"\t{copy_text(details)}\t\\\\x"
            for _, at, e, details in prepared
        ]
    return PreparedAudit(dialect, prepared, middles)


def append_prepared(
    conn: Connection, *batches: PreparedAudit, ends_transaction: bool = False
) -> int:
    """Chain prepared entries, batch after batch, inside the caller's transaction; return the
    last seq. Writers queue on the head row until the holder commits (READ COMMITTED); a caller
    running REPEATABLE READ or SERIALIZABLE on PostgreSQL gets a serialization error instead and
    retries. All the preparing is done before the head is taken: other writers wait meanwhile.

    `ends_transaction`: the append is the last thing the caller's transaction does. On
    PostgreSQL a few entries then go with the transaction's COMMIT in one round trip, so the head
    is let go as soon as the server has written them, however long this process takes to come
    back to it; the caller's own commit afterwards finds nothing left to do."""
    prepared = _rows_to_append(conn, batches, ends_transaction)
    middles = [m for b in batches for m in b.middles]
    dialect = conn.dialect.name
    if chained_by_server(dialect, len(prepared)):
        return _append_few(conn, prepared, commit=ends_transaction)
    seq, prev = _lock_head(conn)
    if not prepared:
        return seq
    sha256 = hashlib.sha256
    if dialect == "postgresql":
        # One COPY in the caller's transaction, sent a chunk at a time: the server inserts one
        # while the next is hashed.
        with copy_writer(conn, _PG_COPY) as write:
            lines: list[str] = []
            for (instant, _, entry, details), middle in zip(prepared, middles, strict=True):
                seq += 1
                payload = _entry_bytes(seq, instant, entry.actor, entry.action, entry.subject, details)
                digest = sha256(prev + payload).digest()  # chain_hash, inlined
                lines.append(f"{seq}{middle}{prev.hex()}\t\\\\x{digest.hex()}\n")
                prev = digest
                if len(lines) == 1000:
                    write("".join(lines))
                    lines.clear()
            if lines:
                write("".join(lines))
    else:
        rows, seq, prev = _chained_rows(prepared, seq, prev)
        conn.exec_driver_sql(_SQLITE_INSERT, rows)  # one executemany
    conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
    return seq


def _rows_to_append(conn: Connection, batches: Sequence[PreparedAudit],
                    ends_transaction: bool) -> list[tuple[str, Any, AuditEntry, str]]:
    dialect = conn.dialect.name
    if any(b.dialect != dialect for b in batches):
        raise ValueError(f"audit entries prepared for another database than {dialect}")
    if ends_transaction and conn.in_nested_transaction():
        # Its COMMIT would end the outer transaction under the savepoint's feet.
        raise ValueError("an append that ends its transaction cannot run inside a savepoint")
    return [row for b in batches for row in b.rows]


def chained_by_server(dialect: str, entries: int) -> bool:
    """Whether so many entries are chained by the server in one statement (_PG_APPEND_FEW), so
    that their append may be queued in a caller's pipeline (`queue_append_prepared`)."""
    return dialect == "postgresql" and 0 < entries <= _FEW


def queue_append_prepared(
    conn: Connection, *batches: PreparedAudit, ends_transaction: bool = False
) -> Callable[[], int]:
    """`append_prepared` for entries `chained_by_server`, queued in the psycopg pipeline the
    caller has open (bulk.sent_together) behind the writes it queued there: the writes, the
    append and (`ends_transaction`) the COMMIT then reach the server in one round trip, run in
    that order, each only if those before it succeeded. Returns what gives the last seq once
    the caller's pipeline has been synced (its block has ended)."""
    prepared = _rows_to_append(conn, batches, ends_transaction)
    if not chained_by_server(conn.dialect.name, len(prepared)):
        raise ValueError(f"{len(prepared)} entries are not chained in one statement here")
    dbapi: Any = conn.connection.dbapi_connection
    if dbapi.pgconn.pipeline_status == PipelineStatus.OFF:
        raise ValueError("queue_append_prepared needs a pipeline open on the connection")
    return _queue_few(dbapi, prepared, commit=ends_transaction)


# A few entries (a phone's upload, one change) are chained by the server, in the statement that
# takes the head: every other audited change waits from then until this transaction commits, and
# taking the head, reading it here, and sending the rows and the head's move took two round
# trips more. At 200 uploads a second those waits queued up into stalls of hundreds of ms
# (measured: p90 266 ms, against 7 ms without the append). The client sends each entry's bytes
# after its seq (which only the head decides); the server hashes "[" seq and those bytes onto
# the previous hash exactly as _entry_bytes and chain_hash do, and verify_audit checks it. The
# arrays go in binary (%b): as text, psycopg quotes every element with a regular expression.
_PG_APPEND_FEW = """
WITH RECURSIVE
head AS (SELECT seq, hash FROM audit_head WHERE id = %(head)s FOR UPDATE),
entry AS (
    SELECT * FROM unnest(%(tails)b::bytea[], %(ats)b::timestamptz[], %(actors)b::text[],
                         %(actions)b::text[], %(subjects)b::text[], %(details)b::text[])
    WITH ORDINALITY AS e(tail, at, actor, action, subject, details, n)
),
chain AS (
    SELECT 0::bigint AS n, seq, hash, NULL::bytea AS prev FROM head
    UNION ALL
    SELECT c.n + 1, c.seq + 1,
           sha256(c.hash || convert_to('[' || (c.seq + 1)::text, 'UTF8') || e.tail), c.hash
    FROM chain c JOIN entry e ON e.n = c.n + 1
),
written AS (
    INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)
    SELECT c.seq, e.at, e.actor, e.action, e.subject, e.details::json, c.prev, c.hash
    FROM chain c JOIN entry e ON e.n = c.n
),
last AS (SELECT seq, hash FROM chain ORDER BY n DESC LIMIT 1)
UPDATE audit_head h SET seq = last.seq, hash = last.hash FROM last WHERE h.id = %(head)s
RETURNING h.seq
"""


_PG_GENESIS = "INSERT INTO audit_head (id, seq, hash) VALUES (%s, 0, %s) ON CONFLICT DO NOTHING"


def _append_few(conn: Connection, prepared: list[tuple[str, Any, AuditEntry, str]], *,
                commit: bool) -> int:
    """Chain a few prepared entries on PostgreSQL in one statement (see _PG_APPEND_FEW), and
    with `commit` send the transaction's COMMIT behind it: one round trip either way."""
    try:
        with driver_pipeline(conn) as dbapi:  # its end sends the one Sync and reads the results
            last_seq = _queue_few(dbapi, prepared, commit=commit)
        return last_seq()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise as_sqlalchemy_error(conn, exc, _PG_APPEND_FEW) from exc


def _queue_few(dbapi: Any, prepared: list[tuple[str, Any, AuditEntry, str]], *,
               commit: bool) -> Callable[[], int]:
    """Queue in the open pipeline: the head row if missing, the append, and the COMMIT; return
    what gives the last seq (and closes their cursors) once the pipeline is synced. Cursors of
    a pipeline that failed are left to the collector."""
    params = {
        "head": _HEAD_ID,
        "tails": [_entry_tail(instant, e.actor, e.action, e.subject, details)
                  for instant, _, e, details in prepared],
        "ats": [at for _, at, _, _ in prepared],
        "actors": [e.actor for _, _, e, _ in prepared],
        "actions": [e.action for _, _, e, _ in prepared],
        "subjects": [e.subject for _, _, e, _ in prepared],
        "details": [details for _, _, _, details in prepared],
    }
    # Statements queued in a pipeline: each runs only if the ones before it succeeded. The head
    # row is made first if missing (a metadata.create_all database: the migration makes it), so
    # that the append always finds it and nothing commits without its entries.
    cursors = [dbapi.cursor(), dbapi.cursor()]
    try:
        cursors[0].execute(_PG_GENESIS, (_HEAD_ID, GENESIS_HASH))
        cursors[1].execute(_PG_APPEND_FEW, params)
        if commit:
            cursors[0].execute("COMMIT")
    except BaseException:
        for cursor in cursors:
            cursor.close()
        raise

    def last_seq() -> int:
        try:
            return int(cursors[1].fetchone()[0])
        finally:
            for cursor in cursors:
                cursor.close()

    return last_seq


def _chained_rows(prepared: list[tuple[str, Any, AuditEntry, str]], seq: int,
                  prev: bytes) -> tuple[list[tuple[Any, ...]], int, bytes]:
    """The rows of prepared entries chained after (seq, prev), and the new (seq, hash) head."""
    rows: list[tuple[Any, ...]] = []
    for instant, at, entry, details in prepared:
        seq += 1
        payload = _entry_bytes(seq, instant, entry.actor, entry.action, entry.subject, details)
        digest = hashlib.sha256(prev + payload).digest()
        rows.append((seq, at, entry.actor, entry.action, entry.subject, details, prev, digest))
        prev = digest
    return rows, seq, prev


_VERIFY_COLUMNS = (
    *(c for c in audit_events.c if c.name != "details"),
    cast(audit_events.c.details, Text).label("details"),
)


def _bad(count: int, seq: int, problem: str) -> AuditVerification:
    return AuditVerification(ok=False, count=count, first_bad_seq=seq, problem=problem)


def verify_audit(conn: Connection, *, batch_size: int = 5000) -> AuditVerification:
    """Re-hash the whole chain in seq order and compare it with the head; never loads it all."""
    count, last, prev = 0, 0, GENESIS_HASH
    while True:
        # Under READ COMMITTED, writers may commit while we stream; we then read the head, and
        # if it moved past our last row we verify the new rows too, until we have caught up.
        progressed = False
        query = (
            # The details as stored text: any edit, even one that keeps the JSON's meaning, shows.
            select(*_VERIFY_COLUMNS)
            .where(audit_events.c.seq > last)
            .order_by(audit_events.c.seq)
            .execution_options(yield_per=batch_size)
        )
        result = conn.execute(query)
        try:
            for row in result:
                count += 1
                expected = last + 1
                if row.seq != expected:
                    return _bad(count, expected, f"entry {expected} is missing")
                if bytes(row.prev_hash) != prev:
                    return _bad(count, row.seq, f"entry {row.seq} does not follow entry {last}")
                payload = _entry_bytes(
                    row.seq, format_instant(row.at), row.actor, row.action, row.subject, row.details
                )
                if chain_hash(prev, payload) != bytes(row.hash):
                    return _bad(count, row.seq, f"entry {row.seq} does not match its hash")
                last, prev, progressed = row.seq, bytes(row.hash), True
        finally:
            result.close()
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == _HEAD_ID)
        ).one_or_none()
        if head is None:
            if count == 0:
                return AuditVerification(ok=True, count=0)
            return _bad(count, 1, "the audit head row is missing")
        if head.seq == last:
            if bytes(head.hash) != prev:
                return _bad(count, last, f"the head does not match entry {last}")
            return AuditVerification(ok=True, count=count)
        if head.seq < last:
            return _bad(count, head.seq + 1, f"entries after the head ({head.seq}) were added")
        if not progressed:
            return _bad(count, last + 1, f"entries {last + 1}..{head.seq} were deleted")
