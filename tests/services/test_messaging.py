"""The SMS port against real servers: an HTTP SMS gateway on loopback and a real SMTP server.

`SmsGatewayServer` (a tiny Starlette app under uvicorn in a thread) and `SmtpServer` (aiosmtpd)
record what they receive; the end-to-end tests reuse them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from portner.domain.model import Municipality, MunicipalityId
from portner.services.messaging import (
    HttpSmsGateway,
    OutboxOnly,
    SmtpGateway,
    deliver_messages,
    gateway_from_setting,
    queue_message,
)
from portner.storage import tables as t
from portner.storage.repository import Repository

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=ZoneInfo("Europe/Oslo"))
M = Municipality(id=MunicipalityId("m1"), name="Testkommune")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmsGatewayServer:
    """An HTTP SMS gateway that records {to, text} and the Authorization header it was sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200  # set to 503 to make it refuse
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/sms"

        async def sms(request: Request) -> JSONResponse:
            body = await request.json()
            if self.status >= 300:
                return JSONResponse({"error": "unavailable"}, status_code=self.status)
            self.received.append({**body, "authorization": request.headers.get("authorization")})
            return JSONResponse({"id": len(self.received)}, status_code=self.status)

        app = Starlette(routes=[Route("/sms", sms, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> SmsGatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the SMS gateway test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives."""

    def __init__(self) -> None:
        self.recorder = _Recorder()
        self.port = free_port()
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def sms_gateway() -> Iterator[SmsGatewayServer]:
    server = SmsGatewayServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def municipality(engine: Engine) -> Engine:
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)
    return engine


def queue(engine: Engine, channel: str, recipient: str, body: str) -> int:
    with engine.begin() as conn:
        return queue_message(conn, M.id, channel, recipient, body, NOW)


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.messages).order_by(t.messages.c.id)))


def test_http_gateway_delivers_sms_and_marks_them_sent(
    municipality: Engine, sms_gateway: SmsGatewayServer
) -> None:
    engine = municipality
    queue(engine, "sms", "+4791234567", "Åpne døren: https://x/visit/abc")
    queue(engine, "sms", "+4798765432", "second")
    report = deliver_messages(engine, HttpSmsGateway(sms_gateway.url, token="s3cret"),
                              NOW + timedelta(seconds=2))
    assert (report.sent, report.failed) == (2, 0)
    assert [(m["to"], m["text"]) for m in sms_gateway.received] == [
        ("+4791234567", "Åpne døren: https://x/visit/abc"), ("+4798765432", "second")]
    assert sms_gateway.received[0]["authorization"] == "Bearer s3cret"
    assert all(r.sent_at == NOW + timedelta(seconds=2) and r.attempts == 1 for r in rows(engine))
    # Nothing is sent twice.
    assert deliver_messages(engine, HttpSmsGateway(sms_gateway.url), NOW).sent == 0
    assert len(sms_gateway.received) == 2


def test_a_refusing_gateway_leaves_the_message_queued_with_the_error(
    municipality: Engine, sms_gateway: SmsGatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = municipality
    queue(engine, "sms", "+4791234567", "secret link https://x/visit/tok")
    sms_gateway.status = 503
    gateway = HttpSmsGateway(sms_gateway.url)
    assert deliver_messages(engine, gateway, NOW).failed == 1
    [row] = rows(engine)
    assert row.sent_at is None and row.attempts == 1 and row.last_error == "SMS gateway answered HTTP 503"
    # Neither the number nor the body reaches the log or the recorded error.
    assert "91234567" not in caplog.text and "visit/tok" not in caplog.text
    sms_gateway.status = 200
    # The next try waits (2 s after the first failure): a gateway that is down is not hammered.
    assert deliver_messages(engine, gateway, NOW + timedelta(seconds=1)).sent == 0
    assert deliver_messages(engine, gateway, NOW + timedelta(seconds=2)).sent == 1
    [row] = rows(engine)
    assert row.sent_at is not None and row.attempts == 2 and row.last_error is None


def test_retries_back_off_to_at_most_ten_minutes() -> None:
    from portner.services.messaging import retry_delay

    delays = [retry_delay(n).total_seconds() for n in range(1, 14)]
    assert delays[:4] == [2, 4, 8, 16]
    assert delays == sorted(delays) and delays[-1] == 600


def test_an_unreachable_gateway_is_recorded_too(municipality: Engine) -> None:
    queue(municipality, "sms", "+4791234567", "hei")
    gateway = HttpSmsGateway(f"http://127.0.0.1:{free_port()}/sms", timeout=2)
    assert deliver_messages(municipality, gateway, NOW).failed == 1
    [row] = rows(municipality)
    assert row.sent_at is None and "unreachable" in row.last_error and "4791234567" not in row.last_error


def test_smtp_gateway_delivers_both_channels(municipality: Engine, smtp_server: SmtpServer) -> None:
    engine = municipality
    queue(engine, "sms", "+4791234567", "Åpne døren her")
    queue(engine, "email", "kari@example.org", "Du har fått tilgang")
    gateway = SmtpGateway("127.0.0.1", smtp_server.port, "portner@kommune.example",
                          sms_domain="sms.operator.example")
    assert deliver_messages(engine, gateway, NOW).sent == 2
    got = smtp_server.recorder.messages
    assert [(sender, to) for sender, to, _ in got] == [
        ("portner@kommune.example", ["4791234567@sms.operator.example"]),
        ("portner@kommune.example", ["kari@example.org"]),
    ]
    first = message_from_bytes(got[0][2])
    assert first.get_payload(decode=True).decode("utf-8").strip() == "Åpne døren her"
    assert all(r.sent_at is not None for r in rows(engine))


def test_smtp_failure_stays_queued(municipality: Engine) -> None:
    queue(municipality, "email", "kari@example.org", "x")
    gateway = SmtpGateway("127.0.0.1", free_port(), "portner@kommune.example", timeout=2)
    assert deliver_messages(municipality, gateway, NOW).failed == 1
    [row] = rows(municipality)
    assert row.sent_at is None and row.last_error.startswith("SMTP server") and "kari" not in row.last_error


def test_outbox_only_sends_nothing(municipality: Engine) -> None:
    queue(municipality, "sms", "+4791234567", "x")
    assert deliver_messages(municipality, OutboxOnly(), NOW).sent == 0
    [row] = rows(municipality)
    assert row.sent_at is None and row.attempts == 0


def test_the_http_gateway_sends_sms_only(municipality: Engine, sms_gateway: SmsGatewayServer) -> None:
    queue(municipality, "email", "kari@example.org", "x")
    assert deliver_messages(municipality, HttpSmsGateway(sms_gateway.url), NOW).failed == 1
    assert sms_gateway.received == []


def test_the_setting_chooses_the_gateway() -> None:
    assert isinstance(gateway_from_setting("outbox"), OutboxOnly)
    http = gateway_from_setting("https://:tok@sms.example/send")
    assert isinstance(http, HttpSmsGateway) and http.url == "https://sms.example/send"
    assert http._token == "tok"
    smtp = gateway_from_setting("smtp://mail.example:2525?sender=p@k.no&domain=sms.example")
    assert isinstance(smtp, SmtpGateway) and (smtp.host, smtp.port, smtp.sender, smtp.sms_domain) == (
        "mail.example", 2525, "p@k.no", "sms.example")
    with pytest.raises(ValueError, match="PORTNER_SMS_GATEWAY"):
        gateway_from_setting("carrier-pigeon")


def test_queue_refuses_bad_messages(municipality: Engine) -> None:
    with municipality.begin() as conn:
        with pytest.raises(ValueError, match="channel"):
            queue_message(conn, M.id, "fax", "+4791234567", "x", NOW)
        with pytest.raises(ValueError, match="body"):
            queue_message(conn, M.id, "sms", "+4791234567", "", NOW)
