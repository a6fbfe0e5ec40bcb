"""Write-back to a FHIR server: a real HTTP server on loopback that records what it receives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert, select

from portner.domain.model import Municipality, MunicipalityId
from portner.services.writeback import KIND, FhirEndpointSink, FolderSink, deliver_outbox
from portner.storage import tables as t
from portner.storage.repository import Repository

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
M_ID = "m1"


class _Fhir(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_next = 0

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Fhir.fail_next:
            _Fhir.fail_next -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Fhir.received.append(
            {"path": self.path, "key": self.headers.get("Idempotency-Key"), "body": json.loads(body)}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fhir_server() -> Iterator[str]:
    _Fhir.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


def _queue(engine: Engine, n: int, municipality: str = M_ID) -> None:
    with engine.begin() as conn:
        if Repository(conn).get_municipality(municipality) is None:
            Repository(conn).add_municipality(Municipality(MunicipalityId(municipality), municipality))
        for i in range(n):
            conn.execute(
                insert(t.outbox).values(
                    idempotency_key=f"encounter:{municipality}:vis-{i}",
                    municipality_id=municipality,
                    kind=KIND,
                    payload={
                        "resourceType": "Encounter",
                        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:portner:visit:vis-{i}"}],
                        "status": "finished",
                    },
                    created_at=NOW,
                    attempts=0,
                )
            )


def test_encounters_are_put_by_identifier_and_retried_after_a_failure(
    sqlite_engine: Engine, fhir_server: str
) -> None:
    _queue(sqlite_engine, 3)
    _Fhir.fail_next = 1
    with httpx.Client(timeout=5) as client:
        first = deliver_outbox(sqlite_engine, FhirEndpointSink(fhir_server, client), municipality_id=M_ID, now=NOW)
        assert (first.delivered, first.failed) == (2, 1)
        second = deliver_outbox(sqlite_engine, FhirEndpointSink(fhir_server, client), municipality_id=M_ID, now=NOW)
        assert (second.delivered, second.failed) == (1, 0)
        third = deliver_outbox(sqlite_engine, FhirEndpointSink(fhir_server, client), municipality_id=M_ID, now=NOW)
        assert (third.delivered, third.failed) == (0, 0)
    assert len(_Fhir.received) == 3
    assert sorted(r["key"] for r in _Fhir.received) == [f"encounter:{M_ID}:vis-{i}" for i in range(3)]
    assert all(r["path"].startswith("/fhir/Encounter?identifier=") for r in _Fhir.received)
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.attempts, t.outbox.c.delivered_at)).all()
    assert all(r.delivered_at is not None for r in rows)
    assert sorted(r.attempts for r in rows) == [1, 1, 2]


def test_an_unreachable_server_keeps_everything_for_later(sqlite_engine: Engine) -> None:
    _queue(sqlite_engine, 2)
    with httpx.Client(timeout=1) as client:
        result = deliver_outbox(sqlite_engine, FhirEndpointSink("http://127.0.0.1:9/fhir", client), municipality_id=M_ID, now=NOW)
    assert (result.delivered, result.failed) == (0, 2)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(t.outbox.c.delivered_at)).scalars().all() == [None, None]


def test_a_municipality_delivers_only_its_own_encounters(sqlite_engine: Engine, tmp_path: Path) -> None:
    _queue(sqlite_engine, 2, "m1")
    _queue(sqlite_engine, 3, "m2")
    result = deliver_outbox(sqlite_engine, FolderSink(tmp_path / "m2"), municipality_id="m2", now=NOW)
    assert result.delivered == 3
    assert sorted(p.name for p in (tmp_path / "m2").iterdir()) == [
        f"encounter-m2-vis-{i}.json" for i in range(3)
    ]
    assert all((p.stat().st_mode & 0o077) == 0 for p in (tmp_path / "m2").iterdir())


class _Trickle(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_trickles_its_answer_hits_the_deadline(sqlite_engine: Engine) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _queue(sqlite_engine, 1)
        url = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        with httpx.Client(timeout=5) as client:
            sink = FhirEndpointSink(url, client, deadline_s=0.5)
            result = deliver_outbox(sqlite_engine, sink, municipality_id=M_ID, now=NOW)
        assert (result.delivered, result.failed) == (0, 1)
    finally:
        server.shutdown()
        server.server_close()
