"""Keypad codes as a service: encrypted at rest, shown once, rules of the door path, revocation."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from portner.locks.codes import check_code
from portner.locks.port import Capabilities, CodeRules, Feature, KeypadCode, SlotRange
from portner.services.keypad import (
    AlreadyDelivered,
    CodeDecryptionError,
    KeypadCodeError,
    KeypadKeys,
    reveal_once,
    revoke_code,
)
from portner.services.keypad.store import record_capabilities
from portner.services.keys import MunicipalitySecrets
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from tests.locks.test_faults_reconcile import MASTER, START, KeypadSite


def _caps(lengths: set[int], alphabet: str = "0123456789", *, schedules: bool = True,
          prefixes: tuple[str, ...] = ()) -> Capabilities:
    features = {Feature.KEYPAD} | ({Feature.LOCK_SCHEDULES} if schedules else set())
    return Capabilities(frozenset(features), CodeRules(frozenset(lengths), alphabet, prefixes),
                        SlotRange(30))


def test_keys_are_derived_per_municipality_and_hide_their_material() -> None:
    a = KeypadKeys.from_master(MASTER, "m1")
    b = KeypadKeys.from_master(MASTER, "m2")
    assert a.encryption_key != b.encryption_key and a.mac_key != a.encryption_key
    assert a.key_id != b.key_id and a.encryption_key.hex() not in repr(a)
    code = KeypadCode("482915")
    assert a.mac(code) != b.mac(code)
    blob = a.encrypt(code, "kpc-1")
    assert b"482915" not in blob
    assert a.decrypt(blob, "kpc-1", a.key_id) == code
    with pytest.raises(CodeDecryptionError):
        a.decrypt(blob, "kpc-2", a.key_id)  # the code id is bound in as associated data
    with pytest.raises(CodeDecryptionError):
        b.decrypt(blob, "kpc-1", a.key_id)
    with pytest.raises(ValueError, match="secrets"):
        KeypadKeys.from_secrets(MunicipalitySecrets(issuer=None, lock_master=b""), "m1")  # type: ignore[arg-type]


def test_issue_writes_code_placements_and_audit_in_one_transaction(engine: Engine) -> None:
    site = KeypadSite.build(engine, START, locks=2)
    with engine.begin() as conn:
        record_capabilities(conn, "l-1", _caps({4, 6}, "1234567"), START)
        record_capabilities(conn, "l-2", _caps({6, 8}, schedules=False, prefixes=("12",)), START)
    code_id = site.issue(not_before=START + timedelta(hours=1), not_after=START + timedelta(hours=2))
    digits = site.digits(code_id)
    rules = CodeRules(frozenset({6}), "1234567", ("12",))
    assert check_code(rules, digits) is None  # the tightest common rule
    p1, p2 = site.placements(code_id)
    assert (p1.lock_id, p1.enforcement, p1.intent, p1.state) == ("l-1", "lock", "present", "pending")
    assert (p2.lock_id, p2.enforcement) == ("l-2", "server")
    with engine.connect() as conn:
        row = conn.execute(select(t.keypad_codes)).one()
        assert digits.encode() not in row.ciphertext and row.code_mac == site.keys.mac(KeypadCode(digits))
        assert verify_audit(conn).ok
    assert site.audit_actions(code_id) == ["keypad_code:issued"]


def test_lock_row_can_ask_for_server_enforcement(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    with sqlite_engine.begin() as conn:
        record_capabilities(conn, "l-1", _caps({6}), START)
        conn.execute(update(t.locks).where(t.locks.c.id == "l-1").values(enforcement="server"))
    (p,) = site.placements(site.issue())
    assert p.enforcement == "server"


def test_a_failed_issue_leaves_nothing_behind(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, locks=2)
    with sqlite_engine.begin() as conn:
        record_capabilities(conn, "l-1", _caps({4}), START)
        record_capabilities(conn, "l-2", _caps({6}), START)
    with pytest.raises(Exception, match="no code fits every lock"):
        site.issue()
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.keypad_codes)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(t.code_placements)).scalar() == 0


@pytest.mark.parametrize(("field", "kwargs"), [
    ("not_after", {"not_after": START - timedelta(minutes=1)}),
    ("not_after", {"not_before": START + timedelta(hours=2), "not_after": START + timedelta(hours=1)}),
    ("lock_ids", {"lock_ids": ["l-9"]}),
    ("lock_ids", {"lock_ids": ["l-1", "l-1"]}),
])
def test_bad_requests_name_the_field(sqlite_engine: Engine, field: str, kwargs: dict) -> None:  # type: ignore[type-arg]
    site = KeypadSite.build(sqlite_engine, START)
    with pytest.raises(KeypadCodeError, match=field):
        site.issue(**kwargs)


def test_reveal_once_then_refuse(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    code_id = site.issue(rng=random.Random(3))
    with sqlite_engine.begin() as conn:
        code = reveal_once(conn, code_id, now=START, key=site.keys, actor="account:acc-op")
    assert code.reveal() == site.digits(code_id) and code.reveal() not in repr(code)
    with sqlite_engine.begin() as conn, pytest.raises(AlreadyDelivered) as caught:
        reveal_once(conn, code_id, now=START, key=site.keys, actor="account:acc-op")
    assert code.reveal() not in str(caught.value)
    assert "keypad_code:delivered" in site.audit_actions(code_id)


def test_revoke_writes_clear_commands_for_codes_that_may_be_on_a_lock(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, locks=2)
    code_id = site.issue()
    with sqlite_engine.begin() as conn:  # lock 1 confirmed it; lock 2 never got it
        conn.execute(update(t.code_placements).where(t.code_placements.c.lock_id == "l-1")
                     .values(state="confirmed", slot=1))
    site.revoke(code_id, "lost phone")
    p1, p2 = site.placements(code_id)
    assert (p1.intent, p1.state) == ("absent", "removing")
    assert (p2.intent, p2.state) == ("absent", "removed")
    with sqlite_engine.connect() as conn:
        (command,) = conn.execute(select(t.lock_commands)).all()
    assert (command.lock_id, command.kind, command.slot, command.state) == ("l-1", "clear_code", 1, "requested")
    assert command.args == {"code": code_id}
    assert site.audit_actions(code_id)[-1] == "keypad_code:revocation_requested"
    with sqlite_engine.begin() as conn:
        revoke_code(conn, code_id, reason="again", now=START, actor="account:acc-op")  # no-op
        with pytest.raises(KeypadCodeError, match="revoked"):
            reveal_once(conn, code_id, now=START, key=site.keys, actor="account:acc-op")
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.lock_commands)).scalar() == 1
