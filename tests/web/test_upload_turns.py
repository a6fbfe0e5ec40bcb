"""Uploads are stored a few at a time per worker process (phone._TURNS): the rest wait their
turn, and a gateway's big batch does not wait behind the phones' small ones."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from portner.web.api import phone
from portner.web.problems import Problem

pytestmark = pytest.mark.anyio


async def test_small_uploads_go_two_at_a_time_and_a_big_batch_has_its_own_turn(monkeypatch) -> None:
    lock = threading.Lock()
    running = {"small": 0, "big": 0}
    most = {"small": 0, "big": 0}
    big_beside_small = []

    def ingest(request, uploader, raw, token=None):
        kind = "small" if len(raw) <= phone._SMALL else "big"
        with lock:
            running[kind] += 1
            most[kind] = max(most[kind], running[kind])
            if kind == "big":
                big_beside_small.append(running["small"])
        time.sleep(0.05)
        with lock:
            running[kind] -= 1
        return kind

    monkeypatch.setattr(phone, "_ingest", ingest)
    small, big = b"x" * 100, b"x" * (phone._SMALL + 1)
    nurse = object()  # who uploads (the turns care only that someone signed in does)
    done = await asyncio.gather(*(phone._stored(None, nurse, small) for _ in range(6)),
                                *(phone._stored(None, nurse, big) for _ in range(2)))
    assert done == ["small"] * 6 + ["big"] * 2  # every one stored, none dropped
    assert most == {"small": phone._TURNS["small"], "big": 1}
    assert max(big_beside_small) > 0  # the big ones ran while small ones did


async def test_visitors_uploads_wait_in_a_turn_of_their_own(monkeypatch) -> None:
    # A one-time link is checked only in its turn: made-up ones must not delay staff uploads.
    started: list[str] = []
    visitor_in = threading.Event()

    def ingest(request, uploader, raw, token=None):
        started.append("visitor" if uploader is None else "staff")
        if uploader is None:
            visitor_in.set()
            time.sleep(0.3)  # a slow visitor's upload holds the visitors' turn...
        return started[-1]

    monkeypatch.setattr(phone, "_ingest", ingest)
    visitors = [asyncio.create_task(phone._stored(None, None, b"{}", "made-up-token"))
                for _ in range(5)]
    await asyncio.to_thread(visitor_in.wait, 5)
    async with asyncio.timeout(0.25):  # ...and a nurse's is stored meanwhile, not after five
        assert await phone._stored(None, object(), b"{}") == "staff"
    await asyncio.gather(*visitors)
    assert started.count("visitor") == 5


async def test_a_failed_upload_gives_its_turn_back(monkeypatch) -> None:
    calls = []

    def ingest(request, uploader, raw, token=None):
        calls.append(raw)
        raise ValueError("refused")

    monkeypatch.setattr(phone, "_ingest", ingest)
    for _ in range(phone._TURNS["small"] + 1):
        with pytest.raises(ValueError):
            async with asyncio.timeout(5):  # a turn not given back would hang here
                await phone._stored(None, object(), b"{}")
    assert len(calls) == phone._TURNS["small"] + 1


async def test_past_so_many_waiting_an_upload_is_told_to_come_back(monkeypatch) -> None:
    release = threading.Event()

    def ingest(request, uploader, raw, token=None):
        release.wait(5)
        return "stored"

    monkeypatch.setattr(phone, "_ingest", ingest)
    monkeypatch.setitem(phone._WAITING_MOST, "small", 3)
    nurse = object()
    queued = [asyncio.create_task(phone._stored(None, nurse, b"{}"))
              for _ in range(phone._TURNS["small"] + 3)]
    await asyncio.sleep(0.1)  # two in their turn, three waiting
    with pytest.raises(Problem) as refused:
        await phone._stored(None, nurse, b"{}")
    assert (refused.value.status, refused.value.headers) == (503, {"Retry-After": "1"})
    release.set()
    assert await asyncio.gather(*queued) == ["stored"] * len(queued)  # those waiting are all stored
    assert await phone._stored(None, nurse, b"{}") == "stored"  # and there is room again
