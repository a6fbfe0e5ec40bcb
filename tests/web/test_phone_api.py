"""The phone and gateway API: device registration with proof, the shift's credentials, event upload."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from portner.credentials import DeviceKey, decode_credential
from portner.domain.access import SCOPE_EVENTS_UPLOAD, SCOPE_FHIR_IMPORT, AccountRole
from portner.locks.simulated import LockClock, SimulatedLock
from portner.services.accounts import DEV_ISSUER, create_account, set_account_disabled
from portner.services.keys import trusted_issuers
from portner.services.lock_wire import event_to_wire
from portner.services.revocation import revoke_device
from portner.storage import tables as t

API = "/api/v1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def registration(client, key: Ed25519PrivateKey, *, challenge: dict[str, Any] | None = None,
                 sign_with: Ed25519PrivateKey | None = None) -> Any:
    if challenge is None:
        challenge = client.get(f"{API}/devices/registration-challenge").json()
    message = cbor2.dumps(["portner-device-registration-v1", unb64(challenge["challenge"]),
                           raw_public(key), challenge["holder"]])
    signature = (sign_with or key).sign(message)
    return client.post(f"{API}/devices", json={
        "public_key": b64(raw_public(key)), "challenge": challenge["challenge"], "signature": b64(signature)})


def fields(answer: Any) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]


def actor_of(engine, subject: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == subject)).scalar_one()


# --- registration -------------------------------------------------------------------------------


def test_registration_with_a_good_proof_registers_the_key_once(client_for, portner_app) -> None:
    nurse = client_for("demo-nurse-1")
    key = Ed25519PrivateKey.generate()
    challenge = nurse.get(f"{API}/devices/registration-challenge").json()
    first = registration(nurse, key, challenge=challenge)
    assert first.status_code == 201, first.text
    device = first.json()
    assert device["new"] is True and unb64(device["public_key"]) == raw_public(key)
    # The same registration sent again (a lost answer) gets the same device, not a second one.
    again = registration(nurse, key, challenge=challenge)
    assert again.status_code == 201 and again.json()["id"] == device["id"] and again.json()["new"] is False
    engine = portner_app.state.portner.engine
    with engine.connect() as conn:
        rows = conn.execute(select(t.devices).where(t.devices.c.public_key == raw_public(key))).all()
        audited = conn.execute(select(func.count()).select_from(t.audit_events).where(
            t.audit_events.c.action == "device:registered", t.audit_events.c.subject == device["id"])).scalar()
    assert len(rows) == 1 and rows[0].actor_id == actor_of(engine, "demo-nurse-1")
    assert audited == 1


def test_an_idempotency_key_replays_the_stored_answer(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    key = Ed25519PrivateKey.generate()
    challenge = nurse.get(f"{API}/devices/registration-challenge").json()
    message = cbor2.dumps(["portner-device-registration-v1", unb64(challenge["challenge"]), raw_public(key),
                           challenge["holder"]])
    body = {"public_key": b64(raw_public(key)), "challenge": challenge["challenge"], "signature": b64(key.sign(message))}
    first = nurse.post(f"{API}/devices", json=body, headers={"Idempotency-Key": "reg-1"})
    again = nurse.post(f"{API}/devices", json=body, headers={"Idempotency-Key": "reg-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotency-Replayed") == "true" and again.json() == first.json()


def test_replayed_challenge_with_another_key_is_refused(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    challenge = nurse.get(f"{API}/devices/registration-challenge").json()
    assert registration(nurse, Ed25519PrivateKey.generate(), challenge=challenge).status_code == 201
    replay = registration(nurse, Ed25519PrivateKey.generate(), challenge=challenge)
    assert replay.status_code == 422 and fields(replay) == ["body/challenge"]
    assert "used" in replay.json()["detail"]


def test_bad_signature_is_refused_naming_the_signature(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    answer = registration(nurse, Ed25519PrivateKey.generate(), sign_with=Ed25519PrivateKey.generate())
    assert answer.status_code == 401 and fields(answer) == ["body/signature"]
    # Titled by what went wrong: the request was well formed, its proof did not verify.
    assert answer.json()["title"] == "Proof not accepted"
    assert answer.json()["type"].endswith("/proof-not-accepted")


def test_foreign_and_expired_challenges_are_refused(client_for, clock) -> None:
    nurse1, nurse2 = client_for("demo-nurse-1"), client_for("demo-nurse-2")
    theirs = nurse2.get(f"{API}/devices/registration-challenge").json()
    # Signed correctly, but the challenge was made for the other nurse's account.
    foreign = registration(nurse1, Ed25519PrivateKey.generate(), challenge=theirs)
    assert foreign.status_code in (401, 422) and fields(foreign) == ["body/challenge"]
    mine = nurse1.get(f"{API}/devices/registration-challenge").json()
    clock.advance(timedelta(minutes=6))
    expired = registration(nurse1, Ed25519PrivateKey.generate(), challenge=mine)
    assert expired.status_code == 422 and fields(expired) == ["body/challenge"]
    assert "expired" in expired.json()["detail"]


def test_malformed_registration_names_the_field(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    challenge = nurse.get(f"{API}/devices/registration-challenge").json()
    short = nurse.post(f"{API}/devices", json={"public_key": b64(b"\x01" * 31), "challenge": challenge["challenge"],
                                               "signature": b64(b"\x00" * 64)})
    assert short.status_code == 422 and fields(short) == ["body/public_key"]
    not_b64 = nurse.post(f"{API}/devices", json={"public_key": "+++", "challenge": challenge["challenge"],
                                                 "signature": b64(b"\x00" * 64)})
    assert not_b64.status_code == 422 and fields(not_b64) == ["body/public_key"]


def test_only_nurses_register_phones(client_for) -> None:
    operator = client_for("demo-operator")
    assert operator.get(f"{API}/devices/registration-challenge").status_code == 403
    assert client_for(None).get(f"{API}/devices/registration-challenge").status_code == 401


def test_registration_needs_the_csrf_header_with_a_session(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    del nurse.headers["X-CSRF-Token"]
    answer = registration(nurse, Ed25519PrivateKey.generate())
    assert answer.status_code == 403


# --- the shift's credentials --------------------------------------------------------------------


def register(client) -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    answer = registration(client, key)
    assert answer.status_code == 201, answer.text
    return key, answer.json()["id"]


def test_credentials_are_the_nurses_own_for_her_doors(client_for, portner_app) -> None:
    nurse = client_for("demo-nurse-1")
    key, device_id = register(nurse)
    answer = nurse.get(f"{API}/me/credentials", params={"device_id": device_id})
    assert answer.status_code == 200, answer.text
    shift = answer.json()
    assert shift["credentials"], "the busiest nurse has visits this morning"
    p = portner_app.state.portner
    actor = actor_of(p.engine, "demo-nurse-1")
    with p.engine.connect() as conn:
        her_doors = {d for (doors,) in conn.execute(select(t.grants.c.door_ids).where(t.grants.c.actor_id == actor))
                     for d in doors}
    for item in shift["credentials"]:
        claims = decode_credential(unb64(item["credential"]))
        assert claims.device_public_key == raw_public(key)
        assert claims.subject == actor and claims.credential_id.hex() == item["credential_id"]
        assert set(item["door_ids"]) <= her_doors and list(claims.door_ids) == item["door_ids"]
        visit = item["visit"]
        assert visit["resident"] and visit["address"]
        assert [d["door_id"] for d in visit["doors"]] == item["door_ids"]
        assert [d["kind"] for d in visit["doors"]][-1] == "flat"
    starts = [c["visit"]["planned_start"] for c in shift["credentials"]]
    assert starts == sorted(starts)
    assert shift["bridge_url"] == p.settings.bridge_url
    # Asked again, the phone gets the very same credentials (nothing new is issued).
    again = nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).json()
    assert [c["credential"] for c in again["credentials"]] == [c["credential"] for c in shift["credentials"]]


def test_another_nurses_device_is_not_found(client_for) -> None:
    nurse1, nurse2 = client_for("demo-nurse-1"), client_for("demo-nurse-2")
    _, device_id = register(nurse2)
    answer = nurse1.get(f"{API}/me/credentials", params={"device_id": device_id})
    assert answer.status_code == 404


def test_disabled_account_and_revoked_device_get_no_credentials(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    _, device_id = register(nurse)
    revoke_device(p.engine, device_id, now=clock(), by="test", reason="lost")
    # The session on the lost phone ends with the revocation (a finder may hold it)...
    assert nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 401
    # ...and signed in again, the revoked device gets nothing.
    again = client_for("demo-nurse-1")
    revoked = again.get(f"{API}/me/credentials", params={"device_id": device_id})
    assert revoked.status_code == 403 and revoked.json()["type"].endswith("device-revoked")

    nurse2 = client_for("demo-nurse-2")
    _, device2 = register(nurse2)
    with p.engine.connect() as conn:
        account = conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == "demo-nurse-2")).scalar_one()
    set_account_disabled(p.engine, account, True, now=clock(), by="test")
    assert nurse2.get(f"{API}/me/credentials", params={"device_id": device2}).status_code == 401


def test_the_shift_answer_is_exactly_the_documented_model(client_for) -> None:
    """The answer is written by hand (no model round trip): it must be byte for byte what the
    ShiftOut model (the OpenAPI document's schema) gives for the same content."""
    from portner.web.api.shift import ShiftOut

    nurse = client_for("demo-nurse-1")
    _, device_id = register(nurse)
    for _ in range(2):  # issued now, then served from what was issued
        answer = nurse.get(f"{API}/me/credentials", params={"device_id": device_id})
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        model = ShiftOut.model_validate_json(answer.content)
        assert model.credentials and all(c.visit and c.visit.doors for c in model.credentials)
        assert answer.content == model.model_dump_json().encode()


def test_a_phone_served_before_is_refused_at_once_when_things_change(client_for, portner_app, clock) -> None:
    """Credentials signed on an earlier call are kept, but every call decides afresh whether
    they may be handed out: a withdrawn grant, a deactivated staff member, a revoked phone."""
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    _, device_id = register(nurse)
    first = nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).json()["credentials"]
    withdrawn = first[0]
    with p.engine.begin() as conn:
        grant = conn.execute(select(t.credentials.c.grant_id)
                             .where(t.credentials.c.id == withdrawn["credential_id"])).scalar_one()
        conn.execute(t.grants.update().where(t.grants.c.id == grant).values(status="revoked"))
    again = nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).json()["credentials"]
    assert [c["credential_id"] for c in again] == [c["credential_id"] for c in first[1:]]
    assert [c["credential"] for c in again] == [c["credential"] for c in first[1:]]

    actor = actor_of(p.engine, "demo-nurse-1")
    with p.engine.begin() as conn:
        conn.execute(t.actors.update().where(t.actors.c.id == actor).values(active=False))
    refused = nurse.get(f"{API}/me/credentials", params={"device_id": device_id})
    assert refused.status_code == 403 and refused.json()["type"].endswith("issuance-refused")
    with p.engine.begin() as conn:
        conn.execute(t.actors.update().where(t.actors.c.id == actor).values(active=True))
    assert nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 200

    revoke_device(p.engine, device_id, now=clock(), by="test", reason="lost")
    assert nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 401
    revoked = client_for("demo-nurse-1").get(f"{API}/me/credentials", params={"device_id": device_id})
    assert revoked.status_code == 403 and revoked.json()["type"].endswith("device-revoked")


