"""Accounts: who may sign in, as what, and turning them off.

An account ties what the OpenID provider says (issuer, subject) to a role and to the actor or
resident it is. Every change is audited in its own transaction. A disabled account is refused at
the next request (each request looks the account up), and its actor gets no new door credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from portner.domain.access import INTEGRATION_SCOPES, AccountRole, Principal
from portner.domain.errors import PortnerError
from portner.services.ids import IdSource
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import fetch_rows, instant_writer, read_instant

# The development sign-in's issuer; refused by the server outside development mode.
DEV_ISSUER = "urn:portner:development"


def sign_in_issuers(provider: str | None, *, development: bool) -> frozenset[str] | None:
    """The issuers whose accounts can sign in here, or None for any: in production, the OpenID
    provider's alone (`provider`, PORTNER_OIDC_ISSUER; none while it is not set); in
    development, it and the development sign-in's, or any while no provider is configured (an
    account made for one to come). Accounts are made of these only, and sessions honoured."""
    if not development:
        return frozenset({provider}) if provider else frozenset()
    return frozenset({provider, DEV_ISSUER}) if provider else None


class AccountError(PortnerError):
    """The account cannot be created or changed as asked."""


class AccountDisabled(PortnerError):
    """The account exists but is disabled: sign-in and API calls are refused."""


def create_account(
    engine: Engine,
    *,
    municipality_id: str,
    issuer: str,
    subject: str,
    role: AccountRole | str,
    now: datetime,
    ids: IdSource,
    by: str,
    actor_id: str | None = None,
    resident_id: str | None = None,
    display_name: str = "",
    scopes: Iterable[str] = (),
) -> str:
    """Create an account and return its id. The role decides which link it must have."""
    role = AccountRole(role)
    scope_set = sorted(set(scopes))
    unknown = [s for s in scope_set if s not in INTEGRATION_SCOPES]
    if unknown:
        raise AccountError(f"unknown scope {unknown[0]!r}; known: {', '.join(sorted(INTEGRATION_SCOPES))}")
    if scope_set and role is not AccountRole.INTEGRATION:
        raise AccountError("only integration accounts carry scopes")
    if role in (AccountRole.NURSE, AccountRole.RELATIVE) and not actor_id:
        raise AccountError(f"a {role.value} account needs the actor it is (actor_id)")
    if role is AccountRole.RESIDENT and not resident_id:
        raise AccountError("a resident account needs its resident (resident_id)")
    if not issuer or not subject:
        raise AccountError("an account needs the issuer and subject its sign-in provider gives")
    account_id = ids.new("acc")
    with engine.begin() as conn:
        if conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.issuer == issuer, t.accounts.c.subject == subject)
        ).first():
            raise AccountError("an account for this sign-in (issuer and subject) already exists")
        _check_links(conn, municipality_id, actor_id, resident_id)
        conn.execute(
            insert(t.accounts).values(
                id=account_id,
                municipality_id=municipality_id,
                issuer=issuer,
                subject=subject,
                role=role.value,
                actor_id=actor_id,
                resident_id=resident_id,
                display_name=display_name,
                scopes=" ".join(scope_set),
                created_at=now,
            )
        )
        append_audit(
            conn,
            [AuditEntry(now, by, "account:created", account_id, {"role": role.value, "actor": actor_id})],
        )
    return account_id


def _check_links(conn: Connection, municipality_id: str, actor_id: str | None, resident_id: str | None) -> None:
    if actor_id is not None:
        row = conn.execute(select(t.actors.c.municipality_id).where(t.actors.c.id == actor_id)).first()
        if row is None or row.municipality_id != municipality_id:
            raise AccountError(f"no actor {actor_id} in this municipality")
    if resident_id is not None:
        row = conn.execute(
            select(t.residents.c.municipality_id).where(t.residents.c.id == resident_id)
        ).first()
        if row is None or row.municipality_id != municipality_id:
            raise AccountError(f"no resident {resident_id} in this municipality")


def _principal(row: Row[Any], via: str) -> Principal:
    return Principal(
        account_id=row.id,
        municipality_id=row.municipality_id,
        role=AccountRole(row.role),
        actor_id=row.actor_id,
        resident_id=row.resident_id,
        display_name=row.display_name,
        scopes=frozenset(row.scopes.split()) if row.scopes else frozenset(),
        via=via,
    )


def principal_for_subject(conn: Connection, issuer: str, subject: str, *, via: str) -> Principal | None:
    """The account for a sign-in, or None when there is none. Raises AccountDisabled."""
    row = conn.execute(
        select(t.accounts).where(t.accounts.c.issuer == issuer, t.accounts.c.subject == subject)
    ).first()
    if row is None:
        return None
    if row.disabled_at is not None:
        raise AccountDisabled("this account is disabled")
    return _principal(row, via)


def principal_by_id(conn: Connection, account_id: str, *, via: str) -> Principal | None:
    """The account by id (a session holds only the id), or None. Raises AccountDisabled."""
    row = conn.execute(select(t.accounts).where(t.accounts.c.id == account_id)).first()
    if row is None:
        return None
    if row.disabled_at is not None:
        raise AccountDisabled("this account is disabled")
    return _principal(row, via)


# The account of a session and whether the session is over, in one statement: it runs on every
# request that carries a session, and the busiest handlers send it in one round trip with their
# own first reads (session_account_query). "?" marks parameters, as bulk.fetch_together takes them.
_PHONE_REVOKED_SINCE = "EXISTS (SELECT 1 FROM devices d WHERE d.actor_id = a.actor_id AND d.revoked_at > ?)"
_SESSION_ACCOUNT = (
    "SELECT a.id, a.municipality_id, a.role, a.actor_id, a.resident_id, a.display_name, a.scopes,"
    f" a.disabled_at, a.sessions_since, {_PHONE_REVOKED_SINCE}, a.issuer"
    " FROM accounts a WHERE a.id = ?"
)
# The staff member of a session's account, as a scalar subquery that is NULL unless the session
# may act in that role: of the municipality and (when given) of an issuer that may sign in here,
# not disabled, not signed out or one of its phones revoked since it signed in: the rules of
# principal_from_session_rows. For a statement that must touch nothing of a session that is
# over, such as one that locks rows before the session's account is checked (the check decides).
_SESSION_ACTOR = (
    "(SELECT a.actor_id FROM accounts a WHERE a.id = ? AND a.municipality_id = ? AND a.role = ?"
    " AND a.disabled_at IS NULL AND (a.sessions_since IS NULL OR a.sessions_since <= ?)"
    f" AND NOT {_PHONE_REVOKED_SINCE}{{issuers}})"
)


def session_actor_sql(conn: Connection, account_id: str, municipality_id: str, role: AccountRole,
                      signed_in_at: datetime, issuers: frozenset[str] | None = None,
                      ) -> tuple[str, tuple[Any, ...]]:
    """`_SESSION_ACTOR` ("?" marks its parameters) and its parameters, in order; `issuers`: the
    issuers whose accounts may sign in here (None: any)."""
    signed_in = instant_writer(conn)(signed_in_at)
    params = (account_id, municipality_id, role.value, signed_in, signed_in)
    if issuers is None:
        return _SESSION_ACTOR.format(issuers=""), params
    named = sorted(issuers)
    return _SESSION_ACTOR.format(issuers=f" AND a.issuer IN ({', '.join('?' * len(named)) or 'NULL'})"), \
        (*params, *named)


def session_account_query(
    conn: Connection, account_id: str, signed_in_at: datetime
) -> tuple[str, None, tuple[Any, ...]]:
    """The statement that reads a session's account, as bulk.fetch_together takes it (no IN
    list); its rows go to `principal_from_session_rows`."""
    return _SESSION_ACCOUNT, None, (instant_writer(conn)(signed_in_at), account_id)


def principal_from_session_rows(
    rows: Sequence[Sequence[Any]], signed_in_at: datetime, *, via: str,
    issuers: frozenset[str] | None = None,
) -> Principal | None:
    """The principal of a session signed in at `signed_in_at`, from its account's rows (see
    `principal_for_session`); with `issuers`, None for an account of any other issuer (one that
    could not sign in here: production honours no development account's session)."""
    if not rows:
        return None
    (account_id, municipality_id, role, actor_id, resident_id, display_name, scopes, disabled_at,
     sessions_since, phone_revoked_since, issuer) = rows[0]
    if issuers is not None and issuer not in issuers:
        return None
    if disabled_at is not None:
        raise AccountDisabled("this account is disabled")
    sessions_since = read_instant(sessions_since)
    if phone_revoked_since or (sessions_since is not None and signed_in_at < sessions_since):
        return None
    return Principal(
        account_id=account_id, municipality_id=municipality_id, role=AccountRole(role),
        actor_id=actor_id, resident_id=resident_id, display_name=display_name,
        scopes=frozenset(scopes.split()) if scopes else frozenset(), via=via,
    )


def principal_for_session(
    conn: Connection, account_id: str, signed_in_at: datetime, *, via: str,
    issuers: frozenset[str] | None = None,
) -> Principal | None:
    """The account of a session signed in at `signed_in_at`, or None when there is no such
    account (of `issuers`, when given) or the session is over: the person signed out since, or
    one of their phones was revoked since (a lost phone may still be signed in). Raises
    AccountDisabled."""
    sql, _, params = session_account_query(conn, account_id, signed_in_at)
    return principal_from_session_rows(fetch_rows(conn, sql, params), signed_in_at, via=via,
                                       issuers=issuers)


def get_account(conn: Connection, municipality_id: str, account_id: str) -> dict[str, object] | None:
    """One account of the municipality, shaped as `list_accounts` shapes each."""
    row = conn.execute(
        select(t.accounts).where(t.accounts.c.municipality_id == municipality_id, t.accounts.c.id == account_id)
    ).first()
    return None if row is None else _account_dict(row)


def end_sessions(engine: Engine, account_id: str, *, now: datetime) -> None:
    """Sign out: every session of the account signed in up to now is over."""
    with engine.begin() as conn:
        conn.execute(update(t.accounts).where(t.accounts.c.id == account_id).values(sessions_since=now))
        append_audit(conn, [AuditEntry(now, f"account:{account_id}", "session:ended", account_id, {})])


def set_account_disabled(
    engine: Engine, account_id: str, disabled: bool, *, now: datetime, by: str
) -> None:
    """Disable (or enable again) an account, and with it its actor's access to new credentials."""
    with engine.begin() as conn:
        row = conn.execute(select(t.accounts).where(t.accounts.c.id == account_id)).first()
        if row is None:
            raise AccountError(f"no account {account_id}")
        conn.execute(
            update(t.accounts)
            .where(t.accounts.c.id == account_id)
            .values(disabled_at=now if disabled else None)
        )
        if row.actor_id is not None:
            # Issuance refuses inactive actors: no new credential from the next request on.
            conn.execute(update(t.actors).where(t.actors.c.id == row.actor_id).values(active=not disabled))
        action = "account:disabled" if disabled else "account:enabled"
        append_audit(conn, [AuditEntry(now, by, action, account_id, {"actor": row.actor_id})])


def list_accounts(conn: Connection, municipality_id: str) -> list[dict[str, object]]:
    """Every account of the municipality, for the administrator."""
    rows = conn.execute(
        select(t.accounts).where(t.accounts.c.municipality_id == municipality_id).order_by(t.accounts.c.id)
    )
    return [_account_dict(r) for r in rows]


def _account_dict(r: Row[Any]) -> dict[str, object]:
    return {
        "id": r.id,
        "role": r.role,
        "issuer": r.issuer,
        "subject": r.subject,
        "actor_id": r.actor_id,
        "resident_id": r.resident_id,
        "display_name": r.display_name,
        "scopes": r.scopes.split() if r.scopes else [],
        "disabled": r.disabled_at is not None,
    }
