"""The command line as a user meets it: import, quarantine, access log, audit verify."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from portner.cli import main
from portner.demo.synthetic import generate_municipality


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # Visits on today's date would depend on the clock; the import horizon starts yesterday, so
    # generate the plans for a day well inside it: the CLI uses the real clock.
    generate_municipality(out, seed=3, day=date.today(), residents=40, staff=6, timezone="Europe/Oslo")
    return out


def _fhir(site: Path) -> list[str]:
    """The site's FHIR folders (installations.json beside them is Portner's own registry)."""
    return [str(site / "patients"), str(site / "practitioners"), str(site / "plans")]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_reports_problems_with_file_resource_and_field(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    code, out, _ = _run(capsys, "import", *_fhir(site), "--data-dir", data, "--accept-synthetic-ids", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["patients"] >= 30
    assert report["visits_added"] > 0
    assert report["grants_created"] > 0
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors, "the synthetic site carries deliberately bad records"
    assert all(p["file"] and p["resource"] and p["field"] for p in errors)
    assert {"unknown performer", "no time of day"} <= {p["message"] for p in errors}
    # The same files again change nothing.
    code, out, _ = _run(capsys, "import", *_fhir(site), "--data-dir", data, "--json")
    again = json.loads(out)
    assert again["visits_added"] == 0
    assert again["grants_created"] == 0
    assert again["plans_unchanged"] > 0
    # The quarantine holds each bad entry once, however often it was imported.
    code, out, _ = _run(capsys, "quarantine", "--data-dir", data, "--json")
    entries = json.loads(out)
    assert len(entries) == len({(e["file"], e["resource"], e["field"], e["message"]) for e in entries})
    assert len(entries) == len(errors)


def test_import_human_output_names_the_place(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "import", *_fhir(site), "--data-dir", str(tmp_path), "--accept-synthetic-ids", "--verbose")
    assert code == 0
    assert not re.search(r"(?<!\d)\d{11}(?!\d)", out), "a national id reached the output"
    assert "quarantined for correction" in out
    assert "unknown performer" in out
    assert "[yellow]" not in out  # markup is rendered, not printed


def test_strict_import_fails_when_anything_was_quarantined(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = _run(capsys, "import", *_fhir(site), "--data-dir", str(tmp_path), "--accept-synthetic-ids", "--strict", "--json")
    assert code == 1


def test_import_of_a_missing_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "import", str(tmp_path / "nope.json"), "--data-dir", str(tmp_path))
    assert code == 2
    assert "nope.json" in err


def test_synthetic_ids_are_refused_unless_configured(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "import", str(site / "patients"), "--data-dir", str(tmp_path), "--json")
    report = json.loads(out)
    assert report["patients"] == 0
    messages = {p["message"] for p in report["problems"]}
    assert "invalid national id number: synthetic test number not accepted" in messages
    assert messages <= {
        "invalid national id number: synthetic test number not accepted",
        "invalid national id number: check digit mismatch",  # the deliberately bad record
    }


def test_audit_verify_passes_then_detects_an_edit(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    _run(capsys, "import", *_fhir(site), "--data-dir", str(data), "--accept-synthetic-ids", "--json")
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data))
    assert code == 0
    assert "verified" in out
    engine = create_engine(f"sqlite:///{data / 'portner.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3"))
    engine.dispose()
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["ok"] is False
    assert result["first_bad_seq"] == 3


def test_audit_verify_detects_a_cut_tail_and_an_emptied_log(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting the newest entries and resetting the head keeps the chain consistent in itself;
    the signed checkpoint outside the database and the cross-checks still see it."""
    data = tmp_path / "d"
    _run(capsys, "import", *_fhir(site), "--data-dir", str(data), "--accept-synthetic-ids", "--json")
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    assert (code, json.loads(out)["checkpoints_checked"]) == (0, 1)
    engine = create_engine(f"sqlite:///{data / 'portner.sqlite'}")
    with engine.begin() as conn:
        last = conn.execute(text("SELECT max(seq) FROM audit_events")).scalar()
        conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": last})
        prev = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": last - 1}).scalar()
        conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": last - 1, "h": prev})
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    result = json.loads(out)
    assert code == 1
    assert any("was cut" in p for p in result["problems"])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events"))
        conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h"), {"h": bytes(32)})
    engine.dispose()
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    result = json.loads(out)
    assert code == 1
    assert any("grant(s) without their 'grant:created' audit entry" in p for p in result["problems"])


