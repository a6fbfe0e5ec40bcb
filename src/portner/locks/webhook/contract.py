"""The "portner-webhook/1" contract's documents: the manifest and the typed command results
(pure: no I/O).

**`GET {base}/manifest`** answers `{"contract": "portner-webhook/1", "vendor": str, "version": str,
"locks": [lock...]}`; a lock is `{"address": str, "model": str, "features": [Feature values],
"code_rules": {"lengths": [int], "alphabet": str, "forbidden_prefixes": [str], "reject_weak": bool}
| null, "slots": {"count": int, "first_native": int} | null, "masked_reads": bool,
"min_command_interval_s": number}`. Absent means unknown, never zero.

**Typed results** (the answer to `POST /execute`, HTTP 200, and a `command.result` callback):
- `{"result": "success", "data": {...}}`: the lock confirmed (a write is on the lock, an operation
  happened); never for "accepted, not yet confirmed";
- `{"result": "denied", "reason": r, "conflict_slot"?: int, "detail"?: str}`: the lock or vendor said
  no; r is one of duplicate_code, already_exists, bad_code, lock_full, slot_out_of_range,
  bad_schedule, not_supported, not_authorised;
- `{"result": "temporary", "retry_after": seconds, "reason"?: offline|busy|jammed, "detail"?}`;
- `{"result": "permanent", "reason"?: r, "detail"?}`: the request cannot succeed as sent;
- `{"result": "pending"}`: accepted; the final result follows as a `command.result` callback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from portner.domain.errors import PortnerError
from portner.locks.port import (
    CONFIRMED,
    Capabilities,
    CodeRules,
    CommandResult,
    Feature,
    KeypadCode,
    Refusal,
    SlotRange,
    SlotReading,
    SlotState,
    refused,
)

CONTRACT = "portner-webhook/1"

_DENIALS = {r.value: r for r in Refusal if r.permanent}
_TRANSIENT = {"offline": Refusal.OFFLINE, "busy": Refusal.BUSY, "jammed": Refusal.JAMMED}
ALREADY_EXISTS = "already_exists"


def to_command_result(answer: object) -> CommandResult:
    """A vendor's typed result -> the port's answer. Anything else is a transient fault."""
    if not isinstance(answer, dict):
        return refused(Refusal.TEMPORARY, "the vendor's answer is not a typed result")
    kind, detail = answer.get("result"), str(answer.get("detail") or "")
    reason = str(answer.get("reason") or "")
    if kind == "success":
        return CONFIRMED
    if kind == "denied":
        refusal = Refusal.DUPLICATE_CODE if reason == ALREADY_EXISTS else _DENIALS.get(reason)
        if refusal is None:
            return refused(Refusal.NOT_SUPPORTED, f"denied for an unknown reason {reason!r}")
        slot = answer.get("conflict_slot")
        return refused(refusal, detail or f"denied: {reason}",
                       conflict_slot=slot if isinstance(slot, int) else None)
    if kind == "temporary":
        retry = answer.get("retry_after")
        if isinstance(retry, int | float):
            detail = f"{detail} (retry after {retry} s)".strip()
        return refused(_TRANSIENT.get(reason, Refusal.TEMPORARY), detail or "temporary error")
    if kind == "permanent":
        return refused(_DENIALS.get(reason, Refusal.NOT_SUPPORTED), detail or "permanent error")
    return refused(Refusal.TEMPORARY, f"unknown result kind {kind!r}")


def slot_reading(item: object) -> SlotReading | None:
    """One entry of a read_slots answer; None when it names no slot. A bad state or code is
    UNREADABLE, never EMPTY."""
    if not isinstance(item, dict) or not isinstance(item.get("slot"), int):
        return None
    try:
        state = SlotState(item.get("state"))
    except ValueError:
        return SlotReading(item["slot"], SlotState.UNREADABLE)
    code = item.get("code")
    if state is SlotState.KNOWN:
        try:
            known = KeypadCode(code)
        except ValueError:
            return SlotReading(item["slot"], SlotState.UNREADABLE)
        return SlotReading(item["slot"], state, known, enabled=item.get("enabled"))
    return SlotReading(item["slot"], state, enabled=item.get("enabled"))


# --- the manifest --------------------------------------------------------------------------------


class ManifestError(PortnerError, ValueError):
    """The vendor's manifest does not follow the contract; the message names the field."""


def _capabilities(entry: Mapping[str, Any], where: str) -> Capabilities:
    try:
        features = frozenset(Feature(f) for f in entry.get("features") or [])
    except ValueError as exc:
        raise ManifestError(f"{where}.features: {exc}") from None
    rules = entry.get("code_rules")
    slots = entry.get("slots")
    try:
        code_rules = None if rules is None else CodeRules(
            lengths=frozenset(int(n) for n in rules["lengths"]) if rules.get("lengths") else None,
            alphabet=str(rules.get("alphabet", "0123456789")),
            forbidden_prefixes=tuple(str(p) for p in rules.get("forbidden_prefixes", ())),
            reject_weak=bool(rules.get("reject_weak", True)))
    except (TypeError, ValueError, KeyError, AttributeError):
        raise ManifestError(f"{where}.code_rules is not a code-rules object") from None
    try:
        slot_range = None if not slots else SlotRange(int(slots["count"]),
                                                       int(slots.get("first_native", 1)))
    except (TypeError, ValueError, KeyError, AttributeError):
        raise ManifestError(f"{where}.slots needs an integer 'count'") from None
    interval = entry.get("min_command_interval_s", 2)
    if not isinstance(interval, int | float) or interval < 0:
        raise ManifestError(f"{where}.min_command_interval_s must be a non-negative number")
    return Capabilities(features=features, code_rules=code_rules, slots=slot_range,
                        masked_reads=bool(entry.get("masked_reads", False)),
                        min_command_interval=timedelta(seconds=interval),
                        model=str(entry.get("model", "")))


def parse_manifest(manifest: object) -> tuple[str, dict[str, Capabilities]]:
    """The manifest -> (vendor name, capabilities by lock address)."""
    if not isinstance(manifest, dict):
        raise ManifestError("the manifest is not a JSON object")
    if manifest.get("contract") != CONTRACT:
        raise ManifestError(f"manifest.contract must be {CONTRACT!r}, "
                            f"not {manifest.get('contract')!r}")
    locks = manifest.get("locks")
    if not isinstance(locks, list):
        raise ManifestError("manifest.locks must be a list")
    found: dict[str, Capabilities] = {}
    for i, entry in enumerate(locks):
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise ManifestError(f"manifest.locks[{i}].address must be a string")
        found[entry["address"]] = _capabilities(entry, f"manifest.locks[{i}]")
    return str(manifest.get("vendor", "")), found
