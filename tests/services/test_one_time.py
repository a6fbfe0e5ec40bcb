"""One-time access by SMS: the grant, the invitation, the queued SMS, redemption and revocation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Engine, func, select

from portner.credentials import decode_credential
from portner.domain.model import (
    Door,
    DoorId,
    DoorKind,
    Home,
    HomeId,
    Lock,
    LockId,
    Municipality,
    MunicipalityId,
    Resident,
    ResidentId,
)
from portner.services.checkpoints import cross_check
from portner.services.device_registration import RegistrationRefused, registration_message
from portner.services.ids import IdSource
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.services.keys import MunicipalitySecrets, load_or_create_secrets
from portner.services.one_time import (
    InvitationRefused,
    OneTimeRefused,
    find_invitation,
    grant_one_time_access,
    holder_of,
    list_invitations,
    mask_phone,
    normalise_phone,
    redeem_invitation,
    redemption_challenge,
    revoke_invitation,
    token_hash,
)
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository

OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=OSLO)
M = Municipality(id=MunicipalityId("m1"), name="Testkommune")
PHONE = "+4791234567"


class DeviceKey:
    """A visitor's phone key as WebCrypto makes it: Ed25519, raw public key."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.public_key_bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> MunicipalitySecrets:
    """Two residents, each with a building door and a flat door (all with e-locks)."""
    with engine.begin() as conn:
        repo = Repository(conn)
        repo.add_municipality(M)
        for n in (1, 2):
            repo.upsert_resident(Resident(ResidentId(f"res-{n}"), M.id, None, f"Beboer {n}"))
            repo.upsert_home(Home(HomeId(f"hom-{n}"), ResidentId(f"res-{n}"), f"Gate {n}", "demo"))
            for pos, kind in ((1, DoorKind.BUILDING), (2, DoorKind.FLAT)):
                door = Door(DoorId(f"d-{n}{pos}"), HomeId(f"hom-{n}"), pos, kind, LockId(f"l-{n}{pos}"))
                repo.add_door_with_lock(door, Lock(LockId(f"l-{n}{pos}"), door.id))
        return load_or_create_secrets(conn, tmp_path, M.id, now=NOW, seed_bytes=b"one-time")


def give(engine: Engine, **overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        municipality_id=M.id, by="account:acc-op", resident_id="res-1", door_ids=["d-11", "d-12"],
        name="Rørlegger Hansen", phone="912 34 567", starts=NOW, ends=NOW + timedelta(hours=3),
        public_url="https://portner.example", now=NOW, ids=IdSource(),
    )
    args.update(overrides)
    return grant_one_time_access(engine, **args)  # type: ignore[arg-type]


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar() or 0
            for name, table in (("actors", t.actors), ("grants", t.grants),
                                ("invitations", t.invitations), ("messages", t.messages),
                                ("audit", t.audit_events))
        }


def redeem(engine: Engine, secrets: MunicipalitySecrets, token: str, key: DeviceKey,
           *, now: datetime = NOW, challenge_at: datetime | None = None):  # type: ignore[no-untyped-def]
    view = find_invitation(engine, token, now=now)
    assert view is not None
    challenge = redemption_challenge(secrets, view.invitation_id, now=challenge_at or now)
    proof = key.sign(registration_message(challenge, key.public_key_bytes, holder_of(view.invitation_id)))
    return redeem_invitation(engine, token, public_key=key.public_key_bytes, challenge=challenge,
                             proof=proof, secrets=secrets, now=now, ids=IdSource())


