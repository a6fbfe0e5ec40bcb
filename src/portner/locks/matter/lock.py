"""One Matter Door Lock through the Matter server: the LockPort over the Door Lock cluster.

Placement: Portner's slot N is the lock's user N and its PIN credential N (both 1-based;
credential index 0 is the programming PIN and is never touched). A code is written as
SetUser (a user of type ScheduleRestrictedUser when the lock enforces a window), then
SetYearDaySchedule or ClearYearDaySchedule, then SetCredential, so the PIN never works outside
its window, not even for a moment; every write is confirmed by GetCredentialStatus (F10).
PINs cannot be read back (the cluster reports only that a credential exists), so reads are
MASKED or EMPTY, never KNOWN, and a lock that does not answer reads UNREADABLE (F18).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from portner.locks.matter import cluster as dl
from portner.locks.matter.client import (
    MatterClientError,
    MatterServerClient,
    ServerError,
)
from portner.locks.matter.node import NodeCache, UnknownNode
from portner.locks.matter.outcomes import (
    Refused,
    check_write,
    failed,
    pin_octets,
    pin_ref,
    status_result,
)
from portner.locks.port import (
    CONFIRMED,
    Capabilities,
    CodeRules,
    CommandResult,
    Feature,
    Health,
    KeypadCode,
    LockWindow,
    Operation,
    Refusal,
    SlotRange,
    SlotReading,
    SlotState,
    refused,
    timed_out,
)

LOGGER = logging.getLogger(__name__)

TIMED_MS = 10_000  # LockDoor, UnlockDoor, SetUser, SetCredential, ClearUser... carry access "T"
_TIMED = {"LockDoor", "UnlockDoor", "SetUser", "SetCredential", "ClearUser", "ClearCredential"}


class MatterLock:
    """The LockPort for one Door Lock endpoint on one Matter node."""

    def __init__(
        self,
        address: str,
        *,
        client: MatterServerClient,
        nodes: NodeCache,
        zone: ZoneInfo,
        remote_pin: KeypadCode | None = None,
    ) -> None:
        self.address = address
        node, _, endpoint = address.partition("/")
        if not node.isdigit() or (endpoint and not endpoint.isdigit()):
            raise ValueError(f"a Matter lock address is 'node' or 'node/endpoint', not {address!r}")
        self.node_id = int(node)
        self._endpoint = int(endpoint) if endpoint else None
        self._client = client
        self._nodes = nodes
        self._zone = zone
        self._remote_pin = remote_pin

    @property
    def endpoint_hint(self) -> int | None:
        """The endpoint named in the address or found so far; None until known."""
        return self._endpoint

    @property
    def endpoint(self) -> int:
        if self._endpoint is None:
            self._endpoint = self._nodes.door_lock_endpoint(self.node_id)
        return self._endpoint

    async def _known(self) -> bool:
        """True when the server has told us about this lock (connecting first if need be)."""
        if not self._client.connected:
            try:
                await self._client.ensure_connected()
            except MatterClientError:
                return False
        try:
            return self.endpoint >= 0
        except UnknownNode:
            return False

    # --- discovery ---------------------------------------------------------------------------

    def _attr(self, attribute: int) -> Any:
        return self._nodes.attribute(self.node_id, self.endpoint, dl.DOOR_LOCK, attribute)

    async def capabilities(self) -> Capabilities:
        if not await self._known():
            return Capabilities(features=frozenset(), model="matter")  # unknown, not "none"
        features_map = self._attr(dl.Attr.FEATURE_MAP)
        if not isinstance(features_map, int):
            return Capabilities(features=frozenset(), model="matter")
        features = {Feature.REMOTE_OPERATION}
        keypad = bool(features_map & dl.FEATURE_PIN and features_map & dl.FEATURE_USR)
        if keypad:
            features |= {Feature.KEYPAD, Feature.USER_EVENTS}
        schedules = self._attr(dl.Attr.NUMBER_OF_YEAR_DAY_SCHEDULES_SUPPORTED_PER_USER)
        if (
            keypad
            and features_map & dl.FEATURE_YDSCH
            and isinstance(schedules, int)
            and schedules > 0
        ):
            features.add(Feature.LOCK_SCHEDULES)
        return Capabilities(
            features=frozenset(features),
            code_rules=self._code_rules() if keypad else None,
            slots=self.slot_range() if keypad else None,
            schedule_slots_per_user=schedules if Feature.LOCK_SCHEDULES in features else None,
            masked_reads=True,
            model="matter",
        )

    def slot_range(self) -> SlotRange | None:
        counts = [
            self._attr(dl.Attr.NUMBER_OF_PIN_USERS_SUPPORTED),
            self._attr(dl.Attr.NUMBER_OF_TOTAL_USERS_SUPPORTED),
        ]
        if not all(isinstance(c, int) and c > 0 for c in counts):
            return None  # zero or missing is "unknown", never "no slots" (F8)
        return SlotRange(count=min(counts))

    def _code_rules(self) -> CodeRules:
        low, high = self._attr(dl.Attr.MIN_PIN_CODE_LENGTH), self._attr(dl.Attr.MAX_PIN_CODE_LENGTH)
        if isinstance(low, int) and isinstance(high, int) and 1 <= low <= high:
            return CodeRules(lengths=frozenset(range(low, high + 1)))
        return CodeRules(lengths=None)

    async def health(self) -> Health:
        if not await self._known():
            return Health()
        state = self._attr(dl.Attr.LOCK_STATE)
        bolt = (
            {
                dl.LockState.LOCKED: "locked",
                dl.LockState.UNLOCKED: "unlocked",
                dl.LockState.UNLATCHED: "unlocked",
            }.get(state)
            if isinstance(state, int)
            else None
        )
        return Health(
            online=self._nodes.available(self.node_id),
            battery_percent=self._nodes.battery_percent(self.node_id),
            jammed=self._nodes.jammed(self.address),
            bolt=bolt,
        )

    # --- reads -------------------------------------------------------------------------------

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        caps = await self.capabilities()
        if not caps.features:
            return [SlotReading(slot, SlotState.UNREADABLE) for slot in slots]
        readings = []
        for slot in slots:
            if caps.slots is not None and not 1 <= slot <= caps.slots.count:
                readings.append(SlotReading(slot, SlotState.UNREADABLE))
                continue
            readings.append(await self._read_slot(slot))
        return readings

    async def _read_slot(self, slot: int) -> SlotReading:
        try:
            answer = await self._invoke("GetCredentialStatus", {"credential": pin_ref(slot)})
        except MatterClientError:
            return SlotReading(slot, SlotState.UNREADABLE)  # absence of an answer is not EMPTY
        exists = answer.get("credentialExists") if isinstance(answer, dict) else None
        if exists is True:
            return SlotReading(slot, SlotState.MASKED)
        if exists is False:
            return SlotReading(slot, SlotState.EMPTY)
        return SlotReading(slot, SlotState.UNREADABLE)  # an empty or odd answer (F10)

    # --- writes ------------------------------------------------------------------------------

    async def set_code(
        self, slot: int, code: KeypadCode, window: LockWindow | None = None, *,
        idempotency_key: str | None = None,  # Matter commands are idempotent per slot: not sent
    ) -> CommandResult:
        caps = await self.capabilities()
        problem = check_write(caps, slot, code, window)
        if problem is not None:
            return problem
        try:
            native = dl.year_day(window, self._zone) if window is not None else None
        except dl.BadSchedule as exc:
            return refused(Refusal.BAD_SCHEDULE, str(exc))
        try:
            created_user = await self._put_user(slot, restricted=native is not None)
            try:
                await self._put_schedule(slot, native, caps)
                await self._put_credential(slot, code)
            except Refused:
                if created_user:
                    await self._quietly("ClearUser", {"userIndex": slot})
                raise
        except Refused as stop:
            return stop.result
        return await self._confirm(slot, present=True)

    async def _put_user(self, slot: int, *, restricted: bool) -> bool:
        """Add the slot's user, or modify it when it exists; True when this call created it."""
        user = {
            "userIndex": slot,
            "userName": dl.check_user_name(dl.USER_NAME),
            "userUniqueId": None,
            "userStatus": dl.USER_STATUS_OCCUPIED_ENABLED,
            "userType": dl.USER_TYPE_SCHEDULE_RESTRICTED
            if restricted
            else dl.USER_TYPE_UNRESTRICTED,
            "credentialRule": dl.CREDENTIAL_RULE_SINGLE,
        }
        try:
            await self._invoke("SetUser", {"operationType": dl.OPERATION_ADD, **user})
            return True
        except ServerError as exc:
            if not (exc.cluster_status == dl.Status.OCCUPIED or exc.status == dl.Status.OCCUPIED):
                raise Refused(failed(exc, "SetUser")) from exc
        except MatterClientError as exc:
            raise Refused(failed(exc, "SetUser")) from exc
        await self._step(
            "SetUser", {"operationType": dl.OPERATION_MODIFY, **user, "userName": None}
        )
        return False

    async def _put_schedule(self, slot: int, native: dl.YearDay | None, caps: Capabilities) -> None:
        if native is not None:
            await self._step(
                "SetYearDaySchedule",
                {
                    "yearDayIndex": dl.YEAR_DAY_INDEX,
                    "userIndex": slot,
                    "localStartTime": native.local_start,
                    "localEndTime": native.local_end,
                },
                invalid=Refusal.BAD_SCHEDULE,
            )
        elif Feature.LOCK_SCHEDULES in caps.features:
            # A reused slot must not inherit the last holder's window (F2).
            await self._step(
                "ClearYearDaySchedule", {"yearDayIndex": dl.ALL_SCHEDULES, "userIndex": slot}
            )

    async def _put_credential(self, slot: int, code: KeypadCode) -> None:
        credential = {
            "credential": pin_ref(slot),
            "credentialData": pin_octets(code),
            "userIndex": slot,
            "userStatus": None,
            "userType": None,
        }
        status = await self._credential_status(
            "SetCredential", {"operationType": dl.OPERATION_ADD, **credential}
        )
        if status == dl.Status.SUCCESS:
            return
        if status == dl.Status.FAILURE:
            # matter.js answers FAILURE for both a duplicate and an occupied index: look.
            state = (await self._read_slot(slot)).state
            if state is SlotState.UNREADABLE:
                raise Refused(
                    timed_out(f"slot {slot}: SetCredential failed and the slot is unreadable")
                )
            status = dl.Status.OCCUPIED if state is SlotState.MASKED else dl.Status.DUPLICATE
        if status == dl.Status.OCCUPIED:
            # The slot holds a credential: ours to replace (same code re-set, or a new code).
            status = await self._credential_status(
                "SetCredential", {"operationType": dl.OPERATION_MODIFY, **credential}
            )
            if status == dl.Status.FAILURE:
                status = dl.Status.DUPLICATE  # Modify skips its own index, so this is a duplicate
            elif status == dl.Status.INVALID_COMMAND:
                raise Refused(
                    refused(
                        Refusal.NOT_AUTHORISED,
                        f"slot {slot} holds a credential of another user or fabric",
                    )
                )
        if status != dl.Status.SUCCESS:
            raise Refused(status_result(status, None, "SetCredential"))

    async def _credential_status(self, command: str, payload: dict[str, Any]) -> int | None:
        try:
            answer = await self._invoke(command, payload)
        except MatterClientError as exc:
            raise Refused(failed(exc, command)) from exc
        status = answer.get("status") if isinstance(answer, dict) else None
        return status if isinstance(status, int) else None

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        caps = await self.capabilities()
        if not caps.features:
            return refused(Refusal.OFFLINE, "the Matter server does not know this lock (yet)")
        if Feature.KEYPAD not in caps.features:
            return refused(Refusal.NOT_SUPPORTED, "this lock has no PIN users (Door Lock PIN+USR)")
        if slot < 1 or (caps.slots is not None and slot > caps.slots.count):
            return refused(Refusal.SLOT_OUT_OF_RANGE, f"slot {slot} is outside this lock's slots")
        try:
            try:
                await self._invoke("ClearCredential", {"credential": pin_ref(slot)})
            except ServerError as exc:
                if exc.unreachable or exc.status != dl.Status.INVALID_COMMAND:
                    raise
                # matter.js answers INVALID_COMMAND for "no such credential": the read below decides.
            # ClearUser also drops the user's schedules (spec 5.2.10.33), so no window outlives it.
            await self._invoke("ClearUser", {"userIndex": slot})
        except MatterClientError as exc:
            return failed(exc, "clear")
        return await self._confirm(slot, present=False)

    async def _confirm(self, slot: int, *, present: bool) -> CommandResult:
        reading = await self._read_slot(slot)
        if reading.state is SlotState.UNREADABLE:
            return timed_out(f"slot {slot}: the read-back did not answer")
        if (reading.state is SlotState.MASKED) == present:
            return CONFIRMED
        return refused(
            Refusal.WRITE_UNCONFIRMED, f"slot {slot}: the read-back does not show the change"
        )

    # --- operation and clock -------------------------------------------------------------------

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        command = "LockDoor" if operation is Operation.LOCK else "UnlockDoor"
        if not await self._known():
            return refused(Refusal.OFFLINE, "the Matter server does not know this lock (yet)")
        payload: dict[str, Any] = {}
        if self._attr(dl.Attr.REQUIRE_PIN_FOR_REMOTE_OPERATION) is True:
            if self._remote_pin is None:
                return refused(
                    Refusal.NOT_SUPPORTED, "the lock requires a PIN for remote operation"
                )
            payload["pinCode"] = pin_octets(self._remote_pin)
        try:
            await self._invoke(command, payload)
            path = f"{self.endpoint}/{dl.DOOR_LOCK}/{dl.Attr.LOCK_STATE}"
            values = await self._client.request(
                "read_attribute", {"node_id": self.node_id, "attribute_path": path}
            )
        except MatterClientError as exc:
            return failed(exc, command)
        state = values.get(path) if isinstance(values, dict) else None
        wanted = (
            {dl.LockState.LOCKED}
            if operation is Operation.LOCK
            else {dl.LockState.UNLOCKED, dl.LockState.UNLATCHED}
        )
        if state in wanted:
            return CONFIRMED
        return timed_out(f"{command} accepted, but the lock reports state {state}")

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        return refused(
            Refusal.NOT_SUPPORTED,
            "the Matter server keeps the lock's clock (Time Synchronization cluster)",
        )

    # --- plumbing ----------------------------------------------------------------------------

    async def _invoke(self, command: str, payload: dict[str, Any]) -> Any:
        args: dict[str, Any] = {
            "node_id": self.node_id,
            "endpoint_id": self.endpoint,
            "cluster_id": dl.DOOR_LOCK,
            "command_name": command,
            "payload": payload,
        }
        if command in _TIMED:
            args["timed_request_timeout_ms"] = TIMED_MS
        return await self._client.request("device_command", args)

    async def _step(
        self, command: str, payload: dict[str, Any], *, invalid: Refusal | None = None
    ) -> None:
        try:
            await self._invoke(command, payload)
        except MatterClientError as exc:
            result = failed(exc, command)
            if (
                invalid is not None
                and isinstance(exc, ServerError)
                and result.refusal is Refusal.BAD_CODE
            ):
                result = refused(invalid, result.detail)
            raise Refused(result) from exc

    async def _quietly(self, command: str, payload: dict[str, Any]) -> None:
        try:
            await self._invoke(command, payload)
        except MatterClientError:
            LOGGER.warning(
                "lock %s: %s after a refused write did not go through", self.address, command
            )
