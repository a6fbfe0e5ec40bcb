"""Issue door credentials: one signed, short-lived credential per grant, bound to a phone's key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import Engine

from portner.credentials import IssuerKey, issue_credential
from portner.domain.errors import PortnerError
from portner.domain.model import Device, DeviceStatus, Grant
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME
from portner.services.ids import IdSource
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import instant_writer
from portner.storage.repository import Repository

ISSUER_ACTOR = "system:issuer"


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
    # Stored and hashed in UTC in any case; converting once spares a zone lookup per entry.
    now = now if now.utcoffset() is None else now.astimezone(UTC)
    issued: list[IssuedCredential] = []
    audit: list[AuditEntry] = []
    rows: list[tuple[object, ...]] = []
    with engine.begin() as conn:
        repo = Repository(conn)
        # Three queries for the whole batch, not three per phone: a national morning issues
        # tens of thousands of credentials in one go.
        wanted = list(dict.fromkeys(device_ids))
        found = repo.devices_with_owners(wanted)
        devices = [_usable(found.get(d), d) for d in wanted]
        actors = sorted({d.actor_id for d in devices})
        grants = repo.active_grants_for_actors(actors, window_start, window_end)
        have = repo.live_credential_pairs_for_actors(actors, window_start, window_end)
        stored = instant_writer(conn)
        for device in devices:
            for grant in grants.get(device.actor_id, ()):
                if have and (grant.id, device.id) in have:
                    continue
                cred, expiry = _sign(issuer, grant, device, now, ids)
                issued.append(cred)
                size = len(cred.blob)
                rows.append(
                    (
                        cred.credential_id,
                        grant.id,
                        device.id,
                        stored(now),
                        stored(grant.not_before),
                        stored(expiry),
                        size,
                    )
                )
                audit.append(
                    AuditEntry(
                        now,
                        ISSUER_ACTOR,
                        "credential:issued",
                        cred.credential_id,
                        {
                            "grant": grant.id,
                            "device": device.id,
                            "actor": device.actor_id,
                            "doors": list(grant.door_ids),
                            "size": size,
                        },
                    )
                )
        repo.insert_credential_rows(rows)
        if audit:
            append_audit(conn, audit)
    return issued


# Signed credentials by their exact claims. The phone reloads its shift's credentials often;
# signing ~25 of them again on every call was most of the endpoint's cost. A hit returns the
# very bytes signed before for the same issuer key and claims (Ed25519 would give them anyway;
# for P-256 it spares the phone a second, different signature of the same credential). Whether a
# credential may be handed out at all is decided per call, before this is asked.
@lru_cache(maxsize=16384)
def signed_credential(
    issuer: IssuerKey,
    credential_id: str,
    subject: str,
    device_public_key: bytes,
    door_ids: tuple[str, ...],
    not_before: datetime,
    not_after: datetime,
    issued_at: datetime,
) -> bytes:
    """The credential with these claims, signed by `issuer` (once per process; see above)."""
    return issue_credential(
        issuer, credential_id=bytes.fromhex(credential_id), subject=subject,
        device_public_key=device_public_key, door_ids=list(door_ids), not_before=not_before,
        not_after=not_after, issued_at=issued_at,
    )


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
) -> tuple[IssuedCredential, datetime]:
    cid = ids.token(16)
    expiry = _expiry(grant)
    blob = issue_credential(
        issuer,
        credential_id=cid,
        subject=grant.actor_id,
        device_public_key=device.public_key,
        door_ids=grant.door_ids,
        not_before=grant.not_before,
        not_after=expiry,
        issued_at=now,
    )
    return IssuedCredential(cid.hex(), grant, device.id, blob), expiry