def test_one_time_access_makes_grant_invitation_and_sms_together(engine: Engine, site) -> None:
    access = give(engine)
    with engine.connect() as conn:
        grant = conn.execute(select(t.grants).where(t.grants.c.id == access.grant_id)).one()
        actor = conn.execute(select(t.actors).where(t.actors.c.id == access.actor_id)).one()
        invitation = conn.execute(select(t.invitations)).one()
        message = conn.execute(select(t.messages)).one()
        audit = conn.execute(select(t.audit_events)).all()
        assert verify_audit(conn).ok and cross_check(conn) == []
    assert grant.origin == "one_time" and grant.status == "active" and grant.door_ids == ["d-11", "d-12"]
    assert grant.not_after - grant.not_before == timedelta(hours=3)
    assert actor.role == "external_provider" and actor.display_name == "Rørlegger Hansen"
    # Only the hash of the link token is stored; the number is normalised to E.164.
    assert invitation.token_hash == token_hash(access.token) and access.token not in invitation.token_hash
    assert invitation.phone == PHONE and invitation.expires_at == grant.not_after
    assert len(access.token) >= 43  # 32 random bytes, base64url
    assert message.recipient == PHONE and message.channel == "sms" and message.sent_at is None
    assert f"https://portner.example/visit/{access.token}" in message.body
    assert "10:00–13:00" in message.body  # the window in Oslo time
    # The audit says who gave what to whom, and never holds the phone number or the token.
    text = json.dumps([[r.actor, r.action, r.subject, r.details] for r in audit], ensure_ascii=False)
    assert {"actor:registered", "grant:created", "invitation:created"} <= {r.action for r in audit}
    assert "91234567" not in text and access.token not in text and "account:acc-op" in text


def test_the_sms_is_in_the_same_transaction(engine: Engine, site) -> None:
    before = counts(engine)
    # A link too long for an SMS body fails at the message insert, after the grant was written.
    with pytest.raises(ValueError, match="message body"):
        give(engine, public_url="https://portner.example/" + "x" * 1200)
    assert counts(engine) == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ends": NOW + timedelta(hours=12, minutes=1)}, "ends"),
        ({"ends": NOW}, "ends"),
        ({"starts": NOW - timedelta(hours=5), "ends": NOW - timedelta(hours=1)}, "ends"),
        ({"starts": NOW - timedelta(hours=1)}, "starts"),
        ({"starts": NOW + timedelta(days=20), "ends": NOW + timedelta(days=20, hours=1)}, "starts"),
        ({"door_ids": ["d-11", "d-21"]}, "door_ids"),  # a door of another resident
        ({"door_ids": []}, "door_ids"),
        ({"resident_id": "res-nobody"}, "resident_id"),
        ({"phone": "12345"}, "phone"),
        ({"phone": "+47 1234"}, "phone"),
        ({"name": "   "}, "name"),
    ],
)
def test_refused_one_time_access_names_the_field_and_writes_nothing(
    engine: Engine, site, overrides: dict[str, object], field: str
) -> None:
    before = counts(engine)
    with pytest.raises(OneTimeRefused) as refused:
        give(engine, **overrides)
    assert refused.value.field == field
    assert counts(engine) == before


def test_twelve_hours_exactly_is_allowed(engine: Engine, site) -> None:
    access = give(engine, ends=NOW + timedelta(hours=12))
    assert access.not_after - access.not_before == timedelta(hours=12)


def test_phone_numbers_are_normalised_and_masked() -> None:
    assert normalise_phone("912 34 567") == PHONE
    assert normalise_phone("0047 912-34-567") == PHONE
    assert normalise_phone("+46 70 123 45 67") == "+46701234567"
    assert mask_phone(PHONE) == "*********67"
    with pytest.raises(OneTimeRefused):
        normalise_phone("+47 912 34 5678")


def test_redeeming_registers_the_phone_once_and_issues_the_box(engine: Engine, site) -> None:
    access = give(engine)
    key = DeviceKey.generate()
    redemption = redeem(engine, site, access.token, key, now=NOW + timedelta(minutes=5))
    assert [d.id for d in redemption.doors] == ["d-11", "d-12"]
    assert (redemption.not_before, redemption.not_after) == (access.not_before, access.not_after)
    assert len(redemption.credentials) == 1
    claims = decode_credential(redemption.credentials[0].blob)
    assert claims.subject == access.actor_id and set(claims.door_ids) == {"d-11", "d-12"}
    view = find_invitation(engine, access.token, now=NOW + timedelta(minutes=6))
    assert view is not None and view.state == "redeemed"
    # A second redemption is refused, with another phone and with the same one.
    for again in (DeviceKey.generate(), key):
        with pytest.raises(InvitationRefused, match="redeemed"):
            redeem(engine, site, access.token, again, now=NOW + timedelta(minutes=7))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.devices)).scalar() == 1
        assert verify_audit(conn).ok and cross_check(conn) == []


