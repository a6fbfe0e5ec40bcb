"""An open-loop HTTP/1.1 load generator that costs the machine as little as it can.

The benchmark's client shares two cores with the servers and PostgreSQL. httpx spent about 2 ms
of CPU per request, as much as the endpoint it measured, so the figures said more about the
client than the server. This is what wrk does: each request is built once as bytes before the
run, written on a kept-alive connection, and its answer parsed by httptools (the C parser uvicorn
uses): 0.2 to 0.4 ms of CPU a request here, printed with the figures.

Open loop: request i is due at start + i/rate whatever happened to the others; a request whose
connections are all busy opens another one rather than wait (so a stalled server is not hidden
by a client that waits for it), and its latency counts from when it was due.

A 503 with Retry-After is sent again after that many seconds, as the nurse app and the lock
gateways do, and its latency counts from when it was first due (`Result.retried` says how many
were). Not sending it again would leave a gap in its lock's log that no later request fills:
every later upload of that lock then carries more held events, and the run measures a cascade
no phone would cause.

Many clients, as phones are: the requests are spread over `clients` connections opened before
the run, the longest idle first. Reusing the most recent one instead sent nearly every request
down one connection, so one worker process of a server with two took all the load (0.76 s of
CPU against 0.06 s, measured) and the benchmark measured one worker, not the server.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools

MAX_CONNECTIONS = 256
CLIENTS = 32


def build_request(base_url: str, method: str, path: str, *, body: Any = None,
                  headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 request as the bytes sent on the wire (a JSON body when `body` is given)."""
    host = urlsplit(base_url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request in flight at a time, its answer parsed in C."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.lost = False
        self.retry_after = 0.0  # seconds, from the last answer's Retry-After

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after" and value.strip().isdigit():
            self.retry_after = float(value)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        self.lost = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self.retry_after = 0.0
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    connections: int = 0
    retried: int = 0  # requests answered 503 with Retry-After, and sent again


async def open_loop(base_url: str, requests: Sequence[bytes] | Callable[[int], bytes], *, rate: float,
                    seconds: float, warmup: float, timeout: float = 10.0, clients: int = CLIENTS) -> Result:
    """Send `rate` requests a second for warmup + seconds; measure those after the warm-up.

    `requests` is the list of prebuilt requests (request i is `requests[i]`) or a function of i.
    A latency is counted only for a 2xx answer; anything else is an error, by status (0: no answer).
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    total, skip = int(rate * (seconds + warmup)), int(rate * warmup)
    pick = requests if callable(requests) else requests.__getitem__
    idle: collections.deque[_Connection] = collections.deque()
    result = Result()
    start = 0.0  # set once the clients are connected

    async def opened() -> _Connection:
        if result.connections >= MAX_CONNECTIONS:
            raise ConnectionError(f"more than {MAX_CONNECTIONS} connections opened: the server is not keeping up")
        result.connections += 1
        _, conn = await loop.create_connection(_Connection, host, port)
        return conn

    async def connection() -> _Connection:
        while idle:
            conn = idle.popleft()
            if not conn.lost:
                return conn
        return await opened()

    async def one(i: int) -> None:
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        status, retried = 0, False
        while True:
            conn = None
            try:
                conn = await connection()
                async with asyncio.timeout(max(0.001, due + timeout - time.perf_counter())):
                    status = await conn.send(pick(i))
                idle.append(conn)
            except (OSError, ConnectionError, TimeoutError, httptools.HttpParserError):
                status = 0
                if conn is not None and conn.transport is not None:
                    conn.transport.close()  # a late answer must not be read as the next request's
            if status != 503 or conn is None or not conn.retry_after:
                break
            if time.perf_counter() + conn.retry_after > due + timeout:
                break  # no answer within the timeout: an error
            retried = True
            await asyncio.sleep(conn.retry_after)
        done = time.perf_counter()
        if i < skip:
            return
        result.retried += retried
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.latencies_ms.append((done - due) * 1000)
        else:
            result.errors += 1

    try:
        for _ in range(clients):
            idle.append(await opened())
            # Apart, as phones come: a burst is all taken by whichever worker process wakes first.
            await asyncio.sleep(0.005)
        start = time.perf_counter() + 0.05
        await asyncio.gather(*(one(i) for i in range(total)))
    finally:
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
    return result
