"""From the Matter server's answers to Portner's CommandResult, and the checks made before any
radio traffic (F3, F7: what the lock's reported capabilities rule out is refused locally)."""

from __future__ import annotations

import base64

from portner.locks.matter import cluster as dl
from portner.locks.matter.client import (
    MatterClientError,
    RequestTimedOut,
    ServerError,
    ServerUnavailable,
)
from portner.locks.port import (
    Capabilities,
    CommandResult,
    Feature,
    KeypadCode,
    LockWindow,
    Refusal,
    refused,
    timed_out,
)


class Refused(Exception):
    """A step of a write ended the command with this result."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.detail)
        self.result = result


def pin_octets(code: KeypadCode) -> str:
    return base64.b64encode(code.reveal().encode("ascii")).decode("ascii")  # octstr is base64


def pin_ref(slot: int) -> dict[str, int]:
    return {"credentialType": dl.CREDENTIAL_TYPE_PIN, "credentialIndex": slot}


def failed(error: MatterClientError, what: str) -> CommandResult:
    """Map a transport or server error to an honest result (never a success)."""
    if isinstance(error, RequestTimedOut):
        return timed_out(f"{what}: no answer in time")
    if isinstance(error, ServerUnavailable):
        return refused(Refusal.OFFLINE, f"{what}: Matter server unreachable")
    assert isinstance(error, ServerError)
    if error.unreachable:
        return refused(
            Refusal.OFFLINE, f"{what}: the lock is not reachable (server error {error.error_code})"
        )
    return status_result(error.status, error.cluster_status, what)


def status_result(status: int | None, cluster_status: int | None, what: str) -> CommandResult:
    detail = f"{what} answered status {status if status is not None else 'unknown'}"
    if cluster_status == dl.Status.DUPLICATE or status == dl.Status.DUPLICATE:
        return refused(Refusal.DUPLICATE_CODE, detail)
    if status == dl.Status.RESOURCE_EXHAUSTED:
        return refused(Refusal.LOCK_FULL, detail)
    if status in (dl.Status.INVALID_COMMAND, dl.Status.CONSTRAINT_ERROR):
        return refused(Refusal.BAD_CODE, detail)
    return refused(Refusal.TEMPORARY, detail)


def check_write(
    caps: Capabilities, slot: int, code: KeypadCode, window: LockWindow | None
) -> CommandResult | None:
    """Refuse before any radio traffic what the lock's reported capabilities rule out."""
    if not caps.features:
        return refused(Refusal.OFFLINE, "the Matter server does not know this lock (yet)")
    if Feature.KEYPAD not in caps.features:
        return refused(Refusal.NOT_SUPPORTED, "this lock has no PIN users (Door Lock PIN+USR)")
    if caps.slots is not None and not 1 <= slot <= caps.slots.count:
        return refused(Refusal.SLOT_OUT_OF_RANGE, f"slot {slot} is outside 1..{caps.slots.count}")
    if slot < 1:
        return refused(Refusal.SLOT_OUT_OF_RANGE, "slot 0 would be the programming PIN")
    lengths = caps.code_rules.lengths if caps.code_rules else None
    if lengths is not None and len(code) not in lengths:
        return refused(
            Refusal.BAD_CODE, f"the lock takes PINs of {min(lengths)}-{max(lengths)} digits"
        )
    if not code.reveal().isdigit():
        return refused(Refusal.BAD_CODE, "a Matter PIN is digits only")
    if window is not None and Feature.LOCK_SCHEDULES not in caps.features:
        return refused(Refusal.NOT_SUPPORTED, "this lock cannot enforce year-day schedules")
    return None
