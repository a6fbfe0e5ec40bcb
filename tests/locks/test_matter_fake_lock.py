"""The fake Door Lock behind tests/locks/test_matter_fake_server.py, as matter.js 0.17.9 behaves.

Read from the installed `@matter/node/dist/esm/behaviors/door-lock/DoorLockServer.js`: FAILURE for
both a duplicate PIN and an occupied credential index (the spec's DUPLICATE 0x02 / OCCUPIED 0x03
with `spec_status=True`), INVALID_COMMAND (0x85) for a wrong PIN length, an index out of range,
clearing a missing credential or a year-day end not after its start, FAILURE with cluster code 3
for SetUser on an occupied user, and fabric checks on Modify. matter.js has no keypad; the one here
checks year-day windows inclusively at both ends, as the spec's LocalEndTime reads.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from portner.locks.schedules import matter_local_epoch

DOOR_LOCK = 257
OUR_FABRIC, OTHER_FABRIC = 1, 2


class StatusError(Exception):
    """A Matter status the device answers with; the message is matter.js's."""

    def __init__(self, message: str, code: int, cluster_code: int | None = None) -> None:
        suffix = f"code {code}" + (
            f"; cluster code {cluster_code}" if cluster_code is not None else ""
        )
        super().__init__(f"{message} ({suffix})")


