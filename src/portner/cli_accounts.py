"""`portner accounts`: who may sign in, from the command line.

The first administrator of a new installation has nobody to add them in /admin: the
municipality's IT adds them here, with the issuer and subject their OpenID provider gives, and
from then on administrators manage accounts in /admin. Integrations (the care record, lock
gateways) are added the same way, with their scopes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text
from sqlalchemy import delete

from portner.bootstrap import UnknownMunicipality, open_app, utcnow
from portner.domain.access import INTEGRATION_SCOPES, AccountRole
from portner.domain.errors import PortnerError
from portner.domain.national_id import redact_national_ids
from portner.services.accounts import list_accounts, sign_in_issuers
from portner.services.administration import Administration
from portner.services.ids import IdSource
from portner.storage import tables as t


def add_parsers(sub: Any, common: argparse.ArgumentParser, settings: Callable[[argparse.Namespace], Any],
                reader: Callable[[str], str]) -> None:
    p = sub.add_parser("accounts", help="who may sign in: add an account (the first administrator), list them")
    accounts_sub = p.add_subparsers(dest="accounts_command", required=True)

    a = accounts_sub.add_parser("add", parents=[common], help="add an account for a sign-in identity")
    a.add_argument("--role", required=True, choices=[r.value for r in AccountRole])
    a.add_argument("--issuer", help="the OpenID provider's issuer URL, exactly as the provider gives it "
                                    "(default and, when set, the only one: PORTNER_OIDC_ISSUER)")
    a.add_argument("--subject", required=True,
                   help="the identity's subject (sub) at that provider; an integration's client_id")
    a.add_argument("--name", default="", help="a display name (shown in /admin)")
    a.add_argument("--actor", help="the staff or relative actor id (nurse and relative accounts)")
    a.add_argument("--resident", help="the resident id (resident accounts)")
    a.add_argument("--scope", action="append", default=[], choices=sorted(INTEGRATION_SCOPES),
                   help="an integration's scope (repeat for several)")
    a.add_argument("--by", type=reader, default="cli:admin",
                   help="who adds it, as written to the audit log (a pseudonymous id; default cli:admin)")
    a.set_defaults(func=lambda args: _add(args, settings))

    ls = accounts_sub.add_parser("list", parents=[common], help="the municipality's accounts")
    ls.set_defaults(func=lambda args: _list(args, settings))


def _add(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from portner.cli import _checkpoint, _emit_json, console

    chosen = settings(args)
    issuer = args.issuer or chosen.oidc_issuer
    if not issuer:
        raise PortnerError("give --issuer: the sign-in provider's issuer (PORTNER_OIDC_ISSUER is not set)")
    if args.role == AccountRole.INTEGRATION.value and not args.scope:
        raise PortnerError("an integration account needs at least one --scope: without one it may do nothing")
    # A new installation's first command may be this one: the municipality is made if new, and
    # taken away again if the account is refused (a typo in --municipality leaves nothing).
    try:
        app, made = open_app(chosen), False
    except UnknownMunicipality:
        app, made = open_app(chosen, create=True), True
    # The checks /admin applies (trimmed text, no control characters, lengths, links that exist,
    # an issuer whose accounts can sign in).
    admin = Administration(engine=app.engine, municipality_id=app.municipality.id, by=args.by,
                           now=utcnow(), ids=IdSource(),
                           issuers=sign_in_issuers(chosen.oidc_issuer, development=chosen.development))
    try:
        account_id = admin.create_account(
            role=args.role, issuer=issuer, subject=args.subject, actor_id=args.actor,
            resident_id=args.resident, display_name=args.name, scopes=args.scope)
    except PortnerError:
        if made:
            with app.engine.begin() as conn:
                conn.execute(delete(t.municipalities).where(t.municipalities.c.id == app.municipality.id))
        raise
    _checkpoint(app)  # the audit chain's new head, signed, as after every command that writes
    if args.json:
        _emit_json({"id": account_id, "role": args.role, "municipality": app.municipality.id})
    else:
        console.print(Text(f"Account {account_id} ({args.role}) added to {app.municipality.id}: that "
                           f"identity can sign in through {issuer} now."))
    return 0


def _list(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from portner.cli import _emit_json, console

    app = open_app(settings(args))
    with app.engine.connect() as conn:
        rows = list_accounts(conn, app.municipality.id)
    # A provider's subject is pseudonymous, and a name is a name; but one given a national id
    # must not be printed with it.
    for row in rows:
        row["subject"] = redact_national_ids(str(row["subject"]))
        row["display_name"] = redact_national_ids(str(row["display_name"]))
    if args.json:
        _emit_json(rows)
        return 0
    # Text, not markup: what an administrator typed is shown as typed ("[b]" included).
    table = Table(title=Text(f"Accounts of {app.municipality.id}"))
    for column in ("id", "role", "name", "issuer", "subject", "linked to", "scopes", "state"):
        table.add_column(column, overflow="fold")  # folded, never cut: an id must be whole
    for r in rows:
        cells = (r["id"], r["role"], r["display_name"], r["issuer"], r["subject"],
                 r["actor_id"] or r["resident_id"] or "", " ".join(r["scopes"]),  # type: ignore[arg-type]
                 "disabled" if r["disabled"] else "active")
        table.add_row(*(Text(str(cell)) for cell in cells))
    console.print(table)
    return 0
