"""Issue door credentials: one signed, short-lived credential per grant, bound to a phone's key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from portner.credentials import IssuerKey, issue_credential
from portner.domain.errors import PortnerError
from portner.domain.model import Device, DeviceStatus, Grant
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME
from portner.services.ids import IdSource
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository


class IssuanceRefused(PortnerError):
    """No credential may be issued (disabled account, revoked or unknown device)."""


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    credential_id: str
    grant: Grant
    device_id: str
    blob: bytes


def issue_for_shift(
    engine: Engine,
    issuer: IssuerKey,
    device_ids: Sequence[str],
    *,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
    ids: IdSource,
) -> list[IssuedCredential]:
    """Issue each device's credentials for the active grants of its owner in the window.

    Idempotent: a grant that already has a live credential for the device gets no second one.
    Everything (credential rows and their audit entries) commits in one transaction.
    """
    issued: list[IssuedCredential] = []
    audit: list[AuditEntry] = []
    rows: list[dict[str, object]] = []
    with engine.begin() as conn:
        repo = Repository(conn)
        for device_id in device_ids:
            device = _usable_device(repo, device_id)
            grants = repo.active_grants_for_actor(device.actor_id, window_start, window_end)
            have = {
                c.grant_id
                for c in repo.credentials_of_grants([g.id for g in grants])
                if c.device_id == device.id and c.revoked_at is None
            }
            for grant in grants:
                if grant.id in have:
                    continue
                cred = _sign(issuer, grant, device, now, ids)
                issued.append(cred)
                rows.append(
                    {
                        "id": cred.credential_id,
                        "grant_id": grant.id,
                        "device_id": device.id,
                        "issued_at": now,
                        "not_before": grant.not_before,
                        "not_after": _expiry(grant),
                        "size": len(cred.blob),
                    }
                )
                audit.append(
                    AuditEntry(
                        now,
                        "system:issuer",
                        "credential:issued",
                        cred.credential_id,
                        {
                            "grant": grant.id,
                            "device": device.id,
                            "actor": device.actor_id,
                            "doors": list(grant.door_ids),
                            "size": len(cred.blob),
                        },
                    )
                )
        repo.insert_credentials(rows)
        if audit:
            append_audit(conn, audit)
    return issued


def _usable_device(repo: Repository, device_id: str) -> Device:
    device = repo.get_device(device_id)
    if device is None:
        raise IssuanceRefused(f"unknown device {device_id}")
    if device.status is not DeviceStatus.ACTIVE:
        raise IssuanceRefused(f"device {device_id} is revoked")
    actor = repo.get_actor(device.actor_id)
    if actor is None or not actor.active:
        raise IssuanceRefused(f"account {device.actor_id} is disabled")
    return device


def _expiry(grant: Grant) -> datetime:
    # A grant longer than the lifetime cap (a long manual grant) is served by shorter
    # credentials that the phone renews online; an offline lock never sees more than 12 h.
    return min(grant.not_after, grant.not_before + MAX_CREDENTIAL_LIFETIME)


def _sign(
    issuer: IssuerKey, grant: Grant, device: Device, now: datetime, ids: IdSource
) -> IssuedCredential:
    cid = ids.token(16)
    blob = issue_credential(
        issuer,
        credential_id=cid,
        subject=grant.actor_id,
        device_public_key=device.public_key,
        door_ids=grant.door_ids,
        not_before=grant.not_before,
        not_after=_expiry(grant),
        issued_at=now,
    )
    return IssuedCredential(cid.hex(), grant, device.id, blob)

