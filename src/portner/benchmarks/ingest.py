"""Door-event ingest on PostgreSQL, with verification and the audit chain, against raw COPY.

`python -m portner.benchmarks.ingest --events 20000 --locks 100` builds a fresh schema, installs
a synthetic fleet (residents, homes with one or two locked doors, staff, phones, and a visit,
grant and credential per visit; see `build_fleet`), seals each lock's log with the real hash and
MAC functions, and measures, run after run on a fresh set of locks:

- the baseline: COPY of exactly the door_events rows the ingest will store, into a scratch copy of
  the door_events table (same columns, indexes and foreign keys; the foreign-key checks are about
  half of its cost), with no verification, no visit matching and no audit;
- ingest through `portner.services.door_events` (chain and MAC checks, visit arrivals and
  departures, Encounters queued, an audit entry per event and per finished visit), all locks in
  one transaction (`ingest_uploads`, the batch endpoint) and one transaction per lock
  (`ingest_upload`).

The machine is shared and noisy: each run's ratio pairs an ingest with the baseline measured
moments before it, and the figure reported is the median over the runs.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, text

from portner.domain.lock_log import GENESIS_HASH, seal_event
from portner.storage import tables as t
from portner.storage.bulk import copy_rows, insert_rows, instant_writer, json_id_list
from portner.storage.db import make_engine, migrate, normalise_url

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGETS = {"per_s": 5000, "ratio": 0.3}
_DAY = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
_MUNICIPALITY = "bench"
_DOOR_EVENT_COLUMNS = (
    "lock_id", "seq", "lock_time", "received_at", "action", "allowed", "reason", "credential_id",
    "actor_id", "visit_id", "hash",
)


@dataclass(frozen=True, slots=True)
class Fleet:
    """One run's locks: the uploads to ingest and the door_events rows they should become."""

    uploads: list[Any]  # LockUpload
    rows: list[tuple[Any, ...]]


def lock_key(lock_id: str) -> bytes:
    """A per-lock key for the benchmark only (a real one comes from the municipality's secrets)."""
    return hashlib.sha256(b"portner-bench-lock-key/" + lock_id.encode()).digest()


def _master_data(engine: Engine) -> None:
    from portner.domain.model import Municipality, MunicipalityId
    from portner.storage.repository import Repository

    with engine.begin() as conn:
        municipality = Municipality(id=MunicipalityId(_MUNICIPALITY), name="Bench")
        Repository(conn).add_municipality(municipality)


