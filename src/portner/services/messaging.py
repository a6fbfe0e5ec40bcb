"""Messages to people (SMS, e-mail): queued with what causes them, sent later by a worker.

`queue_message` writes a `messages` row in the caller's transaction, so a one-time access and its
SMS commit together or not at all. `deliver_messages` sends unsent rows through a
`MessageGateway` chosen by configuration in one place (`gateway_from_setting`): an HTTP SMS
gateway, an e-mail-to-SMS gateway over SMTP, or the outbox only (development: nothing leaves the
database and the console shows the messages). Failures stay queued with the error.

Phone numbers and message bodies are personal data and carry secrets (links): they are never
logged, and recorded errors never repeat them.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
from sqlalchemy import Connection, Engine, insert, or_, select, update

from portner.domain.errors import PortnerError
from portner.storage import tables as t

log = logging.getLogger(__name__)

CHANNELS = frozenset({"sms", "email"})
GATEWAY_DEADLINE_S = 10.0
# After this many failed attempts a message stays queued (with its last error) for an operator
# instead of being retried every few seconds forever.
MAX_ATTEMPTS = 30
MAX_RETRY_DELAY = timedelta(minutes=10)
MAX_BODY = 1000


class GatewayError(PortnerError):
    """The gateway did not take the message. The text names no recipient and no content."""


class MessageGateway(Protocol):
    """Sends one message or raises GatewayError. `delivers` is False for the outbox only."""

    delivers: bool

    def send(self, channel: str, recipient: str, body: str) -> None: ...


def queue_message(
    conn: Connection, municipality_id: str, channel: str, recipient: str, body: str, now: datetime
) -> int:
    """Queue a message in the caller's transaction; return its id."""
    if channel not in CHANNELS:
        raise ValueError(f"message channel must be one of {sorted(CHANNELS)}, not {channel!r}")
    if not recipient or len(recipient) > 200:
        raise ValueError("a message needs a recipient of at most 200 characters")
    if not body or len(body) > MAX_BODY:
        raise ValueError(f"a message body is 1..{MAX_BODY} characters")
    result = conn.execute(
        insert(t.messages).values(
            municipality_id=municipality_id, channel=channel, recipient=recipient, body=body,
            created_at=now, sent_at=None, attempts=0, last_error=None,
        )
    )
    return int(result.inserted_primary_key[0])


# --- gateways -------------------------------------------------------------------------------------


class OutboxOnly:
    """Development: messages stay in the table unsent; the console lists them."""

    delivers = False

    def send(self, channel: str, recipient: str, body: str) -> None:  # pragma: no cover - unused
        raise GatewayError("the outbox-only gateway sends nothing")

    def __repr__(self) -> str:
        return "OutboxOnly()"


class HttpSmsGateway:
    """POST {"to": phone, "text": body} as JSON; any 2xx answer means the gateway took it."""

    delivers = True

    def __init__(self, url: str, token: str | None = None, *, timeout: float = GATEWAY_DEADLINE_S):
        self.url = url
        self._token = token
        self._timeout = timeout

    def send(self, channel: str, recipient: str, body: str) -> None:
        if channel != "sms":
            raise GatewayError(f"the HTTP SMS gateway sends SMS only, not {channel}")
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            answer = httpx.post(self.url, json={"to": recipient, "text": body}, headers=headers,
                                timeout=self._timeout)
        except httpx.HTTPError as exc:
            # The exception text may carry the request; name only the kind of failure.
            raise GatewayError(f"SMS gateway unreachable ({type(exc).__name__})") from None
        if not 200 <= answer.status_code < 300:
            raise GatewayError(f"SMS gateway answered HTTP {answer.status_code}")

    def __repr__(self) -> str:
        return f"HttpSmsGateway({self.url!r})"