def test_access_log_for_unknown_resident(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "import", *_fhir(site), "--data-dir", str(tmp_path), "--accept-synthetic-ids", "--json")
    code, _, err = _run(capsys, "access-log", "--resident", "res-nobody", "--data-dir", str(tmp_path))
    assert code == 2
    assert "res-nobody" in err


def test_read_commands_do_not_create_a_municipality(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "d")
    _run(capsys, "import", *_fhir(site), "--data-dir", data, "--accept-synthetic-ids", "--json")
    for argv in (["residents"], ["quarantine"], ["audit", "verify"], ["access-log", "--resident", "res-x"]):
        code, _, err = _run(capsys, *argv, "--data-dir", data, "--municipality", "typo-kommune")
        assert code == 2, argv
        assert "no municipality 'typo-kommune'" in err
    engine = create_engine(f"sqlite:///{tmp_path / 'd' / 'portner.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM municipalities")).scalars().all() == ["kommune"]
    engine.dispose()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["import", "x.json", "--horizon-days", "-5"], "between 1 and 366"),
        (["access-log", "--resident", "res-x", "--reader", "12345678901"], "pseudonymous id"),
    ],
)
def test_bad_arguments_are_refused_by_name(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notadb.sqlite"
    bogus.write_bytes(b"this is not sqlite" * 100)
    code, _, err = _run(capsys, "residents", "--db", f"sqlite:///{bogus}", "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert "database could not be used" in err
    assert "Traceback" not in err


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    code, _, err = _run(capsys, "residents", "--data-dir", str(afile))
    assert code == 2
    assert "is not a folder" in err


def test_physical_keys_lists_visits_at_homes_without_an_elock(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    _run(capsys, "import", *_fhir(site), "--data-dir", data, "--accept-synthetic-ids", "--json")
    code, out, _ = _run(capsys, "physical-keys", "--data-dir", data, "--date", date.today().isoformat(), "--json")
    assert code == 0
    rows = json.loads(out)
    code, out, _ = _run(capsys, "residents", "--data-dir", data, "--json")
    without = {r["id"] for r in json.loads(out) if r["elock"] is None}
    assert rows, "the synthetic site has homes without an e-lock"
    assert {r["resident"] for r in rows} <= without


def test_two_databases_sharing_a_data_dir_keep_their_own_checkpoints(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    _run(capsys, "import", *_fhir(site), "--data-dir", data, "--accept-synthetic-ids", "--json")
    _run(capsys, "import", str(site / "patients"), "--data-dir", data, "--db", other, "--accept-synthetic-ids", "--json")
    for extra in ([], ["--db", other]):
        code, out, _ = _run(capsys, "audit", "verify", "--data-dir", data, *extra, "--json")
        result = json.loads(out)
        assert (code, result["problems"], result["checkpoints_checked"]) == (0, [], 1), extra


def test_checkpoints_fail_closed_when_removed(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "d"
    _run(capsys, "import", *_fhir(site), "--data-dir", str(data), "--accept-synthetic-ids", "--json")
    (data / "keys" / "audit-checkpoint.key").unlink()
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    assert code == 1
    assert any("checkpoint key" in p for p in json.loads(out)["problems"])
    assert not (data / "keys" / "audit-checkpoint.key").exists()  # verify never makes a key
    shutil.rmtree(data / "audit-checkpoints")
    code, out, _ = _run(capsys, "audit", "verify", "--data-dir", str(data), "--json")
    assert code == 1
    # It names the folder it looked in: the usual cause is another data directory.
    assert any("no signed checkpoint" in p and str(data) in p for p in json.loads(out)["problems"])
