"""Take in what locks upload: verify their log chain, store door events, log the visits.

A lock uploads everything since the last sequence number the platform verified. Events that extend
the verified chain are stored and audited in one transaction with the visit updates they cause.
Events beyond a gap wait in door_event_pending and join the chain when an upload fills the gap, so
uploads may arrive in any order and late; re-sent events that match the verified chain change
nothing. Gaps, reordering and tampering are recorded as anomalies, each once; per-event findings
of one kind in one lock's upload (bad MACs, malformed, foreign, rewritten or unverifiable re-sent
events) become one anomaly over their seq range with the count in its detail, so that a relay
sending garbage costs one row and one audit entry, not one per event. A lock's last_sync_at,
battery and clock move only when its upload proved the lock spoke: a new MAC-verified event or a
head attestation whose MAC verifies. A filled gap keeps
its row as history (when it was seen), gets a "locklog:gap_filled" audit entry, and is left out
of `open_log_anomalies`: the row never claims to be open, the lock's verified head says it is not.

For a national fleet that syncs at once: what a batch needs is read up front in a few queries
(on PostgreSQL pipelined: two or three round trips); on PostgreSQL many door events stream into
one COPY while the next lock's chain is checked, and the visit, outbox and lock writes go out
together in one pipeline while Encounters are built. A phone's few events (at most _FEW_EVENTS)
go in that pipeline too, in one INSERT: a COPY would cost two more round trips than it saves.
Who uploads, and for which locks they may, can be decided with the first reads
(UploadAuthority): one round trip for a phone's upload, its BEGIN included, then its writes.
`ingest_uploads` takes many locks in one transaction with one audit append.
"""

from __future__ import annotations

import gc
import hmac
import json
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update

from portner.domain.lock_log import (
    GENESIS_HASH,
    LockEvent,
    LogAnomaly,
    check_upload,
    head_attestation_mac,
)
from portner.domain.model import Visit, VisitStatus
from portner.services.lock_wire import event_from_wire, event_to_wire
from portner.services.writeback import KIND as ENCOUNTER_KIND
from portner.services.writeback import build_encounter
from portner.storage import tables as t
from portner.storage.audit import (
    AuditEntry,
    append_prepared,
    chained_by_server,
    prepare_audit,
    queue_append_prepared,
)
from portner.storage.bulk import (
    copy_field,
    copy_instant,
    copy_text,
    copy_writer,
    fetch_in,
    fetch_together,
    id_tuple,
    insert_rows,
    instant_writer,
    read_instant,
    sent_together,
)

OPEN_KINDS = frozenset({"unlock"})
LOCK_EVENT_KINDS = frozenset(
    {
        "boot", "locked", "jammed", "revocation_applied", "revocation_rejected", "clock_set",
        "clock_rejected", "battery_low", "battery_replaced",
    }
)
# A departure is the door locked from inside or with the phone on the way out; automatic
# relocks after an opening ("auto_relock") and reboots are not departures.
DEPARTURES = frozenset({("locked", "inside"), ("locked", "credential")})
# check_upload's "duplicate" findings that mean "the same event again": a retry, not a problem.
# Matched exactly, so that a reworded or new finding is recorded rather than silently dropped.
_SAME_EVENT_AGAIN = frozenset({"re-sent event already verified", "sent twice in one upload"})
# Findings about single events (check_upload reports one per event, or per run of adjacent
# ones); the others (gap, reordered, broken_chain, withheld, ...) are about the chain as a whole.
_PER_EVENT = frozenset({"malformed", "foreign_lock", "bad_mac", "rewritten", "duplicate"})
_PLANNED, _IN_PROGRESS = VisitStatus.PLANNED.value, VisitStatus.IN_PROGRESS.value
_COMPLETED = VisitStatus.COMPLETED.value
_EVENT_COLUMNS = (
    "lock_id", "seq", "lock_time", "received_at", "action", "allowed", "reason", "credential_id",
    "actor_id", "visit_id", "hash",
)
_EVENT_COPY = f"COPY door_events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
# A few events in one statement, a row of parameters each (built once per count of rows): a
# statement per event cost the server most of an event's work, and columns sent as arrays cost
# psycopg more to adapt than the same values one by one.
@lru_cache(maxsize=64)
def _event_insert(rows: int) -> str:
    row = f"({', '.join(['%s'] * len(_EVENT_COLUMNS))})"
    return f"INSERT INTO door_events ({', '.join(_EVENT_COLUMNS)}) VALUES {', '.join([row] * rows)}"


# Up to this many events a batch goes without a COPY (which costs two more round trips).
_FEW_EVENTS = 64
_VISIT_COLUMNS = (
    "id", "municipality_id", "resident_id", "source_key", "planned_start", "planned_end",
    "staff_ids", "status", "description", "arrived_at", "departed_at",
)


@dataclass(slots=True)
class IngestReport:
    lock_id: str
    accepted: int = 0
    opened: int = 0
    denied: int = 0
    anomalies: list[str] = field(default_factory=list)  # kinds newly recorded by this upload
    arrivals: int = 0
    departures: int = 0
    pending: int = 0  # events held beyond a gap after this upload
    gaps_filled: int = 0


