"""Recording administrative and money actions against a tenant (who, what, which object,
before/after, IP, time) in a tamper-evident log, and verifying it.

Each tenant's events form a hash chain: an event carries its position in the tenant's chain
(`seq`, from 1, no gaps), the previous event's hash (`prev_hash`, `GENESIS` for the first), and its
own `hash`, the SHA-256 of the canonical serialisation (sorted-key JSON, `canonical`) of its fields
and `prev_hash`. `record` appends under a lock on the tenant's chain head (`AuditChainHead`, one row
per tenant, held until the caller's transaction ends), so two transactions never extend the chain
from the same event. `verify` walks every chain and names each edited event (its hash no longer
matches its fields) and each deleted one (a gap in `seq`, a `prev_hash` that is not the previous
event's hash, or a chain that ends before its head).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import scoped_session

from core.db import db
from tenants.isolation import platform_scope
from tenants.models import AuditChainHead, AuditEvent, Tenant

GENESIS = "0" * 64
ACTOR_KINDS = ("platform", "user", "system", "api_key")


@dataclass(frozen=True)
class Actor:
    """Who acts: a platform admin, a tenant or merchant user, a merchant's API key (`id` is the
    key's id), or the system (CLI, jobs)."""

    kind: str
    id: uuid.UUID | None = None
    email: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(kind="system")

    @classmethod
    def api_key(cls, key_id: uuid.UUID | None, ip: str | None = None) -> Actor:
        return cls(kind="api_key", id=key_id, ip=ip)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields whose value differs, as {field: {"before": x, "after": y}}."""
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def created(**fields: Any) -> dict[str, Any]:
    """The change set of a new object: every field with only an `after` value."""
    return {key: {"after": value} for key, value in fields.items()}


# --- the chain -----------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """`value` as the JSON the database stores and gives back (so a hash computed before the
    insert equals the one computed from the row): non-JSON values (dates, decimals, ids) as text."""
    return json.loads(json.dumps(value, default=str))


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(
    *,
    tenant_id: uuid.UUID,
    seq: int,
    actor_kind: str,
    actor_id: uuid.UUID | None,
    actor_email: str | None,
    action: str,
    object_type: str,
    object_id: str,
    changes: Any,
    ip: str | None,
    created_at: datetime,
    prev_hash: str,
) -> bytes:
    """The bytes an event's hash covers: its fields and the previous event's hash as sorted-key,
    compact JSON (UTF-8; ids as text, the time in UTC to the microsecond)."""
    document = {
        "tenant": str(tenant_id),
        "seq": seq,
        "actor": {"kind": actor_kind, "id": str(actor_id) if actor_id else None, "email": actor_email},
        "action": action,
        "object": {"type": object_type, "id": object_id},
        "changes": changes,
        "ip": ip,
        "created_at": _utc_text(created_at),
        "prev_hash": prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(event: AuditEvent) -> str:
    """The hash `event` should carry, from its fields as they are now."""
    return hashlib.sha256(
        canonical(
            tenant_id=event.tenant_id,
            seq=event.seq,
            actor_kind=event.actor_kind,
            actor_id=event.actor_id,
            actor_email=event.actor_email,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            changes=event.changes,
            ip=event.ip,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
    ).hexdigest()


_HEADS = AuditChainHead.__table__
# Creates the head on a tenant's first event; otherwise a no-op update, which takes the row lock
# (waiting for a transaction that holds it) and returns the head as that transaction left it.
_LOCK_HEAD = (
    sa.dialects.postgresql.insert(_HEADS)
    .values(tenant_id=sa.bindparam("tenant_id"), seq=0, hash=GENESIS)
    .on_conflict_do_update(index_elements=[_HEADS.c.tenant_id], set_={"seq": _HEADS.c.seq})
    .returning(_HEADS.c.seq, _HEADS.c.hash)
)


def record(
    tenant_id: uuid.UUID,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    change_set: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an event to the tenant's chain, in the caller's transaction (which holds the chain
    head's lock until it ends: call this when the action's own writes are done)."""
    head = db.session.execute(_LOCK_HEAD, {"tenant_id": tenant_id}).one()
    event = AuditEvent(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        seq=head.seq + 1,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_email=actor.email,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=_json_value(change_set or {}),
        ip=actor.ip,
        created_at=datetime.now(UTC),
        prev_hash=head.hash,
    )
    event.hash = digest_of(event)
    db.session.add(event)
    db.session.execute(
        sa.update(_HEADS).where(_HEADS.c.tenant_id == tenant_id).values(seq=event.seq, hash=event.hash),
        execution_options={"skip_tenant_filter": True},
    )
    return event


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    tenant_id: uuid.UUID
    tenant: str  # the tenant's slug (its id when the tenant row is gone)
    seq: int
    event_id: uuid.UUID | None
    kind: str  # "edited" or "deleted"
    detail: str

    def __str__(self) -> str:
        where = f"tenant {self.tenant} ({self.tenant_id}) seq {self.seq}"
        record_ = f" record {self.event_id}" if self.event_id else ""
        return f"audit: {self.kind}: {where}{record_}: {self.detail}"


