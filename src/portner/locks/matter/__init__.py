"""The Matter adapter: Door Lock (cluster 0x0101) locks through a Matter server's WebSocket API.

The server is the Open Home Foundation's matter.js-based Matter Server (or the older Python one;
both speak the same API, see `client`). Portner never embeds a Matter stack: the server owns
commissioning, the fabric, subscriptions and the locks' clocks.

Configuration (`BackendConfig`): `url` is the server's `ws://host:port/ws` (the server listens on
port 5580 by default); options `zone` (the IANA zone the locks' year-day schedules are read in;
default Europe/Oslo), `timeout_seconds` (per request; default 10, Thread locks can be slow) and
`remote_pin` (only for locks that require a PIN for remote lock/unlock). Lock addresses are the
Matter node id, optionally with the Door Lock endpoint: `"5"` or `"5/1"`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portner.locks.matter.backend import MatterBackend
from portner.locks.matter.lock import MatterLock
from portner.locks.port import BackendConfig, KeypadCode

DEFAULT_ZONE = "Europe/Oslo"
DEFAULT_TIMEOUT_SECONDS = 10.0


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> MatterBackend:
    """Return the Matter backend for `config`, not yet started."""
    url = config.url or ""
    if urlparse(url).scheme not in ("ws", "wss") or not urlparse(url).netloc:
        raise ValueError(f"matter backend: url must be the server's ws://host:port/ws, not {url!r}")
    zone_name = config.options.get("zone", DEFAULT_ZONE)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"matter backend: option zone {zone_name!r} is not an IANA time zone"
        ) from exc
    raw_timeout = config.options.get("timeout_seconds", str(DEFAULT_TIMEOUT_SECONDS))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ValueError(
            f"matter backend: option timeout_seconds must be a positive number, not {raw_timeout!r}"
        )
    pin = config.options.get("remote_pin")
    try:
        remote_pin = KeypadCode(pin) if pin else None
    except ValueError:
        raise ValueError("matter backend: option remote_pin must be digits") from None
    return MatterBackend(url, now=now, zone=zone, timeout=timeout, remote_pin=remote_pin)


__all__ = ["MatterBackend", "MatterLock", "create_backend"]
