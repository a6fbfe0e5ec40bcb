"""The relational schema, in SQLAlchemy Core; one metadata shared by the store and Alembic.

Portable types only, so that the same schema runs on a SQLite file and on PostgreSQL. Instants are
stored in UTC through `UtcDateTime`, which refuses naive values instead of guessing their zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; SQLite keeps no zone, so we restore it on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
        value = value.astimezone(UTC)
        # SQLite stores text; drop the zone so values compare as text in UTC order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id(name: str = "id") -> Column[str]:
    return Column(name, String(64), primary_key=True)


def _ref(name: str, target: str, *, nullable: bool = False, index: bool = True) -> Column[str]:
    return Column(name, String(64), ForeignKey(target), nullable=nullable, index=index)


municipalities = Table(
    "municipalities",
    metadata,
    _id(),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("service_model", String(32), nullable=False),
    Column("window_lead_s", Integer, nullable=False),
    Column("window_grace_s", Integer, nullable=False),
    Column("baseline_key_minutes_per_shift", Float, nullable=False),
    Column("accept_synthetic_ids", Boolean, nullable=False),
    Column("plan_horizon_s", Integer, nullable=False),
)

zones = Table(
    "zones",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    Column("path", String(400), nullable=False),
    UniqueConstraint("municipality_id", "path", name="uq_zones_municipality_path"),
)

residents = Table(
    "residents",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    # Sensitive: needed to match plans and to write visits back (the VKP Encounter names the
    # subject by national id). Never selected into logs or reports.
    Column("national_id", String(11), nullable=True),
    Column("display_name", String(200), nullable=False, default=""),
    _ref("zone_id", "zones.id", nullable=True),
    Column("source_ref", String(200), nullable=True),
    UniqueConstraint("municipality_id", "national_id", name="uq_residents_municipality_nid"),
)

# Relatives (and other people close to a resident) as the care record names them; the actor row
# holds the person, this row the relationship. Relatives see only their own resident's door.
relations = Table(
    "relations",
    metadata,
    Column("resident_id", String(64), ForeignKey("residents.id"), primary_key=True),
    Column("actor_id", String(64), ForeignKey("actors.id"), primary_key=True),
    Column("relationship", String(100), nullable=False, default=""),
    Column("phone", String(40), nullable=True),
)

homes = Table(
    "homes",
    metadata,
    _id(),
    _ref("resident_id", "residents.id"),
    Column("address", String(400), nullable=False, default=""),
    Column("elock_system", String(200), nullable=True),
)

doors = Table(
    "doors",
    metadata,
    _id(),
    _ref("home_id", "homes.id"),
    Column("position", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("lock_id", String(64), nullable=True, unique=True),
    UniqueConstraint("home_id", "position", name="uq_doors_home_position"),
)

locks = Table(
    "locks",
    metadata,
    _id(),
    _ref("door_id", "doors.id"),
    Column("backend", String(64), nullable=False),
    Column("model", String(200), nullable=False, default=""),
    # What the platform has verified of the lock's own event log so far.
    Column("synced_seq", BigInteger, nullable=False, default=0),
    Column("synced_hash", LargeBinary, nullable=True),
    Column("battery_percent", Float, nullable=True),
    Column("clock_offset_s", Float, nullable=True),
    Column("last_sync_at", UtcDateTime, nullable=True),
    # How the backend (adapter) finds this lock: a Zigbee2MQTT friendly name, a Matter node id,
    # a Nuki smartlock id. None for the simulated lock, which is found by its id.
    Column("address", String(200), nullable=True),
    # Where time windows on keypad codes are enforced: "lock" (the lock's own schedules) or
    # "server" (Portner adds the code at the window's start and removes it at its end). None means
    # "choose from the lock's capabilities".
    Column("enforcement", String(16), nullable=True),
    # When the lock was taken off the door (kept, with its history; never deleted).
    Column("removed_at", UtcDateTime, nullable=True),
)

actors = Table(
    "actors",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    Column("role", String(32), nullable=False),
    Column("organisation", String(200), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("her_id", String(32), nullable=True, index=True),
    Column("hpr_number", String(32), nullable=True, index=True),
    Column("national_id", String(11), nullable=True, index=True),
    Column("active", Boolean, nullable=False, default=True),
)

devices = Table(
    "devices",
    metadata,
    _id(),
    _ref("actor_id", "actors.id"),
    Column("public_key", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("registered_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

visit_plans = Table(
    "visit_plans",
    metadata,
    Column("municipality_id", String(64), ForeignKey("municipalities.id"), primary_key=True),
    Column("plan_key", String(300), primary_key=True),
    Column("source_file", String(500), nullable=False),
    Column("version", String(100), nullable=True),
    # Hash of what the plan yielded; an identical re-import is recognised and changes nothing.
    Column("content_hash", String(64), nullable=False),
    Column("imported_at", UtcDateTime, nullable=False),
)

visits = Table(
    "visits",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    _ref("resident_id", "residents.id"),
    Column("plan_key", String(300), nullable=False, index=True),
    Column("source_key", String(400), nullable=False),
    Column("planned_start", UtcDateTime, nullable=False, index=True),
    Column("planned_end", UtcDateTime, nullable=False),
    Column("staff_ids", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("description", String(400), nullable=False, default=""),
    Column("arrived_at", UtcDateTime, nullable=True),
    Column("departed_at", UtcDateTime, nullable=True),
    Column("written_back_at", UtcDateTime, nullable=True),
    UniqueConstraint("municipality_id", "source_key", name="uq_visits_municipality_source"),
)

grants = Table(
    "grants",
    metadata,
    _id(),
    _ref("actor_id", "actors.id"),
    Column("door_ids", JSON, nullable=False),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False, index=True),
    Column("origin", String(16), nullable=False),
    _ref("visit_id", "visits.id", nullable=True),
    Column("status", String(16), nullable=False),
    Column("reason", String(400), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(32), primary_key=True),  # hex of the CWT cti
    _ref("grant_id", "grants.id"),
    _ref("device_id", "devices.id"),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("size", Integer, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

revocation_lists = Table(
    "revocation_lists",
    metadata,
    Column("municipality_id", String(64), ForeignKey("municipalities.id"), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("blob", LargeBinary, nullable=False),
)

issuer_keys = Table(
    "issuer_keys",
    metadata,
    Column("kid", String(32), primary_key=True),  # hex
    _ref("municipality_id", "municipalities.id"),
    Column("alg", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime, nullable=True),
)

door_events = Table(
    "door_events",
    metadata,
    Column("lock_id", String(64), ForeignKey("locks.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("lock_time", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("action", String(32), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("credential_id", String(64), nullable=True, index=True),  # as long as the domain allows
    Column("actor_id", String(64), nullable=True, index=True),
    _ref("visit_id", "visits.id", nullable=True),
    Column("hash", LargeBinary, nullable=False),
)

lock_log_anomalies = Table(
    "lock_log_anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("lock_id", "locks.id"),
    Column("kind", String(32), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("detail", String(400), nullable=False, default=""),
    Column("detected_at", UtcDateTime, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("municipality_id", "municipalities.id"),
    Column("file", String(500), nullable=False),
    Column("resource", String(300), nullable=False),
    Column("field", String(300), nullable=False),
    Column("message", String(500), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("raw", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Index("ix_quarantine_entry", "municipality_id", "file", "resource", "field"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    # Whose message this is: a municipality's outbox is delivered only to its own care record.
    Column("municipality_id", String(64), ForeignKey("municipalities.id"), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(500), nullable=True),
    # After a failure the next try waits (doubling, at most 10 minutes): a gateway that is down
    # is not hammered every few seconds.
    Column("next_attempt_at", UtcDateTime, nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("subject", String(200), nullable=False, index=True),
    Column("details", JSON, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
)

# This database's own random identity, made on first use: audit checkpoints kept outside the
# database are filed under it, whatever URL the database is reached by.
instance = Table(
    "instance",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("database_id", String(36), nullable=False),
)

# One row that holds the chain's head; appenders lock it so that the chain stays linear even
# with several API replicas writing at once (SELECT ... FOR UPDATE on PostgreSQL).
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
)

# --- Portner as a service (issue 3) -------------------------------------------------------------

# A person who signs in. (issuer, subject) is what the OpenID provider says; the account ties it to
# an actor (staff, relative) or a resident, and to one role that decides what the person may see.
# Disabling is a timestamp, never a delete: the audit trail keeps naming the account.
accounts = Table(
    "accounts",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    Column("issuer", String(300), nullable=False),
    Column("subject", String(200), nullable=False),
    # nurse | operator | admin | relative | resident | integration
    Column("role", String(32), nullable=False),
    _ref("actor_id", "actors.id", nullable=True),
    _ref("resident_id", "residents.id", nullable=True),
    Column("display_name", String(200), nullable=False, default=""),
    # For integrations: what the client may do (space-separated scopes).
    Column("scopes", String(400), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime, nullable=True),
    # Sessions signed in before this instant are over (signing out ends them all: a session is a
    # signed cookie, so the server remembers the end, not the sessions).
    Column("sessions_since", UtcDateTime, nullable=True),
    UniqueConstraint("issuer", "subject", name="uq_accounts_issuer_subject"),
)

# A POST with an Idempotency-Key is answered once; a retry with the same key and body gets the
# stored answer, the same key with another body a 422.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", String(100), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("method_path", String(400), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
)

# Well-formed lock events that arrived beyond a gap: kept until the gap fills, so that uploads are
# accepted in any order and late. The payload is the event as the wire carried it.
door_event_pending = Table(
    "door_event_pending",
    metadata,
    Column("lock_id", String(64), ForeignKey("locks.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("hash", LargeBinary, primary_key=True),
    Column("payload", JSON, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

# One-time, time-boxed access for a person outside the staff (a plumber, a relative from away):
# a grant plus an invitation sent by SMS. Only the hash of the link token is stored; the phone
# number is kept to show the operator where it went, and is never logged.
invitations = Table(
    "invitations",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    _ref("grant_id", "grants.id"),
    _ref("actor_id", "actors.id"),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("phone", String(40), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("redeemed_at", UtcDateTime, nullable=True),
    _ref("device_id", "devices.id", nullable=True),
    # The SMS that carried the link, so the operator sees whether it went out.
    Column("message_id", Integer, ForeignKey("messages.id"), nullable=True),
)

# What residents and relatives are told: access granted, door used outside a planned visit. The
# text is rendered from kind + params in the reader's language, so no wording is stored.
notices = Table(
    "notices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("resident_id", "residents.id"),
    Column("kind", String(32), nullable=False),
    Column("params", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("read_at", UtcDateTime, nullable=True),
)

# Messages to people (SMS, e-mail), written in the same transaction as what causes them and sent
# by a worker through the configured gateway; failures stay queued with the error.
messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("municipality_id", "municipalities.id"),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(500), nullable=True),
    # After a failure the next try waits (doubling, at most 10 minutes): a gateway that is down
    # is not hammered every few seconds.
    Column("next_attempt_at", UtcDateTime, nullable=True),
)


# --- Real locks: keypad codes and reconciliation (issue 4) --------------------------------------

# A keypad code Portner gave someone. The digits are encrypted at rest (AES-GCM under a key the
# municipality's secrets hold; `key_id` names it) and shown to a person once (`delivered_at`).
keypad_codes = Table(
    "keypad_codes",
    metadata,
    _id(),
    _ref("municipality_id", "municipalities.id"),
    _ref("actor_id", "actors.id", nullable=True),
    _ref("grant_id", "grants.id", nullable=True),
    Column("purpose", String(32), nullable=False),  # visit | one_time | standing | emergency
    Column("ciphertext", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    # A keyed MAC of the digits (never the digits), to find the code on a lock's slots (F6, F23).
    Column("code_mac", LargeBinary, nullable=False),
    Column("not_before", UtcDateTime, nullable=True),
    Column("not_after", UtcDateTime, nullable=True),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False, default=0),
    # Whether uses of this code are told to the resident and relatives (F28).
    Column("notify", Boolean, nullable=False, default=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revoke_reason", String(64), nullable=True),
)

# Intent versus confirmed state, per (code, lock): the reconciler's state machine. `intent` is what
# the plan wants ("present" or "absent"); `state` is what the lock has confirmed so far
# (pending, writing, confirmed, write_unconfirmed, unverified, suspected_missing, removing, removed,
# failed, suspended). Intent is never copied into state before the lock confirms (F22).
code_placements = Table(
    "code_placements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("code_id", "keypad_codes.id"),
    _ref("lock_id", "locks.id"),
    Column("slot", Integer, nullable=True),  # Portner's slot number (1-based), once allocated
    Column("intent", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("enforcement", String(16), nullable=False),  # lock | server
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_refusal", String(32), nullable=True),
    Column("last_detail", String(400), nullable=True),
    Column("requested_at", UtcDateTime, nullable=True),
    Column("confirmed_at", UtcDateTime, nullable=True),
    Column("removal_requested_at", UtcDateTime, nullable=True),
    Column("removal_due_at", UtcDateTime, nullable=True),
    Column("removed_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("code_id", "lock_id", name="uq_code_placements_code_lock"),
    Index("ix_code_placements_lock_slot", "lock_id", "slot"),
    Index("ix_code_placements_due", "state", "next_attempt_at"),
)

# What Portner last observed in each slot of a lock, managed or not. `code_mac` is a keyed MAC of
# the code read back (never the code), so duplicates and foreign codes are found without storing
# digits. A quarantined slot (a foreign or unverifiable code) is never allocated or overwritten
# until an operator resolves it.
lock_slots = Table(
    "lock_slots",
    metadata,
    Column("lock_id", String(64), ForeignKey("locks.id"), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("observed", String(16), nullable=False),  # known | masked | empty | unreadable
    Column("code_mac", LargeBinary, nullable=True),
    _ref("code_id", "keypad_codes.id", nullable=True),
    Column("unreadable_reads", Integer, nullable=False, default=0),
    Column("observed_at", UtcDateTime, nullable=False),
    Column("quarantined_at", UtcDateTime, nullable=True),
    Column("quarantine_reason", String(32), nullable=True),  # foreign | unverifiable | reappeared
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolved_by", String(100), nullable=True),
    Column("resolution", String(32), nullable=True),  # adopted | cleared | released
)

# Commands to locks, written in the same transaction as the change that needs them and delivered
# at least once; `id` is the idempotency key the adapter sees, so a redelivery is harmless.
lock_commands = Table(
    "lock_commands",
    metadata,
    Column("id", String(64), primary_key=True),
    _ref("lock_id", "locks.id"),
    Column("placement_id", Integer, ForeignKey("code_placements.id"), nullable=True, index=True),
    Column("kind", String(32), nullable=False),  # set_code | clear_code | read_slots | set_clock | operate
    Column("slot", Integer, nullable=True),
    Column("args", JSON, nullable=False),  # never a code: set_code reads it from keypad_codes
    Column("state", String(16), nullable=False),  # requested | confirmed | refused | timed_out
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("refusal", String(32), nullable=True),
    Column("detail", String(400), nullable=True),
    Index("ix_lock_commands_due", "state", "not_before"),
)

# Each lock's live condition and radio budget, as the adapters last reported it.
lock_status = Table(
    "lock_status",
    metadata,
    Column("lock_id", String(64), ForeignKey("locks.id"), primary_key=True),
    Column("capabilities", JSON, nullable=True),
    Column("capabilities_at", UtcDateTime, nullable=True),
    Column("online", Boolean, nullable=True),
    Column("bolt", String(16), nullable=True),
    Column("jammed_since", UtcDateTime, nullable=True),
    Column("tamper_at", UtcDateTime, nullable=True),
    Column("clock_offset_s", Float, nullable=True),
    Column("clock_verified_at", UtcDateTime, nullable=True),
    Column("last_event_at", UtcDateTime, nullable=True),
    Column("last_user_event_at", UtcDateTime, nullable=True),
    Column("verified_at", UtcDateTime, nullable=True),  # last verification of managed slots
    Column("budget_window_start", UtcDateTime, nullable=True),
    Column("budget_used", Integer, nullable=False, default=0),
    Column("last_command_at", UtcDateTime, nullable=True),  # spacing (min_command_interval)
    Column("heartbeat_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Normalised operation events from adapters (keypad, remote, manual...), deduplicated on the
# adapter's stable key. Failed attempts are rows with success false, never visits (F26).
lock_activity = Table(
    "lock_activity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("lock_id", "locks.id"),
    Column("key", String(200), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("slot", Integer, nullable=True),
    _ref("code_id", "keypad_codes.id", nullable=True),
    Column("actor_id", String(64), nullable=True, index=True),
    _ref("visit_id", "visits.id", nullable=True),
    # event | legacy_alarm | unidentified | unknown_credential
    Column("attribution", String(32), nullable=False),
    Column("failure", String(32), nullable=False, default=""),
    Column("lock_time", UtcDateTime, nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("lock_id", "key", name="uq_lock_activity_lock_key"),
)

# Conditions an operator must see: jammed, tamper, low battery, wrong codes, an unknown credential
# used, an overdue removal, a permanent rejection, a foreign code... One open row per (lock, kind,
# subject); cleared by the condition ending, never by a timer (F29).
lock_alarms = Table(
    "lock_alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ref("lock_id", "locks.id"),
    Column("kind", String(32), nullable=False),
    Column("subject", String(100), nullable=False, default=""),  # a slot, code or command id
    Column("detail", String(400), nullable=False, default=""),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("escalated_at", UtcDateTime, nullable=True),
    Column("cleared_at", UtcDateTime, nullable=True),
    Column("acknowledged_by", String(100), nullable=True),
    Index("ix_lock_alarms_open", "lock_id", "kind", "cleared_at"),
)
