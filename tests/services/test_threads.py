"""services.threads.finish_in_thread: cancelled, it waits for its thread before the cancellation
goes on (so a server disposes of its pool only once nothing works on it)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from portner.services.threads import finish_in_thread


def test_a_cancelled_call_ends_only_after_its_thread_and_is_still_cancelled() -> None:
    started, finished = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        time.sleep(0.3)
        finished.set()
        return "done"

    async def scenario() -> bool:
        task = asyncio.ensure_future(finish_in_thread(work))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return finished.is_set()  # the thread had ended when the task did

    assert asyncio.run(scenario())


def test_its_answer_and_its_error_are_the_functions() -> None:
    def fail() -> None:
        raise ValueError("no")

    assert asyncio.run(finish_in_thread(lambda a, b=0: a + b, 2, b=3)) == 5
    with pytest.raises(ValueError, match="no"):
        asyncio.run(finish_in_thread(fail))