class FakeDoorLock:
    """A Door Lock endpoint with PIN, USR and YDSCH, behaving as matter.js 0.17.9 does."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime],
        zone: str = "Europe/Oslo",
        users: int = 10,
        min_pin: int = 4,
        max_pin: int = 8,
        year_days: int = 2,
        spec_status: bool = False,
        require_pin_for_remote: bool = False,
    ) -> None:
        self.now, self.zone = now, ZoneInfo(zone)
        self.max_users, self.min_pin, self.max_pin, self.max_year_days = (
            users,
            min_pin,
            max_pin,
            year_days,
        )
        self.spec_status = spec_status
        self.require_pin_for_remote = require_pin_for_remote
        self.users: dict[int, dict[str, Any]] = {}
        self.credentials: dict[int, dict[str, Any]] = {}  # PIN credential index -> data, fabric
        self.year_day: dict[tuple[int, int], tuple[int, int]] = {}
        self.lock_state = 1
        self.emit: Callable[[int, dict[str, Any]], None] = lambda event_id, data: None
        self.set_attribute: Callable[[int, Any], None] = lambda attribute, value: None

    def attributes(self, endpoint: int) -> dict[str, Any]:
        features = (1 << 0) | (1 << 8) | (1 << 10)  # PIN, USR, YDSCH
        values = {
            0: self.lock_state,
            1: 0,
            2: True,
            17: self.max_users,
            18: self.max_users,
            21: self.max_year_days,
            23: self.max_pin,
            24: self.min_pin,
            27: 1,
            28: 1,
            37: 0,
            51: self.require_pin_for_remote,
            65532: features,
            65533: 8,
        }
        return {f"{endpoint}/{DOOR_LOCK}/{attr}": value for attr, value in values.items()}

    # --- the truth, for tests -------------------------------------------------------------------

    def code(self, index: int) -> str | None:
        credential = self.credentials.get(index)
        return credential["data"].decode("ascii") if credential else None

    def put_foreign(self, index: int, digits: str) -> None:
        """A code added by another administrator (another fabric), user and credential at `index`."""
        self.users[index] = {"type": 0, "status": 1, "fabric": OTHER_FABRIC, "credentials": {index}}
        self.credentials[index] = {"data": digits.encode("ascii"), "fabric": OTHER_FABRIC}

    # --- commands (payloads as the server hands them to matter.js: camelCase) -------------------

    def invoke(self, command: str, p: dict[str, Any]) -> Any:
        handler = getattr(self, f"_{command}", None)
        if handler is None:
            raise StatusError("Unsupported command", 0x81)
        return handler(p)

    def _user_index(self, index: Any) -> int:
        if not isinstance(index, int) or not 1 <= index <= self.max_users:
            raise StatusError("Invalid user index", 0x85)
        return index

    def _SetUser(self, p: dict[str, Any]) -> None:
        index = self._user_index(p["userIndex"])
        existing = self.users.get(index)
        if p["operationType"] == 0:
            if existing:
                raise StatusError("User slot is occupied", 1, 3)
            self.users[index] = {
                "type": p.get("userType") or 0,
                "status": p.get("userStatus") or 1,
                "fabric": OUR_FABRIC,
                "credentials": set(),
            }
        elif p["operationType"] == 2:
            if not existing:
                raise StatusError("User slot is available", 0x85)
            if p.get("userName") is not None and existing["fabric"] != OUR_FABRIC:
                raise StatusError("Cannot modify userName from different fabric", 0x85)
            for field, key in (("userType", "type"), ("userStatus", "status")):
                if p.get(field) is not None:
                    existing[key] = p[field]
        else:
            raise StatusError("Invalid operation type", 0x85)

    def _ClearUser(self, p: dict[str, Any]) -> None:
        index = self._user_index(p["userIndex"])
        user = self.users.pop(index, None)
        if user:
            for credential in user["credentials"]:
                self.credentials.pop(credential, None)
            self.year_day = {k: v for k, v in self.year_day.items() if k[0] != index}

    def _SetCredential(self, p: dict[str, Any]) -> dict[str, Any]:
        index, data = p["credential"]["credentialIndex"], base64.b64decode(p["credentialData"])

        def answer(status: int) -> dict[str, Any]:
            return {"status": status, "userIndex": None, "nextCredentialIndex": None}

        if p["credential"]["credentialType"] != 1 or not 0 <= index <= self.max_users:
            return answer(0x85)
        if not self.min_pin <= len(data) <= self.max_pin:
            return answer(0x85)
        if any(c["data"] == data for i, c in self.credentials.items() if i != index):
            return answer(2 if self.spec_status else 1)
        user_index = p.get("userIndex")
        if p["operationType"] == 0:
            if index in self.credentials:
                return answer(3 if self.spec_status else 1)
            user = self.users.get(user_index)
            if user is None or user["fabric"] != OUR_FABRIC:
                return answer(0x85)
            self.credentials[index] = {"data": data, "fabric": OUR_FABRIC}
            user["credentials"].add(index)
            return answer(0)
        existing = self.credentials.get(index)
        if existing is None or existing["fabric"] != OUR_FABRIC:
            return answer(0x85)
        if user_index is not None and index not in self.users.get(user_index, {}).get(
            "credentials", ()
        ):
            return answer(0x85)
        existing["data"] = data
        return answer(0)

    def _GetCredentialStatus(self, p: dict[str, Any]) -> dict[str, Any]:
        index = p["credential"]["credentialIndex"]
        owner = next((u for u, user in self.users.items() if index in user["credentials"]), None)
        exists = index in self.credentials
        return {
            "credentialExists": exists,
            "userIndex": owner if exists else None,
            "creatorFabricIndex": self.credentials[index]["fabric"] if exists else None,
            "lastModifiedFabricIndex": self.credentials[index]["fabric"] if exists else None,
            "nextCredentialIndex": None,
        }

    def _ClearCredential(self, p: dict[str, Any]) -> None:
        index = p["credential"]["credentialIndex"]
        if index not in self.credentials:
            raise StatusError("Credential not found", 0x85)
        del self.credentials[index]
        for user in self.users.values():
            user["credentials"].discard(index)

    def _SetYearDaySchedule(self, p: dict[str, Any]) -> None:
        if not 1 <= p["yearDayIndex"] <= self.max_year_days:
            raise StatusError("Invalid schedule index", 0x85)
        if self._user_index(p["userIndex"]) not in self.users:
            raise StatusError("User not found", 1)
        if p["localEndTime"] <= p["localStartTime"]:
            raise StatusError("End time must be after start time", 0x85)
        self.year_day[(p["userIndex"], p["yearDayIndex"])] = (
            p["localStartTime"],
            p["localEndTime"],
        )

    def _ClearYearDaySchedule(self, p: dict[str, Any]) -> None:
        if self._user_index(p["userIndex"]) not in self.users:
            raise StatusError("User not found", 1)
        self.year_day = {k: v for k, v in self.year_day.items() if k[0] != p["userIndex"]}

    def _LockDoor(self, p: dict[str, Any]) -> None:
        self._remote(1, p)

    def _UnlockDoor(self, p: dict[str, Any]) -> None:
        self._remote(2, p)

    def _remote(self, state: int, p: dict[str, Any]) -> None:
        operation = 0 if state == 1 else 1
        if self.require_pin_for_remote and "pinCode" not in p:
            self.emit(
                3,
                {
                    "lockOperationType": operation,
                    "operationSource": 7,
                    "operationError": 1,
                    "userIndex": None,
                    "fabricIndex": OUR_FABRIC,
                    "sourceNode": None,
                    "credentials": None,
                },
            )
            raise StatusError("PIN required for remote operation", 1)
        self._set_state(state)
        self.emit(
            2,
            {
                "lockOperationType": operation,
                "operationSource": 7,
                "userIndex": None,
                "fabricIndex": OUR_FABRIC,
                "sourceNode": 112233,
                "credentials": None,
            },
        )

    def _set_state(self, state: int) -> None:
        self.lock_state = state
        self.set_attribute(0, state)

    # --- at the door ----------------------------------------------------------------------------

    def enter(self, digits: str) -> None:
        index = next((i for i, c in self.credentials.items() if c["data"] == digits.encode()), None)
        owner = next((u for u, user in self.users.items() if index in user["credentials"]), None)
        error = None
        if index is None or owner is None:
            error = 1  # InvalidCredential
        elif self.users[owner]["type"] == 8 and not self._in_schedule(owner):
            error = 3  # Restricted
        if error is not None:
            self.emit(
                3,
                {
                    "lockOperationType": 1,
                    "operationSource": 3,
                    "operationError": error,
                    "userIndex": None,
                    "fabricIndex": None,
                    "sourceNode": None,
                    "credentials": None,
                },
            )
            return
        self._set_state(2)
        self.emit(
            2,
            {
                "lockOperationType": 1,
                "operationSource": 3,
                "userIndex": owner,
                "fabricIndex": None,
                "sourceNode": None,
                "credentials": [{"credentialType": 1, "credentialIndex": index}],
            },
        )

    def _in_schedule(self, user: int) -> bool:
        now = matter_local_epoch(self.now(), self.zone.key)
        return any(
            start <= now <= end for (u, _), (start, end) in self.year_day.items() if u == user
        )

    def turn_thumb(self) -> None:
        self._set_state(2 if self.lock_state == 1 else 1)
        self.emit(
            2,
            {
                "lockOperationType": 1 if self.lock_state == 2 else 0,
                "operationSource": 1,
                "userIndex": None,
                "fabricIndex": None,
                "sourceNode": None,
                "credentials": None,
            },
        )

    def jam(self) -> None:
        self._set_state(0)
        self.emit(0, {"alarmCode": 0})


def test_duplicate_and_occupied_answer_failure_as_matter_js_does() -> None:
    lock = FakeDoorLock(now=lambda: datetime(2026, 12, 3, 12, tzinfo=UTC))
    lock.invoke("SetUser", {"operationType": 0, "userIndex": 1})
    pin = base64.b64encode(b"4711").decode()
    add = {
        "operationType": 0,
        "credential": {"credentialType": 1, "credentialIndex": 1},
        "credentialData": pin,
        "userIndex": 1,
    }
    assert lock.invoke("SetCredential", add)["status"] == 0
    assert lock.invoke("SetCredential", add)["status"] == 1  # occupied index
    lock.invoke("SetUser", {"operationType": 0, "userIndex": 2})
    other = {**add, "credential": {"credentialType": 1, "credentialIndex": 2}, "userIndex": 2}
    assert lock.invoke("SetCredential", other)["status"] == 1  # duplicate data
    lock.spec_status = True
    assert lock.invoke("SetCredential", other)["status"] == 2
    assert lock.invoke("SetCredential", add)["status"] == 3
