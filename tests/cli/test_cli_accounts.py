"""`portner accounts`: the first administrator of a new installation, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from portner.cli import main
from portner.storage import tables as t

IDP = "https://idp.example.no"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_first_administrator_is_added_on_a_new_installation_and_audited(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    code, out, _ = _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", IDP,
                        "--subject", "it-admin-1", "--name", "IT-avdelingen", "--json")
    assert code == 0
    added = json.loads(out)
    assert (added["role"], added["municipality"]) == ("admin", "nykommune")

    code, out, _ = _run(capsys, "accounts", "list", *where, "--json")
    assert code == 0
    [account] = json.loads(out)
    assert (account["id"], account["role"], account["issuer"], account["subject"], account["disabled"]) == (
        added["id"], "admin", IDP, "it-admin-1", False)

    engine = create_engine(f"sqlite:///{tmp_path / 'portner.sqlite'}")
    with engine.connect() as conn:
        audited = conn.execute(select(t.audit_events.c.actor, t.audit_events.c.action, t.audit_events.c.subject)
                               .where(t.audit_events.c.action == "account:created")).all()
    engine.dispose()
    assert [tuple(a) for a in audited] == [("cli:admin", "account:created", added["id"])]
    assert _run(capsys, "audit", "verify", *where)[0] == 0


def test_a_second_account_for_the_same_identity_and_a_nurse_without_her_actor_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    admin = ["--role", "admin", "--issuer", IDP, "--subject", "it-admin-1"]
    assert _run(capsys, "accounts", "add", *where, *admin)[0] == 0
    code, _, err = _run(capsys, "accounts", "add", *where, *admin)
    assert code == 2 and "already exists" in err
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "nurse", "--issuer", IDP, "--subject", "n-1")
    assert code == 2 and "needs the actor" in err
    code, out, _ = _run(capsys, "accounts", "list", *where, "--json")
    assert len(json.loads(out)) == 1  # nothing half-made


def test_listing_never_prints_a_national_id_given_as_a_subject(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    synthetic = "01017012345"  # not a real person's: a provider that sends national ids as sub
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", IDP,
                "--subject", synthetic)[0] == 0
    for extra in ([], ["--json"]):
        code, out, _ = _run(capsys, "accounts", "list", *where, *extra)
        assert code == 0 and synthetic not in out


def test_listing_a_municipality_that_does_not_exist_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "accounts", "list", "--data-dir", str(tmp_path), "--municipality", "nosuch")
    assert code == 2 and "no municipality 'nosuch'" in err
