"""Anchor the audit chain outside the database, and check it against the data it describes.

The hash chain shows any edit inside the log, but someone who can write the database could cut the
tail and reset the head, or empty the log. Two checks close that:

- Signed checkpoints: after each command that writes, the chain's head (seq, hash) is signed with a
  key kept in the data directory, not in the database, and appended to a file per database in
  `audit-checkpoints/` (in the spirit of C2SP signed notes). A chain that no longer contains a checkpointed head has
  been cut or rewritten.
- Cross-checks: every grant, credential and door event in the database must have its audit entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from sqlalchemy import Connection, and_, exists, func, select

from portner.storage import tables as t

CHECKPOINTS = "audit-checkpoints"
_KEY = Path("keys") / "audit-checkpoint.key"
_CONTEXT = "portner-audit-checkpoint-v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: bytes
    at: str


def _key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / _KEY
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return key


def checkpoint_file(conn: Connection, data_dir: Path) -> Path:
    """The checkpoint file of the database behind `conn` (one data folder may serve several).

    Named by the database's URL without password, so that checkpoints of one database are never
    compared with another's chain.
    """
    url = conn.engine.url.render_as_string(hide_password=True)
    if conn.engine.url.get_backend_name() == "sqlite" and conn.engine.url.database:
        url = f"sqlite:///{Path(conn.engine.url.database).resolve()}"
    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    return data_dir / CHECKPOINTS / f"{name}.jsonl"


def _note(seq: int, digest: bytes, at: str) -> bytes:
    return f"{_CONTEXT}\n{seq}\n{digest.hex()}\n{at}\n".encode()


def write_checkpoint(conn: Connection, data_dir: Path, *, now: datetime) -> Checkpoint:
    """Sign the chain's current head and append it to the checkpoint file."""
    head = conn.execute(select(t.audit_head.c.seq, t.audit_head.c.hash)).first()
    seq, digest = (int(head.seq), bytes(head.hash)) if head else (0, bytes(32))
    at = now.isoformat()
    key = _key(data_dir)
    line = {
        "seq": seq,
        "hash": digest.hex(),
        "at": at,
        "key": key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
        "sig": key.sign(_note(seq, digest, at)).hex(),
    }
    path = checkpoint_file(conn, data_dir)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return Checkpoint(seq, digest, at)


def check_checkpoints(conn: Connection, data_dir: Path) -> tuple[int, list[str]]:
    """Return how many checkpoints were checked and what is wrong with the chain against them."""
    path = checkpoint_file(conn, data_dir)
    if not path.exists():
        return 0, []
    public = _key(data_dir).public_key()
    problems: list[str] = []
    count = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            line = json.loads(raw)
            seq, digest, at = int(line["seq"]), bytes.fromhex(line["hash"]), str(line["at"])
            public.verify(bytes.fromhex(line["sig"]), _note(seq, digest, at))
        except (ValueError, KeyError, TypeError, InvalidSignature):
            problems.append(f"{path.name} line {number}: not a valid signed checkpoint")
            continue
        count += 1
        if seq == 0:
            continue
        stored = conn.execute(select(t.audit_events.c.hash).where(t.audit_events.c.seq == seq)).scalar()
        if stored is None:
            problems.append(f"checkpoint of {at} names entry {seq}, which is gone: the log was cut")
        elif bytes(stored) != digest:
            problems.append(f"checkpoint of {at}: entry {seq} differs from what was signed")
    return count, problems


def cross_check(conn: Connection) -> list[str]:
    """Find grants, credentials and door events that have no audit entry."""
    a = t.audit_events
    checks = [
        ("grant", t.grants.c.id, "grant:created"),
        ("credential", t.credentials.c.id, "credential:issued"),
    ]
    problems = []
    for name, column, action in checks:
        missing = conn.execute(
            select(func.count())
            .select_from(column.table)
            .where(~exists().where(and_(a.c.subject == column, a.c.action == action)))
        ).scalar()
        if missing:
            problems.append(f"{missing} {name}(s) without their '{action}' audit entry")
    events = conn.execute(select(func.count()).select_from(t.door_events)).scalar() or 0
    audited = conn.execute(
        select(func.count()).select_from(a).where(a.c.actor.like("lock:%"), a.c.subject.like("%#%"))
    ).scalar() or 0
    if audited < events:
        problems.append(f"{events - audited} door event(s) without their audit entry")
    return problems