@dataclass(frozen=True, slots=True)
class HeadAttestation:
    """The lock's log head as it MACed it for the platform's nonce (SimulatedLock.attest_head)."""

    nonce: bytes
    seq: int
    hash: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class UploadAuthority:
    """Who is uploading and for which locks they may, decided in the batch's first reads (one
    round trip on PostgreSQL, with the locks' heads) rather than in a round trip before them.

    `where` is SQL over the lock's home `h` with "?" marking `params`: it keeps the locks the
    uploader may upload for, and on PostgreSQL only their rows are locked (on SQLite the batch
    takes the database's write lock before it reads, so a caller there decides apart). `reads` (fetch_together's form) go
    first in that round trip, and `check` gets their rows before anything else is done: it
    raises to refuse the batch (who is asking: a session's account), or returns the authority
    to read the locks by instead, in the same transaction (who is asking turned out to be
    another kind of uploader). A lock of the batch that `where` does not keep, existing or not,
    raises LocksRefused."""

    where: str
    params: tuple[Any, ...]
    reads: Sequence[tuple[str, Iterable[Any] | None, Sequence[Any]]] = ()
    check: Callable[[list[list[tuple[Any, ...]]]], UploadAuthority | None] | None = None


class LocksRefused(Exception):
    """Locks of a batch its uploader may not upload for (see UploadAuthority)."""

    def __init__(self, lock_ids: Sequence[str]) -> None:
        super().__init__(f"not a lock this uploader may upload for: {', '.join(lock_ids)}")
        self.lock_ids = frozenset(lock_ids)


@dataclass(frozen=True, slots=True)
class LockUpload:
    """One lock's upload, the key to check it with, and what the lock reported about itself."""

    lock_id: str
    events: Sequence[LockEvent]
    lock_key: bytes
    battery_percent: float | None = None
    clock_offset_s: float | None = None
    head: HeadAttestation | None = None


def ingest_upload(
    engine: Engine,
    lock_id: str,
    events: Sequence[LockEvent],
    *,
    lock_key: bytes,
    now: datetime,
    battery_percent: float | None = None,
    clock_offset_s: float | None = None,
    head: HeadAttestation | None = None,
) -> IngestReport:
    """Verify and store one lock's upload; match openings to visits; queue finished visits.

    With `head` (the lock's MACed answer to a fresh platform nonce) a relay that withholds the
    newest events is caught too: the chain cannot show what it never received.
    """
    upload = LockUpload(lock_id, events, lock_key, battery_percent, clock_offset_s, head)
    return ingest_uploads(engine, [upload], now=now)[0]


def ingest_uploads(
    engine: Engine, uploads: Sequence[LockUpload], *, now: datetime
) -> list[IngestReport]:
    """Ingest several locks' uploads in one transaction and one audit append; reports in order.

    The outcome is that of `ingest_upload` for each in turn, except that all or nothing is stored
    (an unknown lock fails the batch with KeyError).
    """
    _check_batch(uploads, now)
    if not uploads:
        return []
    with _collector_paused(_events_in(uploads)), engine.begin() as conn:
        return _Batch(conn, uploads, now.astimezone(UTC)).run(ends_transaction=True)


def ingest_uploads_in(
    conn: Connection, uploads: Sequence[LockUpload], *, now: datetime, ends_transaction: bool = False,
    authority: UploadAuthority | None = None,
) -> list[IngestReport]:
    """`ingest_uploads` inside the caller's transaction (which commits, or rolls all back):
    for a caller that reads what it needs to decide on the batch in the same transaction.
    `ends_transaction`: the caller does nothing more in it, so the COMMIT may go with the audit
    append (see audit.append_prepared): all is then committed here, or on an error nothing, and
    the caller's own commit has nothing left to do. `authority`: who may upload for which locks,
    decided with the batch's first reads (UploadAuthority)."""
    _check_batch(uploads, now)
    if not uploads:
        return []
    with _collector_paused(_events_in(uploads)):
        batch = _Batch(conn, uploads, now.astimezone(UTC), authority)
        return batch.run(ends_transaction=ends_transaction)


_pause = {"batches": 0, "resume": False}  # large batches running, and whether to turn it back on
_pause_lock = threading.Lock()


