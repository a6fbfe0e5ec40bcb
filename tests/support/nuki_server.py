"""A local Nuki Web API for tests: the published endpoints over an in-memory account of locks.

Follows the Nuki Web API contract as Portner's adapter uses it (bearer token; GET /smartlock,
GET /smartlock/{id}, POST /smartlock/{id}/action, GET/PUT /smartlock/{id}/auth, POST and DELETE
/smartlock/{id}/auth/{authId}, GET /smartlock/{id}/log newest first with fromDate/limit), and the
keypad firmware's code rules (6 digits, no 0, not starting with "12"; duplicates refused with 409).
Served by uvicorn on a free loopback port in a daemon thread.

Fault hooks (all thread-safe; tests call them from the event loop's thread):
- `fail_next(status, count=1, path=None, retry_after=None)`: the next matching requests answer
  `status` (429, 500, 503, 401...) before touching the model.
- `token`: change it and every request answers 401.
- `delay`: seconds every request waits before answering (client timeouts).
- `lock.swallow_actions`: actions answer 204 but never reach the lock (F26).
- `lock.visible_after_gets`: a new or changed auth shows in GET .../auth only after that many reads
  (Nuki applies writes through the bridge later: eventual consistency).
- `lock.online = False`: serverState 4, writes and actions answer 503.
Device actions for tests: `press_keypad`, `turn_thumb`, `put_foreign_code`, `jam`.
"""

from __future__ import annotations

import itertools
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


@dataclass
class FakeSmartlock:
    smartlock_id: int
    name: str = "Front door"
    state: int = 1  # 1 locked, 3 unlocked, 254 motor blocked
    battery: int = 80
    online: bool = True
    swallow_actions: bool = False
    visible_after_gets: int = 0
    auths: dict[str, dict[str, Any]] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)  # auth id -> GETs until visible
    log: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    writes: int = 0  # auth writes and actions that reached the model


class NukiCloud:
    """The in-memory account behind the server."""

    def __init__(self, token: str, now: Any) -> None:
        self.token = token
        self.now = now
        self.locks: dict[int, FakeSmartlock] = {}
        self.mutex = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._failures: list[dict[str, Any]] = []
        self.delay = 0.0
        self.api_auth_id = "api-token-auth"

    def add_lock(self, smartlock_id: int, **kwargs: Any) -> FakeSmartlock:
        with self.mutex:
            lock = FakeSmartlock(smartlock_id, **kwargs)
            lock.auths["app-auth"] = {"id": "app-auth", "smartlockId": smartlock_id, "type": 0,
                                      "name": "Owner's phone", "enabled": True}
            self.locks[smartlock_id] = lock
            return lock

    def fail_next(self, status: int, count: int = 1, path: str | None = None,
                  retry_after: int | None = None) -> None:
        with self.mutex:
            self._failures.append({"status": status, "count": count, "path": path,
                                   "retry_after": retry_after})

    def take_failure(self, method: str, path: str) -> dict[str, Any] | None:
        with self.mutex:
            for failure in self._failures:
                if failure["path"] is None or failure["path"] in f"{method} {path}":
                    failure["count"] -= 1
                    if failure["count"] <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    # --- device actions -------------------------------------------------------------------------

    def _stamp(self) -> str:
        return self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def append_log(self, lock: FakeSmartlock, **entry: Any) -> dict[str, Any]:
        full = {"id": f"{next(self._ids):024x}", "smartlockId": lock.smartlock_id, "deviceType": 0,
                "name": "", "date": self._stamp(), "state": 0, "autoUnlock": False, "source": 0,
                **entry}
        lock.log.append(full)
        return full

    def press_keypad(self, smartlock_id: int, digits: str) -> bool:
        with self.mutex:
            lock = self.locks[smartlock_id]
            match = next((a for a in lock.auths.values()
                          if a.get("type") == 13 and a.get("enabled") and str(a.get("code")) == digits
                          and a["id"] not in lock.hidden), None)
            if match is None:
                self.append_log(lock, action=1, trigger=255, source=1, state=224)
                return False
            lock.state = 3
            self.append_log(lock, action=1, trigger=255, source=1, state=0, authId=match["id"],
                            name=match["name"])
            return True

    def turn_thumb(self, smartlock_id: int) -> None:
        with self.mutex:
            lock = self.locks[smartlock_id]
            action = 1 if lock.state == 1 else 2
            lock.state = 3 if action == 1 else 1
            self.append_log(lock, action=action, trigger=1)

    def jam(self, smartlock_id: int) -> None:
        with self.mutex:
            lock = self.locks[smartlock_id]
            lock.state = 254
            self.append_log(lock, action=2, trigger=4, state=1)

    def put_foreign_code(self, smartlock_id: int, name: str, digits: str) -> str:
        with self.mutex:
            lock = self.locks[smartlock_id]
            auth_id = f"foreign-{next(self._ids)}"
            lock.auths[auth_id] = {"id": auth_id, "smartlockId": smartlock_id, "type": 13,
                                   "name": name, "code": int(digits), "enabled": True,
                                   "allowedWeekDays": 127, "allowedFromTime": 0,
                                   "allowedUntilTime": 0}
            return auth_id

    def codes(self, smartlock_id: int) -> dict[str, str]:
        """Device truth: auth name -> code, for every keypad code (visible or not)."""
        with self.mutex:
            return {a["name"]: str(a["code"]) for a in self.locks[smartlock_id].auths.values()
                    if a.get("type") == 13}


