"""Revoke lost phones and grants, and publish the signed revocation list locks learn offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select

from portner.credentials import IssuerKey, device_thumbprint, issue_revocation_list
from portner.domain.errors import PortnerError
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository


class UnknownDevice(PortnerError):
    """The device to revoke does not exist."""


@dataclass(frozen=True, slots=True)
class PublishedList:
    version: int
    blob: bytes
    credentials: int
    devices: int


def revoke_device(engine: Engine, device_id: str, *, now: datetime, by: str, reason: str) -> int:
    """Revoke a phone and every credential it holds; return how many credentials were revoked."""
    with engine.begin() as conn:
        repo = Repository(conn)
        device = repo.get_device(device_id)
        if device is None:
            raise UnknownDevice(f"no device {device_id}")
        repo.set_device_revoked(device_id, now)
        live = list(
            conn.execute(
                select(t.credentials.c.id).where(
                    t.credentials.c.device_id == device_id,
                    t.credentials.c.revoked_at.is_(None),
                    t.credentials.c.not_after > now,
                )
            ).scalars()
        )
        repo.revoke_credentials(live, now)
        append_audit(
            conn,
            [
                AuditEntry(
                    now,
                    by,
                    "device:revoked",
                    device_id,
                    {"actor": device.actor_id, "reason": reason, "credentials": len(live)},
                )
            ],
        )
    return len(live)


def publish_revocation_list(
    engine: Engine, issuer: IssuerKey, municipality_id: str, *, now: datetime, by: str
) -> PublishedList:
    """Sign a new, higher-versioned list of everything revoked that could still open a door."""
    with engine.begin() as conn:
        repo = Repository(conn)
        current = conn.execute(
            select(func.max(t.revocation_lists.c.version)).where(
                t.revocation_lists.c.municipality_id == municipality_id
            )
        ).scalar()
        # Locks accept only a higher version. Tying it to the issue time (milliseconds) keeps it
        # rising even after a database restore has lost the newest lists.
        version = max(int(current or 0) + 1, int(now.timestamp() * 1000))
        creds = [
            (bytes.fromhex(r.id), r.not_after) for r in repo.live_revoked_credentials(municipality_id, now)
        ]
        devices = [
            # A revoked phone's entry outlives any credential it could still hold.
            (device_thumbprint(r.public_key), (r.revoked_at or now) + MAX_CREDENTIAL_LIFETIME)
            for r in repo.revoked_devices(municipality_id)
            if (r.revoked_at or now) + MAX_CREDENTIAL_LIFETIME > now
        ]
        blob = issue_revocation_list(
            issuer, version=version, issued_at=now, credentials=creds, devices=devices
        )
        conn.execute(
            insert(t.revocation_lists).values(
                municipality_id=municipality_id, version=version, issued_at=now, blob=blob
            )
        )
        append_audit(
            conn,
            [
                AuditEntry(
                    now,
                    by,
                    "revocation:published",
                    f"{municipality_id}/v{version}",
                    {"credentials": len(creds), "devices": len(devices), "size": len(blob)},
                )
            ],
        )
    return PublishedList(version, blob, len(creds), len(devices))


def latest_revocation_list(engine: Engine, municipality_id: str) -> tuple[int, bytes] | None:
    """Return (version, signed list) of the newest list, which phones carry to offline locks."""
    with engine.connect() as conn:
        row = conn.execute(
            select(t.revocation_lists.c.version, t.revocation_lists.c.blob)
            .where(t.revocation_lists.c.municipality_id == municipality_id)
            .order_by(t.revocation_lists.c.version.desc())
            .limit(1)
        ).first()
    return (int(row.version), bytes(row.blob)) if row else None
