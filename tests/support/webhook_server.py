"""A local vendor cloud that follows Portner's webhook contract (see portner.locks.webhook).

It verifies Portner's Standard Webhooks signature on every request (401 otherwise), serves the
manifest and the execute endpoint over an in-memory set of keypad locks, keeps final results per
idempotency key, and makes signed callbacks (`callback(kind, data)` -> (headers, body)) that a test
hands to `WebhookBackend.handle_callback`, as the web app will.

Fault hooks: `next_results` (a list of typed results answered, in turn, instead of executing),
`lock.online = False` (temporary/offline answers, unreadable slots), `defer` (answer "pending" and
keep the result for `release()`, which returns the command.result callback), `http_status` (answer
that status instead of a result).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portner.locks.webhook import CONTRACT, CallbackRejected, signature_headers, verify

SLOTS = 8


@dataclass
class VendorLock:
    address: str
    online: bool = True
    masked: bool = False
    codes: dict[int, str] = field(default_factory=dict)
    bolt: str = "locked"
    sequence: int = 0


class VendorCloud:
    def __init__(self, key: bytes, callback_key: bytes, now: Any) -> None:
        self.key, self.callback_key, self.now = key, callback_key, now
        self.locks: dict[str, VendorLock] = {}
        self.mutex = threading.RLock()
        self.executed: list[dict[str, Any]] = []  # every execute request that passed the signature
        self.results: dict[str, dict[str, Any]] = {}  # idempotency key -> final result
        self.next_results: list[dict[str, Any]] = []
        self.defer = False
        self.deferred: list[tuple[str, dict[str, Any]]] = []
        self.http_status: int | None = None
        self.rejected = 0

    def add_lock(self, address: str, **kwargs: Any) -> VendorLock:
        with self.mutex:
            self.locks[address] = lock = VendorLock(address, **kwargs)
            return lock

    def manifest(self) -> dict[str, Any]:
        return {"contract": CONTRACT, "vendor": "Testvendor", "version": "1.0", "locks": [
            {"address": lock.address, "model": "TV-1",
             "features": ["keypad", "remote_operation", "user_events"],
             "code_rules": {"lengths": [6], "alphabet": "0123456789", "forbidden_prefixes": [],
                            "reject_weak": True},
             "slots": {"count": SLOTS, "first_native": 0}, "masked_reads": lock.masked,
             "min_command_interval_s": 1} for lock in self.locks.values()]}

    # --- commands ----------------------------------------------------------------------------

    def run(self, lock: VendorLock, command: str, args: dict[str, Any]) -> dict[str, Any]:
        if not lock.online:
            if command == "read_slots":
                return {"result": "success", "data": {"slots": [
                    {"slot": s, "state": "unreadable"} for s in args["slots"]]}}
            return {"result": "temporary", "reason": "offline", "retry_after": 60}
        if command == "read_slots":
            return {"result": "success", "data": {"slots": [self._reading(lock, s)
                                                            for s in args["slots"]]}}
        if command == "set_code":
            slot, code = args["slot"], args["code"]
            holder = next((s for s, c in lock.codes.items() if c == code), None)
            if holder == slot:
                return {"result": "success", "data": {}}
            if holder is not None:
                return {"result": "denied", "reason": "duplicate_code", "conflict_slot": holder}
            lock.codes[slot] = code
            return {"result": "success", "data": {}}
        if command == "clear_code":
            lock.codes.pop(args["slot"], None)
            return {"result": "success", "data": {}}
        if command == "operate":
            lock.bolt = "unlocked" if args["operation"] == "unlock" else "locked"
            return {"result": "success", "data": {}}
        if command == "health":
            return {"result": "success", "data": {"online": True, "battery_percent": 64,
                                                  "jammed": False, "bolt": lock.bolt}}
        return {"result": "permanent", "reason": "not_supported", "detail": "unknown command"}

    def _reading(self, lock: VendorLock, slot: int) -> dict[str, Any]:
        if slot not in lock.codes:
            return {"slot": slot, "state": "empty"}
        if lock.masked:
            return {"slot": slot, "state": "masked"}
        return {"slot": slot, "state": "known", "code": lock.codes[slot]}

    # --- callbacks -----------------------------------------------------------------------------

    def callback(self, kind: str, data: dict[str, Any], *, msg_id: str | None = None,
                 at: datetime | None = None) -> tuple[dict[str, str], bytes]:
        body = json.dumps({"type": kind, "timestamp": (at or self.now()).isoformat(),
                           "data": data}).encode()
        return signature_headers(self.callback_key, body, now=at or self.now(),
                                 msg_id=msg_id), body

    def lock_event(self, address: str, **fields: Any) -> tuple[dict[str, str], bytes]:
        with self.mutex:
            lock = self.locks[address]
            lock.sequence += 1
            data = {"lock": address, "id": f"ev-{lock.sequence}", "sequence": lock.sequence,
                    "occurred_at": self.now().isoformat(), "slot": None, "failure": "", **fields}
        return self.callback("lock.event", data)

    def press_keypad(self, address: str, digits: str) -> tuple[dict[str, str], bytes]:
        lock = self.locks[address]
        slot = next((s for s, c in lock.codes.items() if c == digits), None)
        return self.lock_event(address, operation="unlock", source="keypad",
                               success=slot is not None, slot=slot,
                               failure="" if slot is not None else "wrong_code")

    def release(self) -> tuple[dict[str, str], bytes]:
        """Finish the oldest deferred command; its command.result callback."""
        with self.mutex:
            key, result = self.deferred.pop(0)
            self.results[key] = result
        return self.callback("command.result", {"idempotency_key": key, "result": result})


def build_app(cloud: VendorCloud) -> Starlette:
    async def signed(request: Request) -> bytes | None:
        body = await request.body()
        try:
            verify(dict(request.headers), body, [cloud.key], now=cloud.now())
        except CallbackRejected:
            with cloud.mutex:
                cloud.rejected += 1
            return None
        return body

    async def manifest(request: Request) -> Response:
        if await signed(request) is None:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        with cloud.mutex:
            return JSONResponse(cloud.manifest())

    async def execute(request: Request) -> Response:
        body = await signed(request)
        if body is None:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        message = json.loads(body)
        with cloud.mutex:
            cloud.executed.append(message)
            if cloud.http_status is not None:
                return JSONResponse({"error": "injected"}, status_code=cloud.http_status)
            key = message["idempotency_key"]
            if key in cloud.results:  # a resend under the same key: the stored final result
                return JSONResponse(cloud.results[key])
            if cloud.next_results:
                return JSONResponse(cloud.next_results.pop(0))
            lock = cloud.locks.get(message["lock"])
            if lock is None:
                return JSONResponse({"result": "permanent", "reason": "not_supported",
                                     "detail": "no such lock"})
            result = cloud.run(lock, message["command"], message["args"])
            if cloud.defer:
                cloud.deferred.append((key, result))
                return JSONResponse({"result": "pending"})
            if result["result"] != "temporary":
                cloud.results[key] = result
            return JSONResponse(result)

    return Starlette(routes=[Route("/manifest", manifest, methods=["GET"]),
                             Route("/execute", execute, methods=["POST"])])


class VendorServer:
    def __init__(self, key: bytes, callback_key: bytes, now: Any = None) -> None:
        self.cloud = VendorCloud(key, callback_key, now or (lambda: datetime.now(UTC)))
        # IPPROTO_TCP so asyncio sets TCP_NODELAY (see tests/support/nuki_server.py).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/portner"
        app = Starlette(routes=[])
        app.mount("/portner", build_app(self.cloud))
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                                     access_log=False))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> VendorServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook vendor test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