def _code_problem(code: object) -> str | None:
    if not isinstance(code, int) or isinstance(code, bool):
        return "code must be an integer"
    digits = str(code)
    if len(digits) != 6 or "0" in digits or digits.startswith("12"):
        return "invalid code: 6 digits, no 0, must not start with 12"
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detailMessage": message}, status_code=status)


def build_app(cloud: NukiCloud) -> Starlette:
    async def guard(request: Request) -> Response | None:
        with cloud.mutex:
            cloud.requests.append((request.method, request.url.path))
        if cloud.delay:
            time.sleep(cloud.delay)  # blocks this server thread only: the client sees a timeout
        if request.headers.get("authorization") != f"Bearer {cloud.token}":
            return _error(401, "Not authorized")
        failure = cloud.take_failure(request.method, request.url.path)
        if failure is not None:
            headers = {"Retry-After": str(failure["retry_after"])} if failure["retry_after"] else {}
            return JSONResponse({"detailMessage": "injected failure"},
                                status_code=failure["status"], headers=headers)
        return None

    def lock_of(request: Request) -> FakeSmartlock | None:
        return cloud.locks.get(int(request.path_params["smartlock_id"]))

    def view(lock: FakeSmartlock) -> dict[str, Any]:
        return {"smartlockId": lock.smartlock_id, "type": 0, "name": lock.name,
                "serverState": 0 if lock.online else 4,
                "state": {"mode": 2, "state": lock.state, "trigger": 0,
                          "batteryCritical": lock.battery < 20, "batteryCharging": False,
                          "batteryCharge": lock.battery, "doorState": 2}}

    async def smartlocks(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        with cloud.mutex:
            return JSONResponse([view(lock) for lock in cloud.locks.values()])

    async def smartlock(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        with cloud.mutex:
            lock = lock_of(request)
            return JSONResponse(view(lock)) if lock else _error(404, "Not found")

    async def action(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        body = await request.json()
        with cloud.mutex:
            lock = lock_of(request)
            if lock is None:
                return _error(404, "Not found")
            if not lock.online:
                return _error(503, "smartlock offline")
            if body.get("action") not in (1, 2, 3, 4, 5, 6, 7):
                return _error(400, "invalid action")
            if lock.swallow_actions:
                return Response(status_code=204)
            lock.writes += 1
            unlock = body["action"] in (1, 3, 5)
            if lock.state == 254:
                cloud.append_log(lock, action=body["action"], trigger=4, state=1,
                                 authId=cloud.api_auth_id)
                return Response(status_code=204)
            lock.state = 3 if unlock else 1
            cloud.append_log(lock, action=body["action"], trigger=4, authId=cloud.api_auth_id,
                             name="Web API")
            return Response(status_code=204)

    async def auths(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        with cloud.mutex:
            lock = lock_of(request)
            if lock is None:
                return _error(404, "Not found")
            if request.method == "GET":
                shown = []
                for auth_id, auth in lock.auths.items():
                    if auth_id in lock.hidden:
                        lock.hidden[auth_id] -= 1
                        if lock.hidden[auth_id] > 0:
                            continue
                        del lock.hidden[auth_id]
                    shown.append(dict(auth))
                return JSONResponse(shown)
        body = await request.json()
        return write_auth(request, body, None)

    async def auth(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        auth_id = request.path_params["auth_id"]
        if request.method == "DELETE":
            with cloud.mutex:
                lock = lock_of(request)
                if lock is None or auth_id not in lock.auths:
                    return _error(404, "Not found")
                if not lock.online:
                    return _error(503, "smartlock offline")
                lock.writes += 1
                del lock.auths[auth_id]
                lock.hidden.pop(auth_id, None)
                return Response(status_code=204)
        return write_auth(request, await request.json(), auth_id)

    def write_auth(request: Request, body: dict[str, Any], auth_id: str | None) -> Response:
        with cloud.mutex:
            lock = lock_of(request)
            if lock is None or (auth_id is not None and auth_id not in lock.auths):
                return _error(404, "Not found")
            if not lock.online:
                return _error(503, "smartlock offline")
            name = body.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                return _error(400, "name must be 1 to 32 characters")
            kind = body.get("type", 13) if auth_id is None else lock.auths[auth_id]["type"]
            if kind == 13:
                if (problem := _code_problem(body.get("code"))) is not None:
                    return _error(400, problem)
                if any(a.get("type") == 13 and a.get("code") == body["code"] and a["id"] != auth_id
                       for a in lock.auths.values()):
                    return _error(409, "code already exists")
            lock.writes += 1
            new_id = auth_id or f"{next(cloud._ids):024x}"
            record = {"id": new_id, "smartlockId": lock.smartlock_id, "type": kind,
                      "enabled": body.get("enabled", True), "remoteAllowed": False,
                      "allowedWeekDays": 127, "allowedFromTime": 0, "allowedUntilTime": 0,
                      **{k: v for k, v in body.items() if k not in ("type", "smartlockIds")}}
            lock.auths[new_id] = record
            if lock.visible_after_gets:
                lock.hidden[new_id] = lock.visible_after_gets + 1
            return Response(status_code=204)

    async def log(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        with cloud.mutex:
            lock = lock_of(request)
            if lock is None:
                return _error(404, "Not found")
            entries = list(reversed(lock.log))  # newest first, as Nuki answers
            since = request.query_params.get("fromDate")
            if since:
                entries = [e for e in entries if e["date"] >= since]
            limit = min(int(request.query_params.get("limit", 20)), 50)
            return JSONResponse(entries[:limit])

    return Starlette(routes=[
        Route("/smartlock", smartlocks, methods=["GET"]),
        Route("/smartlock/{smartlock_id:int}", smartlock, methods=["GET"]),
        Route("/smartlock/{smartlock_id:int}/action", action, methods=["POST"]),
        Route("/smartlock/{smartlock_id:int}/auth", auths, methods=["GET", "PUT"]),
        Route("/smartlock/{smartlock_id:int}/auth/{auth_id}", auth, methods=["POST", "DELETE"]),
        Route("/smartlock/{smartlock_id:int}/log", log, methods=["GET"]),
    ])


class NukiServer:
    """The app under uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, token: str = "test-token", now: Any = None) -> None:
        self.cloud = NukiCloud(token, now or (lambda: datetime.now(UTC)))
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every keep-alive answer waits out the client's delayed ACK (40 ms).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(build_app(self.cloud), log_level="warning",
                                                     lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> NukiServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Nuki test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
