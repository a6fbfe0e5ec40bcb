"""The lock radio bridge: DEVELOPMENT AND DEMO ONLY. It stands in for Bluetooth between the nurse's
phone and the municipality's (simulated) locks.

A real lock is a battery device the phone talks to over BLE; in the demo the phone's browser talks
to this small HTTP service instead, which holds one `SimulatedLock` per lock of the municipality.
The locks decide exactly as they would offline: they trust the issuer keys, verify credential and
proof themselves, and keep their own hash-chained, MACed event logs. The bridge never tells the
platform anything: the phone reads the lock's new events here and uploads them to the platform
when it can, as it would with a real lock.

    GET  /doors/{door_id}/challenge          {lock_id, challenge (b64url), head_seq}
    POST /doors/{door_id}/present            {credential, proof, challenge, action} -> {opened, reason, ...}
    GET  /doors/{door_id}/events?since=N&nonce=HEX   {lock_id, events: [wire], head}

What a lock's flash memory would keep survives a restart: each lock's event log and the newest
revocation list it accepted are written to `<data dir>/bridge/bridge.sqlite` as they change, and a
restart is logged by each lock as a power cycle ("boot" event), so the chain the platform has
verified keeps linking. Challenges are RAM only, as on the lock: a restart forgets them.

Revocation: every `refresh_every` seconds (default 5) the bridge installs the store's newest signed
revocation list into every lock that holds an older one, standing in for the gateways and phones
that carry lists to locks; an operator's revocation is therefore effective at the doors within
seconds. Cross-origin requests are allowed from the platform's own origin (settings.public_url) only.
It must never run in production: it would let anyone on the network talk to every lock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from portner.locks.simulated import LockClock, SimulatedLock
from portner.services.keys import trusted_issuers
from portner.services.lock_wire import event_from_wire, event_to_wire
from portner.services.revocation import latest_revocation_list
from portner.storage.repository import Repository
from portner.web.problems import Problem, field_problem, install_problem_handlers, not_found
from portner.web.state import Portner

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 5.0
# Per door: a phone needs one challenge and one present per opening. Anything faster is a page
# (any origin can make a browser send these) trying to use up the lock's challenges or fill its log.
CHALLENGES_PER_S, CHALLENGE_BURST = 2.0, 10
PRESENTS_PER_S, PRESENT_BURST = 1.0, 5


@dataclass(slots=True)
class TokenBucket:
    """`burst` requests at once, then `rate` per second."""

    rate: float
    burst: int
    clock: Callable[[], float]
    tokens: float = field(init=False)
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.at = float(self.burst), self.clock()

    def take(self) -> float:
        """0 when a request may go ahead (and is counted), else seconds to wait."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _too_many(wait: float) -> Problem:
    return Problem(429, "Too many requests", "this lock is asked too often; wait and try again",
                   kind="rate-limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(value: str, field: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise field_problem(f"body/{field}", "must be base64url") from None


class BridgeStateDamaged(RuntimeError):
    """A lock's saved log does not verify: the bridge refuses to invent a new history."""


class _Store:
    """What the locks' non-volatile memory holds, in one SQLite file (stdlib only)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._mutex = threading.Lock()
        with self._mutex:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS events (lock_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                             " payload TEXT NOT NULL, PRIMARY KEY (lock_id, seq))")
            self._db.execute("CREATE TABLE IF NOT EXISTS lists (lock_id TEXT PRIMARY KEY, blob BLOB NOT NULL)")

    def events(self) -> dict[str, list[dict[str, Any]]]:
        with self._mutex:
            rows = self._db.execute("SELECT lock_id, payload FROM events ORDER BY lock_id, seq").fetchall()
        out: dict[str, list[dict[str, Any]]] = {}
        for lock_id, payload in rows:
            out.setdefault(lock_id, []).append(json.loads(payload))
        return out

    def lists(self) -> dict[str, bytes]:
        with self._mutex:
            return {k: bytes(v) for k, v in self._db.execute("SELECT lock_id, blob FROM lists")}

    def save(self, events: list[tuple[str, int, str]], lists: list[tuple[str, bytes]] = ()) -> None:
        if not events and not lists:
            return
        with self._mutex:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?)", events)
                self._db.executemany("INSERT OR REPLACE INTO lists VALUES (?, ?)", lists)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._mutex:
            self._db.close()


@dataclass(slots=True)
class _Door:
    lock: SimulatedLock
    mutex: threading.Lock
    challenges: TokenBucket
    presents: TokenBucket
    saved_seq: int = 0


class Bridge:
    """The simulated locks of one municipality, by door id, with their saved state."""

    def __init__(self, portner: Portner, state_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.portner = portner
        self.store = _Store(state_dir / "bridge.sqlite")
        with portner.engine.connect() as conn:
            self.issuers = trusted_issuers(conn, portner.municipality.id)
            rows = Repository(conn).all_locks(portner.municipality.id)
        saved, lists = self.store.events(), self.store.lists()
        self.doors: dict[str, _Door] = {}
        for row in rows:
            lock = SimulatedLock(lock_id=row.id, door_id=row.door_id, issuers=self.issuers,
                                 lock_key=portner.secrets.lock_key(row.id), clock=LockClock(portner.clock))
            door = _Door(lock, threading.Lock(), TokenBucket(CHALLENGES_PER_S, CHALLENGE_BURST, clock),
                         TokenBucket(PRESENTS_PER_S, PRESENT_BURST, clock))
            if row.id in saved:
                self._restore(door, saved[row.id], lists.get(row.id))
            self.doors[row.door_id] = door
        pending: list[tuple[str, int, str]] = []
        for door in self.doors.values():
            pending.extend(self._unsaved(door))
        self.store.save(pending)
        self.revocation_version = 0
        self.refresh_revocations()

    def _restore(self, door: _Door, wire: list[dict[str, Any]], revocation_list: bytes | None) -> None:
        lock = door.lock
        events = [event_from_wire(d, lock.lock_id) for d in wire]
        try:
            lock.restore(events, revocation_list)
        except ValueError as exc:
            raise BridgeStateDamaged(f"{exc}; delete the bridge folder to start over") from None
        door.saved_seq = events[-1].seq if events else 0

    def _unsaved(self, door: _Door) -> list[tuple[str, int, str]]:
        new = door.lock.events_since(door.saved_seq)
        if new:
            door.saved_seq = new[-1].seq
        return [(e.lock_id, e.seq, json.dumps(event_to_wire(e))) for e in new]

    def door(self, door_id: str) -> _Door:
        found = self.doors.get(door_id)
        if found is None:
            raise not_found("no lock on this door")
        return found

    def challenge(self, door_id: str) -> dict[str, Any]:
        door = self.door(door_id)
        with door.mutex:
            wait = door.challenges.take()
            if wait:
                raise _too_many(wait)
            value = door.lock.challenge()
            head_seq = door.lock.status().head_seq
            self.store.save(self._unsaved(door))
        return {"lock_id": door.lock.lock_id, "challenge": _b64(value), "head_seq": head_seq}

    def present(self, door_id: str, credential: bytes, proof: bytes, challenge: bytes,
                action: str) -> dict[str, Any]:
        door = self.door(door_id)
        with door.mutex:
            # The lock logs every refusal (by design); the rate keeps a stranger from growing it.
            wait = door.presents.take()
            if wait:
                raise _too_many(wait)
            verdict = door.lock.present(credential, proof, challenge=challenge, action=action)
            last = door.lock.log[-1]
            self.store.save(self._unsaved(door))
        # The lock's own reason (e.g. stale_challenge) is more exact than the verdict's.
        reason = "ok" if verdict.allowed else (last.reason or str(verdict.reason))
        return {"lock_id": door.lock.lock_id, "opened": verdict.allowed, "reason": reason, "seq": last.seq}

    def events(self, door_id: str, since: int, nonce: bytes | None) -> dict[str, Any]:
        door = self.door(door_id)
        with door.mutex:
            events = door.lock.events_since(since)
            head = None
            if nonce is not None:
                seq, digest, mac = door.lock.attest_head(nonce)
                head = {"nonce": nonce.hex(), "seq": seq, "hash": digest.hex(), "mac": mac.hex()}
            self.store.save(self._unsaved(door))
        return {"lock_id": door.lock.lock_id, "events": [event_to_wire(e) for e in events], "head": head}

    def refresh_revocations(self) -> int:
        """Install the newest published list into every lock holding an older one."""
        latest = latest_revocation_list(self.portner.engine, self.portner.municipality.id)
        if latest is None or latest[0] <= self.revocation_version:
            return 0
        version, blob = latest
        updated = 0
        for door in self.doors.values():
            with door.mutex:
                if door.lock.revocation_version < version and door.lock.install_revocation_list(blob):
                    updated += 1
                    self.store.save(self._unsaved(door), [(door.lock.lock_id, blob)])
                else:
                    self.store.save(self._unsaved(door))
        self.revocation_version = version
        return updated


class PresentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: str = Field(max_length=2048, description="base64url credential")
    proof: str = Field(max_length=200, description="base64url Ed25519 signature over the proof message")
    challenge: str = Field(max_length=200, description="base64url challenge from this door")
    action: str = Field("unlock", max_length=16)


def create_bridge_app(portner: Portner, *, refresh_every: float = DEFAULT_REFRESH_S,
                      state_dir: Path | None = None, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The bridge as an ASGI app, for `portner serve` (its own port) and the tests.

    `clock` (monotonic seconds) paces the per-door rate limits; tests pass a fixed one."""
    bridge = Bridge(portner, state_dir or portner.settings.data_dir / "bridge", clock=clock)

    async def refresher() -> None:
        while True:
            await asyncio.sleep(refresh_every)
            try:
                await run_in_threadpool(bridge.refresh_revocations)
            except Exception:  # noqa: BLE001 - a failed refresh is retried at the next tick
                log.exception("bridge: revocation refresh failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(refresher(), name="bridge.refresh_revocations")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Portner lock radio bridge (development only)", openapi_url=None, docs_url=None,
                  redoc_url=None, lifespan=lifespan)
    app.state.bridge = bridge
    # Errors as problem details, never echoing the input (a credential is a bearer secret).
    install_problem_handlers(app)
    app.add_middleware(CORSMiddleware, allow_origins=[portner.settings.public_url.rstrip("/")],
                       allow_methods=["GET", "POST"], allow_headers=["content-type"], max_age=600)

    @app.get("/doors/{door_id}/challenge")
    def challenge(door_id: str) -> dict[str, Any]:
        return bridge.challenge(door_id)

    @app.post("/doors/{door_id}/present")
    def present(door_id: str, body: PresentIn) -> dict[str, Any]:
        return bridge.present(door_id, _unb64(body.credential, "credential"), _unb64(body.proof, "proof"),
                              _unb64(body.challenge, "challenge"), body.action)

    @app.get("/doors/{door_id}/events")
    def events(door_id: str, since: int = Query(0, ge=0), nonce: str | None = Query(None, max_length=128)) -> dict[str, Any]:
        raw = None
        if nonce is not None:
            try:
                raw = bytes.fromhex(nonce)
            except ValueError:
                raise field_problem("query/nonce", "must be hex") from None
            if not 16 <= len(raw) <= 64:
                raise field_problem("query/nonce", "must be 16..64 bytes")
        return bridge.events(door_id, since, raw)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"locks": len(bridge.doors), "revocation_version": bridge.revocation_version,
                "development_only": True}

    return app
