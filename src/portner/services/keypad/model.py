"""The reconciler's vocabulary: placement states, intents, and capabilities as stored JSON."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from portner.locks.port import Capabilities, CodeRules, Feature, SlotRange


class Intent(StrEnum):
    PRESENT = "present"  # the plan wants the code on the lock (within its window)
    ABSENT = "absent"  # revoked, used up or withdrawn: the code must leave the lock


class State(StrEnum):
    """What the lock has confirmed for one (code, lock); never copied from the intent (F22)."""

    PENDING = "pending"  # not on the lock as far as we know; write when due
    WRITING = "writing"  # a set_code command is out
    CONFIRMED = "confirmed"  # the lock confirmed the code in its slot
    WRITE_UNCONFIRMED = "write_unconfirmed"  # accepted, but the read-back did not show it (F10)
    UNVERIFIED = "unverified"  # was confirmed; a verification read got no answer (F18)
    SUSPECTED_MISSING = "suspected_missing"  # one read showed it gone; re-read before acting (F23)
    REMOVING = "removing"  # a clear_code is out, or waits for its retry (cancelled by a rewrite
    # in its slot when the plan wants the code again before that retry)
    REMOVED = "removed"  # the lock confirmed the slot empty (or the code never reached it)
    FAILED = "failed"  # a permanent refusal; an operator must act (F5, F6, F7)
    SUSPENDED = "suspended"  # an operator paused this placement


# States in which the code may be on the lock right now (so it must be removed when not wanted).
MAY_BE_ON_LOCK = frozenset({
    State.WRITING, State.CONFIRMED, State.WRITE_UNCONFIRMED, State.UNVERIFIED,
    State.SUSPECTED_MISSING, State.REMOVING,
})
# States the reconciler looks at again when they are due; failed, suspended and removed-for-good
# wait for a person or a plan change.
ACTIVE = frozenset(State) - {State.FAILED, State.SUSPENDED}


class Enforcement(StrEnum):
    LOCK = "lock"  # the lock enforces the window itself (LockWindow written with the code)
    SERVER = "server"  # Portner adds the code before the window and removes it at the end


class CommandKind(StrEnum):
    SET_CODE = "set_code"
    CLEAR_CODE = "clear_code"


class CommandState(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    TIMED_OUT = "timed_out"


def choose_enforcement(capabilities: Capabilities | None, lock_setting: str | None) -> Enforcement:
    """"lock" when the lock enforces schedules and its row does not say "server"; else "server".
    A lock row asking for "lock" on a lock without schedules still gets "server": it cannot."""
    if capabilities is None or Feature.LOCK_SCHEDULES not in capabilities.features:
        return Enforcement.SERVER
    if lock_setting == Enforcement.SERVER:
        return Enforcement.SERVER
    return Enforcement.LOCK


def capabilities_to_json(caps: Capabilities) -> dict[str, Any]:
    rules = caps.code_rules
    return {
        "features": sorted(f.value for f in caps.features),
        "code_rules": None if rules is None else {
            "lengths": None if rules.lengths is None else sorted(rules.lengths),
            "alphabet": rules.alphabet,
            "forbidden_prefixes": list(rules.forbidden_prefixes),
            "reject_weak": rules.reject_weak,
        },
        "slots": None if caps.slots is None else {
            "count": caps.slots.count, "first_native": caps.slots.first_native,
        },
        "schedule_slots_per_user": caps.schedule_slots_per_user,
        "masked_reads": caps.masked_reads,
        "min_command_interval_s": caps.min_command_interval.total_seconds(),
        "model": caps.model,
    }


def capabilities_from_json(data: dict[str, Any] | None) -> Capabilities | None:
    if not data:
        return None
    rules = data.get("code_rules")
    slots = data.get("slots")
    return Capabilities(
        features=frozenset(Feature(f) for f in data.get("features", ())),
        code_rules=None if rules is None else CodeRules(
            lengths=None if rules["lengths"] is None else frozenset(rules["lengths"]),
            alphabet=rules["alphabet"],
            forbidden_prefixes=tuple(rules["forbidden_prefixes"]),
            reject_weak=rules["reject_weak"],
        ),
        slots=None if slots is None else SlotRange(slots["count"], slots["first_native"]),
        schedule_slots_per_user=data.get("schedule_slots_per_user"),
        masked_reads=bool(data.get("masked_reads", False)),
        min_command_interval=timedelta(seconds=float(data.get("min_command_interval_s", 2.0))),
        model=data.get("model", ""),
    )
