"""The benchmark command runs end to end and reports each figure against its target.

Not a timed test: it asserts that figures exist and are consistent, not how fast they are.
"""

from __future__ import annotations

import json
import os

import pytest

from portner.cli import main


def test_bench_quick_reports_every_figure(capsys: pytest.CaptureFixture[str], pg_url: str) -> None:
    del pg_url  # asked for only so that a missing server skips (or, under CI, fails) the test
    # The bench makes (and drops) a schema of its own on the test server.
    pg = os.environ.get("PORTNER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert main(["bench", "--quick", "--json", "--pg", pg]) == 0
    out = capsys.readouterr().out
    results = json.loads(out[out.index("{"):])
    figures = [t["figure"] for t in results["targets"]]
    assert len(figures) == 5
    assert all("error" not in results[db] for db in ("sqlite", "postgresql"))
    assert results["sqlite"]["visits"] > 300
    assert results["sqlite"]["credentials"] > 0
    assert results["size"]["ours"] <= 256
    assert results["oslo"]["peak_mb"] > 0
    assert {t["met"] for t in results["targets"]} <= {True, False}


def test_service_bench_reports_latency_and_ingest(capsys: pytest.CaptureFixture[str], pg_url: str) -> None:
    """A tiny run of `portner bench-service`: real servers on loopback, real PostgreSQL."""
    del pg_url
    pg = os.environ.get("PORTNER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert main(["bench-service", "--rate", "20", "--seconds", "1", "--events", "600", "--locks", "6",
                 "--repeats", "1", "--pg", pg, "--json"]) == 0
    out = capsys.readouterr().out
    results = json.loads(out[out.index("{"):])
    rows = {r["endpoint"]: r for r in results["latency"]["rows"]}
    assert len(rows) == 4
    # Every request of the two real endpoints succeeded (2xx), and the ratios are to a bare p99.
    for name in ("credentials (GET /me/credentials)", "event upload (POST /door-events)"):
        assert rows[name]["errors"] == 0 and rows[name]["requests"] >= 20, rows[name]
        assert rows[name]["p99_ratio"] > 0
    ingest = results["ingest"]
    assert ingest["events"] == 600 and ingest["copy_per_s"] > 0 and 0 < ingest["ratio"]
