"""The lock radio bridge (development only): doors answer challenges, decide, log and survive restarts."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from portner.credentials import DeviceKey
from portner.services.device_registration import (
    challenge_key,
    new_registration_challenge,
    register_device_with_proof,
    registration_message,
)
from portner.services.door_events import HeadAttestation, ingest_upload
from portner.services.issuing import issue_for_shift
from portner.services.lock_wire import event_from_wire
from portner.services.revocation import publish_revocation_list, revoke_device
from portner.storage import tables as t
from portner.web.bridge import create_bridge_app


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Nurse:
    """demo-nurse-1 with a registered phone and this morning's credentials."""

    def __init__(self, p: Any) -> None:
        with p.engine.connect() as conn:
            account, self.actor = conn.execute(select(t.accounts.c.id, t.accounts.c.actor_id)
                                               .where(t.accounts.c.subject == "demo-nurse-1")).one()
        private = Ed25519PrivateKey.generate()
        self.key = DeviceKey(private)
        key = challenge_key(p.secrets)
        challenge, _ = new_registration_challenge(key, account, now=p.now())
        signature = private.sign(registration_message(challenge, self.key.public_key_bytes, account))
        done = register_device_with_proof(
            p.engine, key, holder=account, actor_id=self.actor, public_key=self.key.public_key_bytes,
            challenge=challenge, signature=signature, now=p.now(), ids=p.ids, by="test")
        self.device_id = done.device.id
        now = p.now()
        issued = issue_for_shift(p.engine, p.secrets.issuer, [self.device_id], window_start=now - timedelta(hours=1),
                                 window_end=now + timedelta(hours=16), now=now, ids=p.ids)
        coming = [c for c in issued if c.grant.not_after > now + timedelta(minutes=30)]
        self.first = min(coming, key=lambda c: c.grant.not_before)

    def open(self, bridge: TestClient, door_id: str, *, sign_door: str | None = None,
             credential: bytes | None = None) -> dict[str, Any]:
        challenge = bridge.get(f"/doors/{door_id}/challenge").json()["challenge"]
        proof = self.key.sign_proof(unb64(challenge), sign_door or door_id, "unlock")
        answer = bridge.post(f"/doors/{door_id}/present", json={
            "credential": b64(credential or self.first.blob), "proof": b64(proof), "challenge": challenge,
            "action": "unlock"})
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def p(portner_app, clock) -> Any:
    runtime = portner_app.state.portner
    return runtime


@pytest.fixture
def nurse(p, clock) -> Nurse:
    n = Nurse(p)
    # Walk the clock to ten minutes into her first visit's window.
    clock.advance(max(timedelta(0), n.first.grant.not_before + timedelta(minutes=10) - clock()))
    return n


def bridge_client(p: Any, **kw: Any) -> TestClient:
    return TestClient(create_bridge_app(p, **kw), base_url="http://127.0.0.1:8001")


def test_a_good_credential_opens_and_a_wrong_proof_does_not(p, nurse) -> None:
    doors = nurse.first.grant.door_ids
    with bridge_client(p, refresh_every=3600) as bridge:
        good = nurse.open(bridge, doors[0])
        assert good == {"lock_id": good["lock_id"], "opened": True, "reason": "ok", "seq": good["seq"]}
        # A proof made for another door is refused by the lock itself.
        wrong = nurse.open(bridge, doors[0], sign_door=doors[0] + "x")
        assert wrong["opened"] is False and wrong["reason"] == "bad_proof"
        # A made-up challenge is one the lock never issued.
        stale = bridge.post(f"/doors/{doors[0]}/present", json={
            "credential": b64(nurse.first.blob), "proof": b64(b"\x00" * 64), "challenge": b64(b"\x01" * 32)})
        assert stale.json() == {"lock_id": good["lock_id"], "opened": False, "reason": "unknown_challenge",
                                "seq": stale.json()["seq"]}
        log = bridge.get(f"/doors/{doors[0]}/events", params={"since": 0}).json()
        kinds = [(e["kind"], e["reason"]) for e in log["events"]]
        assert ("unlock", "ok") in kinds and ("denied", "bad_proof") in kinds
        opened = next(e for e in log["events"] if e["kind"] == "unlock")
        assert opened["credential_id"] == nurse.first.credential_id
        assert bridge.get("/doors/no-such-door/challenge").status_code == 404


def test_a_revoked_phone_is_refused_after_the_refresh(p, nurse, clock) -> None:
    door = nurse.first.grant.door_ids[0]
    with bridge_client(p, refresh_every=3600) as bridge:
        assert nurse.open(bridge, door)["opened"] is True
        revoke_device(p.engine, nurse.device_id, now=clock(), by="test", reason="lost")
        published = publish_revocation_list(p.engine, p.secrets.issuer, p.municipality.id, now=clock(), by="test")
        # Until the bridge refreshes, the lock knows nothing (it is offline).
        assert nurse.open(bridge, door)["opened"] is True
        assert bridge.app.state.bridge.refresh_revocations() == len(bridge.app.state.bridge.doors)
        assert bridge.get("/health").json()["revocation_version"] == published.version
        refused = nurse.open(bridge, door)
        assert refused["opened"] is False and refused["reason"] == "revoked"