@contextmanager
def _collector_paused(events: int) -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while a large batch runs.

    A batch makes a few objects per event (audit entries, their details) that reference counting
    frees; they form no cycles. But the collector counts them and, every so many, walks the
    whole heap looking for cycles anyway: about a tenth of a 20,000-event ingest. Batches run in
    several threads at once, so the pause is counted: the collector comes back when the last
    paused batch ends (and stays off if it was off before). A phone's few events, the usual
    upload, gain nothing from it and leave it alone.
    """
    if events <= _FEW_EVENTS:
        yield
        return
    with _pause_lock:
        if _pause["batches"] == 0:
            _pause["resume"] = gc.isenabled()
            gc.disable()
        _pause["batches"] += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause["batches"] -= 1
            if _pause["batches"] == 0 and _pause["resume"]:
                gc.enable()


def _events_in(uploads: Sequence[LockUpload]) -> int:
    return sum(len(u.events) for u in uploads)


def _check_batch(uploads: Sequence[LockUpload], now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("ingesting needs an aware `now`")
    seen: set[str] = set()
    for u in uploads:
        if not isinstance(u.lock_key, bytes) or len(u.lock_key) < 16:
            # Without the lock's key a relay could forge any event: never accept one unchecked.
            raise ValueError("ingesting a lock upload needs the lock's log key")
        if u.lock_id in seen:
            raise ValueError(f"lock {u.lock_id} appears twice in one batch")
        seen.add(u.lock_id)


def open_log_anomalies(conn: Connection, lock_ids: Sequence[str] | None = None) -> list[Any]:
    """Anomaly rows that still need an operator: all but the gaps the verified chain has filled."""
    a = t.lock_log_anomalies
    filled = and_(a.c.kind == "gap", a.c.last_seq <= t.locks.c.synced_seq)
    query = select(a).join(t.locks, t.locks.c.id == a.c.lock_id).where(~filled).order_by(a.c.id)
    if lock_ids is not None:
        query = query.where(a.c.lock_id.in_(list(lock_ids)))
    return list(conn.execute(query))


def _visit_columns(alias: str) -> str:
    # staff_ids as its JSON text: id_tuple parses each distinct text once (most visits share a few).
    return ", ".join(
        f"CAST({alias}{c} AS TEXT)" if c == "staff_ids" else f"{alias}{c}" for c in _VISIT_COLUMNS
    )


# The batch's reads, built once (a phone's upload of a few events should not pay for building
# them), in fetch_in's form ("{ids}" is the IN list, "?" a parameter before it).
_LOCK_HEADS_WHERE = (
    "SELECT l.id, l.synced_seq, l.synced_hash, h.resident_id FROM locks l"
    " JOIN doors d ON d.id = l.door_id JOIN homes h ON h.id = d.home_id"
    " WHERE {where} AND l.id {{ids}} ORDER BY l.id"
)
_LOCK_HEADS = _LOCK_HEADS_WHERE.format(where="TRUE")
_PENDING = "SELECT lock_id, seq, hash, payload, received_at FROM door_event_pending WHERE lock_id {ids}"
_OPEN_GAPS = "SELECT lock_id, first_seq, last_seq FROM lock_log_anomalies WHERE kind = ? AND lock_id {ids}"
# Events stored before, at or below the head the lock's row holds (read before the heads are
# known too; after, only the seqs at or below it are asked for).
_STORED_HASHES = (
    "SELECT seq, hash FROM door_events WHERE lock_id = ?"
    " AND seq <= (SELECT synced_seq FROM locks WHERE id = ?) AND seq {ids}"
)
_OWNERS = (
    f"SELECT c.id, g.actor_id, {_visit_columns('v.')} FROM credentials c"
    " JOIN grants g ON g.id = c.grant_id LEFT JOIN visits v ON v.id = g.visit_id"
    " WHERE c.id {ids}"
)
# Visits in progress at the homes of these locks: by lock, so that a batch of a few events can
# read them with the locks' heads (_Batch._load_locks), before the heads are known.
_VISITS_IN_PROGRESS = (
    f"SELECT {_visit_columns('')} FROM visits WHERE status = ? AND resident_id IN"
    " (SELECT h.resident_id FROM locks l JOIN doors d ON d.id = l.door_id"
    " JOIN homes h ON h.id = d.home_id WHERE l.id {ids})"
)
_RESIDENT_IDS = "SELECT id, national_id FROM residents WHERE id {ids}"
_STAFF_IDS = "SELECT id, hpr_number, her_id FROM actors WHERE id {ids}"


@dataclass(slots=True)
class _Lock:
    """A lock's verified head and held events as this transaction found them (rows locked)."""

    id: str
    resident_id: str
    synced_seq: int
    synced_hash: bytes
    stored_pending: dict[tuple[int, bytes], datetime] = field(default_factory=dict)
    held: list[LockEvent] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    known: dict[int, bytes] = field(default_factory=dict)
    new_seq: int = 0


class _VisitState:
    """A visit as the events so far have left it; written back once, at the end."""

    __slots__ = ("row", "id", "resident_id", "status", "arrived_at", "departed_at", "changed")

    def __init__(self, row: Sequence[Any]) -> None:  # the _VISIT_COLUMNS
        self.row, self.id, self.resident_id, self.status = row, row[0], row[2], row[7]
        self.arrived_at, self.departed_at = read_instant(row[9]), None
        self.changed = False

    def finished(self) -> Visit:
        r = self.row
        return Visit(
            id=r[0], municipality_id=r[1], resident_id=r[2], source_key=r[3],
            planned_start=read_instant(r[4]),  # type: ignore[arg-type]
            planned_end=read_instant(r[5]),  # type: ignore[arg-type]
            staff_ids=id_tuple(r[6]), status=VisitStatus.COMPLETED, description=r[8],
            arrived_at=self.arrived_at, departed_at=self.departed_at,
        )