def build_fleet(engine: Engine, prefix: str, *, locks: int, events: int, now: datetime) -> Fleet:
    """Install homes with `locks` locks in all and seal `events // locks` events per lock.

    The mix follows the demo's day (about five events per finished visit): every other home has a
    building door before the flat door. Per visit the nurse's credential opens each door in turn
    (the first opening is the arrival), each door relocks by itself, and she locks the flat door
    from inside on the way out (the departure); every fourth visit the locks install the new
    revocation list, and every fifth begins with a refused attempt. Each visit has its grant and
    credential, so openings, arrivals and departures run the platform's logic for real.
    """
    from portner.services.door_events import LockUpload

    per_lock = max(2, events // locks)
    staff = max(1, locks // 5)
    tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _FLEET_COLUMNS}
    with engine.begin() as conn:
        stored = instant_writer(conn)
        actors = [f"stf-{prefix}{a:05d}" for a in range(staff)]
        for a, actor in enumerate(actors):
            tables["actors"].append((actor, _MUNICIPALITY, "home_nursing", "Bench", "", True))
            device_key = hashlib.sha256(actor.encode()).digest()
            tables["devices"].append((f"dev-{prefix}{a:05d}", actor, device_key, "active"))
        logs: list[_LogWriter] = []
        home_no = 0
        while len(logs) < locks:
            h = f"{prefix}{home_no:05d}"
            two_doors = home_no % 2 == 1 and locks - len(logs) >= 2
            tables["residents"].append((f"res-{h}", _MUNICIPALITY, None, ""))
            tables["homes"].append((f"h-{h}", f"res-{h}", "", "simulated"))
            doors = []
            for position, kind in enumerate(("building", "flat")[0 if two_doors else 1 :], 1):
                door, lock_id = f"d-{h}-{position}", f"l-{h}-{position}"
                tables["doors"].append((door, f"h-{h}", position, kind, lock_id))
                tables["locks"].append((lock_id, door, "simulated", "", 0))
                doors.append((door, _LogWriter(lock_id, lock_key(lock_id))))
            for _, log in doors:
                log.add(_DAY - timedelta(days=1), "boot", None, "installed", None, None)
            visit_no = 0
            while any(log.seq < per_lock for _, log in doors):
                who = (home_no + visit_no) % staff
                v = f"{h}-{visit_no:05d}"
                cred = hashlib.sha256(v.encode()).hexdigest()[:32]
                start = _DAY + timedelta(minutes=37 * visit_no + home_no % 30)
                end, opens = start + timedelta(minutes=30), start - timedelta(minutes=15)
                closes = end + timedelta(minutes=30)
                door_ids = json_id_list(tuple(d for d, _ in doors))
                tables["visits"].append((
                    f"v-{v}", _MUNICIPALITY, f"res-{h}", f"plan-{h}", f"src-{v}", stored(start),
                    stored(end), json_id_list((actors[who],)), "planned", "Besøk",
                ))
                tables["grants"].append((
                    f"g-{v}", actors[who], door_ids, stored(opens), stored(closes), "visit",
                    f"v-{v}", "active", "", stored(now),
                ))
                tables["credentials"].append((
                    cred, f"g-{v}", f"dev-{prefix}{who:05d}", stored(now), stored(opens),
                    stored(closes), 180,
                ))
                owner = (actors[who], f"v-{v}")
                for step, (_, log) in enumerate(doors):
                    t0 = start + timedelta(minutes=1 + step)
                    if visit_no % 4 == 3:
                        log.add(start - timedelta(minutes=8), "revocation_applied", None,
                                f"version {visit_no}", None, None)
                    if visit_no % 5 == 4 and step == 0:
                        log.add(start - timedelta(minutes=3), "denied", False, "not_yet_valid",
                                cred, actors[who], owner)
                    log.add(t0, "unlock", True, "ok", cred, actors[who], owner)
                    log.add(t0 + timedelta(seconds=5), "locked", None, "auto_relock", None, None)
                leaving = start + timedelta(minutes=25)
                doors[-1][1].add(leaving, "locked", None, "inside", None, None)
                visit_no += 1
            logs += [log for _, log in doors]
            home_no += 1
        for name, cols in _FLEET_COLUMNS.items():  # parents first
            insert_rows(conn, t.metadata.tables[name], cols, tables[name])
    if engine.dialect.name == "postgresql":
        # A production database has planner statistics (autovacuum sees to it); so should this.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    uploads, rows = [], []
    for log in logs:
        mine = log.events[:per_lock]
        uploads.append(LockUpload(log.lock_id, mine, lock_key=log.key))
        rows += [
            (log.lock_id, ev.seq, ev.at.astimezone(UTC), now, ev.kind, bool(ev.allowed), ev.reason,
             ev.credential_id, *log.owners.get(ev.seq, (ev.subject, None)), ev.hash)
            for ev in mine
        ]
    return Fleet(uploads, rows)


_FLEET_COLUMNS = {
    "residents": ("id", "municipality_id", "national_id", "display_name"),
    "homes": ("id", "resident_id", "address", "elock_system"),
    "doors": ("id", "home_id", "position", "kind", "lock_id"),
    "locks": ("id", "door_id", "backend", "model", "synced_seq"),
    "actors": ("id", "municipality_id", "role", "organisation", "display_name", "active"),
    "devices": ("id", "actor_id", "public_key", "status"),
    "visits": ("id", "municipality_id", "resident_id", "plan_key", "source_key",
               "planned_start", "planned_end", "staff_ids", "status", "description"),
    "grants": ("id", "actor_id", "door_ids", "not_before", "not_after", "origin", "visit_id",
               "status", "reason", "created_at"),
    "credentials": ("id", "grant_id", "device_id", "issued_at", "not_before", "not_after",
                    "size"),
}


class _LogWriter:
    """A lock's log sealed with the real event hash and MAC (what SimulatedLock writes)."""

    def __init__(self, lock_id: str, key: bytes) -> None:
        self.lock_id, self.key = lock_id, key
        self.events: list[Any] = []
        self.owners: dict[int, tuple[str, str | None]] = {}
        self.seq, self.head = 0, GENESIS_HASH

    def add(self, at: datetime, kind: str, allowed: bool | None, reason: str,
            credential_id: str | None, subject: str | None,
            owner: tuple[str, str | None] | None = None) -> None:
        self.seq += 1
        event = seal_event(
            lock_id=self.lock_id, seq=self.seq, at=at, kind=kind, allowed=allowed, reason=reason,
            credential_id=credential_id, subject=subject, prev_hash=self.head, lock_key=self.key,
        )
        self.events.append(event)
        self.head = event.hash
        if owner is not None:
            self.owners[self.seq] = owner


# -- measuring -----------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _scratch_table(engine: Engine) -> None:
    """A copy of door_events with the same columns, indexes and foreign keys, but empty."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE door_events_scratch (LIKE door_events INCLUDING ALL)"))
        conn.execute(text(
            "ALTER TABLE door_events_scratch"
            " ADD FOREIGN KEY (lock_id) REFERENCES locks (id),"
            " ADD FOREIGN KEY (visit_id) REFERENCES visits (id)"
        ))


def _raw_copy(engine: Engine, rows: list[tuple[Any, ...]]) -> float:
    # Not emptied between runs: the scratch table grows as door_events does.
    statement = f"COPY door_events_scratch ({', '.join(_DOOR_EVENT_COLUMNS)}) FROM STDIN"

    def copy() -> None:
        with engine.begin() as conn:
            copy_rows(conn, statement, rows)

    return _timed(copy)


def _check_stored(engine: Engine, fleet: Fleet) -> None:
    """The ingest stored exactly the rows the baseline copied (so both did the same work)."""
    lock_ids = [u.lock_id for u in fleet.uploads]
    with engine.connect() as conn:
        got = conn.execute(
            text(
                f"SELECT {', '.join(_DOOR_EVENT_COLUMNS)} FROM door_events"
                " WHERE lock_id = ANY(:ids) ORDER BY lock_id, seq"
            ),
            {"ids": lock_ids},
        ).all()
    want = sorted(fleet.rows, key=lambda r: (r[0], r[1]))
    if [(*r[:10], bytes(r[10])) for r in got] != want:
        raise RuntimeError("the ingest did not store the rows the baseline copied")


def run_ingest_bench(
    pg_url: str, *, events: int = 20000, locks: int = 100, repeats: int = 3,
    per_lock_transactions: bool = True,
) -> dict[str, Any]:
    """Measure ingest with audit against raw COPY of the same rows; return figures and targets."""
    from portner.services.door_events import ingest_upload, ingest_uploads

    if locks < 1 or events < locks * 2 or repeats < 1:
        raise ValueError("need at least one lock, two events per lock and one run")
    base = normalise_url(pg_url)
    schema = f"bench_ingest_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(base, connect_args={"options": f"-csearch_path={schema}"})
    runs: list[dict[str, float]] = []
    try:
        migrate(engine)
        _master_data(engine)
        _scratch_table(engine)
        now = _DAY + timedelta(days=60)
        for run in range(repeats):
            fleet = build_fleet(engine, f"b{run}", locks=locks, events=events, now=now)
            n = len(fleet.rows)
            figures = {"copy_per_s": n / _raw_copy(engine, fleet.rows)}
            batch = _timed(lambda f=fleet: ingest_uploads(engine, f.uploads, now=now))
            figures["ingest_per_s"] = n / batch
            _check_stored(engine, fleet)
            if per_lock_transactions:
                singles = build_fleet(engine, f"s{run}", locks=locks, events=events, now=now)

                def one_by_one(f: Fleet = singles) -> None:
                    for u in f.uploads:
                        ingest_upload(engine, u.lock_id, u.events, lock_key=u.lock_key, now=now)

                figures["per_lock_ingest_per_s"] = n / _timed(one_by_one)
                _check_stored(engine, singles)
            runs.append(figures)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    med = statistics.median
    result: dict[str, Any] = {
        "events": n,
        "locks": locks,
        "repeats": repeats,
        "mix": _mix(fleet),
        "ingest_per_s": med(r["ingest_per_s"] for r in runs),
        "copy_per_s": med(r["copy_per_s"] for r in runs),
        "ratio": med(r["ingest_per_s"] / r["copy_per_s"] for r in runs),
        "targets": dict(TARGETS),
        "runs": runs,
    }
    if per_lock_transactions:
        result["per_lock_ingest_per_s"] = med(r["per_lock_ingest_per_s"] for r in runs)
        result["per_lock_ratio"] = med(r["per_lock_ingest_per_s"] / r["copy_per_s"] for r in runs)
    return result


def _mix(fleet: Fleet) -> dict[str, int]:
    """What the events were: openings, finished visits (departures), refusals."""
    kinds = [(r[4], r[6]) for r in fleet.rows]
    return {
        "openings": sum(1 for k in kinds if k == ("unlock", "ok")),
        "departures": sum(1 for k in kinds if k == ("locked", "inside")),
        "refusals": sum(1 for k in kinds if k[0] == "denied"),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures as a small table; `--json` for machines."""
    import json

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(
        prog="python -m portner.benchmarks.ingest", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--pg", default=DEFAULT_PG,
                        help="PostgreSQL URL (a schema is made there, then dropped)")
    parser.add_argument("--events", type=int, default=20000, help="events in all (default 20000)")
    parser.add_argument("--locks", type=int, default=100, help="locks they come from (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--no-per-lock", action="store_true",
                        help="skip the one-transaction-per-lock figure (the slow part)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = run_ingest_bench(args.pg, events=args.events, locks=args.locks, repeats=args.repeats,
                         per_lock_transactions=not args.no_per_lock)
    if args.json:
        sys.stdout.write(json.dumps(r, indent=2) + "\n")
        return 0
    mix = ", ".join(f"{v} {k}" for k, v in r["mix"].items())
    table = Table(title=(
        f"Door-event ingest on PostgreSQL: {r['events']} events from {r['locks']} locks "
        f"({mix}); medians of {r['repeats']} runs"
    ))
    per_s, ratio = TARGETS["per_s"], TARGETS["ratio"]
    for col in ("figure", "events/s", f">= {per_s:,}/s", "ratio to COPY", f">= {ratio}"):
        table.add_column(col)
    copy = f"{r['copy_per_s']:,.0f}"
    table.add_row("raw COPY of the same door_events rows", copy, "", "1.00", "")
    rows = [("ingest with audit, one transaction", r["ingest_per_s"], r["ratio"])]
    if "per_lock_ingest_per_s" in r:
        rows.append(("ingest with audit, a transaction per lock", r["per_lock_ingest_per_s"],
                     r["per_lock_ratio"]))
    for name, rate, rel in rows:
        table.add_row(name, f"{rate:,.0f}", "yes" if rate >= per_s else "NO", f"{rel:.2f}",
                      "yes" if rel >= ratio else "NO")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
