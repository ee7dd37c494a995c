"""Recording merchant events (`evt_...`) in the caller's transaction: the API's Events list and
the outbox from which webhooks are delivered."""

from __future__ import annotations

import uuid
from typing import Any

from core.db import db
from payments import objects, webhooks  # noqa: F401  (webhooks: its session hook dispatches after commit)
from payments.models import Event


def record(tenant_id: uuid.UUID, merchant_id: uuid.UUID, livemode: bool, type_: str, obj: dict[str, Any]) -> Event:
    event = Event(
        tenant_id=tenant_id,
        id=objects.new_id("evt"),
        merchant_id=merchant_id,
        livemode=livemode,
        type=type_,
        object_id=obj["id"],
        data={"object": obj},
    )
    db.session.add(event)
    return event
