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


# What a keypad lock can be: PINs of 1..16 digits (no lock we know takes more), slots 1..65535
# (Portner's slot numbers, see attribution.MAX_SLOT), and an interval that is not a day.
MAX_CODE_LENGTH = 16
MAX_SLOTS = 65_535
MAX_COMMAND_INTERVAL_S = 3600
_DIGITS = frozenset("0123456789")


def _whole(value: object, low: int, high: int) -> int | None:
    """An integer low..high (5 and 5.0; not True, "5", 5.5 or 10**30), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _code_rules(rules: object, where: str) -> CodeRules | None:
    if rules is None:
        return None
    if not isinstance(rules, Mapping):
        raise ManifestError(f"{where}.code_rules is not a code-rules object")
    lengths = rules.get("lengths")
    if lengths:
        if not isinstance(lengths, list):
            raise ManifestError(f"{where}.code_rules.lengths must be a list of whole numbers")
        parsed = [_whole(n, 1, MAX_CODE_LENGTH) for n in lengths]
        if any(n is None for n in parsed):
            raise ManifestError(f"{where}.code_rules.lengths must hold whole numbers "
                                f"1..{MAX_CODE_LENGTH}")
    alphabet = rules.get("alphabet", "0123456789")
    # Keypads and the Zigbee/Matter PIN fields take ASCII digits; "١٢٣" or "*#" would make codes
    # that no keypad can type (or that the code generator cannot judge as weak).
    if (not isinstance(alphabet, str) or not alphabet or not set(alphabet) <= _DIGITS
            or len(set(alphabet)) != len(alphabet)):
        raise ManifestError(f"{where}.code_rules.alphabet must be distinct ASCII digits 0-9")
    prefixes = rules.get("forbidden_prefixes", ())
    if not isinstance(prefixes, list | tuple) or not all(
            isinstance(x, str) and x and set(x) <= _DIGITS and len(x) <= MAX_CODE_LENGTH
            for x in prefixes):
        raise ManifestError(f"{where}.code_rules.forbidden_prefixes must be a list of digit strings")
    weak = rules.get("reject_weak", True)
    if not isinstance(weak, bool):
        raise ManifestError(f"{where}.code_rules.reject_weak must be true or false")
    return CodeRules(lengths=frozenset(parsed) if lengths else None,  # type: ignore[arg-type]
                     alphabet=alphabet, forbidden_prefixes=tuple(prefixes), reject_weak=weak)


def _slot_range(slots: object, where: str) -> SlotRange | None:
    if not slots:
        return None
    if not isinstance(slots, Mapping):
        raise ManifestError(f"{where}.slots must be an object with an integer 'count'")
    count = _whole(slots.get("count"), 1, MAX_SLOTS)
    if count is None:
        raise ManifestError(f"{where}.slots.count must be a whole number 1..{MAX_SLOTS}")
    first = _whole(slots.get("first_native", 1), 0, MAX_SLOTS)
    if first is None:
        raise ManifestError(f"{where}.slots.first_native must be a whole number 0..{MAX_SLOTS}")
    return SlotRange(count, first)


def _capabilities(entry: Mapping[str, Any], where: str) -> Capabilities:
    try:
        features = frozenset(Feature(f) for f in entry.get("features") or [])
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}.features: {exc}") from None
    code_rules = _code_rules(entry.get("code_rules"), where)
    slot_range = _slot_range(entry.get("slots"), where)
    interval = entry.get("min_command_interval_s", 2)
    if (isinstance(interval, bool) or not isinstance(interval, int | float)
            or not 0 <= interval <= MAX_COMMAND_INTERVAL_S):  # NaN fails this too
        raise ManifestError(f"{where}.min_command_interval_s must be a number "
                            f"0..{MAX_COMMAND_INTERVAL_S}")
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
