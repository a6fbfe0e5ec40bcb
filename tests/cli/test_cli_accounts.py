"""`portner accounts`: the first administrator of a new installation, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from portner.cli import main
from portner.services.accounts import DEV_ISSUER
from portner.storage import tables as t

IDP = "https://idp.example.no"


@pytest.fixture(autouse=True)
def _no_configured_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which provider is configured (PORTNER_OIDC_ISSUER), if any, and in which mode."""
    monkeypatch.delenv("PORTNER_OIDC_ISSUER", raising=False)
    monkeypatch.delenv("PORTNER_MODE", raising=False)


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
    assert code == 2 and "actor_id" in err
    code, out, _ = _run(capsys, "accounts", "list", *where, "--json")
    assert len(json.loads(out)) == 1  # nothing half-made


def test_listing_never_prints_a_national_id_given_as_a_subject_or_a_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    # Not a real person's: a provider that sends national ids as sub; a name typed with one.
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", IDP,
                "--subject", "01017012345", "--name", "IT 010170 12345")[0] == 0
    for extra in ([], ["--json"]):
        code, out, _ = _run(capsys, "accounts", "list", *where, *extra)
        assert code == 0
        assert "01017012345" not in out and "010170 12345" not in out


def test_what_was_typed_is_listed_as_typed_not_as_markup(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", IDP,
                "--subject", "s-1", "--name", "[/red] [b]IT[/b]")[0] == 0
    code, out, _ = _run(capsys, "accounts", "list", *where)
    assert code == 0 and "[/red] [b]IT[/b]" in out


@pytest.mark.parametrize(("flag", "value", "field"), [
    ("--subject", "   ", "subject"), ("--issuer", " ", "issuer"), ("--name", "a\x1b[31m", "display_name"),
    ("--subject", "s" * 201, "subject"),
])
def test_what_admin_refuses_the_command_refuses_too_and_a_new_municipality_goes_with_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, field: str) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "typo"]
    given = {"--issuer": IDP, "--subject": "s-1", "--name": "IT", flag: value}
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "admin",
                        *(x for pair in given.items() for x in pair))
    assert code == 2 and f"{field}:" in err
    code, _, err = _run(capsys, "accounts", "list", *where)
    assert code == 2 and "no municipality 'typo'" in err  # not made by the refused command


def test_listing_a_municipality_that_does_not_exist_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "accounts", "list", "--data-dir", str(tmp_path), "--municipality", "nosuch")
    assert code == 2 and "no municipality 'nosuch'" in err


def test_the_issuer_defaults_to_the_configured_provider_and_another_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    monkeypatch.setenv("PORTNER_OIDC_ISSUER", IDP)
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--subject", "s-1")[0] == 0
    for other in ("https://other.example.no", IDP + "/"):  # sign-in matches exactly: never usable
        code, _, err = _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", other,
                            "--subject", "s-2")
        assert code == 2 and "PORTNER_OIDC_ISSUER" in err
    code, out, _ = _run(capsys, "accounts", "list", *where, "--json")
    assert [(a["issuer"], a["subject"]) for a in json.loads(out)] == [(IDP, "s-1")]


def test_production_takes_the_providers_issuer_alone_and_development_the_development_sign_ins_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    monkeypatch.setenv("PORTNER_MODE", "production")
    # No provider configured: production would sign nobody in with this account.
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", IDP, "--subject", "s-1")
    assert code == 2 and "issuer:" in err and "PORTNER_OIDC_ISSUER" in err
    assert "no municipality 'nykommune'" in _run(capsys, "accounts", "list", *where)[2]  # not made
    monkeypatch.setenv("PORTNER_OIDC_ISSUER", IDP)
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", DEV_ISSUER,
                        "--subject", "s-2")
    assert code == 2 and "PORTNER_OIDC_ISSUER" in err
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--subject", "s-3")[0] == 0
    monkeypatch.setenv("PORTNER_MODE", "development")
    assert _run(capsys, "accounts", "add", *where, "--role", "admin", "--issuer", DEV_ISSUER,
                "--subject", "s-4")[0] == 0
    code, out, _ = _run(capsys, "accounts", "list", *where, "--json")
    assert sorted((a["subject"], a["issuer"]) for a in json.loads(out)) == [("s-3", IDP), ("s-4", DEV_ISSUER)]


def test_without_a_configured_provider_the_issuer_must_be_given_and_an_integration_needs_a_scope(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTNER_OIDC_ISSUER", raising=False)
    where = ["--data-dir", str(tmp_path), "--municipality", "nykommune"]
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "admin", "--subject", "s-1")
    assert code == 2 and "--issuer" in err
    code, _, err = _run(capsys, "accounts", "add", *where, "--role", "integration", "--issuer", IDP,
                        "--subject", "care-record-client")
    assert code == 2 and "--scope" in err
    assert _run(capsys, "accounts", "add", *where, "--role", "integration", "--issuer", IDP,
                "--subject", "care-record-client", "--scope", "portner.fhir.import")[0] == 0
