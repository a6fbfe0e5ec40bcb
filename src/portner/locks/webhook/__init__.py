"""Generic signed-webhook adapter: any vendor cloud that serves Portner's webhook contract.

The contract ("portner-webhook/1"), as a vendor implements it, and where each part lives:

- signing: Standard Webhooks v1 in both directions. Portner signs its requests to the vendor with
  options `secret`; the vendor signs callbacks with `callback_secret` (default: `secret`; several
  space-separated secrets are accepted, for rotation).
- contract: `GET {base}/manifest` (the locks and their capabilities) and the typed results
  (success, denied, temporary, permanent, pending).
- backend: `POST {base}/execute` (one command under an idempotency key) and the callback
  receiver `WebhookBackend.handle_callback(headers, body)`, which the web app mounts at
  `POST /api/v1/lock-callbacks/webhook` (portner.web.api.lock_callbacks).
- callbacks: the callback bodies (`lock.event`, `lock.health`, `command.result`). Portner answers
  2xx once accepted; see CallbackRejected.http_status otherwise.
- lock: the LockPort. An "already exists" answer to set_code is reconciled by reading the slot,
  never retried (F21).

Options: `secret` (required), `callback_secret`, `timeout` (seconds per request, default 10),
`result_timeout` (seconds to wait for a pending command's callback, default 30).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from portner.locks.port import BackendConfig
from portner.locks.webhook.backend import WebhookBackend
from portner.locks.webhook.callbacks import parse_callback
from portner.locks.webhook.contract import (
    CONTRACT,
    ManifestError,
    parse_manifest,
    slot_reading,
    to_command_result,
)
from portner.locks.webhook.lock import WebhookLock
from portner.locks.webhook.signing import (
    TOLERANCE,
    BadSignature,
    CallbackRejected,
    MalformedCallback,
    Replayed,
    ReplayGuard,
    StaleTimestamp,
    Verified,
    decode_secret,
    sign,
    signature_headers,
    verify,
)

__all__ = [
    "CONTRACT",
    "TOLERANCE",
    "BadSignature",
    "CallbackRejected",
    "MalformedCallback",
    "ManifestError",
    "ReplayGuard",
    "Replayed",
    "StaleTimestamp",
    "Verified",
    "WebhookBackend",
    "WebhookLock",
    "create_backend",
    "decode_secret",
    "parse_callback",
    "parse_manifest",
    "sign",
    "signature_headers",
    "slot_reading",
    "to_command_result",
    "verify",
]


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> WebhookBackend:
    return WebhookBackend(config, now=now)
