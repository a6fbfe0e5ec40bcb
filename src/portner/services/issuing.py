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
        # Three queries for the whole batch, not three per phone: a national morning issues
        # tens of thousands of credentials in one go.
        devices = [_usable(repo.device_with_owner(d), d) for d in dict.fromkeys(device_ids)]
        grants = repo.active_grants_for_actors(
            sorted({d.actor_id for d in devices}), window_start, window_end
        )
        have = repo.live_credential_pairs([g.id for gs in grants.values() for g in gs])
        for device in devices:
            for grant in grants.get(device.actor_id, []):
                if (grant.id, device.id) in have:
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


def _usable(found: tuple[Device, bool] | None, device_id: str) -> Device:
    if found is None:
        raise IssuanceRefused(f"unknown device {device_id}")
    device, owner_active = found
    if device.status is not DeviceStatus.ACTIVE:
        raise IssuanceRefused(f"device {device_id} is revoked")
    if not owner_active:
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

