"""Standard Webhooks v1 signing, both directions (pure: no I/O, no framework).

Every message carries `webhook-id` (unique per message; a retry of the same message keeps it),
`webhook-timestamp` (integer Unix seconds) and `webhook-signature`: one or more space-separated
`v1,<base64 HMAC-SHA256>` over `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed by the shared
secret given as `whsec_<base64 key>`. The receiver rejects a bad signature, a timestamp more than
5 minutes from its clock, and a webhook-id it has already accepted (replay, see ReplayGuard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from portner.domain.errors import PortnerError

TOLERANCE = timedelta(minutes=5)
MAX_TIMESTAMP_DIGITS = 12  # Unix seconds stay below 10**12 until the year 33658


class CallbackRejected(PortnerError):
    """A signed message that Portner refuses; `http_status` is what the web layer answers and
    `field` names what was wrong ("header/webhook-timestamp", "body/data/lock", ...)."""

    http_status = 400

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class BadSignature(CallbackRejected):
    http_status = 401


class StaleTimestamp(CallbackRejected):
    http_status = 400


class Replayed(CallbackRejected):
    # 409 tells a vendor "already delivered": stop retrying this webhook-id.
    http_status = 409


class MalformedCallback(CallbackRejected):
    http_status = 400


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64)."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ValueError("a webhook secret is 'whsec_' followed by the base64 of the key")
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        raise ValueError("the webhook secret after 'whsec_' is not valid base64") from None
    if len(key) < 24:
        raise ValueError("a webhook secret key must be at least 24 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message: "v1," + base64 HMAC-SHA256."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(key: bytes, body: bytes, *, now: datetime,
                      msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(now.timestamp())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body)}


@dataclass(frozen=True, slots=True)
class Verified:
    msg_id: str
    timestamp: datetime


def verify(headers: Mapping[str, str], body: bytes, keys: Sequence[bytes], *, now: datetime,
           tolerance: timedelta = TOLERANCE) -> Verified:
    """Check a Standard Webhooks signature and timestamp; raise CallbackRejected if either fails.
    Replay protection needs memory: see ReplayGuard."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
               if not lowered.get(h)]
    if missing:
        raise BadSignature(f"missing header(s): {', '.join(missing)}",
                           field=f"header/{missing[0]}")
    msg_id, raw_ts = lowered["webhook-id"], lowered["webhook-timestamp"]
    # ASCII digits only ("²" is a digit to str.isdigit), and few enough of them to be a time:
    # 99999999999999999999 overflows datetime, and no honest clock is more than 12 digits.
    if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > MAX_TIMESTAMP_DIGITS:
        raise StaleTimestamp("webhook-timestamp must be integer Unix seconds",
                             field="header/webhook-timestamp")
    try:
        sent = datetime.fromtimestamp(int(raw_ts), tz=now.tzinfo)
        stale = abs(now - sent) > tolerance
    except (OverflowError, OSError, ValueError):
        stale, sent = True, now
    if stale:
        raise StaleTimestamp(f"webhook-timestamp is more than {tolerance} away from our clock",
                             field="header/webhook-timestamp")
    offered = [part.split(",", 1)[1] for part in lowered["webhook-signature"].split()
               if part.startswith("v1,")]
    for key in keys:
        expected = sign(key, msg_id, int(raw_ts), body).split(",", 1)[1]
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Verified(msg_id, sent)
    raise BadSignature("no v1 signature matches the body with our key",
                       field="header/webhook-signature")


class ReplayGuard:
    """Remembers accepted webhook-ids for twice the tolerance (older ones are refused as stale)."""

    def __init__(self, tolerance: timedelta = TOLERANCE) -> None:
        self._tolerance = tolerance
        self._seen: dict[str, datetime] = {}

    def accept(self, verified: Verified, now: datetime) -> None:
        horizon = now - 2 * self._tolerance
        self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
        if verified.msg_id in self._seen:
            raise Replayed(f"webhook-id {verified.msg_id!r} was already accepted",
                           field="header/webhook-id")
        self._seen[verified.msg_id] = verified.timestamp

    def forget(self, msg_id: str) -> None:
        """Let this webhook-id in again: its message was accepted but could not be kept, so the
        vendor's retry must not be refused as a replay."""
        self._seen.pop(msg_id, None)
