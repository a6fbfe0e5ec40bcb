"""Accounts and authority on both databases: who may see which resident, and disabling."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from portner.credentials import DeviceKey
from portner.demo.site import MUNICIPALITY, load_demo_site
from portner.domain.access import AccountRole, NotPermitted
from portner.services.accounts import (
    DEV_ISSUER,
    AccountDisabled,
    AccountError,
    create_account,
    principal_by_id,
    principal_for_subject,
    set_account_disabled,
)
from portner.services.authority import require_resident, visible_residents
from portner.services.devices import register_device
from portner.services.ids import IdSource
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.storage import tables as t
from portner.storage.audit import verify_audit

DAY = date(2026, 12, 3)
OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime.combine(DAY, time(7, 0), OSLO)


@pytest.fixture
def site(engine: Engine, tmp_path: Path):
    return load_demo_site(engine, tmp_path, seed=7, day=DAY, ids=IdSource(7), now=NOW,
                          residents=30, staff=6)


def _nurse_with_grants(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(
            select(t.grants.c.actor_id).join(t.actors, t.actors.c.id == t.grants.c.actor_id)
            .where(t.actors.c.role == "home_nursing").order_by(t.grants.c.actor_id).limit(1)
        ).scalar_one()


def _account(engine: Engine, subject: str, role: AccountRole, **links) -> str:
    return create_account(engine, municipality_id=MUNICIPALITY, issuer=DEV_ISSUER, subject=subject,
                          role=role, now=NOW, ids=IdSource(), by="test", **links)


def test_a_nurse_sees_exactly_the_residents_of_her_visits(engine: Engine, site) -> None:
    nurse = _nurse_with_grants(engine)
    account = _account(engine, "n1", AccountRole.NURSE, actor_id=nurse)
    with engine.connect() as conn:
        who = principal_by_id(conn, account, via="session")
        assert who is not None
        seen = visible_residents(conn, who, now=NOW)
        served = {
            r.resident_id for r in conn.execute(
                select(t.visits.c.resident_id).join(t.grants, t.grants.c.visit_id == t.visits.c.id)
                .where(t.grants.c.actor_id == nurse)
            )
        }
        everyone = {r.id for r in conn.execute(select(t.residents.c.id))}
        assert seen == served and seen and seen < everyone
        stranger = sorted(everyone - served)[0]
        with pytest.raises(NotPermitted) as refused:
            require_resident(conn, who, stranger, now=NOW)
        # The same words for a resident that does not exist: ids cannot be probed.
        with pytest.raises(NotPermitted) as missing:
            require_resident(conn, who, "res-does-not-exist", now=NOW)
        assert str(refused.value).replace(stranger, "X") == str(missing.value).replace("res-does-not-exist", "X")
        # A month later her old visits no longer count.
        assert visible_residents(conn, who, now=NOW + timedelta(days=45)) == frozenset()


def test_relatives_residents_and_operators(engine: Engine, site) -> None:
    with engine.connect() as conn:
        rel = conn.execute(select(t.relations).order_by(t.relations.c.actor_id)).first()
    assert rel is not None, "the demo care record names relatives"
    relative = _account(engine, "r1", AccountRole.RELATIVE, actor_id=rel.actor_id)
    resident = _account(engine, "p1", AccountRole.RESIDENT, resident_id=rel.resident_id)
    operator = _account(engine, "o1", AccountRole.OPERATOR)
    with engine.connect() as conn:
        relatives_own = {r.resident_id for r in conn.execute(
            select(t.relations.c.resident_id).where(t.relations.c.actor_id == rel.actor_id))}
        assert visible_residents(conn, principal_by_id(conn, relative, via="s"), now=NOW) == relatives_own
        assert visible_residents(conn, principal_by_id(conn, resident, via="s"), now=NOW) == {rel.resident_id}
        assert visible_residents(conn, principal_by_id(conn, operator, via="s"), now=NOW) is None


def test_account_links_are_checked(engine: Engine, site) -> None:
    with pytest.raises(AccountError, match="actor"):
        _account(engine, "x", AccountRole.NURSE)
    with pytest.raises(AccountError, match="no actor"):
        _account(engine, "x", AccountRole.NURSE, actor_id="stf-nobody")
    with pytest.raises(AccountError, match="scope"):
        create_account(engine, municipality_id=MUNICIPALITY, issuer="https://idp", subject="c",
                       role=AccountRole.INTEGRATION, now=NOW, ids=IdSource(), by="t", scopes=["root"])
    _account(engine, "dup", AccountRole.OPERATOR)
    with pytest.raises(AccountError, match="already exists"):
        _account(engine, "dup", AccountRole.ADMIN)


def test_a_disabled_account_is_refused_and_gets_no_new_credentials(engine: Engine, site) -> None:
    nurse = _nurse_with_grants(engine)
    account = _account(engine, "n2", AccountRole.NURSE, actor_id=nurse)
    device = register_device(engine, nurse, DeviceKey.generate().public_key_bytes, now=NOW,
                             ids=IdSource(), by="test")
    window = dict(window_start=NOW - timedelta(hours=1), window_end=NOW + timedelta(hours=16))
    assert issue_for_shift(engine, site.secrets.issuer, [device.id], now=NOW, ids=IdSource(), **window)

    set_account_disabled(engine, account, True, now=NOW, by="account:admin")
    with engine.connect() as conn:
        with pytest.raises(AccountDisabled):
            principal_by_id(conn, account, via="session")
        with pytest.raises(AccountDisabled):
            principal_for_subject(conn, DEV_ISSUER, "n2", via="dev")
    with pytest.raises(IssuanceRefused):
        issue_for_shift(engine, site.secrets.issuer, [device.id], now=NOW, ids=IdSource(), **window)

    set_account_disabled(engine, account, False, now=NOW, by="account:admin")
    with engine.connect() as conn:
        assert principal_by_id(conn, account, via="session") is not None
        actions = [r.action for r in conn.execute(
            select(t.audit_events.c.action).where(t.audit_events.c.subject == account)
            .order_by(t.audit_events.c.seq))]
        assert actions == ["account:created", "account:disabled", "account:enabled"]
        assert verify_audit(conn).ok
