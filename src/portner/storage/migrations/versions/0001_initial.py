"""Initial schema: every table of portner.storage.tables.

Generated with `alembic revision --autogenerate` against an empty PostgreSQL schema, then given the
audit chain's genesis row. tests/storage/test_db.py::test_migrations_match_tables_py_exactly fails
when tables.py and the migrations disagree; until the first release, regenerate this file with
src/portner/storage/migrations/regenerate_0001.sh instead of adding 0002.

Revision ID: 0001_initial
Revises:
"""
# ruff: noqa: E501  (generated code)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create every table of portner.storage.tables as of this revision."""
    op.create_table('audit_events',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_events'))
    )
    op.create_index(op.f('ix_audit_events_action'), 'audit_events', ['action'], unique=False)
    op.create_index(op.f('ix_audit_events_subject'), 'audit_events', ['subject'], unique=False)
    audit_head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # The chain's genesis: no entry yet, previous hash all zeros (see portner.storage.audit).
    op.bulk_insert(audit_head, [{'id': 1, 'seq': 0, 'hash': bytes(32)}])
    op.create_table('idempotency_keys',
    sa.Column('principal', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('method_path', sa.String(length=400), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index(op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False)
    op.create_table('instance',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('database_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instance'))
    )
    op.create_table('municipalities',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('service_model', sa.String(length=32), nullable=False),
    sa.Column('window_lead_s', sa.Integer(), nullable=False),
    sa.Column('window_grace_s', sa.Integer(), nullable=False),
    sa.Column('baseline_key_minutes_per_shift', sa.Float(), nullable=False),
    sa.Column('accept_synthetic_ids', sa.Boolean(), nullable=False),
    sa.Column('plan_horizon_s', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_municipalities'))
    )
    op.create_table('actors',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('organisation', sa.String(length=200), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('her_id', sa.String(length=32), nullable=True),
    sa.Column('hpr_number', sa.String(length=32), nullable=True),
    sa.Column('national_id', sa.String(length=11), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_actors_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_actors'))
    )
    op.create_index(op.f('ix_actors_her_id'), 'actors', ['her_id'], unique=False)
    op.create_index(op.f('ix_actors_hpr_number'), 'actors', ['hpr_number'], unique=False)
    op.create_index(op.f('ix_actors_municipality_id'), 'actors', ['municipality_id'], unique=False)
    op.create_index(op.f('ix_actors_national_id'), 'actors', ['national_id'], unique=False)
    op.create_table('issuer_keys',
    sa.Column('kid', sa.String(length=32), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_issuer_keys_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_issuer_keys'))
    )
    op.create_index(op.f('ix_issuer_keys_municipality_id'), 'issuer_keys', ['municipality_id'], unique=False)
    op.create_table('messages',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_messages_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    op.create_index(op.f('ix_messages_municipality_id'), 'messages', ['municipality_id'], unique=False)
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_outbox_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    op.create_index(op.f('ix_outbox_municipality_id'), 'outbox', ['municipality_id'], unique=False)
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('file', sa.String(length=500), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('field', sa.String(length=300), nullable=False),
    sa.Column('message', sa.String(length=500), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_quarantine_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine'))
    )
    op.create_index('ix_quarantine_entry', 'quarantine', ['municipality_id', 'file', 'resource', 'field'], unique=False)
    op.create_index(op.f('ix_quarantine_municipality_id'), 'quarantine', ['municipality_id'], unique=False)
    op.create_table('revocation_lists',
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('blob', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_revocation_lists_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('municipality_id', 'version', name=op.f('pk_revocation_lists'))
    )
    op.create_table('visit_plans',
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('plan_key', sa.String(length=300), nullable=False),
    sa.Column('source_file', sa.String(length=500), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_visit_plans_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('municipality_id', 'plan_key', name=op.f('pk_visit_plans'))
    )
    op.create_table('zones',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=400), nullable=False),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_zones_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_zones')),
    sa.UniqueConstraint('municipality_id', 'path', name='uq_zones_municipality_path')
    )
    op.create_index(op.f('ix_zones_municipality_id'), 'zones', ['municipality_id'], unique=False)
    op.create_table('devices',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_devices_actor_id_actors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices'))
    )
    op.create_index(op.f('ix_devices_actor_id'), 'devices', ['actor_id'], unique=False)
    op.create_table('residents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('national_id', sa.String(length=11), nullable=True),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('zone_id', sa.String(length=64), nullable=True),
    sa.Column('source_ref', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_residents_municipality_id_municipalities')),
    sa.ForeignKeyConstraint(['zone_id'], ['zones.id'], name=op.f('fk_residents_zone_id_zones')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_residents')),
    sa.UniqueConstraint('municipality_id', 'national_id', name='uq_residents_municipality_nid')
    )
    op.create_index(op.f('ix_residents_municipality_id'), 'residents', ['municipality_id'], unique=False)
    op.create_index(op.f('ix_residents_zone_id'), 'residents', ['zone_id'], unique=False)
    op.create_table('accounts',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('resident_id', sa.String(length=64), nullable=True),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('scopes', sa.String(length=400), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sessions_since', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_accounts_actor_id_actors')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_accounts_municipality_id_municipalities')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_accounts_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('issuer', 'subject', name='uq_accounts_issuer_subject')
    )
    op.create_index(op.f('ix_accounts_actor_id'), 'accounts', ['actor_id'], unique=False)
    op.create_index(op.f('ix_accounts_municipality_id'), 'accounts', ['municipality_id'], unique=False)
    op.create_index(op.f('ix_accounts_resident_id'), 'accounts', ['resident_id'], unique=False)
    op.create_table('homes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('resident_id', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.Column('elock_system', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_homes_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_homes'))
    )
    op.create_index(op.f('ix_homes_resident_id'), 'homes', ['resident_id'], unique=False)
    op.create_table('notices',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('resident_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_notices_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notices'))
    )
    op.create_index(op.f('ix_notices_created_at'), 'notices', ['created_at'], unique=False)
    op.create_index(op.f('ix_notices_resident_id'), 'notices', ['resident_id'], unique=False)
    op.create_table('relations',
    sa.Column('resident_id', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('relationship', sa.String(length=100), nullable=False),
    sa.Column('phone', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_relations_actor_id_actors')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_relations_resident_id_residents')),
    sa.PrimaryKeyConstraint('resident_id', 'actor_id', name=op.f('pk_relations'))
    )
    op.create_table('visits',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('resident_id', sa.String(length=64), nullable=False),
    sa.Column('plan_key', sa.String(length=300), nullable=False),
    sa.Column('source_key', sa.String(length=400), nullable=False),
    sa.Column('planned_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('planned_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('staff_ids', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('description', sa.String(length=400), nullable=False),
    sa.Column('arrived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('departed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('written_back_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_visits_municipality_id_municipalities')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_visits_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visits')),
    sa.UniqueConstraint('municipality_id', 'source_key', name='uq_visits_municipality_source')
    )
    op.create_index(op.f('ix_visits_municipality_id'), 'visits', ['municipality_id'], unique=False)
    op.create_index(op.f('ix_visits_plan_key'), 'visits', ['plan_key'], unique=False)
    op.create_index(op.f('ix_visits_planned_start'), 'visits', ['planned_start'], unique=False)
    op.create_index(op.f('ix_visits_resident_id'), 'visits', ['resident_id'], unique=False)
    op.create_table('doors',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('home_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['home_id'], ['homes.id'], name=op.f('fk_doors_home_id_homes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_doors')),
    sa.UniqueConstraint('home_id', 'position', name='uq_doors_home_position'),
    sa.UniqueConstraint('lock_id', name=op.f('uq_doors_lock_id'))
    )
    op.create_index(op.f('ix_doors_home_id'), 'doors', ['home_id'], unique=False)
    op.create_table('grants',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('door_ids', sa.JSON(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('visit_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=400), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_grants_actor_id_actors')),
    sa.ForeignKeyConstraint(['visit_id'], ['visits.id'], name=op.f('fk_grants_visit_id_visits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grants'))
    )
    op.create_index(op.f('ix_grants_actor_id'), 'grants', ['actor_id'], unique=False)
    op.create_index(op.f('ix_grants_not_after'), 'grants', ['not_after'], unique=False)
    op.create_index(op.f('ix_grants_visit_id'), 'grants', ['visit_id'], unique=False)
    op.create_table('credentials',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_credentials_device_id_devices')),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], name=op.f('fk_credentials_grant_id_grants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credentials'))
    )
    op.create_index(op.f('ix_credentials_device_id'), 'credentials', ['device_id'], unique=False)
    op.create_index(op.f('ix_credentials_grant_id'), 'credentials', ['grant_id'], unique=False)
    op.create_table('invitations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_invitations_actor_id_actors')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_invitations_device_id_devices')),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], name=op.f('fk_invitations_grant_id_grants')),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_invitations_message_id_messages')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_invitations_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_invitations_token_hash'))
    )
    op.create_index(op.f('ix_invitations_actor_id'), 'invitations', ['actor_id'], unique=False)
    op.create_index(op.f('ix_invitations_device_id'), 'invitations', ['device_id'], unique=False)
    op.create_index(op.f('ix_invitations_grant_id'), 'invitations', ['grant_id'], unique=False)
    op.create_index(op.f('ix_invitations_municipality_id'), 'invitations', ['municipality_id'], unique=False)
    op.create_table('keypad_codes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('municipality_id', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('grant_id', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('code_mac', sa.LargeBinary(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('notify', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_keypad_codes_actor_id_actors')),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], name=op.f('fk_keypad_codes_grant_id_grants')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipalities.id'], name=op.f('fk_keypad_codes_municipality_id_municipalities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_keypad_codes'))
    )
    op.create_index(op.f('ix_keypad_codes_actor_id'), 'keypad_codes', ['actor_id'], unique=False)
    op.create_index(op.f('ix_keypad_codes_grant_id'), 'keypad_codes', ['grant_id'], unique=False)
    op.create_index(op.f('ix_keypad_codes_municipality_id'), 'keypad_codes', ['municipality_id'], unique=False)
    op.create_table('locks',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('door_id', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('synced_seq', sa.BigInteger(), nullable=False),
    sa.Column('synced_hash', sa.LargeBinary(), nullable=True),
    sa.Column('battery_percent', sa.Float(), nullable=True),
    sa.Column('clock_offset_s', sa.Float(), nullable=True),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('address', sa.String(length=200), nullable=True),
    sa.Column('enforcement', sa.String(length=16), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['door_id'], ['doors.id'], name=op.f('fk_locks_door_id_doors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_locks'))
    )
    op.create_index(op.f('ix_locks_door_id'), 'locks', ['door_id'], unique=False)
    op.create_table('code_placements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('code_id', sa.String(length=64), nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('intent', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('enforcement', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_refusal', sa.String(length=32), nullable=True),
    sa.Column('last_detail', sa.String(length=400), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removal_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removal_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['code_id'], ['keypad_codes.id'], name=op.f('fk_code_placements_code_id_keypad_codes')),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_code_placements_lock_id_locks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_code_placements')),
    sa.UniqueConstraint('code_id', 'lock_id', name='uq_code_placements_code_lock')
    )
    op.create_index(op.f('ix_code_placements_code_id'), 'code_placements', ['code_id'], unique=False)
    op.create_index('ix_code_placements_due', 'code_placements', ['state', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_code_placements_lock_id'), 'code_placements', ['lock_id'], unique=False)
    op.create_index('ix_code_placements_lock_slot', 'code_placements', ['lock_id', 'slot'], unique=False)
    op.create_table('door_event_pending',
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_door_event_pending_lock_id_locks')),
    sa.PrimaryKeyConstraint('lock_id', 'seq', 'hash', name=op.f('pk_door_event_pending'))
    )
    op.create_table('door_events',
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('lock_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('credential_id', sa.String(length=64), nullable=True),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('visit_id', sa.String(length=64), nullable=True),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_door_events_lock_id_locks')),
    sa.ForeignKeyConstraint(['visit_id'], ['visits.id'], name=op.f('fk_door_events_visit_id_visits')),
    sa.PrimaryKeyConstraint('lock_id', 'seq', name=op.f('pk_door_events'))
    )
    op.create_index(op.f('ix_door_events_actor_id'), 'door_events', ['actor_id'], unique=False)
    op.create_index(op.f('ix_door_events_credential_id'), 'door_events', ['credential_id'], unique=False)
    op.create_index(op.f('ix_door_events_visit_id'), 'door_events', ['visit_id'], unique=False)
    op.create_table('lock_activity',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('code_id', sa.String(length=64), nullable=True),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('visit_id', sa.String(length=64), nullable=True),
    sa.Column('attribution', sa.String(length=32), nullable=False),
    sa.Column('failure', sa.String(length=32), nullable=False),
    sa.Column('lock_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['code_id'], ['keypad_codes.id'], name=op.f('fk_lock_activity_code_id_keypad_codes')),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_activity_lock_id_locks')),
    sa.ForeignKeyConstraint(['visit_id'], ['visits.id'], name=op.f('fk_lock_activity_visit_id_visits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lock_activity')),
    sa.UniqueConstraint('lock_id', 'key', name='uq_lock_activity_lock_key')
    )
    op.create_index(op.f('ix_lock_activity_actor_id'), 'lock_activity', ['actor_id'], unique=False)
    op.create_index(op.f('ix_lock_activity_code_id'), 'lock_activity', ['code_id'], unique=False)
    op.create_index(op.f('ix_lock_activity_lock_id'), 'lock_activity', ['lock_id'], unique=False)
    op.create_index(op.f('ix_lock_activity_visit_id'), 'lock_activity', ['visit_id'], unique=False)
    op.create_table('lock_alarms',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=100), nullable=False),
    sa.Column('detail', sa.String(length=400), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_alarms_lock_id_locks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lock_alarms'))
    )
    op.create_index(op.f('ix_lock_alarms_lock_id'), 'lock_alarms', ['lock_id'], unique=False)
    op.create_index('ix_lock_alarms_open', 'lock_alarms', ['lock_id', 'kind', 'cleared_at'], unique=False)
    op.create_table('lock_log_anomalies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('detail', sa.String(length=400), nullable=False),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_log_anomalies_lock_id_locks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lock_log_anomalies'))
    )
    op.create_index(op.f('ix_lock_log_anomalies_lock_id'), 'lock_log_anomalies', ['lock_id'], unique=False)
    op.create_table('lock_slots',
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('observed', sa.String(length=16), nullable=False),
    sa.Column('code_mac', sa.LargeBinary(), nullable=True),
    sa.Column('code_id', sa.String(length=64), nullable=True),
    sa.Column('unreadable_reads', sa.Integer(), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('quarantine_reason', sa.String(length=32), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=100), nullable=True),
    sa.Column('resolution', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['code_id'], ['keypad_codes.id'], name=op.f('fk_lock_slots_code_id_keypad_codes')),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_slots_lock_id_locks')),
    sa.PrimaryKeyConstraint('lock_id', 'slot', name=op.f('pk_lock_slots'))
    )
    op.create_index(op.f('ix_lock_slots_code_id'), 'lock_slots', ['code_id'], unique=False)
    op.create_table('lock_status',
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('capabilities', sa.JSON(), nullable=True),
    sa.Column('capabilities_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('online', sa.Boolean(), nullable=True),
    sa.Column('bolt', sa.String(length=16), nullable=True),
    sa.Column('jammed_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tamper_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clock_offset_s', sa.Float(), nullable=True),
    sa.Column('clock_verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_user_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('budget_window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('budget_used', sa.Integer(), nullable=False),
    sa.Column('last_command_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_status_lock_id_locks')),
    sa.PrimaryKeyConstraint('lock_id', name=op.f('pk_lock_status'))
    )
    op.create_table('lock_commands',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('lock_id', sa.String(length=64), nullable=False),
    sa.Column('placement_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refusal', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.String(length=400), nullable=True),
    sa.ForeignKeyConstraint(['lock_id'], ['locks.id'], name=op.f('fk_lock_commands_lock_id_locks')),
    sa.ForeignKeyConstraint(['placement_id'], ['code_placements.id'], name=op.f('fk_lock_commands_placement_id_code_placements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lock_commands'))
    )
    op.create_index('ix_lock_commands_due', 'lock_commands', ['state', 'not_before'], unique=False)
    op.create_index(op.f('ix_lock_commands_lock_id'), 'lock_commands', ['lock_id'], unique=False)
    op.create_index(op.f('ix_lock_commands_placement_id'), 'lock_commands', ['placement_id'], unique=False)


def downgrade() -> None:
    """Drop everything upgrade() created."""
    op.drop_index(op.f('ix_lock_commands_placement_id'), table_name='lock_commands')
    op.drop_index(op.f('ix_lock_commands_lock_id'), table_name='lock_commands')
    op.drop_index('ix_lock_commands_due', table_name='lock_commands')
    op.drop_table('lock_commands')
    op.drop_table('lock_status')
    op.drop_index(op.f('ix_lock_slots_code_id'), table_name='lock_slots')
    op.drop_table('lock_slots')
    op.drop_index(op.f('ix_lock_log_anomalies_lock_id'), table_name='lock_log_anomalies')
    op.drop_table('lock_log_anomalies')
    op.drop_index('ix_lock_alarms_open', table_name='lock_alarms')
    op.drop_index(op.f('ix_lock_alarms_lock_id'), table_name='lock_alarms')
    op.drop_table('lock_alarms')
    op.drop_index(op.f('ix_lock_activity_visit_id'), table_name='lock_activity')
    op.drop_index(op.f('ix_lock_activity_lock_id'), table_name='lock_activity')
    op.drop_index(op.f('ix_lock_activity_code_id'), table_name='lock_activity')
    op.drop_index(op.f('ix_lock_activity_actor_id'), table_name='lock_activity')
    op.drop_table('lock_activity')
    op.drop_index(op.f('ix_door_events_visit_id'), table_name='door_events')
    op.drop_index(op.f('ix_door_events_credential_id'), table_name='door_events')
    op.drop_index(op.f('ix_door_events_actor_id'), table_name='door_events')
    op.drop_table('door_events')
    op.drop_table('door_event_pending')
    op.drop_index('ix_code_placements_lock_slot', table_name='code_placements')
    op.drop_index(op.f('ix_code_placements_lock_id'), table_name='code_placements')
    op.drop_index('ix_code_placements_due', table_name='code_placements')
    op.drop_index(op.f('ix_code_placements_code_id'), table_name='code_placements')
    op.drop_table('code_placements')
    op.drop_index(op.f('ix_locks_door_id'), table_name='locks')
    op.drop_table('locks')
    op.drop_index(op.f('ix_keypad_codes_municipality_id'), table_name='keypad_codes')
    op.drop_index(op.f('ix_keypad_codes_grant_id'), table_name='keypad_codes')
    op.drop_index(op.f('ix_keypad_codes_actor_id'), table_name='keypad_codes')
    op.drop_table('keypad_codes')
    op.drop_index(op.f('ix_invitations_municipality_id'), table_name='invitations')
    op.drop_index(op.f('ix_invitations_grant_id'), table_name='invitations')
    op.drop_index(op.f('ix_invitations_device_id'), table_name='invitations')
    op.drop_index(op.f('ix_invitations_actor_id'), table_name='invitations')
    op.drop_table('invitations')
    op.drop_index(op.f('ix_credentials_grant_id'), table_name='credentials')
    op.drop_index(op.f('ix_credentials_device_id'), table_name='credentials')
    op.drop_table('credentials')
    op.drop_index(op.f('ix_grants_visit_id'), table_name='grants')
    op.drop_index(op.f('ix_grants_not_after'), table_name='grants')
    op.drop_index(op.f('ix_grants_actor_id'), table_name='grants')
    op.drop_table('grants')
    op.drop_index(op.f('ix_doors_home_id'), table_name='doors')
    op.drop_table('doors')
    op.drop_index(op.f('ix_visits_resident_id'), table_name='visits')
    op.drop_index(op.f('ix_visits_planned_start'), table_name='visits')
    op.drop_index(op.f('ix_visits_plan_key'), table_name='visits')
    op.drop_index(op.f('ix_visits_municipality_id'), table_name='visits')
    op.drop_table('visits')
    op.drop_table('relations')
    op.drop_index(op.f('ix_notices_resident_id'), table_name='notices')
    op.drop_index(op.f('ix_notices_created_at'), table_name='notices')
    op.drop_table('notices')
    op.drop_index(op.f('ix_homes_resident_id'), table_name='homes')
    op.drop_table('homes')
    op.drop_index(op.f('ix_accounts_resident_id'), table_name='accounts')
    op.drop_index(op.f('ix_accounts_municipality_id'), table_name='accounts')
    op.drop_index(op.f('ix_accounts_actor_id'), table_name='accounts')
    op.drop_table('accounts')
    op.drop_index(op.f('ix_residents_zone_id'), table_name='residents')
    op.drop_index(op.f('ix_residents_municipality_id'), table_name='residents')
    op.drop_table('residents')
    op.drop_index(op.f('ix_devices_actor_id'), table_name='devices')
    op.drop_table('devices')
    op.drop_index(op.f('ix_zones_municipality_id'), table_name='zones')
    op.drop_table('zones')
    op.drop_table('visit_plans')
    op.drop_table('revocation_lists')
    op.drop_index(op.f('ix_quarantine_municipality_id'), table_name='quarantine')
    op.drop_index('ix_quarantine_entry', table_name='quarantine')
    op.drop_table('quarantine')
    op.drop_index(op.f('ix_outbox_municipality_id'), table_name='outbox')
    op.drop_table('outbox')
    op.drop_index(op.f('ix_messages_municipality_id'), table_name='messages')
    op.drop_table('messages')
    op.drop_index(op.f('ix_issuer_keys_municipality_id'), table_name='issuer_keys')
    op.drop_table('issuer_keys')
    op.drop_index(op.f('ix_actors_national_id'), table_name='actors')
    op.drop_index(op.f('ix_actors_municipality_id'), table_name='actors')
    op.drop_index(op.f('ix_actors_hpr_number'), table_name='actors')
    op.drop_index(op.f('ix_actors_her_id'), table_name='actors')
    op.drop_table('actors')
    op.drop_table('municipalities')
    op.drop_table('instance')
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_table('audit_head')
    op.drop_index(op.f('ix_audit_events_subject'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_action'), table_name='audit_events')
    op.drop_table('audit_events')