class SmtpGateway:
    """E-mail: to the address itself (channel "email") or "<digits>@<sms_domain>" for SMS."""

    delivers = True

    def __init__(self, host: str, port: int, sender: str, *, sms_domain: str = "sms.localhost",
                 timeout: float = GATEWAY_DEADLINE_S) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.sms_domain = sms_domain
        self._timeout = timeout

    def address_for(self, channel: str, recipient: str) -> str:
        if channel == "email":
            return recipient
        digits = "".join(ch for ch in recipient if ch.isdigit())
        return f"{digits}@{self.sms_domain}"

    def send(self, channel: str, recipient: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = self.address_for(channel, recipient)
        message["Subject"] = "Portner"
        message.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused:
            raise GatewayError("SMTP server refused the recipient") from None
        except smtplib.SMTPResponseException as exc:
            raise GatewayError(f"SMTP server answered {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise GatewayError(f"SMTP server unreachable or failed ({type(exc).__name__})") from None

    def __repr__(self) -> str:
        return f"SmtpGateway({self.host!r}, {self.port})"


def gateway_from_setting(setting: str) -> MessageGateway:
    """The gateway PORTNER_SMS_GATEWAY names: "outbox", an http(s) URL, or smtp://host:port.

    An HTTP gateway's token may ride in the URL's user part (https://:TOKEN@host/path); it is sent
    as a Bearer token, not as basic authentication. smtp:// takes ?sender=...&domain=... .
    """
    value = (setting or "").strip()
    if value == "outbox":
        return OutboxOnly()
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        token = parts.password or parts.username or None
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return HttpSmsGateway(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), token)
    if parts.scheme == "smtp" and parts.hostname:
        query = parse_qs(parts.query)
        return SmtpGateway(
            parts.hostname, parts.port or 25,
            query.get("sender", ["portner@localhost"])[0],
            sms_domain=query.get("domain", ["sms.localhost"])[0],
        )
    raise ValueError(
        "PORTNER_SMS_GATEWAY must be 'outbox', an http(s):// URL of an SMS gateway, or "
        "smtp://host:port"
    )


# --- delivery -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the n-th failed attempt: 2 s, 4 s, 8 s ... at most 10 minutes."""
    return min(timedelta(seconds=2 ** min(attempts, 20)), MAX_RETRY_DELAY)


def deliver_messages(
    engine: Engine, gateway: MessageGateway, now: datetime, limit: int = 20,
    *, municipality_id: str | None = None,
) -> DeliveryReport:
    """Send up to `limit` unsent messages, oldest first; record each attempt and its error.

    One short transaction per message: on PostgreSQL its row is locked (SKIP LOCKED) while it is
    sent, so several replicas running this worker never send one message twice; on SQLite the
    write lock is taken only after the gateway has answered, so a slow gateway blocks no writer.
    """
    if not gateway.delivers:
        return DeliveryReport()
    m = t.messages
    query = (
        select(m.c.id, m.c.channel, m.c.recipient, m.c.body, m.c.attempts)
        .where(m.c.sent_at.is_(None), m.c.attempts < MAX_ATTEMPTS,
               or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now))
        .order_by(m.c.id)
        .limit(1)
    )
    if municipality_id is not None:
        query = query.where(m.c.municipality_id == municipality_id)
    locking = engine.dialect.name == "postgresql"
    if locking:
        query = query.with_for_update(skip_locked=True)
    sent = failed = 0
    tried: list[int] = []
    for _ in range(limit):
        # Skip what this run already tried: a failed message is retried on the next run.
        pick = query.where(m.c.id.not_in(tried)) if tried else query
        with engine.begin() as conn:
            row = conn.execute(pick).first()
            if row is None:
                break
            tried.append(row.id)
            if locking:  # send while the row is locked, record in the same transaction
                error = _attempt(gateway, row)
                _record(conn, row, error, now)
        if not locking:
            # SQLite: a read transaction that later writes fails if another writer came between;
            # send outside any transaction, then record in a short one of its own.
            error = _attempt(gateway, row)
            with engine.begin() as conn:
                _record(conn, row, error, now)
        if error is None:
            sent += 1
        else:
            failed += 1
    return DeliveryReport(sent, failed)


def _attempt(gateway: MessageGateway, row: Any) -> str | None:
    try:
        gateway.send(row.channel, row.recipient, row.body)
    except GatewayError as exc:
        log.warning("message %s not sent (attempt %s): %s", row.id, row.attempts + 1, exc)
        return str(exc)[:500]
    except Exception as exc:  # a broken adapter must not stall the queue; its text may hold data
        log.warning("message %s not sent (attempt %s): %s", row.id, row.attempts + 1,
                    type(exc).__name__)
        return f"gateway failed ({type(exc).__name__})"
    return None


def _record(conn: Connection, row: Any, error: str | None, now: datetime) -> None:
    m = t.messages
    values: dict[str, Any] = {"attempts": row.attempts + 1, "last_error": error}
    if error is None:
        values["sent_at"] = now
    else:
        values["next_attempt_at"] = now + retry_delay(row.attempts + 1)
    conn.execute(update(m).where(m.c.id == row.id).values(**values))