def test_the_bridge_refreshes_revocations_by_itself(p, nurse, clock) -> None:
    with bridge_client(p, refresh_every=0.05) as bridge:
        published = publish_revocation_list(p.engine, p.secrets.issuer, p.municipality.id, now=clock(), by="test")
        deadline = time.monotonic() + 20  # generous: this checks that it happens, not how fast
        while bridge.get("/health").json()["revocation_version"] != published.version:
            assert time.monotonic() < deadline, "the bridge never installed the new list"
            time.sleep(0.05)
        lock = bridge.app.state.bridge.doors[nurse.first.grant.door_ids[0]].lock
        assert lock.revocation_version == published.version


def upload(p: Any, bridge: TestClient, door: str, since: int) -> Any:
    nonce = b"n" * 16
    got = bridge.get(f"/doors/{door}/events", params={"since": since, "nonce": nonce.hex()}).json()
    events = [event_from_wire(e, got["lock_id"]) for e in got["events"]]
    h = got["head"]
    head = HeadAttestation(bytes.fromhex(h["nonce"]), h["seq"], bytes.fromhex(h["hash"]), bytes.fromhex(h["mac"]))
    return got["lock_id"], ingest_upload(p.engine, got["lock_id"], events, lock_key=p.secrets.lock_key(got["lock_id"]),
                                         now=p.now(), head=head)


def test_a_restart_keeps_each_lock_log_so_the_chain_still_links(p, nurse, tmp_path: Path) -> None:
    door = nurse.first.grant.door_ids[0]
    state = tmp_path / "bridge-state"
    with bridge_client(p, refresh_every=3600, state_dir=state) as bridge:
        assert nurse.open(bridge, door)["opened"] is True
        lock_id, first = upload(p, bridge, door, 0)
        assert first.accepted >= 2 and first.anomalies == []
    with p.engine.connect() as conn:
        synced = conn.execute(select(t.locks.c.synced_seq).where(t.locks.c.id == lock_id)).scalar()
    with bridge_client(p, refresh_every=3600, state_dir=state) as bridge:  # the bridge restarted
        assert nurse.open(bridge, door)["opened"] is True
        _, second = upload(p, bridge, door, synced)
    assert second.anomalies == [], second.anomalies
    assert second.accepted >= 2  # the power-cycle boot and the second opening
    with p.engine.connect() as conn:
        kinds = [r.action for r in conn.execute(select(t.door_events.c.action).where(
            t.door_events.c.lock_id == lock_id).order_by(t.door_events.c.seq))]
    assert kinds.count("unlock") == 2 and "boot" in kinds[1:]


def test_a_damaged_saved_log_is_refused(p, nurse, tmp_path: Path) -> None:
    import sqlite3

    from portner.web.bridge import BridgeStateDamaged

    state = tmp_path / "bridge-state"
    with bridge_client(p, refresh_every=3600, state_dir=state) as bridge:
        nurse.open(bridge, nurse.first.grant.door_ids[0])
    db = sqlite3.connect(state / "bridge.sqlite")
    db.execute("UPDATE events SET payload = replace(payload, '\"ok\"', '\"bad_proof\"') WHERE payload LIKE '%unlock%'")
    db.commit()
    db.close()
    with pytest.raises(BridgeStateDamaged):
        create_bridge_app(p, state_dir=state)


def test_cors_allows_only_the_platform_origin(p) -> None:
    with bridge_client(p, refresh_every=3600) as bridge:
        door = next(iter(bridge.app.state.bridge.doors))
        ours = bridge.options(f"/doors/{door}/present", headers={
            "Origin": p.settings.public_url, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert ours.status_code == 200
        assert ours.headers["access-control-allow-origin"] == p.settings.public_url
        other = bridge.get(f"/doors/{door}/challenge", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_events_are_the_wire_shape_with_an_attested_head(p, nurse) -> None:
    door = nurse.first.grant.door_ids[0]
    with bridge_client(p, refresh_every=3600) as bridge:
        nurse.open(bridge, door)
        got = bridge.get(f"/doors/{door}/events", params={"since": 1, "nonce": "ab" * 16}).json()
        assert [e["seq"] for e in got["events"]] == list(range(2, got["head"]["seq"] + 1))
        assert set(got["events"][0]) == {"seq", "at", "kind", "allowed", "reason", "credential_id", "subject",
                                         "prev_hash", "hash", "mac"}
        assert datetime.fromisoformat(got["events"][0]["at"]).utcoffset() == timedelta(0)
        assert bridge.get(f"/doors/{door}/events", params={"nonce": "zz"}).status_code == 422