# --- door events --------------------------------------------------------------------------------


def lock_with_opening(p, client) -> tuple[str, list[dict[str, Any]], str]:
    """A simulated lock on the first door of the nurse's first visit, opened with her credential."""
    private, device_id = register(client)
    key = DeviceKey(private)
    shift = client.get(f"{API}/me/credentials", params={"device_id": device_id}).json()
    item = shift["credentials"][0]
    door = item["visit"]["doors"][0]
    with p.engine.connect() as conn:
        issuers = trusted_issuers(conn, p.municipality.id)
    nbf = datetime.fromisoformat(item["not_before"])
    lock = SimulatedLock(lock_id=door["lock_id"], door_id=door["door_id"], issuers=issuers,
                         lock_key=p.secrets.lock_key(door["lock_id"]),
                         clock=LockClock(lambda: nbf + timedelta(minutes=20)))
    for _ in range(2):
        ch = lock.challenge()
        verdict = lock.present(unb64(item["credential"]), key.sign_proof(ch, door["door_id"], "unlock"),
                               challenge=ch)
        assert verdict.allowed, verdict
    lock.record_exit()
    return door["lock_id"], [event_to_wire(e) for e in lock.log], item["visit"]["id"]


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(t.door_events)).scalar(),
                conn.execute(select(func.count()).select_from(t.lock_log_anomalies)).scalar(),
                conn.execute(select(func.count()).select_from(t.audit_events)).scalar())


