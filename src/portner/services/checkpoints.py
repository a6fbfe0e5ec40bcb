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

import json
import os
import uuid
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
from sqlalchemy import Connection, Engine, and_, exists, func, insert, select

from portner.storage import tables as t

CHECKPOINTS = "audit-checkpoints"
_KEY = Path("keys") / "audit-checkpoint.key"
_CONTEXT = "portner-audit-checkpoint-v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: bytes
    at: str


def _key(data_dir: Path, *, create: bool = True) -> Ed25519PrivateKey | None:
    path = data_dir / _KEY
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    if not create:
        return None
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return key


def _database_id(conn: Connection, *, create: bool) -> str | None:
    found = conn.execute(select(t.instance.c.database_id).where(t.instance.c.id == 1)).scalar()
    if found is None and create:
        found = str(uuid.uuid4())
        conn.execute(insert(t.instance).values(id=1, database_id=found))
    return found


def checkpoint_file(conn: Connection, data_dir: Path, *, create: bool = False) -> Path | None:
    """The checkpoint file of the database behind `conn` (one data folder may serve several).

    Filed under the database's own random id (kept in the database), so checkpoints of one
    database are never compared with another's chain, whatever URL reaches it.
    """
    database_id = _database_id(conn, create=create)
    return None if database_id is None else data_dir / CHECKPOINTS / f"{database_id}.jsonl"


def _note(seq: int, digest: bytes, at: str) -> bytes:
    return f"{_CONTEXT}\n{seq}\n{digest.hex()}\n{at}\n".encode()


def write_checkpoint(engine: Engine, data_dir: Path, *, now: datetime) -> Checkpoint:
    """Sign the chain's current head and append it to the checkpoint file."""
    with engine.begin() as conn:  # commits the database id on first use
        return _write_checkpoint(conn, data_dir, now=now)


def _write_checkpoint(conn: Connection, data_dir: Path, *, now: datetime) -> Checkpoint:
    head = conn.execute(select(t.audit_head.c.seq, t.audit_head.c.hash)).first()
    seq, digest = (int(head.seq), bytes(head.hash)) if head else (0, bytes(32))
    at = now.isoformat()
    key = _key(data_dir)
    assert key is not None
    line = {
        "seq": seq,
        "hash": digest.hex(),
        "at": at,
        "key": key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
        "sig": key.sign(_note(seq, digest, at)).hex(),
    }
    path = checkpoint_file(conn, data_dir, create=True)
    assert path is not None
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return Checkpoint(seq, digest, at)


def check_checkpoints(conn: Connection, data_dir: Path) -> tuple[int, list[str]]:
    """Return how many checkpoints were checked and what is wrong with the chain against them.

    Fails closed: a log with entries but no checkpoint (file gone, emptied, or the database's id
    changed) is a problem, not a pass. Verification never creates a key or a file.
    """
    entries = conn.execute(select(func.count()).select_from(t.audit_events)).scalar() or 0
    path = checkpoint_file(conn, data_dir)
    lines = path.read_text(encoding="utf-8").splitlines() if path and path.exists() else []
    if not lines:
        # Still a failure (nothing outside the database vouches for the log), but most often the
        # command was pointed at another data directory than the commands that wrote the log.
        return 0, [f"no signed checkpoint for a log of {entries} entries in {data_dir} (checkpoints are "
                   "kept in the data directory the writing commands used: is it this one? --data-dir, "
                   "PORTNER_DATA_DIR)"] if entries else []
    key = _key(data_dir, create=False)
    if key is None:
        return 0, [f"the checkpoint key {_KEY} is missing from the data directory"]
    public = key.public_key()
    problems: list[str] = []
    count = 0
    for number, raw in enumerate(lines, start=1):
        try:
            line = json.loads(raw)
            seq, digest, at = int(line["seq"]), bytes.fromhex(line["hash"]), str(line["at"])
            public.verify(bytes.fromhex(line["sig"]), _note(seq, digest, at))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError, InvalidSignature):
            problems.append(f"checkpoint line {number}: not a valid signed checkpoint")
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
