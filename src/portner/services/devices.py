"""Register staff phones; a credential can only be bound to a registered, active device."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from portner.domain.errors import PortnerError
from portner.domain.model import ActorId, Device, DeviceId
from portner.services.ids import IdSource
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository


class DeviceRefused(PortnerError):
    """The device cannot be registered (unknown or disabled account, malformed key)."""


def register_device(
    engine: Engine, actor_id: str, public_key: bytes, *, now: datetime, ids: IdSource, by: str
) -> Device:
    """Register a phone's raw Ed25519 public key for an active actor."""
    if len(public_key) != 32:
        raise DeviceRefused("a device public key is 32 raw Ed25519 bytes")
    with engine.begin() as conn:
        repo = Repository(conn)
        actor = repo.get_actor(actor_id)
        if actor is None or not actor.active:
            raise DeviceRefused(f"account {actor_id} is unknown or disabled")
        device = Device(DeviceId(ids.new("dev")), ActorId(actor_id), public_key, registered_at=now)
        repo.add_device(device)
        append_audit(conn, [AuditEntry(now, by, "device:registered", device.id, {"actor": actor_id})])
    return device
