"""The Matter backend: one connection to a Matter server, its locks, and their event stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from portner.locks.matter import cluster as dl
from portner.locks.matter.client import MatterClientError, MatterServerClient
from portner.locks.matter.events import event_key, translate
from portner.locks.matter.lock import MatterLock
from portner.locks.matter.node import NodeCache
from portner.locks.port import (
    Condition,
    HealthEvent,
    KeypadCode,
    LockEvent,
)

LOGGER = logging.getLogger(__name__)

PortEvent = LockEvent | HealthEvent

# After a dropped connection the backend reconnects by itself (events would otherwise stop until
# the next command), with capped exponential backoff and jitter.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 30.0


class MatterBackend:
    """A LockBackend over the Matter server WebSocket API (see portner.locks.matter.client)."""

    name = "matter"

    def __init__(
        self,
        url: str,
        *,
        now: Callable[[], datetime],
        zone: ZoneInfo,
        timeout: float,
        remote_pin: KeypadCode | None = None,
    ) -> None:
        self.nodes = NodeCache()
        self.client = MatterServerClient(url, timeout=timeout, on_event=self._on_event)
        self.client.nodes_on_listen = self.nodes.replace_all
        self._now = now
        self._zone = zone
        self._remote_pin = remote_pin
        self._locks: dict[str, MatterLock] = {}
        self._queue: asyncio.Queue[PortEvent] = asyncio.Queue()
        self._disconnected = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._jitter = random.Random()

    async def start(self) -> None:
        """Connect and listen. An unreachable server does not stop the platform: its locks read
        UNREADABLE and refuse writes as OFFLINE until the server answers (F18)."""
        try:
            await self.client.ensure_connected()
        except MatterClientError as exc:
            LOGGER.warning("Matter backend starts without its server: %s", exc)
            self._disconnected.set()
        self._keeper = asyncio.create_task(self._keep_connected(), name="matter-reconnect")

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self.client.close()

    async def _keep_connected(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        while True:
            await self._disconnected.wait()
            try:
                await self.client.ensure_connected()
            except MatterClientError:
                await asyncio.sleep(delay * self._jitter.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            delay = RECONNECT_FIRST_SECONDS
            if self.client.connected:
                self._disconnected.clear()

    def lock(self, address: str) -> MatterLock:
        if address not in self._locks:
            self._locks[address] = MatterLock(
                address,
                client=self.client,
                nodes=self.nodes,
                zone=self._zone,
                remote_pin=self._remote_pin,
            )
        return self._locks[address]

    async def events(self) -> AsyncIterator[PortEvent]:
        while True:
            yield await self._queue.get()

    # --- server events -> cache and port events ------------------------------------------------

    def _addresses(self, node_id: Any, endpoint: Any = None) -> list[str]:
        found = [
            a
            for a, lock in self._locks.items()
            if lock.node_id == node_id
            and (endpoint is None or lock.endpoint_hint in (None, endpoint))
        ]
        return found or ([str(node_id)] if isinstance(node_id, int) else [])

    def _on_event(self, name: str, data: Any) -> None:
        received_at = self._now()
        if name == "attribute_updated" and isinstance(data, list) and len(data) == 3:
            node_id, path, value = data
            self.nodes.update_attribute(node_id, path, value)
            if (
                isinstance(path, str)
                and path.endswith(f"/{dl.POWER_SOURCE}/{dl.BAT_PERCENT_REMAINING}")
                and isinstance(value, int)
            ):
                for address in self._addresses(node_id):
                    self._queue.put_nowait(
                        HealthEvent(
                            address,
                            Condition.BATTERY,
                            received_at,
                            f"matter:{address}:battery:{value}",
                            percent=value / 2,
                        )
                    )
        elif name in ("node_added", "node_updated") and isinstance(data, dict):
            before = self.nodes.available(data.get("node_id", -1))
            self.nodes.put(data)
            after = self.nodes.available(data.get("node_id", -1))
            if after is not None and after != before:
                condition = Condition.ONLINE if after else Condition.OFFLINE
                for address in self._addresses(data.get("node_id")):
                    self._queue.put_nowait(
                        HealthEvent(
                            address,
                            condition,
                            received_at,
                            f"matter:{address}:{condition}:{received_at.isoformat()}",
                        )
                    )
        elif name == "node_removed":
            self.nodes.remove(data)
        elif name == "node_event" and isinstance(data, dict):
            self._node_event(data, received_at)
        elif name == "portner_disconnected":
            self.nodes.mark_all_unknown()
            self._disconnected.set()

    def _node_event(self, data: dict[str, Any], received_at: datetime) -> None:
        for address in self._addresses(data.get("node_id"), data.get("endpoint_id")):
            lock = self._locks.get(address)
            slots = None
            if lock is not None:
                try:
                    slots = lock.slot_range()
                except LookupError:
                    slots = None
            event = translate(address, data, received_at=received_at, slots=slots)
            if event is None:
                continue
            if isinstance(event, HealthEvent) and event.condition is Condition.JAMMED:
                self.nodes.set_jammed(address, True)
            self._queue.put_nowait(event)
            if isinstance(event, LockEvent) and event.success and self.nodes.jammed(address):
                # A lock that operates again is no longer jammed; no timer ever clears it (F29).
                self.nodes.set_jammed(address, False)
                self._queue.put_nowait(
                    HealthEvent(
                        address,
                        Condition.UNJAMMED,
                        received_at,
                        event_key(address, f"{data.get('event_number')}:unjammed"),
                        lock_time=event.lock_time,
                    )
                )