class _Batch:
    """One transaction's ingest: read, check (no queries), then write in bulk."""

    def __init__(self, conn: Connection, uploads: Sequence[LockUpload], now: datetime,
                 authority: UploadAuthority | None = None) -> None:
        self.conn, self.uploads, self.now, self.authority = conn, uploads, now, authority
        self.pg = conn.dialect.name == "postgresql"
        self.stored = instant_writer(conn)
        self.reports = {u.lock_id: IngestReport(u.lock_id) for u in uploads}
        self.audit: list[AuditEntry] = []
        self.found: list[tuple[str, LogAnomaly]] = []  # before deduplication
        self.lock_rows: list[tuple[Any, ...]] = []
        self.pending_gone: list[tuple[Any, ...]] = []
        self.pending_new: list[tuple[Any, ...]] = []
        self.owners: dict[str, tuple[str, str | None]] = {}
        self.visits: dict[str, _VisitState] = {}
        # Visits in progress per resident, in order of arrival: a departure closes the latest.
        self.in_progress: dict[str, list[_VisitState]] = {}
        self.completed: list[_VisitState] = []
        self.copy_texts: dict[tuple[str, bool | None, str], str] = {}  # see _copy_what
        self.read_ahead: list[list[tuple[Any, ...]]] = []  # _load_owners_and_visits's, if read
        self.residents: dict[str, tuple[Any, ...]] = {}  # whom Encounters name (_load_people)
        self.actors: dict[str, tuple[Any, ...]] = {}
        self.open_gaps: list[tuple[Any, ...]] | None = None  # read with the locks (PostgreSQL)
        self.copy = False  # the events go in by COPY (many of them, PostgreSQL)
        self.event_rows: list[tuple[Any, ...]] = []  # else here, for _write_the_rest (PostgreSQL)

    def run(self, *, ends_transaction: bool = False) -> list[IngestReport]:
        self.locks = self._load_locks()
        self._load_owners_and_visits()
        # A few events (a phone's upload) go in with the batch's other writes, in one pipeline;
        # many stream through a COPY while the next lock is checked.
        self.copy = self.pg and sum(len(u.events) + len(self.locks[u.lock_id].held)
                                    for u in self.uploads) > _FEW_EVENTS
        if self.copy:
            # Whom an Encounter names, should one of the visits finish here: read now, as
            # nothing can be read while the COPY holds the connection.
            self._load_people([v for v in self.visits.values() if v.status in (_PLANNED, _IN_PROGRESS)])
            with copy_writer(self.conn, _EVENT_COPY) as write:
                # No queries in here: the COPY holds the connection, and the server inserts
                # one lock's rows while we check the next, then build the Encounters.
                for upload in self.uploads:
                    if lines := self._check(upload, self.reports[upload.lock_id]):
                        write("".join(lines))
                encounters = self._encounters()
                # The events' audit entries are all known now: prepared while the server
                # still inserts the rows sent, rather than after, with the server idle.
                events_audit = prepare_audit(self.audit, "postgresql")
        else:
            self.event_rows = [r for u in self.uploads for r in self._check(u, self.reports[u.lock_id])]
            if not self.pg:
                insert_rows(self.conn, t.door_events, _EVENT_COLUMNS, self.event_rows)
                self.event_rows = []
            # Whom the Encounters name, read only when a visit did finish (most uploads end none).
            if self.completed:
                self._load_people(self.completed)
            encounters = self._encounters()
            events_audit = prepare_audit(self.audit, self.conn.dialect.name)
        entries = prepare_audit(self._record_anomalies() + self._filled_gaps(), events_audit.dialect)
        # The audit append last: from taking the chain's head until the commit, every other
        # audited change waits, so nothing else is sent in between. A few entries are queued
        # behind the writes: the writes, the append and (ending the transaction) the COMMIT
        # reach the server in one round trip.
        if not entries.rows and not events_audit.rows:
            # Nothing to chain (a batch sent again): the chain's head is not taken at all.
            self._write_the_rest(encounters)
        elif chained_by_server(events_audit.dialect, len(entries.rows) + len(events_audit.rows)):
            appended = self._write_the_rest(encounters, then=lambda: queue_append_prepared(
                self.conn, entries, events_audit, ends_transaction=ends_transaction))
            assert appended is not None
            appended()  # its seq: the statements were sent, and all ran
        else:
            self._write_the_rest(encounters)
            append_prepared(self.conn, entries, events_audit, ends_transaction=ends_transaction)
        return list(self.reports.values())

    # -- reading what the batch needs, in a few queries ----------------------------------------
    def _load_locks(self) -> dict[str, _Lock]:
        """The locks' heads (their rows locked), their held events and open gaps; with an
        authority, who is asking first, and only the locks it keeps."""
        ids = sorted(self.reports)  # one locking order for every batch: no deadlocks
        authority = self.authority
        heads_sql, before = _LOCK_HEADS, ()
        if authority is not None:
            heads_sql, before = _LOCK_HEADS_WHERE.format(where=authority.where), authority.params
        reads = list(authority.reads) if authority is not None else []
        if self.pg:
            # One round trip: the authority's reads, the lock rows, then (each its own
            # statement, so it sees what was committed before the locks were ours) what is held
            # for them, their gaps, and for a few events (a phone's upload) what
            # _load_owners_and_visits reads too.
            few = _events_in(self.uploads) <= _FEW_EVENTS
            rows = fetch_together(self.conn, [
                *reads, (heads_sql + " FOR UPDATE OF l", ids, before), (_PENDING, ids, ()),
                (_OPEN_GAPS, ids, ("gap",)),
                *(self._owners_and_visits_queries(_credentials_of(u.events for u in self.uploads), False)
                  if few else ()),
            ])
            first, (heads, pending, self.open_gaps, *self.read_ahead) = rows[:len(reads)], rows[len(reads):]
        else:
            lk = t.locks
            # Take SQLite's write lock before reading, as FOR UPDATE does.
            self.conn.execute(update(lk).where(lk.c.id == ids[0]).values(synced_seq=lk.c.synced_seq))
            rows = fetch_together(self.conn, [*reads, (heads_sql, ids, before), (_PENDING, ids, ())])
            first, (heads, pending) = rows[:len(reads)], rows[len(reads):]
        if authority is not None and authority.check is not None:
            instead = authority.check(first)
            if instead is not None:
                self.authority = instead
                return self._load_locks()
        locks: dict[str, _Lock] = {}
        for lock_id, synced_seq, synced_hash, resident_id in heads:
            head = bytes(synced_hash) if synced_hash else GENESIS_HASH
            locks[lock_id] = _Lock(lock_id, resident_id, int(synced_seq), head)
        missing = [i for i in ids if i not in locks]
        if missing and authority is not None:
            raise LocksRefused(missing)
        if missing:
            raise KeyError(f"unknown lock {missing[0]}")
        for lock_id, seq, digest, payload, received in pending:
            lock, key = locks[lock_id], (int(seq), bytes(digest))
            lock.stored_pending[key] = read_instant(received)  # type: ignore[assignment]
            try:
                data = json.loads(payload) if isinstance(payload, str) else payload
                lock.held.append(event_from_wire(data, lock_id))
            except ValueError:
                lock.unreadable.append(key[0])
        return locks

    def _owners_and_visits_queries(
        self, creds: set[str], heads_known: bool
    ) -> list[tuple[str, Any, tuple[Any, ...]]]:
        """What _load_owners_and_visits reads, as fetch_together takes it, for the credentials
        `creds`; with the heads not yet known, every seq of an upload is asked for (the query
        keeps those at or below the head)."""
        queries = []
        for u in self.uploads:
            seqs = {_seq_of(e) for e in u.events}
            if heads_known:
                seqs = {s for s in seqs if s <= self.locks[u.lock_id].synced_seq}
            queries.append((_STORED_HASHES, seqs - {0}, (u.lock_id, u.lock_id)))
        return [*queries, (_OWNERS, creds, ()),
                (_VISITS_IN_PROGRESS, sorted(self.reports), (_IN_PROGRESS,))]

    def _load_owners_and_visits(self) -> None:
        """Events stored before (a re-sent event's stored hash tells a retry from a rewrite), who
        holds each credential, and the visits openings may start or departures end: one round
        trip on PostgreSQL, or none when read with the locks' heads (whom an Encounter names is
        read when one is due, _load_people)."""
        creds = _credentials_of(
            events for u in self.uploads for events in (u.events, self.locks[u.lock_id].held))
        if self.read_ahead:
            *stored, owned, in_progress = self.read_ahead
            # Held events' credentials that the uploads do not carry (rare): read now.
            unread = creds - _credentials_of(u.events for u in self.uploads)
            owned = owned + (fetch_in(self.conn, _OWNERS, unread) if unread else [])
        else:
            *stored, owned, in_progress = fetch_together(
                self.conn, self._owners_and_visits_queries(creds, True))
        for u, found in zip(self.uploads, stored, strict=True):
            self.locks[u.lock_id].known.update((int(s), bytes(h)) for s, h in found)
        rows = []
        for cred, actor, *visit in owned:
            self.owners[cred] = (actor, visit[0])
            rows.append(visit)
        rows += in_progress
        for row in rows:
            if row[0] is not None and row[0] not in self.visits:
                state = self.visits[row[0]] = _VisitState(row)
                if state.status == _IN_PROGRESS and state.arrived_at is not None:
                    insort(self.in_progress.setdefault(state.resident_id, []), state, key=_arrival)

    def _load_people(self, visits: Sequence[_VisitState]) -> None:
        """Whom the Encounters of these visits would name: one round trip on PostgreSQL."""
        staff = {s for v in visits for s in id_tuple(v.row[6])}
        people, staff_ids = fetch_together(self.conn, [
            (_RESIDENT_IDS, {v.resident_id for v in visits}, ()), (_STAFF_IDS, staff, ()),
        ])
        self.residents = {row[0]: tuple(row[1:]) for row in people}
        self.actors = {row[0]: tuple(row[1:]) for row in staff_ids}

    # -- checking one upload (no database access) ----------------------------------------------
    def _check(self, u: LockUpload, report: IngestReport) -> list[tuple[Any, ...]]:
        lock = self.locks[u.lock_id]
        check = check_upload(
            u.lock_id, u.events, synced_seq=lock.synced_seq, synced_hash=lock.synced_hash,
            lock_key=u.lock_key, pending=lock.held, known_hash=lock.known.get,
        )
        found = [
            a for a in check.anomalies
            if a.kind != "duplicate" or a.detail not in _SAME_EVENT_AGAIN
        ]
        unreadable = "stored pending event unreadable"
        found += [LogAnomaly("malformed", s, s, unreadable) for s in lock.unreadable]
        head_ok = u.head is not None and _head_verifies(u)
        if u.head is not None:
            # Events past a gap are pending, not withheld: count them as seen.
            seen = max([check.new_synced_seq, *(e.seq for e in check.pending)])
            found += _head_anomalies(u, seen, check.new_synced_seq, check.new_synced_hash)
        self.found += [(u.lock_id, a) for a in _one_per_kind(found)]
        now, stored, audit, owners = self.now, self.stored, self.audit, self.owners
        texts = self.copy_texts
        received_now, held = stored(now), lock.stored_pending
        lock_text = copy_text(u.lock_id)
        received_text = copy_instant(received_now) if self.copy else ""
        rows: list[Any] = []  # their COPY text lines (self.copy), else driver-ready tuples
        for ev in check.accepted:
            cred, kind, allowed = ev.credential_id, ev.kind, ev.allowed
            owner = owners.get(cred) if cred else None
            actor_id, visit_id = owner if owner else (ev.subject, None)
            # The lock's time as the audit entry gives it; for UTC (the usual case) also what
            # COPY is sent, as timestamptz reads ISO 8601 with its "T".
            at, at_text = ev.at, ev.at.isoformat()
            utc = at.tzinfo is UTC
            if not utc:
                at = at.astimezone(UTC)
            # An event that waited beyond a gap was received when it first came.
            received = held.get((ev.seq, ev.hash)) if held else None
            if self.copy:
                what = (kind, allowed, ev.reason)  # a few kinds of event repeat all day long
                if (middle := texts.get(what)) is None:
                    middle = texts[what] = _copy_what(kind, allowed, ev.reason)
                rows.append(
                    f"{lock_text}\t{ev.seq}\t{at_text if utc else copy_instant(at)}"
                    f"\t{received_text if received is None else copy_instant(received)}"
                    f"\t{middle}\t{copy_field(cred)}\t{copy_field(actor_id)}"
                    f"\t{copy_field(visit_id)}\t\\\\x{ev.hash.hex()}\n"
                )
            else:
                rows.append((
                    u.lock_id, ev.seq, stored(at),
                    received_now if received is None else stored(received), kind,
                    bool(allowed), ev.reason[:64], cred, actor_id, visit_id, ev.hash,
                ))
            audit.append(_audit_for(ev, at_text, u.lock_id, actor_id, visit_id, now))
            if kind in OPEN_KINDS and allowed:
                report.opened += 1
                if visit_id and self._arrive(visit_id, at):
                    report.arrivals += 1
            elif allowed is False:
                report.denied += 1
            elif (kind, ev.reason) in DEPARTURES and self._depart(lock.resident_id, at):
                report.departures += 1
        report.accepted, report.pending = len(rows), len(check.pending)
        keep = {(e.seq, e.hash) for e in check.pending}
        self.pending_gone += [(u.lock_id, s, h) for s, h in held if (s, h) not in keep]
        self.pending_new += [
            (u.lock_id, e.seq, e.hash, json.dumps(event_to_wire(e)), received_now)
            for e in check.pending if (e.seq, e.hash) not in held
        ]
        lock.new_seq = check.new_synced_seq
        # Held events are MAC-verified too: newly held ones show the lock spoke, as accepted
        # ones and a verified head do. Garbage alone must not make a dead lock look synced.
        spoke = bool(rows) or head_ok or any((e.seq, e.hash) not in held for e in check.pending)
        if spoke:
            self.lock_rows.append((
                check.new_synced_seq, check.new_synced_hash, received_now, u.battery_percent,
                u.clock_offset_s, u.lock_id,
            ))
        return rows

    def _arrive(self, visit_id: str, at: datetime) -> bool:
        visit = self.visits.get(visit_id)
        if visit is None or visit.status not in (_PLANNED, _IN_PROGRESS):
            return False
        if visit.arrived_at is not None and visit.arrived_at <= at:
            return False  # the second door of the path, or a second opening: arrival is the first
        started = self.in_progress.setdefault(visit.resident_id, [])
        if visit.status == _IN_PROGRESS and visit.arrived_at is not None:
            del started[bisect_left(started, _arrival(visit), key=_arrival)]
        visit.arrived_at, visit.status, visit.changed = at, _IN_PROGRESS, True
        insort(started, visit, key=_arrival)
        return True

    def _depart(self, resident_id: str, at: datetime) -> bool:
        """Close the visit in progress at this home that began most recently before `at`."""
        started = self.in_progress.get(resident_id, [])
        # The last to arrive at or before `at` (ties broken by id, as a stable order).
        index = bisect_right(started, (at, "\U0010ffff"), key=_arrival) - 1
        if index < 0:
            return False
        visit = started.pop(index)
        visit.departed_at, visit.status, visit.changed = at, _COMPLETED, True
        self.completed.append(visit)
        arrived = visit.arrived_at.isoformat() if visit.arrived_at else None
        self.audit.append(AuditEntry(
            self.now, "system:visits", "visit:completed", visit.id,
            {"arrived": arrived, "departed": at.isoformat()},
        ))
        return True

    # -- writing, one bulk statement per table ---------------------------------------------------
    def _record_anomalies(self) -> list[AuditEntry]:
        """Insert the anomalies not recorded before (a retry finds the same ones again)."""
        if not self.found:
            return []
        kinds = {a.kind for _, a in self.found}
        sql = (
            "SELECT lock_id, kind, first_seq, last_seq, detail FROM lock_log_anomalies"
            f" WHERE kind IN ({', '.join('?' * len(kinds))}) AND lock_id {{ids}}"
        )
        lock_ids = {lock_id for lock_id, _ in self.found}
        known = {tuple(r) for r in fetch_in(self.conn, sql, lock_ids, *sorted(kinds))}
        values, entries = [], []
        for lock_id, a in self.found:
            key = (lock_id, a.kind, a.first_seq, a.last_seq, a.detail[:400])
            if key in known:
                continue
            known.add(key)
            self.reports[lock_id].anomalies.append(a.kind)
            names = ("lock_id", "kind", "first_seq", "last_seq", "detail")
            values.append({**dict(zip(names, key, strict=True)), "detected_at": self.now})
            entries.append(AuditEntry(
                self.now, f"lock:{lock_id}", f"locklog:{a.kind}", lock_id,
                {"first_seq": a.first_seq, "last_seq": a.last_seq},
            ))
        if values:
            self.conn.execute(insert(t.lock_log_anomalies), values)
        return entries

    def _filled_gaps(self) -> list[AuditEntry]:
        """Gaps recorded before that this batch's events have now closed."""
        moved = {i for i, lock in self.locks.items() if lock.new_seq > lock.synced_seq}
        # PostgreSQL: read with the locks (a gap this batch found lies beyond its new head, so
        # it cannot be among those it filled); SQLite: read now.
        gaps = (self.open_gaps if self.open_gaps is not None
                else fetch_in(self.conn, _OPEN_GAPS, moved, "gap"))
        entries = []
        for lock_id, first, last in sorted(g for g in gaps if g[0] in moved):
            lock = self.locks[lock_id]
            if lock.synced_seq < last <= lock.new_seq:
                self.reports[lock_id].gaps_filled += 1
                entries.append(AuditEntry(
                    self.now, f"lock:{lock_id}", "locklog:gap_filled", lock_id,
                    {"first_seq": int(first), "last_seq": int(last)},
                ))
        return entries

    def _encounters(self) -> tuple[list[str], list[str], list[str]]:
        """What writeback.queue_encounter queues per finished visit: keys, places, payloads."""
        keys, places, payloads = [], [], []
        actors, residents = self.actors, self.residents
        for visit in (v.finished() for v in self.completed):
            people = [{"hpr_number": actors[s][0], "her_id": actors[s][1]}
                      for s in visit.staff_ids if s in actors]
            nid = residents[visit.resident_id][0] if visit.resident_id in residents else None
            keys.append(f"encounter:{visit.id}")
            places.append(visit.municipality_id)
            payloads.append(json.dumps(build_encounter(visit, nid, people)))
        return keys, places, payloads

    def _write_the_rest(self, encounters: tuple[list[str], list[str], list[str]],
                        then: Callable[[], Callable[[], int]] | None = None) -> Callable[[], int] | None:
        """Visits, their Encounters, lock heads and held events, sent together; `then` queues
        more behind them (PostgreSQL), and what it returns is returned once all was sent."""
        changed = [v for v in self.visits.values() if v.changed]
        keys, places, payloads = encounters
        stored, pg = self.stored, self.pg
        with sent_together(self.conn) as run:
            if self.event_rows:  # a few events, not sent by COPY (PostgreSQL)
                run(_event_insert(len(self.event_rows)), [v for row in self.event_rows for v in row])
            if changed and pg:  # one statement, the arrays in binary (%b)
                run(
                    "UPDATE visits SET status = v.status, arrived_at = v.arrived_at,"
                    " departed_at = coalesce(v.departed_at, visits.departed_at)"
                    " FROM unnest(%b::varchar[], %b::varchar[], %b::timestamptz[],"
                    " %b::timestamptz[]) AS v(id, status, arrived_at, departed_at)"
                    " WHERE visits.id = v.id",
                    ([v.id for v in changed], [v.status for v in changed],
                     [v.arrived_at for v in changed], [v.departed_at for v in changed]),
                )
            elif changed:
                run(
                    "UPDATE visits SET status = ?, arrived_at = ?,"
                    " departed_at = coalesce(?, departed_at) WHERE id = ?",
                    [(v.status, stored(v.arrived_at), v.departed_at and stored(v.departed_at), v.id)
                     for v in changed],
                    many=True,
                )
            outbox = (
                "INSERT INTO outbox"
                " (idempotency_key, municipality_id, kind, payload, created_at, attempts)"
            )
            # ON CONFLICT DO NOTHING: an Encounter already queued for the visit stays as it was.
            if keys and pg:
                run(
                    f"{outbox} SELECT k, m, %s, p::json, %s, 0"
                    " FROM unnest(%b::varchar[], %b::varchar[], %b::text[]) AS u(k, m, p)"
                    " ON CONFLICT (idempotency_key) DO NOTHING",
                    (ENCOUNTER_KIND, self.now, keys, places, payloads),
                )
            elif keys:
                run(
                    f"{outbox} VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (idempotency_key) DO NOTHING",
                    [(k, m, ENCOUNTER_KIND, p, stored(self.now))
                     for k, m, p in zip(keys, places, payloads, strict=True)],
                    many=True,
                )
            mark = "%s" if pg else "?"
            sql = (
                "UPDATE locks SET synced_seq = ?, synced_hash = ?, last_sync_at = ?,"
                " battery_percent = coalesce(?, battery_percent),"
                " clock_offset_s = coalesce(?, clock_offset_s) WHERE id = ?"
            )
            if self.lock_rows:
                run(sql.replace("?", mark), self.lock_rows, many=True)
            if self.pending_gone:
                sql = "DELETE FROM door_event_pending WHERE lock_id = ? AND seq = ? AND hash = ?"
                run(sql.replace("?", mark), self.pending_gone, many=True)
            if self.pending_new:
                sql = (
                    "INSERT INTO door_event_pending (lock_id, seq, hash, payload, received_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                )
                run(sql.replace("?", mark), self.pending_new, many=True)
            if then is None:
                return None
            run.open()
            return then()


def _one_per_kind(found: list[LogAnomaly]) -> list[LogAnomaly]:
    """Merge the per-event findings of each kind into one over their range, counted."""
    groups: dict[str, list[LogAnomaly]] = {}
    for a in found:
        if a.kind in _PER_EVENT:
            groups.setdefault(a.kind, []).append(a)
    out = []
    for a in found:
        group = groups.get(a.kind) if a.kind in _PER_EVENT else None
        if group is None or len(group) == 1:
            out.append(a)  # one finding stays exactly as check_upload worded it
            continue
        if group[0] is not a:
            continue
        count = sum(max(1, g.last_seq - g.first_seq + 1) for g in group)
        details = "; ".join(dict.fromkeys(g.detail for g in group))
        first = min(g.first_seq for g in group)
        last = max(g.last_seq for g in group)
        out.append(LogAnomaly(a.kind, first, last, f"{count} events: {details}"[:400]))
    return out


def _head_verifies(u: LockUpload) -> bool:
    head = u.head
    assert head is not None
    expected = head_attestation_mac(u.lock_key, u.lock_id, head.nonce, head.seq, head.hash)
    return hmac.compare_digest(expected, head.mac)


def _head_anomalies(
    u: LockUpload, seen_seq: int, synced_seq: int, synced_hash: bytes
) -> list[LogAnomaly]:
    head = u.head
    assert head is not None
    if not _head_verifies(u):
        return [LogAnomaly("bad_head_mac", head.seq, head.seq, "head attestation does not verify")]
    if head.seq > seen_seq:
        detail = f"the lock's log reaches {head.seq}; the upload stopped at {seen_seq}"
        return [LogAnomaly("withheld", seen_seq + 1, head.seq, detail)]
    if head.seq == synced_seq and head.hash != synced_hash:
        detail = "head hash differs from the verified chain"
        return [LogAnomaly("forked", head.seq, head.seq, detail)]
    return []


def _audit_for(
    ev: LockEvent, at_text: str, lock_id: str, actor_id: str | None, visit_id: str | None,
    now: datetime,
) -> AuditEntry:
    """The entry for one stored event; `at_text` is ev.at.isoformat(), made once by the caller."""
    if ev.kind in OPEN_KINDS:
        action = "door:opened" if ev.allowed else "door:denied"
    elif ev.allowed is False:
        action = "door:denied"
    else:
        # The lock names its own event kinds; only ones we know become audit tags.
        action = f"lock:{ev.kind}" if ev.kind in LOCK_EVENT_KINDS else "lock:event"
    return AuditEntry(
        now,
        f"lock:{lock_id}",
        action,
        f"{lock_id}#{ev.seq}",
        {
            "at": at_text,
            "actor": actor_id,
            "visit": visit_id,
            "reason": ev.reason,
            "credential": ev.credential_id,
        },
    )


def _copy_what(kind: str, allowed: bool | None, reason: str) -> str:
    """The action, allowed and reason columns of a door_events row as COPY text."""
    return f"{copy_text(kind)}\t{'t' if allowed else 'f'}\t{copy_text(reason[:64])}"


def _arrival(visit: _VisitState) -> tuple[datetime, str]:
    return (visit.arrived_at, visit.id)  # type: ignore[return-value]


def _credentials_of(batches: Iterable[Sequence[object]]) -> set[str]:
    """The credential ids the events of these batches were opened with."""
    return {e.credential_id for events in batches for e in events
            if isinstance(e, LockEvent) and type(e.credential_id) is str}


def _seq_of(event: object) -> int:
    """The event's sequence number if it has a usable one, else 0 (check_upload reports it)."""
    seq = getattr(event, "seq", 0) if isinstance(event, LockEvent) else 0
    return seq if type(seq) is int and seq > 0 else 0
