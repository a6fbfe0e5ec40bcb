"""Keypad codes as Nuki auths: Portner's slots are auth names ("portner-slot-07").

Nuki has no code slots; a keypad code is an authorization of type 13. The placement lives on the
lock account itself, so after a restart the adapter finds its codes by reading the auth list,
never by clearing and re-setting (F19). Codes with other names (made in the Nuki app) occupy no
Portner slot but still block a duplicate. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portner.locks.nuki.wire import KEYPAD_CODE, NAME_LIMIT, canonical, iso
from portner.locks.port import CommandResult, LockWindow, Refusal, refused


@dataclass(frozen=True, slots=True)
class Auth:
    """One keypad-code auth on a lock, with the Portner slot its name gives (None: not ours)."""

    id: str
    slot: int | None
    code: str | None
    enabled: bool
    window: tuple[str | None, str | None]


class SlotNames:
    """Slot numbers 1..count <-> auth names `prefix + "%02d"`."""

    def __init__(self, prefix: str, count: int) -> None:
        if not prefix or len(prefix) + len(str(count)) > NAME_LIMIT:
            raise ValueError("options['name_prefix'] must be non-empty and leave room for a slot "
                             f"number within Nuki's {NAME_LIMIT}-character names")
        self.prefix = prefix
        self.count = count
        self._name = re.compile(re.escape(prefix) + r"(\d+)$")

    def check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or not 1 <= slot <= self.count:
            raise ValueError(f"slot {slot!r} is outside this lock's slots 1..{self.count}")

    def outside(self, slot: int) -> CommandResult | None:
        """SLOT_OUT_OF_RANGE for a slot beyond 1..slots, decided before any request (F7)."""
        if isinstance(slot, int) and 1 <= slot <= self.count:
            return None
        return refused(Refusal.SLOT_OUT_OF_RANGE,
                       f"slot {slot!r} is outside this lock's slots 1..{self.count}")

    def name_of(self, slot: int) -> str:
        return f"{self.prefix}{slot:02d}"

    def slot_of(self, name: object) -> int | None:
        match = self._name.match(name) if isinstance(name, str) else None
        slot = int(match.group(1)) if match else None
        return slot if slot is not None and 1 <= slot <= self.count else None


def parse_auths(listing: list[Any], names: SlotNames) -> list[Auth]:
    """The keypad-code auths of a GET /smartlock/{id}/auth answer; other auth types are skipped."""
    found = []
    for item in listing:
        if not isinstance(item, dict) or item.get("type") != KEYPAD_CODE:
            continue
        code = item.get("code")
        found.append(Auth(
            id=str(item.get("id")), slot=names.slot_of(item.get("name")),
            code=str(code) if isinstance(code, int) else None,
            enabled=bool(item.get("enabled", True)),
            window=(canonical(item.get("allowedFromDate")),
                    canonical(item.get("allowedUntilDate")))))
    return found


def window_fields(window: LockWindow | None) -> dict[str, Any]:
    if window is None:
        return {"allowedWeekDays": 127, "allowedFromTime": 0, "allowedUntilTime": 0}
    # A LockWindow is one interval; Nuki's dates are instants, so no local-time conversion is
    # needed. Week days and minutes-after-midnight stay open (127, 0-0 = the whole day).
    return {"allowedFromDate": iso(window.start), "allowedUntilDate": iso(window.end),
            "allowedWeekDays": 127, "allowedFromTime": 0, "allowedUntilTime": 0}


def window_key(window: LockWindow | None) -> tuple[str | None, str | None]:
    """The window as `Auth.window` reads it back, to compare what is there with what is wanted."""
    return (None, None) if window is None else (iso(window.start), iso(window.end))
