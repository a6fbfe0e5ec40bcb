"""A vendor cloud behind the webhook contract (LockBackend), and Portner's callback receiver.

**`POST {base}/execute`** with `{"idempotency_key": str, "lock": address, "command": kind,
"args": {...}}`. Kinds and args: `read_slots {"slots": [int]}` -> data `{"slots": [{"slot", "state":
known|masked|empty|unreadable, "code"?, "enabled"?}]}`; `set_code {"slot", "code": str, "window":
{"start", "end"} (ISO 8601 with offset) | null}`; `clear_code {"slot"}`; `operate {"operation":
"lock"|"unlock"}`; `set_clock {"now", "zone"}`; `health {}` -> data `{"online", "battery_percent",
"jammed", "tamper", "lock_time", "bolt"}`. The vendor keeps a final result per idempotency key for
at least 24 h and answers a repeat with it, so Portner may resend after a lost answer. The answer
is one typed result (see contract.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

import httpx

from portner.locks.port import (
    BackendConfig,
    Capabilities,
    CommandResult,
    HealthEvent,
    LockEvent,
    Refusal,
    refused,
    timed_out,
)
from portner.locks.webhook.callbacks import parse_callback
from portner.locks.webhook.contract import ManifestError, parse_manifest, to_command_result
from portner.locks.webhook.lock import WebhookLock
from portner.locks.webhook.signing import ReplayGuard, decode_secret, signature_headers, verify


class WebhookBackend:
    """A vendor cloud behind the contract (LockBackend), plus Portner's callback receiver."""

    name = "webhook"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime],
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not config.url:
            raise ValueError("the webhook backend needs url (the vendor's contract base URL)")
        options = config.options
        if "secret" not in options:
            raise ValueError("the webhook backend needs options['secret'] (whsec_...)")
        self.url = config.url.rstrip("/")
        self.now = now
        self._key = decode_secret(options["secret"])
        self._callback_keys = [decode_secret(s) for s in
                               options.get("callback_secret", options["secret"]).split()]
        self._result_timeout = float(options.get("result_timeout", "30"))
        self._timeout = float(options.get("timeout", "10"))
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._replays = ReplayGuard()
        self._pending: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._queue: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()
        self._locks: dict[str, WebhookLock] = {}
        self.vendor = ""
        self.manifest: dict[str, Capabilities] = {}

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, transport=self._transport,
                                             timeout=self._timeout)
        await self.refresh_manifest()

    async def stop(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def lock(self, address: str) -> WebhookLock:
        return self._locks.setdefault(address, WebhookLock(self, address))

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            yield await self._queue.get()

    async def refresh_manifest(self) -> None:
        response = await self._send("GET", "/manifest", b"")
        if response.status_code != 200:
            raise ManifestError(f"GET /manifest answered {response.status_code}")
        try:
            self.vendor, self.manifest = parse_manifest(response.json())
        except ValueError as exc:
            raise ManifestError(str(exc)) from None

    async def _send(self, method: str, path: str, body: bytes) -> httpx.Response:
        if self._client is None:
            raise RuntimeError("the webhook backend is not started")
        headers = signature_headers(self._key, body, now=self.now())
        headers["content-type"] = "application/json"
        return await self._client.request(method, path, content=body, headers=headers)

    async def execute(self, lock: str, command: str, args: Mapping[str, Any], *,
                      idempotency_key: str | None = None
                      ) -> tuple[CommandResult, Mapping[str, Any]]:
        """One command, at most two sends under one idempotency key (the second only after a
        lost connection); a pending answer waits for its command.result callback."""
        key = idempotency_key or str(uuid.uuid4())
        body = json.dumps({"idempotency_key": key, "lock": lock, "command": command,
                           "args": args}).encode()
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await self._post_execute(body)
            if isinstance(answer, CommandResult):
                return answer, {}
            if answer.get("result") == "pending":
                try:
                    async with asyncio.timeout(self._result_timeout):
                        answer = await future
                except TimeoutError:
                    return timed_out(f"{command}: accepted, no result within "
                                     f"{self._result_timeout:g} s"), {}
            data = answer.get("data")
            return to_command_result(answer), data if isinstance(data, dict) else {}
        finally:
            self._pending.pop(key, None)

    async def _post_execute(self, body: bytes) -> CommandResult | Mapping[str, Any]:
        for attempt in (1, 2):
            try:
                response = await self._send("POST", "/execute", body)
                break
            except httpx.TimeoutException:
                return timed_out("the vendor did not answer in time")
            except httpx.TransportError as exc:
                if attempt == 2:
                    return refused(Refusal.OFFLINE, f"vendor unreachable ({type(exc).__name__})")
        status = response.status_code
        if status in (401, 403):
            return refused(Refusal.NOT_AUTHORISED, f"the vendor refused our signature ({status})")
        if status == 429 or status >= 500:
            retry = response.headers.get("retry-after")
            return refused(Refusal.TEMPORARY, f"the vendor answered {status}"
                           + (f" (retry after {retry} s)" if retry else ""))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            return refused(Refusal.TEMPORARY, f"the vendor answered {status} without a result")
        return answer

    def handle_callback(self, headers: Mapping[str, str], body: bytes
                        ) -> list[LockEvent | HealthEvent]:
        """Verify and take one vendor callback: its events are returned and also queued for
        events(); a late command result completes the waiting command. Raises CallbackRejected
        (BadSignature, StaleTimestamp, Replayed, MalformedCallback) with a clear message."""
        now = self.now()
        verified = verify(headers, body, self._callback_keys, now=now)
        events, late = parse_callback(body, received_at=now)
        # Remember the id only once the body is good: a vendor may fix and resend a bad one.
        self._replays.accept(verified, now)
        if late is not None:
            future = self._pending.get(late[0])
            if future is not None and not future.done():
                future.set_result(late[1])
        for event in events:
            self._queue.put_nowait(event)
        return events

    def release_callback(self, headers: Mapping[str, str]) -> None:
        """The caller could not keep a callback handle_callback took (its database was down, or
        an event failed a later check): forget its webhook-id so the vendor's retry is taken."""
        msg_id = {k.lower(): v for k, v in headers.items()}.get("webhook-id")
        if msg_id:
            self._replays.forget(msg_id)