def test_redemption_needs_a_fresh_challenge_and_a_real_proof(engine: Engine, site) -> None:
    access = give(engine)
    key = DeviceKey.generate()
    with pytest.raises(RegistrationRefused, match="expired") as stale:
        redeem(engine, site, access.token, key, now=NOW + timedelta(minutes=30), challenge_at=NOW)
    assert stale.value.field == "challenge"
    view = find_invitation(engine, access.token, now=NOW)
    assert view is not None
    challenge = redemption_challenge(site, view.invitation_id, now=NOW)
    other = DeviceKey.generate()  # signs, but claims someone else's public key
    proof = other.sign(registration_message(challenge, key.public_key_bytes, holder_of(view.invitation_id)))
    with pytest.raises(RegistrationRefused) as forged:
        redeem_invitation(engine, access.token, public_key=key.public_key_bytes, challenge=challenge,
                          proof=proof, secrets=site, now=NOW, ids=IdSource())
    assert forged.value.field == "signature"
    # A challenge made for another invitation does not redeem this one.
    foreign = redemption_challenge(site, "inv-other", now=NOW)
    proof = key.sign(registration_message(foreign, key.public_key_bytes, holder_of(view.invitation_id)))
    with pytest.raises(RegistrationRefused) as wrong:
        redeem_invitation(engine, access.token, public_key=key.public_key_bytes, challenge=foreign,
                          proof=proof, secrets=site, now=NOW, ids=IdSource())
    assert wrong.value.field == "challenge"
    with pytest.raises(InvitationRefused, match="not valid"):
        redeem_invitation(engine, "no-such-token", public_key=key.public_key_bytes,
                          challenge=challenge, proof=proof, secrets=site, now=NOW, ids=IdSource())
    # Nothing was spent: the right phone still redeems.
    assert redeem(engine, site, access.token, key).device_id


def test_revoking_the_invitation_revokes_grant_credentials_and_phone(engine: Engine, site) -> None:
    access = give(engine)
    key = DeviceKey.generate()
    redemption = redeem(engine, site, access.token, key)
    revoked = revoke_invitation(engine, access.invitation_id, municipality_id=M.id,
                                by="account:acc-op", now=NOW + timedelta(minutes=10))
    assert revoked.credentials == 1 and revoked.device_id == redemption.device_id
    with engine.connect() as conn:
        assert conn.execute(select(t.grants.c.status)).scalar() == "revoked"
        assert conn.execute(select(t.credentials.c.revoked_at)).scalar() is not None
        assert conn.execute(select(t.devices.c.status)).scalar() == "revoked"
    with pytest.raises(IssuanceRefused):
        issue_for_shift(engine, site.issuer, [redemption.device_id], window_start=NOW,
                        window_end=NOW + timedelta(hours=3), now=NOW + timedelta(minutes=11),
                        ids=IdSource())
    view = find_invitation(engine, access.token, now=NOW + timedelta(minutes=11))
    assert view is not None and view.state == "revoked"
    assert revoke_invitation(engine, access.invitation_id, municipality_id=M.id, by="x",
                             now=NOW + timedelta(minutes=12)).already
    [line] = list_invitations(engine, M.id, now=NOW + timedelta(minutes=12))
    assert line.state == "revoked" and line.phone_masked == "*********67"
    assert line.resident_id == "res-1" and line.message == "queued"


def test_an_unredeemed_revoked_link_cannot_be_redeemed(engine: Engine, site) -> None:
    access = give(engine)
    revoke_invitation(engine, access.invitation_id, municipality_id=M.id, by="x", now=NOW)
    with pytest.raises(InvitationRefused, match="revoked"):
        redeem(engine, site, access.token, DeviceKey.generate())
