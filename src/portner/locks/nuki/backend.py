"""The Nuki Web API account as a LockBackend: options, the locks, and the log poller's task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx

from portner.locks.nuki.auths import Auth, SlotNames
from portner.locks.nuki.client import NukiApi, Refused
from portner.locks.nuki.lock import NukiLock
from portner.locks.nuki.log import LogPoller
from portner.locks.nuki.wire import DEFAULT_URL
from portner.locks.port import BackendConfig, HealthEvent, LockEvent


class NukiBackend:
    """The Nuki Web API account: one HTTP client, the locks, and the log poller (LockBackend)."""

    name = "nuki"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime],
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        options = config.options
        token = options.get("token")
        if not token:
            raise ValueError("the nuki backend needs options['token'] (a Nuki Web API token)")
        self.url = (config.url or DEFAULT_URL).rstrip("/")
        self.now = now
        self.sleep = sleep
        self.poll_interval = _number(options, "poll_interval", 30.0)
        slot_count = int(_number(options, "slots", 100))
        self.confirm_polls = max(1, int(_number(options, "confirm_polls", 5)))
        self.confirm_interval = _number(options, "confirm_interval", 2.0)
        self.names = SlotNames(options.get("name_prefix", "portner-slot-"), slot_count)
        self.api = NukiApi(self.url, token, transport=transport,
                           timeout=_number(options, "timeout", 10.0))
        self._locks: dict[str, NukiLock] = {}
        self._slot_by_auth: dict[str, dict[str, int | None]] = {}
        self._queue: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()
        self._log = LogPoller(self.api, self._queue, now=now, slot_of_auth=self._slot_of_auth)
        self._poller: asyncio.Task[None] | None = None

    @property
    def slot_count(self) -> int:
        return self.names.count

    # --- LockBackend -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.api.open()
        if self._poller is None and self.poll_interval > 0:
            self._poller = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.api.close()

    def lock(self, address: str) -> NukiLock:
        if address not in self._locks:
            self._locks[address] = NukiLock(self, address)
        return self._locks[address]

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            yield await self._queue.get()

    async def discover(self) -> list[str]:
        """The smartlockIds this token can see (GET /smartlock)."""
        listing = await self.api.request("GET", "/smartlock")
        return [str(item["smartlockId"]) for item in listing
                if isinstance(item, dict) and "smartlockId" in item]

    def name_of(self, slot: int) -> str:
        """The auth name that carries Portner's `slot`."""
        return self.names.name_of(slot)

    # --- events ------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await self.poll_once()
            await self.sleep(self.poll_interval)

    async def poll_once(self) -> int:
        """Read every known lock's new log entries and state; queue their events. Returns how
        many were queued. Errors are health, not crashes: the next poll tries again."""
        return await self._log.poll_once(list(self._locks))

    def remember_auths(self, address: str, auths: list[Auth]) -> None:
        self._slot_by_auth[address] = {a.id: a.slot for a in auths}

    async def _slot_of_auth(self, address: str, auth_id: str) -> int | None:
        """The Portner slot of a log entry's authId, reading the auth list again if it is new."""
        slots = self._slot_by_auth.get(address, {})
        if auth_id not in slots:
            with contextlib.suppress(Refused):
                await self.lock(address).auths()
            slots = self._slot_by_auth.get(address, {})
        return slots.get(auth_id)


def _number(options: dict[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"options[{key!r}] must be a number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"options[{key!r}] must not be negative")
    return value
