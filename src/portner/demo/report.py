"""The demo's summary, printed for a manager: one table in plain words, then where to look."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(s: dict[str, Any], console: Console) -> None:
    """Print the day for a manager: one table, plain words."""
    v, d, r, ts = s["visits"], s["doors"], s["revocation"], s["time_saved"]
    table = Table(title=f"{s['municipality']}, {s['day']}: the day at a glance", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figure")
    table.add_row("Visits planned today", str(v["planned"]))
    table.add_row("Visits with phone keys", str(v["keyed"]))
    table.add_row("Visits where the door was opened", str(v["opened"]))
    table.add_row("Visits completed and written back", f"{v['completed']} ({s['write_back']['encounters_delivered']} Encounters)")
    table.add_row("Visits cancelled by the care record", str(v["cancelled"]))
    table.add_row("Visits missed (nobody got in)", str(v["missed"]))
    table.add_row("Visits needing a physical key", f"{v['physical_key']} (homes without an e-lock)")
    table.add_row("Nurses late", f"{v['late_arrivals']} within the grace time (doors opened)")
    table.add_row("Door openings", f"{d['opened']} of {d['attempts']} attempts")
    reasons = ", ".join(f"{k} {n}" for k, n in d["denied_reasons"].items()) or "none"
    why = "too late at the keypad" if s.get("zigbee2mqtt") else "too late or revoked keys"
    table.add_row("Refused at the door", f"{d['denied']} ({reasons}; {why})")
    table.add_row(
        "Platform unreachable",
        f"{s['outage']['from']}-{s['outage']['to']}: {d['opened_while_platform_unreachable']} doors still opened",
    )
    if not s.get("zigbee2mqtt"):  # (phone keys and their locks' own logs; keypad locks have their table below)
        table.add_row(
            "Lost phone",
            "revoked; finder refused at the door" if r["lost_phone_denied_at_door"]
            else ("revoked" if r["lost_phone_revoked"] else "-"),
        )
        anomalies = ", ".join(f"{k} {n}" for k, n in s["locks"]["log_anomalies_detected"].items()) or "none"
        table.add_row(
            "Lock logs",
            f"{s['locks']['uploads']} uploads; relay faults injected and detected: {anomalies}",
        )
        table.add_row("Low-battery alarms", str(s["locks"]["low_battery_alarms"]))
    table.add_row("Import problems quarantined", str(s["import"]["quarantined"]))
    table.add_row(
        "Staff time saved",
        f"{ts['hours_saved']} h ({ts['shifts_without_key_store_trip']} of {ts['staff_shifts']} shifts "
        f"skip the key store, {ts['baseline_minutes_per_shift']:.0f} min each)",
    )
    table.add_row("Audit chain", ("verified, " if s["audit"]["ok"] else "BROKEN, ") + f"{s['audit']['entries']} entries")
    console.print(table)
    if s.get("zigbee2mqtt"):
        _print_zigbee(s["zigbee2mqtt"], console)
    if s.get("example_resident"):
        flags = f"--data-dir {s['data_dir']} --municipality {s['municipality_id']}"
        if s.get("database"):
            flags += f" --db {s['database']}"
        console.print("Look closer (everything stays in the demo folder):")
        console.print(f"  .venv/bin/portner access-log {flags} --resident {s['example_resident']}", soft_wrap=True)
        console.print(f"  .venv/bin/portner audit verify {flags}", soft_wrap=True)
        console.print(f"  .venv/bin/portner residents {flags}", soft_wrap=True)
        console.print(f"  .venv/bin/portner quarantine {flags}", soft_wrap=True)
        console.print(f"  .venv/bin/portner physical-keys {flags} --date {s['day']}", soft_wrap=True)


REFUSED_WORDS = {
    "wrong_code": "code no longer on the lock (nurse too late, code already removed)",
    "outside_schedule": "outside the code's hours",
    "lockout": "keypad locked itself after wrong codes",
    "no_code_on_phone": "no code on the nurse's phone",
}
ALARM_WORDS = {
    "removal_overdue": "a code came off late",
    "code_rejected": "a lock refused a code",
    "write_unconfirmed": "a code did not reach a lock",
    "battery_low": "low battery",
    "jammed": "lock jammed",
    "wrong_code": "many wrong codes",
    "slot_foreign": "a code set outside Portner",
    "code_not_possible": "no code fits a door path",
}


def _words(counts: dict[str, int], words: dict[str, str]) -> str:
    return ", ".join(f"{n} {words.get(kind, kind.replace('_', ' '))}" for kind, n in counts.items()) or "none"


def _print_zigbee(z: dict[str, Any], console: Console) -> None:
    """The keypad locks behind Zigbee2MQTT: codes, what the locks confirmed, what they reported."""
    c, k, r = z["codes"], z["keypad"], z["recorded"]
    table = Table(title=f"{z['locks']} locks behind Zigbee2MQTT ({z['broker']})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figure")
    table.add_row("Keypad codes made for visit grants", f"{c['issued']} (each shown once to its nurse: {c['shown_once']})")
    table.add_row("Codes the locks confirmed", f"{c['confirmed_by_locks']} placements (a code per lock of the door path)")
    table.add_row("Codes taken back (visit over or cancelled)", str(c["withdrawn"]))
    late = (f"{c['removed_late']} removed more than {c['removal_margin_minutes']} min late (at most "
            f"{c['latest_removal_minutes']} min: the platform was unreachable), each with an alarm"
            if c["removed_late"] else "none removed late")
    table.add_row("Codes on a lock after their window", f"{c['on_a_lock_after_their_window']} now; {late}")
    table.add_row("Keypad openings", f"{k['opened']} of {k['attempts']} attempts")
    table.add_row("Refused at the keypad", _words(k["refused"], REFUSED_WORDS))
    table.add_row("Recorded from the locks' own reports",
                  f"{r['keypad_unlocks']} code openings, {r['linked_to_visits']} linked to their visit, "
                  f"{r['failed_attempts']} failed attempts")
    table.add_row("Radio commands to the locks", f"{z['radio_commands']} in {z['reconcile_passes']} reconciler passes")
    table.add_row("Lock alarms raised", _words(z["alarms"], ALARM_WORDS))
    console.print(table)
    console.print(f"Codes go on a lock {c['add_lead_minutes']} minutes before their window, so a platform "
                  "outage does not lock nurses out, and come off when the window ends (late only when "
                  "the platform was unreachable then).")
