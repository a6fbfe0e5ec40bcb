"""One process at a time runs a server-wide job, however many worker processes serve the API.

`portner serve --workers N` starts N processes, each with the server's background jobs. Most are
safe to run side by side (the message sender locks each message, the notice sweeps take turns),
but the lock fleet talks to the locks: two reconcilers would send every command twice. So such a
job runs only in the process that holds a PostgreSQL session advisory lock named after it. The
lock is the holder's connection's: when that process dies or its connection breaks, PostgreSQL
lets the lock go and another process takes the job over within one retry interval. Without
PostgreSQL (SQLite: one process) the job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, text

from portner.services.threads import finish_in_thread

log = logging.getLogger(__name__)

RETRY_S = 5.0


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job's name."""
    return int.from_bytes(hashlib.sha256(b"portner-job/" + name.encode()).digest()[:8], "big", signed=True)


async def run_as_leader(engine: Engine, name: str, job: Callable[[], Awaitable[None]], *,
                        retry_s: float = RETRY_S, elsewhere: Callable[[bool], None] = lambda _: None) -> None:
    """Run `job` whenever this process holds the job's lock, until the job ends (its error is
    raised here) or this is cancelled. `elsewhere(True)` says another process holds the lock,
    `elsewhere(False)` that this one has taken it.

    Never two at once: a leader asks its lock's connection every `retry_s` whether it still
    answers (and gives up on an answer that takes longer than `retry_s`: a connection cut off
    by the network hangs rather than fails), and stops its job when it does not. A process that
    takes the lock waits out that much (twice `retry_s`) before it starts the job, so a leader
    that lost its connection has stopped by then."""
    if engine.dialect.name != "postgresql":
        await job()
        return
    key = lock_key(name)
    while True:
        task = None
        try:
            conn = await _connected(engine)
        except Exception as exc:  # the database is away: try again later, and say so
            log.warning("%s: cannot reach the database to take its lock (%s)", name, type(exc).__name__)
        else:
            try:
                held = await _asked(_try_lock, conn, key, retry_s)
                elsewhere(not held)
                if held:
                    await asyncio.sleep(2 * retry_s)  # a previous leader's last moment
                    if await _asked(_alive, conn, None, retry_s):
                        log.info("%s: this process runs it", name)
                        task = asyncio.create_task(job(), name=f"leader:{name}")
                        await _while_held(conn, task, retry_s)
            except Exception as exc:
                log.warning("%s: cannot take its lock (%s)", name, type(exc).__name__)
            finally:
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.wait({task})  # (a cancellation of this one still goes through)
                # Given back, or thrown away when the connection no longer answers in time.
                await asyncio.wait({asyncio.ensure_future(asyncio.to_thread(_release, conn))}, timeout=retry_s)
            if task is not None and task.done() and not task.cancelled():
                task.result()  # the job ended by itself (raises its error, if it had one)
                return
            if task is not None:
                log.warning("%s: lost its lock (database connection broken); trying to take it again", name)
        await asyncio.sleep(retry_s)


async def _asked(question: Callable[..., bool], conn: Any, key: int | None, timeout: float) -> bool:
    """A question to the lock's connection, in a thread; no answer within `timeout` is False."""
    # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's cancellation, and
    # a leader told to stop would go on leading.)
    args = (conn,) if key is None else (conn, key)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(question, *args)
    except TimeoutError:
        return False


async def _while_held(conn: Any, task: asyncio.Task[None], retry_s: float) -> None:
    """Wait for the job while the lock's connection answers; return when either stops."""
    while not task.done():
        await asyncio.wait({task}, timeout=retry_s)
        if not task.done() and not await _asked(_alive, conn, None, retry_s):
            return


async def _connected(engine: Engine) -> Any:
    """`_connect` in a thread. Cancelled meanwhile (the server stopping), the connection the
    thread still makes is waited for and given back before the cancellation goes on (see
    services.threads): left to the thread, it came back after the server had disposed of its
    pool, into a pool nobody would close, and was collected open."""
    made: list[Any] = []

    def connect() -> None:
        made.append(_connect(engine))

    try:
        await finish_in_thread(connect)
    except asyncio.CancelledError:
        for conn in made:
            with contextlib.suppress(Exception):
                conn.close()
        raise
    return made[0]


def _connect(engine: Engine) -> Any:
    # Autocommit: a session lock taken outside any transaction, held as long as the connection.
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _try_lock(conn: Any, key: int) -> bool:  # (a lock got after a timeout goes with `_release`)
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())


def _alive(conn: Any) -> bool:
    try:
        conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _release(conn: Any) -> None:
    """Give the lock back and the connection up (a broken one is thrown away, not pooled)."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock_all()"))
        conn.close()
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()
            conn.close()
