"""The hash-chained audit log: appending, verifying, and detecting every kind of tampering."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError

from portner.storage.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditPrivacyError,
    append_audit,
    append_prepared,
    canonical_bytes,
    chain_hash,
    prepare_audit,
    queue_append_prepared,
    verify_audit,
)
from portner.storage.bulk import sent_together
from portner.storage.tables import UtcDateTime, audit_events, audit_head

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def entry(n: int, **details: Any) -> AuditEntry:
    return AuditEntry(
        at=T0 + timedelta(minutes=n),
        actor="system",
        action="grant:created",
        subject=f"grant:g{n}",
        details={"n": n, **details},
    )


def chain(engine: Engine, count: int = 5) -> None:
    with engine.begin() as conn:
        assert append_audit(conn, [entry(n) for n in range(1, count + 1)]) == count


def verify(engine: Engine) -> Any:
    with engine.connect() as conn:
        return verify_audit(conn)


def test_canonical_bytes_and_hash_are_exactly_as_documented() -> None:
    got = canonical_bytes(
        1, T0, "system", "grant:created", "grant:g1", {"b": 1, "a": "ø", "c": [True, None, 1.5]}
    )
    want = '[1,"2026-01-05T08:00:00.000000Z","system","grant:created","grant:g1",'
    want += '{"a":"ø","b":1,"c":[true,null,1.5]}]'
    assert got == want.encode("utf-8")
    assert chain_hash(GENESIS_HASH, got) == hashlib.sha256(bytes(32) + got).digest()


def test_instant_is_hashed_in_utc_whatever_the_zone() -> None:
    oslo = T0.astimezone(ZoneInfo("Europe/Oslo"))
    in_oslo = canonical_bytes(1, oslo, "a", "x:y", "s", {})
    assert in_oslo == canonical_bytes(1, T0, "a", "x:y", "s", {})


def test_append_then_verify(engine: Engine) -> None:
    with engine.connect() as conn:
        assert verify_audit(conn).ok  # an empty log is fine
    chain(engine, 3)
    with engine.begin() as conn:
        assert append_audit(conn, [entry(4, note="Åse møtte ikke")]) == 4
        assert append_audit(conn, []) == 4  # nothing to add: the head is unchanged
    result = verify(engine)
    assert (result.ok, result.count, result.first_bad_seq, result.problem) == (True, 4, None, "")
    with engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
        head = conn.execute(select(audit_head)).one()
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert bytes(rows[0].prev_hash) == GENESIS_HASH
    assert all(bytes(b.prev_hash) == bytes(a.hash) for a, b in zip(rows, rows[1:]))
    assert (head.seq, bytes(head.hash)) == (4, bytes(rows[-1].hash))
    assert rows[3].details == {"n": 4, "note": "Åse møtte ikke"}
    assert rows[3].at == T0 + timedelta(minutes=4)


def test_audit_is_part_of_the_callers_transaction(engine: Engine) -> None:
    chain(engine, 2)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        append_audit(conn, [entry(3)])
        raise RuntimeError("the change being audited failed")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_events)).scalar_one() == 2
    assert verify(engine).ok


@pytest.mark.parametrize("count", [1, 100], ids=["few", "many"])
def test_an_append_that_ends_the_transaction_stores_it_with_the_callers_change(
        engine: Engine, count: int) -> None:
    # A few entries on PostgreSQL go with the COMMIT (seen from another connection at once);
    # otherwise the caller's commit stores them. The caller's commit after it is harmless.
    chain(engine, 2)
    _drop_caller_change(engine)
    early = engine.dialect.name == "postgresql" and count == 1
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE caller_change (n int)"))
        conn.execute(text("INSERT INTO caller_change VALUES (1)"))
        append_prepared(conn, prepare_audit([entry(n) for n in range(3, 3 + count)], conn.dialect.name),
                        ends_transaction=True)
        if early:
            with engine.connect() as other:
                assert other.execute(select(audit_head.c.seq)).scalar_one() == 2 + count
                assert other.execute(text("SELECT n FROM caller_change")).scalar_one() == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM caller_change")).scalar_one() == 1
    _drop_caller_change(engine)
    result = verify(engine)
    assert (result.ok, result.count) == (True, 2 + count), result.problem


def test_a_failed_append_that_ends_the_transaction_stores_nothing_of_it(pg_engine: Engine) -> None:
    # A row put behind the head's back takes the seq the append wants: the chained INSERT fails
    # on the server, the COMMIT queued behind it never runs, and the caller's change goes too.
    chain(pg_engine, 2)
    _drop_caller_change(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(audit_events.insert().values(
            seq=3, at=T0, actor="intruder", action="x:y", subject="s", details={},
            prev_hash=GENESIS_HASH, hash=GENESIS_HASH))
    with pytest.raises(IntegrityError, match="audit_events"), pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE caller_change (n int)"))
        append_prepared(conn, prepare_audit([entry(4)], "postgresql"), ends_transaction=True)
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('caller_change')")).scalar() is None
        assert conn.execute(select(audit_head.c.seq)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(audit_events)).scalar_one() == 3


def test_an_append_that_ends_the_transaction_makes_a_missing_head_first(pg_engine: Engine) -> None:
    # Without it the append would chain nothing and the COMMIT behind it would store the
    # caller's change with no audit entry (a metadata.create_all database has no head row).
    with pg_engine.begin() as conn:
        conn.execute(delete(audit_head))
    with pg_engine.begin() as conn:
        assert append_prepared(conn, prepare_audit([entry(1)], "postgresql"), ends_transaction=True) == 1
    result = verify(pg_engine)
    assert (result.ok, result.count) == (True, 1), result.problem


def test_an_append_that_ends_the_transaction_is_refused_inside_a_savepoint(engine: Engine) -> None:
    chain(engine, 2)
    with pytest.raises(ValueError, match="savepoint"), engine.begin() as conn, conn.begin_nested():
        append_prepared(conn, prepare_audit([entry(3)], conn.dialect.name), ends_transaction=True)
    assert verify(engine).count == 2


def test_writes_and_an_append_queued_behind_them_commit_together_or_not_at_all(pg_engine: Engine) -> None:
    # One round trip for the caller's writes, the append and the COMMIT (what an upload sends).
    chain(pg_engine, 2)
    _drop_caller_change(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE caller_change (n int)"))
    with pg_engine.begin() as conn:
        with sent_together(conn) as run:
            run("INSERT INTO caller_change VALUES (%s)", [(1,), (2,)], many=True)
            appended = queue_append_prepared(conn, prepare_audit([entry(3), entry(4)], "postgresql"),
                                             ends_transaction=True)
        assert appended() == 4
        with pg_engine.connect() as other:  # committed already, with the append
            assert other.execute(text("SELECT count(*) FROM caller_change")).scalar_one() == 2
            assert other.execute(select(audit_head.c.seq)).scalar_one() == 4
    # A write that fails: the append and the COMMIT queued behind it never run, and the error
    # is SQLAlchemy's class, as every other statement's.
    with pytest.raises(DataError), pg_engine.begin() as conn:
        with sent_together(conn) as run:
            run("INSERT INTO caller_change VALUES (%s)", ("not a number",))
            queue_append_prepared(conn, prepare_audit([entry(5)], "postgresql"), ends_transaction=True)
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM caller_change")).scalar_one() == 2
        assert conn.execute(select(audit_head.c.seq)).scalar_one() == 4
    _drop_caller_change(pg_engine)
    result = verify(pg_engine)
    assert (result.ok, result.count) == (True, 4), result.problem


def test_an_append_is_queued_only_in_an_open_pipeline_and_only_a_few_entries(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        with pytest.raises(ValueError, match="pipeline"):
            queue_append_prepared(conn, prepare_audit([entry(1)], "postgresql"))
        with pytest.raises(ValueError, match="not chained"), sent_together(conn):
            queue_append_prepared(conn, prepare_audit([entry(n) for n in range(1, 66)], "postgresql"))
    assert verify(pg_engine).count == 0


def _drop_caller_change(engine: Engine) -> None:  # (the migrated schema is shared by tests)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS caller_change"))


def test_one_append_is_a_constant_number_of_statements(engine: Engine) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            append_audit(conn, [entry(n) for n in range(1, 1001)])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    statements = [s for s in statements if s.strip().upper() != "BEGIN"]
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    # Lock, read the head, one bulk insert, move the head. On PostgreSQL the bulk insert is a
    # COPY, which these events do not see.
    assert len(inserts) <= 1 and len(statements) <= 4
    with engine.connect() as conn:
        result = verify_audit(conn, batch_size=300)  # several streamed batches
    assert (result.ok, result.count) == (True, 1000)


@pytest.mark.parametrize(
    "details",
    [
        {"patient": "01019012345"},
        {"note": "fnr 010190 12345 i merknad"},
        {"ids": ["x", {"deep": "nid:01019012345."}]},
        {"number": 1019012345_1},
        {"01019012345": "as a key"},
        {"note": "line one\n01019012345"},  # after a JSON escape
        {"amount": 12345678901.0},
    ],
)
def test_details_that_look_like_a_national_id_are_refused(engine: Engine, details: Any) -> None:
    chain(engine, 1)
    with pytest.raises(AuditPrivacyError) as caught, engine.begin() as conn:
        append_audit(conn, [entry(2), entry(3, **details)])
    message = str(caught.value)
    assert "01019012345" not in message and "12345" not in message
    assert "entry 1" in message
    assert verify(engine).count == 1  # nothing of the batch was written


def test_subject_and_actor_are_guarded_too(engine: Engine) -> None:
    for field in ("actor", "subject"):
        bad = AuditEntry(at=T0, actor="system", action="x:y", subject="s")
        bad = AuditEntry(**{**bad.__dict__, field: "resident 01019012345"})
        with pytest.raises(AuditPrivacyError):
            with engine.begin() as conn:
                append_audit(conn, [bad])


def test_digit_runs_inside_hex_ids_and_short_numbers_are_allowed(engine: Engine) -> None:
    details = {
        "cti": "a01019012345f0e1",  # hex that happens to hold 11 digits
        "her_id": "8094512",
        "phone": "+47 912 34 567",
        "epoch_ms": 1767600000000,
        "count": 50000,
    }
    with engine.begin() as conn:
        append_audit(conn, [entry(1, **details)])
    assert verify(engine).ok


def test_entries_refuse_naive_times_bad_actions_and_non_json(engine: Engine) -> None:
    with pytest.raises(ValueError, match="aware"):
        AuditEntry(at=datetime(2026, 1, 1), actor="a", action="x:y", subject="s")
    with pytest.raises(ValueError, match="subject:action"):
        AuditEntry(at=T0, actor="a", action="created", subject="s")
    with pytest.raises(ValueError, match="longer"):
        AuditEntry(at=T0, actor="a" * 101, action="x:y", subject="s")
    for details in ({"when": T0}, {"nan": float("nan")}, {"set": {1, 2}}, {"inf": float("inf")}):
        bad = AuditEntry(T0, "a", "x:y", "s", details)  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)), engine.begin() as conn:
            append_audit(conn, [bad])


# --- tampering ----------------------------------------------------------------------------------


def tamper(engine: Engine, *statements: Any) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def row(engine: Engine, seq: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.seq == seq)).one()


def seq_is(seq: int) -> Any:
    return audit_events.c.seq == seq


def test_detects_edited_details(engine: Engine) -> None:
    chain(engine)
    tamper(engine, update(audit_events).where(seq_is(3)).values(details={"n": 99}))
    assert (verify(engine).ok, verify(engine).first_bad_seq) == (False, 3)


def test_detects_edited_time_and_actor(engine: Engine) -> None:
    chain(engine)
    tamper(engine, update(audit_events).where(seq_is(2)).values(at=T0 + timedelta(hours=5)))
    assert verify(engine).first_bad_seq == 2
    tamper(engine, update(audit_events).where(seq_is(1)).values(actor="someone else"))
    assert verify(engine).first_bad_seq == 1


def test_detects_details_rewritten_with_the_same_meaning(engine: Engine) -> None:
    # The stored text itself is hashed: even re-serialising it (spaces, key order) is an edit.
    chain(engine)
    tamper(engine, update(audit_events).where(seq_is(2)).values(details={"n": 2}))
    assert verify(engine).first_bad_seq == 2


def test_integer_keys_are_stored_as_json_strings(engine: Engine) -> None:
    with engine.begin() as conn:
        append_audit(conn, [AuditEntry(T0, "a", "x:y", "s", {1: "one"})])  # type: ignore[dict-item]
    assert row(engine, 1).details == {"1": "one"}
    assert verify(engine).ok


def test_detects_edited_hash(engine: Engine) -> None:
    chain(engine)
    tamper(engine, update(audit_events).where(seq_is(3)).values(hash=bytes(32)))
    result = verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "hash" in result.problem


def test_detects_deleted_middle_row(engine: Engine) -> None:
    chain(engine)
    tamper(engine, delete(audit_events).where(seq_is(3)))
    result = verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "missing" in result.problem


def test_detects_deleted_first_row(engine: Engine) -> None:
    chain(engine)
    tamper(engine, delete(audit_events).where(seq_is(1)))
    assert verify(engine).first_bad_seq == 1


def test_detects_deleted_last_rows_through_the_head(engine: Engine) -> None:
    chain(engine)
    tamper(engine, delete(audit_events).where(audit_events.c.seq >= 4))
    result = verify(engine)
    assert (result.ok, result.count, result.first_bad_seq) == (False, 3, 4)
    assert "deleted" in result.problem


def test_detects_a_rewound_head_after_tail_deletion(engine: Engine) -> None:
    # Delete the last entry and point the head at entry 4: the hash no longer matches... unless
    # the attacker copies entry 4's hash, which is exactly what a rewind needs.
    chain(engine)
    four = row(engine, 4)
    tamper(
        engine,
        delete(audit_events).where(seq_is(5)),
        update(audit_head).values(seq=4, hash=bytes(32)),
    )
    assert (verify(engine).ok, verify(engine).first_bad_seq) == (False, 4)
    tamper(engine, update(audit_head).values(seq=4, hash=bytes(four.hash)))
    assert verify(engine).ok  # the documented limit: a consistent rewind needs an outside anchor


def test_detects_swapped_seqs(engine: Engine) -> None:
    chain(engine)
    tamper(
        engine,
        update(audit_events).where(seq_is(2)).values(seq=-1),
        update(audit_events).where(seq_is(4)).values(seq=2),
        update(audit_events).where(seq_is(-1)).values(seq=4),
    )
    result = verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def forge(conn: Connection, seq: int, forged: AuditEntry, prev_hash: bytes) -> bytes:
    """Insert a perfectly chained entry the way append_audit would, bypassing the head."""
    payload = canonical_bytes(seq, forged.at, forged.actor, forged.action, forged.subject,
                              forged.details)
    details_text = payload.decode().split(",", 5)[5][:-1]  # the canonical details JSON
    json_value = "CAST(:details AS json)" if conn.dialect.name == "postgresql" else ":details"
    digest = chain_hash(prev_hash, payload)
    conn.execute(
        text(f"INSERT INTO audit_events VALUES (:seq, :at, :actor, :action, :subject, {json_value},"
             " :prev, :hash)").bindparams(bindparam("at", type_=UtcDateTime)),
        {"seq": seq, "at": forged.at, "actor": forged.actor, "action": forged.action,
         "subject": forged.subject, "details": details_text, "prev": prev_hash,
         "hash": digest},
    )
    return digest


def test_forge_writes_rows_that_verify(engine: Engine) -> None:
    # The forging helper must be faithful, or the two tests below would pass for the wrong reason.
    chain(engine)
    with engine.begin() as conn:
        digest = forge(conn, 6, entry(6, note="x, y"), bytes(row(engine, 5).hash))
        conn.execute(update(audit_head).values(seq=6, hash=digest))
    assert verify(engine).ok


def test_detects_a_row_appended_behind_the_heads_back(engine: Engine) -> None:
    chain(engine)
    with engine.begin() as conn:
        forge(conn, 6, entry(6), bytes(row(engine, 5).hash))
    result = verify(engine)
    assert (result.ok, result.count, result.first_bad_seq) == (False, 6, 6)


def test_detects_a_row_inserted_in_the_middle(engine: Engine) -> None:
    # Shift entries 4 and 5 up by one, then forge a perfectly chained entry 4 after entry 3.
    chain(engine)
    three = row(engine, 3)
    with engine.begin() as conn:
        conn.execute(update(audit_events).where(seq_is(5)).values(seq=6))
        conn.execute(update(audit_events).where(seq_is(4)).values(seq=5))
        forge(conn, 4, entry(40), bytes(three.hash))
    result = verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_detects_a_missing_head_row(engine: Engine) -> None:
    chain(engine, 2)
    tamper(engine, delete(audit_head))
    assert (verify(engine).ok, verify(engine).first_bad_seq) == (False, 1)


# --- round trips and concurrency ----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


# Each example rolls its transaction back, so sharing the function-scoped engine is safe.
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    details=st.lists(
        st.dictionaries(st.text(max_size=10), json_values, max_size=5), min_size=1, max_size=4
    )
)
def test_any_json_details_verify_after_the_database_round_trip(
    engine: Engine, details: list[dict[str, Any]]
) -> None:
    entries = [
        AuditEntry(T0 + timedelta(microseconds=i), "a", "x:y", "s", d)
        for i, d in enumerate(details)
    ]
    with engine.connect() as conn:
        try:
            append_audit(conn, entries)
        except AuditPrivacyError:
            conn.rollback()
            assume(False)  # hypothesis drew something id-like; the guard is tested above
        result = verify_audit(conn)  # reads back what the database stored, in-transaction
        conn.rollback()
    assert (result.ok, result.count) == (True, len(entries)), result.problem


def _writer(
    engine: Engine, name: str, barrier: threading.Barrier, errors: list[BaseException]
) -> None:
    try:
        barrier.wait()
        for n in range(200):
            with engine.begin() as conn:
                append_audit(conn, [AuditEntry(at=T0, actor=name, action="door:opened",
                                               subject=f"door:{name}", details={"n": n})])
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def test_two_concurrent_writers_keep_the_chain_linear(engine: Engine) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_writer, args=(engine, n, barrier, errors)) for n in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = verify(engine)
    assert (result.ok, result.count) == (True, 400), result.problem
    with engine.connect() as conn:
        rows = conn.execute(select(audit_events.c.seq, audit_events.c.actor, audit_events.c.details)
                            .order_by(audit_events.c.seq)).all()
    assert [r.seq for r in rows] == list(range(1, 401))
    for name in "AB":  # each writer's entries are in its own order
        assert [r.details["n"] for r in rows if r.actor == name] == list(range(200))


@pytest.mark.parametrize("batch", [1, 100], ids=["alone", "among-many"])
def test_a_database_made_without_the_migration_gets_its_head_on_the_first_append(
        empty_engine: Engine, batch: int) -> None:
    from portner.storage.tables import metadata

    metadata.create_all(empty_engine)  # no genesis row: the migration inserts it
    with empty_engine.begin() as conn:
        assert append_audit(conn, [entry(n) for n in range(1, batch + 1)]) == batch
    result = verify(empty_engine)
    assert (result.ok, result.count) == (True, batch), result.problem


@pytest.mark.parametrize("batch", [1, 100], ids=["alone", "among-many"])
def test_text_with_tabs_newlines_and_backslashes_is_stored_exactly(engine: Engine, batch: int) -> None:
    # On PostgreSQL a few rows are chained by the server (which hashes the bytes sent), many go
    # in as COPY text written by hand (each of these characters must be escaped there): both.
    odd = "a\tb\nc\rd\\e \\N æøå ✓"
    others = [entry(n) for n in range(1, batch)]
    with engine.begin() as conn:
        append_audit(conn, [*others, AuditEntry(T0, f"actor {odd}", "x:y", f"subject {odd}", {"k": odd, odd: 1})])
    with engine.connect() as conn:
        row = conn.execute(select(audit_events).where(audit_events.c.seq == batch)).one()
    assert (row.actor, row.subject) == (f"actor {odd}", f"subject {odd}")
    assert row.details == {"k": odd, odd: 1}
    assert verify(engine).ok


# --- the batch guard is the entry-by-entry guard ------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.text(alphabet="0123456789 ab\n\\u", max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "nurse:1", "12345678901", "x 123456 78901"]), _PIECES,
                          _PIECES, st.sampled_from([1, 12345678901, "x", "123456 78901"])),
                min_size=1, max_size=6))
def test_the_batch_guard_refuses_exactly_what_the_entry_guard_refuses(rows) -> None:
    """One regex pass over a whole batch (door_events appends thousands of entries at once) must
    refuse the same batches as checking entry by entry, naming the same first entry."""
    from portner.storage.audit import _details_json, _guard, _guard_all

    at = datetime(2026, 12, 4, tzinfo=UTC)
    entries = [AuditEntry(at, actor, "test:guard", subject[:200], {"k": text, "n": n})
               for actor, subject, text, n in rows]
    details = [_details_json(e.details) for e in entries]

    def refusal(check) -> str | None:
        try:
            check()
        except AuditPrivacyError as exc:
            return str(exc)
        return None

    def entry_by_entry() -> None:
        for i, (e, d) in enumerate(zip(entries, details, strict=True)):
            _guard(i, e, d)

    assert refusal(lambda: _guard_all(entries, details)) == refusal(entry_by_entry)