def test_event_batch_is_idempotent_and_marks_the_visit(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    first = nurse.post(f"{API}/door-events", json=batch)
    assert first.status_code == 200, first.text
    result = first.json()["results"][0]
    assert result["accepted"] == len(events) and result["opened"] == 2 and result["anomalies"] == []
    before = counts(p.engine)
    retry = nurse.post(f"{API}/door-events", json=batch)
    assert retry.status_code == 200
    assert retry.json()["results"][0]["accepted"] == 0 and retry.json()["results"][0]["anomalies"] == []
    assert counts(p.engine) == before, "a retried batch changes nothing"
    with p.engine.connect() as conn:
        visit = conn.execute(select(t.visits).where(t.visits.c.id == visit_id)).one()
    assert visit.arrived_at is not None and visit.status in ("in_progress", "completed")


def test_events_arriving_out_of_order_complete_the_chain(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, _ = lock_with_opening(p, nurse)
    late = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": events[2:]}]})
    assert late.status_code == 200 and late.json()["results"][0]["accepted"] == 0
    assert late.json()["results"][0]["pending"] == len(events) - 2
    early = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": events[:2]}]})
    assert early.status_code == 200
    with p.engine.connect() as conn:
        synced = conn.execute(select(t.locks.c.synced_seq).where(t.locks.c.id == lock_id)).scalar()
        stored = conn.execute(select(func.count()).select_from(t.door_events)
                              .where(t.door_events.c.lock_id == lock_id)).scalar()
    assert synced == len(events) and stored == len(events)


def test_a_malformed_batch_names_the_field_and_writes_nothing(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, _ = lock_with_opening(p, nurse)
    before = counts(p.engine)
    bad_seq = [dict(e) for e in events]
    bad_seq[1]["seq"] = "two"
    answer = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": bad_seq}]})
    assert answer.status_code == 422 and "body/uploads/0/events/1/seq" in fields(answer)
    bad_time = [dict(e) for e in events]
    bad_time[2]["at"] = "2026-12-03T08:00:00"  # no zone
    answer = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": bad_time}]})
    assert answer.status_code == 422 and fields(answer) == ["body/uploads/0/events/2/at"]
    unknown = nurse.post(f"{API}/door-events", json={"uploads": [
        {"lock_id": lock_id, "events": events}, {"lock_id": "lock-nope", "events": []}]})
    # 403 like a lock of someone else's: whether a lock id exists is not told.
    assert unknown.status_code == 403 and fields(unknown) == ["body/uploads/1/lock_id"]
    hostile = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": "lock\u0000x", "events": []}]})
    assert hostile.status_code == 422 and fields(hostile) == ["body/uploads/0/lock_id"]
    assert counts(p.engine) == before, "nothing of a rejected batch is written"


@pytest.mark.parametrize(("scopes", "status"), [([SCOPE_EVENTS_UPLOAD], 200), ([SCOPE_FHIR_IMPORT], 403)])
def test_gateways_need_the_upload_scope(client_for, portner_app, clock, scopes, status) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, _ = lock_with_opening(p, nurse)
    create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject="gateway-1",
                   role=AccountRole.INTEGRATION, now=clock(), ids=p.ids, by="test", scopes=scopes)
    gateway = client_for("gateway-1")
    answer = gateway.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": events}]})
    assert answer.status_code == status, answer.text
    relative = client_for("demo-relative")
    assert relative.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": events}]}
                         ).status_code == 403


def test_revocation_list_carries_its_version_as_etag(client_for, portner_app, clock) -> None:
    from portner.services.revocation import publish_revocation_list

    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    empty = nurse.get(f"{API}/revocation-list")
    assert empty.status_code == 200 and empty.json() == {"version": 0, "list": None}
    published = publish_revocation_list(p.engine, p.secrets.issuer, p.municipality.id, now=clock(), by="test")
    answer = nurse.get(f"{API}/revocation-list")
    assert answer.headers["ETag"] == f'"v{published.version}"'
    assert unb64(answer.json()["list"]) == published.blob
    assert nurse.get(f"{API}/revocation-list", headers={"If-None-Match": answer.headers["ETag"]}).status_code == 304
    raw = nurse.get(f"{API}/revocation-list", headers={"Accept": "application/octet-stream"})
    assert raw.content == published.blob


# --- the phone's JavaScript (static/nurse/door.js) against the Python reference -----------------

DOOR_JS = Path(__file__).resolve().parents[2] / "src" / "portner" / "web" / "static" / "nurse" / "door.js"
NODE_RUNNER = """
import * as door from "./door.mjs";
const cases = JSON.parse(process.argv[2]);
const hex = (b) => Buffer.from(b).toString("hex");
const revive = (v) => Array.isArray(v) ? v.map(revive) : (v && v.bytes !== undefined ? Uint8Array.from(Buffer.from(v.bytes, "hex")) : v);
const encoded = cases.map((c) => hex(door.cborEncode(revive(c))));
const pair = await crypto.subtle.generateKey({name: "Ed25519"}, false, ["sign", "verify"]);
const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
const challenge = Uint8Array.from(Buffer.from("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "hex"));
const proof = await door.signProof({privateKey: pair.privateKey}, challenge, "d-000125", "unlock");
console.log(JSON.stringify({encoded, publicRaw: hex(publicRaw), proof: hex(proof),
  message: hex(door.proofMessage(challenge, "d-000125", "unlock")),
  b64: door.b64url(Uint8Array.from([251, 255, 0])), unb64: hex(door.fromB64url("-_8A"))}));
"""


def run_door_js(tmp_path: Path, cases: list[Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    shutil.copyfile(DOOR_JS, tmp_path / "door.mjs")
    (tmp_path / "run.mjs").write_text(NODE_RUNNER)
    done = subprocess.run([node, str(tmp_path / "run.mjs"), json.dumps(cases)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def test_the_phone_cbor_encoder_matches_cbor2(tmp_path: Path) -> None:
    cases: list[Any] = [
        "", "a", "ø æ å – 🚪", "x" * 23, "x" * 24, "x" * 255, "x" * 256, "x" * 70_000,
        b"", b"\x00" * 23, b"\x01" * 24, b"\xff" * 300, [], [[]], ["a", b"b", ["c"]], [b"\x00"] * 30,
        0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**53 - 1,
        ["portner-door-proof-v1", bytes(range(32)), "d-000125", "unlock"],
        ["portner-device-registration-v1", bytes(72), bytes(32), "acc-0123456789abcdef"],
    ]
    out = run_door_js(tmp_path, [jsonable(c) for c in cases])
    assert out["encoded"] == [cbor2.dumps(c).hex() for c in cases]
    assert out["b64"] == "-_8A" and out["unb64"] == "fbff00"


def test_the_phone_proof_verifies_as_the_lock_checks_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from portner.credentials.proof import proof_message

    out = run_door_js(tmp_path, [])
    challenge = bytes(range(32))
    # The message is the profile's test vector (docs/credential-profile.md §12.4).
    assert out["message"] == proof_message(challenge, "d-000125", "unlock").hex()
    assert out["message"] == ("8475706f72746e65722d646f6f722d70726f6f662d76315820000102030405060708090a0b0c0d0e0f"
                              "101112131415161718191a1b1c1d1e1f68642d30303031323566756e6c6f636b")
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(out["publicRaw"]))
    public.verify(bytes.fromhex(out["proof"]), proof_message(challenge, "d-000125", "unlock"))


def test_the_nurse_page_is_only_for_nurses(client_for) -> None:
    nurse = client_for("demo-nurse-1")
    page = nurse.get("/nurse")
    assert page.status_code == 200 and "<h1>Dagens besøk</h1>" in page.text
    assert 'type="module" src="/static/nurse/nurse.js"' in page.text and "no-store" in page.headers["cache-control"]
    english = nurse.get("/nurse?lang=en")
    assert "<h1>Today&#39;s visits</h1>" in english.text or "<h1>Today's visits</h1>" in english.text
    sw = nurse.get("/nurse/sw.js")
    assert sw.headers["service-worker-allowed"] == "/nurse" and "javascript" in sw.headers["content-type"]
    manifest = nurse.get("/nurse/manifest.webmanifest")
    assert manifest.json()["start_url"] == "/nurse"
    assert nurse.get("/static/nurse/door.js").status_code == 200
    operator = client_for("demo-operator")
    assert operator.get("/nurse", headers={"Accept": "text/html"}).status_code == 403
    assert client_for(None).get("/nurse", follow_redirects=False).status_code == 303
