"""audit log: a hash chain per tenant (seq, prev_hash, hash; chain heads), API keys as actors

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-01 00:00:00.000000

"""

import hashlib
import json
from datetime import UTC

import sqlalchemy as sa
from alembic import op
from flask import current_app

# revision identifiers, used by Alembic.
revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
PLATFORM_SCOPE = "current_setting('app.scope', true) = 'platform'"
OLD_KINDS = ("platform", "user", "system")
NEW_KINDS = (*OLD_KINDS, "api_key")


def _canonical(row, seq: int, prev_hash: str) -> bytes:
    """The serialisation `tenants.audit.canonical` hashes, as of this revision (events written
    before it are chained here the way the app chains new ones, so `flask audit verify` accepts them)."""
    document = {
        "tenant": str(row.tenant_id),
        "seq": seq,
        "actor": {"kind": row.actor_kind, "id": str(row.actor_id) if row.actor_id else None, "email": row.actor_email},
        "action": row.action,
        "object": {"type": row.object_type, "id": row.object_id},
        "changes": row.changes,
        "ip": row.ip,
        "created_at": row.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def upgrade():
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_chain_heads",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_audit_chain_heads_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_chain_heads")),
    )

    # Events recorded before this revision are chained in the order they happened. (The policies
    # are forced on the owner too: this runs in platform scope.)
    bind = op.get_bind()
    bind.exec_driver_sql("SELECT set_config('app.scope', 'platform', true)")
    rows = bind.execute(
        sa.text(
            "SELECT tenant_id, id, actor_kind, actor_id, actor_email, action, object_type, object_id, changes, ip,"
            " created_at FROM audit_events ORDER BY tenant_id, created_at, id"
        )
    )
    heads: dict = {}
    for row in rows:
        seq, prev_hash = heads.get(row.tenant_id, (0, GENESIS))
        seq += 1
        digest = hashlib.sha256(_canonical(row, seq, prev_hash)).hexdigest()
        bind.execute(
            sa.text(
                "UPDATE audit_events SET seq = :seq, prev_hash = :prev, hash = :hash WHERE tenant_id = :t AND id = :id"
            ),
            {"seq": seq, "prev": prev_hash, "hash": digest, "t": row.tenant_id, "id": row.id},
        )
        heads[row.tenant_id] = (seq, digest)
    for tenant_id, (seq, digest) in heads.items():
        bind.execute(
            sa.text("INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES (:t, :seq, :hash)"),
            {"t": tenant_id, "seq": seq, "hash": digest},
        )
    bind.exec_driver_sql("SELECT set_config('app.scope', '', true)")

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_events_tenant_id_seq"), ["tenant_id", "seq"])
    op.drop_constraint(op.f("ck_audit_events_actor_kind"), "audit_events", type_="check")
    op.create_check_constraint(op.f("ck_audit_events_actor_kind"), "audit_events", f"actor_kind IN {NEW_KINDS!r}")

    op.execute("ALTER TABLE audit_chain_heads ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY")
    rule = f"tenant_id = {CURRENT_TENANT} OR {PLATFORM_SCOPE}"
    op.execute(f"CREATE POLICY tenant_isolation ON audit_chain_heads USING ({rule}) WITH CHECK ({rule})")
    # The app appends to the log and never rewrites it.
    op.execute(f"REVOKE UPDATE, DELETE ON audit_events FROM {current_app.config['APP_DB_ROLE']}")


def downgrade():
    op.execute(f"GRANT UPDATE, DELETE ON audit_events TO {current_app.config['APP_DB_ROLE']}")
    op.execute("SELECT set_config('app.scope', 'platform', true)")
    # Before this revision the API key's calls were recorded as the system's.
    op.execute("UPDATE audit_events SET actor_kind = 'system' WHERE actor_kind = 'api_key'")
    op.execute("SELECT set_config('app.scope', '', true)")
    op.drop_constraint(op.f("ck_audit_events_actor_kind"), "audit_events", type_="check")
    op.create_check_constraint(op.f("ck_audit_events_actor_kind"), "audit_events", f"actor_kind IN {OLD_KINDS!r}")
    op.execute("DROP POLICY IF EXISTS tenant_isolation ON audit_chain_heads")
    op.drop_table("audit_chain_heads")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_events_tenant_id_seq"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
