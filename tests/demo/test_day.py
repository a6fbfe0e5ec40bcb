"""The main job: a small synthetic day, run twice with one seed, and once on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from portner.demo.day import DemoOptions, run_demo


def _day(folder: Path, seed: int = 11, **kw: Any) -> dict[str, Any]:
    kw = {"residents": 70, "staff": 10, **kw}
    options = DemoOptions(seed=seed, data_dir=folder, use_fixtures=False, json=True, **kw)
    return run_demo(options, console=Console(quiet=True))


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _day(tmp_path_factory.mktemp("demo") / "day")


def test_the_day_happens_and_the_audit_chain_verifies(summary: dict[str, Any]) -> None:
    v, d, r = summary["visits"], summary["doors"], summary["revocation"]
    assert summary["audit"]["ok"] is True
    assert v["planned"] > 100
    assert v["keyed"] > 0
    assert v["opened"] > 0.8 * v["keyed"]
    assert v["cancelled"] == 1  # the mid-day cancellation, and nothing else
    assert v["physical_key"] > 0
    assert d["opened_while_platform_unreachable"] > 0
    assert r["lost_phone_revoked"] is True
    assert r["lists_published"] >= 2  # after the cancellation and after the lost phone
    # Every refusal has a reason, and the very late nurses were refused as expired.
    assert sum(d["denied_reasons"].values()) == d["denied"]
    assert d["denied_reasons"].get("expired", 0) > 0
    # Each completed visit went back to the care record exactly once.
    assert summary["write_back"]["encounters_delivered"] == v["completed"]
    folder = Path(summary["write_back"]["folder"])
    encounters = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert len(encounters) == v["completed"]
    assert all(e["resourceType"] == "Encounter" and e["status"] == "finished" for e in encounters)
    assert summary["time_saved"]["minutes_saved"] > 0


def test_the_relay_faults_are_detected(summary: dict[str, Any]) -> None:
    """The demo's relays duplicate, reorder and drop uploads now and then; none goes unnoticed."""
    anomalies = summary["locks"]["log_anomalies_detected"]
    assert set(anomalies) <= {"duplicate", "reordered", "gap", "withheld"}
    assert sum(anomalies.values()) > 0


def test_a_fixed_seed_reproduces_the_day(summary: dict[str, Any], tmp_path: Path) -> None:
    again = _day(tmp_path / "again")
    for part in ("import", "visits", "doors", "revocation", "locks", "time_saved", "audit"):
        assert again[part] == summary[part], part


def test_the_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="refusing to wipe"):
        _day(precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_the_demo_runs_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    result = _day(tmp_path / "pg", db_url=pg_url)
    assert result["audit"]["ok"] is True
    assert result["visits"]["cancelled"] == 1


def test_the_day_runs_with_its_locks_behind_zigbee2mqtt(mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    """The same day with every lock a Zigbee keypad lock reached only through the broker: codes
    for the visit grants, placed and removed by the reconciler, typed at the doors, reported back
    and linked to their visits; none left on a lock after its window."""
    host, port = mqtt_broker
    s = _day(tmp_path / "zigbee", residents=30, staff=6, locks="zigbee2mqtt", broker=f"mqtt://{host}:{port}")
    z, d = s["zigbee2mqtt"], s["doors"]
    assert s["audit"]["ok"] is True
    assert z["locks"] == s["locks"]["count"] > 0
    assert z["codes"]["issued"] > 0 and z["codes"]["shown_once"] == z["codes"]["issued"]
    assert z["codes"]["on_a_lock_after_their_window"] == 0
    assert 0 < z["codes"]["confirmed_by_locks"] <= sum(z["codes"]["placements"].values())
    # A code removed late (the platform was unreachable at its window's end) has its alarm.
    assert z["alarms"].get("removal_overdue", 0) >= z["codes"]["removed_late"]
    # Visits that got in through the keypad were closed by the lock key on leaving, and written back.
    assert s["visits"]["completed"] > 0.8 * z["recorded"]["linked_to_visits"] / 1.5
    assert s["write_back"]["encounters_delivered"] == s["visits"]["completed"]
    assert set(z["codes"]["placements"]) <= {"removed", "confirmed", "pending"}
    assert z["keypad"]["opened"] > 0.8 * z["keypad"]["attempts"]
    # Every opening typed at a door came back through the broker and was linked to its visit.
    assert z["recorded"]["keypad_unlocks"] == z["keypad"]["opened"] == d["opened"]
    assert z["recorded"]["linked_to_visits"] == z["recorded"]["keypad_unlocks"]
    assert d["opened_while_platform_unreachable"] > 0
    assert s["visits"]["opened"] > 0
    assert z["radio_commands"] > 0
