"""The municipality's secrets: the credential issuer key and the lock-log MAC master secret.

Private material lives in files under the data directory, readable by the owner only; the database
holds only public keys. A national deployment would keep the issuer key in an HSM behind the same
interface (`IssuerKey`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, insert, select

from portner.credentials import IssuerKey, IssuerPublicKey
from portner.storage import tables as t


@dataclass(frozen=True, slots=True)
class MunicipalitySecrets:
    issuer: IssuerKey
    lock_master: bytes = b""

    def lock_key(self, lock_id: str) -> bytes:
        """Derive the key a lock MACs its event log with; provisioned into the lock at install."""
        return hmac.new(self.lock_master, b"portner-lock-log-v1|" + lock_id.encode(), hashlib.sha256).digest()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # private keys: owner only
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def load_or_create_secrets(
    conn: Connection,
    data_dir: Path,
    municipality_id: str,
    *,
    now: datetime,
    seed_bytes: bytes | None = None,
) -> MunicipalitySecrets:
    """Load the issuer key and lock master secret, creating them on first use.

    `seed_bytes` (demo only) makes the keys reproducible so that a fixed --seed gives the same day.
    """
    key_path = data_dir / "keys" / f"{municipality_id}.issuer.der"
    master_path = data_dir / "keys" / f"{municipality_id}.lockmaster"
    if key_path.exists():
        issuer = IssuerKey.from_private_bytes(key_path.read_bytes())
    else:
        if seed_bytes is not None:
            issuer = IssuerKey.from_seed(hashlib.sha256(b"issuer|" + seed_bytes).digest())
        else:
            issuer = IssuerKey.generate()
        _write_private(key_path, issuer.to_private_bytes())
    if master_path.exists():
        master = master_path.read_bytes()
    else:
        master = (
            hashlib.sha256(b"lockmaster|" + seed_bytes).digest()
            if seed_bytes is not None
            else os.urandom(32)
        )
        _write_private(master_path, master)
    _register_public(conn, municipality_id, issuer, now)
    return MunicipalitySecrets(issuer=issuer, lock_master=master)


def _register_public(conn: Connection, municipality_id: str, issuer: IssuerKey, now: datetime) -> None:
    kid = issuer.kid.hex()
    if conn.execute(select(t.issuer_keys.c.kid).where(t.issuer_keys.c.kid == kid)).first():
        return
    conn.execute(
        insert(t.issuer_keys).values(
            kid=kid,
            municipality_id=municipality_id,
            alg=issuer.alg,
            public_key=issuer.public.to_bytes(),
            created_at=now,
        )
    )


def trusted_issuers(conn: Connection, municipality_id: str) -> dict[bytes, IssuerPublicKey]:
    """Return the issuer public keys a lock of this municipality must trust, by key id."""
    rows = conn.execute(
        select(t.issuer_keys).where(
            t.issuer_keys.c.municipality_id == municipality_id,
            t.issuer_keys.c.retired_at.is_(None),
        )
    )
    return {
        bytes.fromhex(r.kid): IssuerPublicKey.from_bytes(r.alg, bytes.fromhex(r.kid), r.public_key)
        for r in rows
    }
