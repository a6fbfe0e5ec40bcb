"""The latency benchmark's turns: the bare endpoint and the real one alternate in slices, each
endpoint's requests numbered across the whole run (an upload is never sent twice), and only the
first slice has the long warm-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portner.benchmarks import latency
from portner.benchmarks.loadgen import Result


def test_the_seconds_are_cut_into_slices_that_add_up() -> None:
    assert latency._slices(10) == [2.0] * 5
    assert latency._slices(3) == [2.0, 1.0]
    assert latency._slices(1) == [1.0]
    assert sum(latency._slices(7.5)) == pytest.approx(7.5)


def test_the_endpoints_take_turns_and_number_their_requests_across_slices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[bytes], float, float]] = []

    async def fake_open_loop(url: str, pick: Any, *, rate: float, seconds: float, warmup: float) -> Result:
        total, skip = int(rate * (seconds + warmup)), int(rate * warmup)
        sent = [pick(i) for i in range(total)]
        calls.append((url, sent, seconds, warmup))
        return Result(latencies_ms=[1.0] * (total - skip), statuses={200: total - skip})

    monkeypatch.setattr(latency, "open_loop", fake_open_loop)
    bare = [f"bare-{i}".encode() for i in range(1000)]
    real = [f"real-{i}".encode() for i in range(1000)]
    runs = asyncio.run(latency._in_turns(
        [("bare", "http://bare", bare.__getitem__), ("real", "http://real", real.__getitem__)],
        rate=10, seconds=5, warmup=2))

    assert [url for url, *_ in calls] == ["http://bare", "http://real"] * 3
    assert [(seconds, warmup) for _, _, seconds, warmup in calls] == \
        [(2.0, 2)] * 2 + [(2.0, latency.SLICE_WARMUP)] * 2 + [(1.0, latency.SLICE_WARMUP)] * 2
    sent_real = [request for url, sent, *_ in calls if url == "http://real" for request in sent]
    assert sent_real == real[:len(sent_real)]  # in order, none twice, none skipped
    assert len(sent_real) == int(10 * 4) + int(10 * 2.25) + int(10 * 1.25)
    assert [len(run.latencies_ms) for run in runs] == [50, 50]  # the measured seconds only
    assert runs[1].statuses == {200: 50} and runs[1].errors == 0