@dataclass
class Report:
    records: int = 0
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"audit: ok ({self.records} records in {self.chains} chains)"
        return f"audit: {len(self.problems)} problem(s) ({self.records} records in {self.chains} chains)"


def _events(session) -> Iterator[AuditEvent]:
    statement = (
        sa.select(AuditEvent)
        .order_by(AuditEvent.tenant_id, AuditEvent.seq)
        .execution_options(yield_per=1000, skip_tenant_filter=True)
    )
    for event in session.execute(statement).scalars():
        yield event
        session.expunge(event)


def _missing(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first} to {last}"


def verify(session=None) -> Report:
    """Walk every tenant's chain and report each event whose hash does not match its fields
    (edited), and each place where events are gone (deleted): a gap in `seq`, a `prev_hash` that is
    not the previous event's hash, or a chain shorter than its head says.

    Reads in platform scope, from one snapshot (a transaction of its own, rolled back at the end,
    when the session has none open), so events appended meanwhile cannot look like a problem."""
    session = session or db.session
    if isinstance(session, scoped_session):
        session = session()
    own = not session.in_transaction()
    if own:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    try:
        with platform_scope(session):
            return _walk(session)
    finally:
        if own:
            session.rollback()


def _walk(session) -> Report:
    report = Report()
    slugs = dict(session.execute(sa.select(Tenant.id, Tenant.slug)).all())
    heads = {
        row.tenant_id: row
        for row in session.execute(
            sa.select(_HEADS.c.tenant_id, _HEADS.c.seq, _HEADS.c.hash), execution_options={"skip_tenant_filter": True}
        )
    }
    chains: dict[uuid.UUID, tuple[int, str]] = {}  # tenant -> (last seq, last stored hash)

    def problem(tenant_id, seq, event_id, kind, detail):
        name = slugs.get(tenant_id, str(tenant_id))
        report.problems.append(Problem(tenant_id, name, seq, event_id, kind, detail))

    for event in _events(session):
        report.records += 1
        last_seq, last_hash = chains.get(event.tenant_id, (0, GENESIS))
        if event.seq != last_seq + 1:
            problem(
                event.tenant_id,
                event.seq,
                event.id,
                "deleted",
                f"{_missing(last_seq + 1, event.seq - 1)} missing before this record",
            )
        elif event.prev_hash != last_hash:
            problem(
                event.tenant_id,
                event.seq,
                event.id,
                "deleted",
                "its previous-record hash does not match the record before it (replaced or removed)",
            )
        if digest_of(event) != event.hash:
            problem(event.tenant_id, event.seq, event.id, "edited", "its hash does not match its contents")
        chains[event.tenant_id] = (event.seq, event.hash)
    for tenant_id, head in heads.items():
        last_seq, last_hash = chains.get(tenant_id, (0, GENESIS))
        if head.seq > last_seq:
            problem(
                tenant_id,
                head.seq,
                None,
                "deleted",
                f"{_missing(last_seq + 1, head.seq)} missing at the end of the chain",
            )
        elif head.seq < last_seq:
            problem(tenant_id, last_seq, None, "edited", f"the chain's head says it ends at seq {head.seq}")
        elif head.hash != last_hash:
            problem(tenant_id, head.seq, None, "edited", "the chain's head does not match its last record")
    for tenant_id in chains.keys() - heads.keys():
        problem(tenant_id, chains[tenant_id][0], None, "deleted", "the chain's head is missing")
    report.chains = len(chains.keys() | heads.keys())
    return report
