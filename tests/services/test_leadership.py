"""One worker process at a time runs a server-wide job (services.leadership), on real PostgreSQL.

Two engines stand for two worker processes of one server: each has its own connections, as
processes do, and the advisory lock is the database's.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from portner.services.leadership import lock_key, run_as_leader

pytestmark = pytest.mark.anyio


async def _until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within time")


async def _stop(tasks, engines) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for e in engines:
        e.dispose()


async def test_one_process_runs_the_job_and_another_takes_it_over_when_it_dies(pg_url: str) -> None:
    name = f"test-job/{uuid.uuid4().hex}"
    engines = [create_engine(pg_url), create_engine(pg_url)]
    running: set[int] = set()
    ever: list[int] = []

    def job_of(worker: int):
        async def job() -> None:
            running.add(worker)
            ever.append(worker)
            try:
                await asyncio.Event().wait()  # a job runs until it is stopped
            finally:
                running.discard(worker)
        return job

    tasks = [asyncio.create_task(run_as_leader(e, name, job_of(i), retry_s=0.05)) for i, e in enumerate(engines)]
    try:
        await _until(lambda: running)
        await asyncio.sleep(0.3)  # several retry intervals: the other never starts as well
        assert len(running) == 1 and len(ever) == 1
        leader = ever[0]

        # The leader's process dies: its task ends and its connections go (PostgreSQL lets go
        # of the lock); the other process takes the job within a retry interval or so.
        tasks[leader].cancel()
        await asyncio.gather(tasks[leader], return_exceptions=True)
        engines[leader].dispose()
        await _until(lambda: running == {1 - leader})
        assert ever == [leader, 1 - leader]
    finally:
        await _stop(tasks, engines)


async def test_a_broken_lock_connection_stops_the_job_until_the_lock_is_held_again(pg_url: str) -> None:
    name = f"test-job/{uuid.uuid4().hex}"
    engine = create_engine(pg_url)
    starts = []

    async def job() -> None:
        starts.append(1)
        await asyncio.Event().wait()

    task = asyncio.create_task(run_as_leader(engine, name, job, retry_s=0.05))
    try:
        await _until(lambda: starts)
        # Kill the lock's session from outside, as a database restart or a network cut would.
        with engine.connect() as admin:
            killed = admin.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND ((classid::bigint << 32) | objid::bigint) = (:k & x'ffffffffffffffff'::bigint)"
            ), {"k": lock_key(name)}).all()
        assert killed and all(r[0] for r in killed)
        await _until(lambda: len(starts) == 2)  # stopped, the lock taken again, started again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        engine.dispose()


async def test_a_job_that_ends_by_itself_ends_the_leadership_and_its_error_is_raised(pg_url: str) -> None:
    engine = create_engine(pg_url)
    name = f"test-job/{uuid.uuid4().hex}"

    async def failing() -> None:
        raise RuntimeError("the job's own error")

    try:
        with pytest.raises(RuntimeError, match="the job's own error"):
            async with asyncio.timeout(5):
                await run_as_leader(engine, name, failing, retry_s=0.05)
        # ...and its lock is free again: another process can take it at once.
        other = create_engine(pg_url)
        try:
            with other.connect() as conn:
                assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)}).scalar()
        finally:
            other.dispose()
    finally:
        engine.dispose()


def test_lock_keys_are_stable_and_fit_a_bigint() -> None:
    assert lock_key("lock-fleet/demokommune") == lock_key("lock-fleet/demokommune")
    assert lock_key("lock-fleet/a") != lock_key("lock-fleet/b")
    assert -(2 ** 63) <= lock_key("lock-fleet/a") < 2 ** 63


async def _kill_lock_session(engine, name: str) -> None:
    with engine.connect() as admin:
        admin.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND ((classid::bigint << 32) | objid::bigint) = (:k & x'ffffffffffffffff'::bigint)"
        ), {"k": lock_key(name)})


def _recording_job(worker: int, running: set[int], most: list[int]):
    async def job() -> None:
        running.add(worker)
        try:
            while True:
                most[0] = max(most[0], len(running))
                await asyncio.sleep(0.01)
        finally:
            running.discard(worker)
    return job


async def _takeover(engines, name: str, retry: float, interrupt, release=lambda: None) -> int:
    """Two processes; the first leads; `interrupt()`, then its lock session is killed. Returns
    how many ran the job at once at most, once the second runs it alone."""
    running: set[int] = set()
    most = [0]

    def leader(worker: int) -> asyncio.Task[None]:
        job = _recording_job(worker, running, most)
        return asyncio.create_task(run_as_leader(engines[worker], name, job, retry_s=retry))

    tasks = [leader(0)]
    try:
        await _until(lambda: 0 in running)
        tasks.append(leader(1))
        await interrupt()
        await _kill_lock_session(engines[1], name)
        await _until(lambda: running == {1}, seconds=10)
        return most[0]
    finally:
        release()
        await asyncio.sleep(0.2)  # calls left hanging, released, close their connections
        await _stop(tasks, engines)


async def test_a_leader_whose_session_is_killed_between_its_checks_never_runs_beside_the_next(pg_url: str) -> None:
    """The lock goes at once; the old leader notices only at its next check. The next one waits
    that out before it starts, so the job never runs twice (found by a hostile test: both ran
    for most of a retry interval)."""
    retry = 0.3
    engines = [create_engine(pg_url), create_engine(pg_url)]

    async def just_after_the_leaders_check() -> None:
        await asyncio.sleep(retry + 0.05)

    assert await _takeover(engines, f"test-job/{uuid.uuid4().hex}", retry, just_after_the_leaders_check) == 1


async def test_a_leader_cut_off_from_the_database_stops_when_its_connection_stops_answering(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A network cut leaves the leader's connection hanging, not failing: a question it does not
    answer in time counts as lost, the job stops, and the other process takes over."""
    import threading

    from portner.services import leadership

    engines = [create_engine(pg_url), create_engine(pg_url)]
    cut, unblock = threading.Event(), threading.Event()

    def hangs_when_cut(real):
        def call(conn, *args):
            if cut.is_set() and conn.engine is engines[0]:
                unblock.wait(30)  # the cut connection: no answer, no error (until the test ends)
            return real(conn, *args)
        return call

    monkeypatch.setattr(leadership, "_alive", hangs_when_cut(leadership._alive))
    monkeypatch.setattr(leadership, "_release", hangs_when_cut(leadership._release))

    async def the_network_is_cut() -> None:
        cut.set()  # (the kill that follows is the server's side of the cut: the lock goes)

    assert await _takeover(engines, f"test-job/{uuid.uuid4().hex}", 0.3, the_network_is_cut, unblock.set) == 1


async def test_a_leader_stopped_while_it_connects_leaves_no_connection_behind(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stopping while the leader's connection is being made in its thread: the
    server then disposes of its pool at once; the connection the thread makes must not come
    back into the pool after that (nobody would close it: it was collected open)."""
    from portner.services import leadership

    engine = create_engine(pg_url)
    started = threading.Event()
    real = leadership._connect

    def slow(e: Any) -> Any:
        started.set()
        time.sleep(0.3)  # the stop comes while the connection is being made
        return real(e)

    monkeypatch.setattr(leadership, "_connect", slow)

    async def job() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(run_as_leader(engine, f"test-job/{uuid.uuid4().hex}", job, retry_s=0.05))
    try:
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        engine.dispose()  # as the app's lifespan does once its workers have stopped
        await asyncio.sleep(0.5)  # past the thread's end
        assert (engine.pool.checkedin(), engine.pool.checkedout()) == (0, 0)
    finally:
        engine.dispose()
