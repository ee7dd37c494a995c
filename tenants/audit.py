"""Recording administrative actions against a tenant (who, what, which object, before/after)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from core.db import db
from tenants.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who acts: a platform admin, a tenant or merchant user, or the system (CLI, jobs)."""

    kind: str
    id: uuid.UUID | None = None
    email: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(kind="system")


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


def record(
    tenant_id: uuid.UUID,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: Any,
    change_set: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        tenant_id=tenant_id,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_email=actor.email,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=change_set or {},
        ip=actor.ip,
    )
    db.session.add(event)
    return event
