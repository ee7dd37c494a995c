"""Recording merchant events (`evt_...`) in the caller's transaction: the API's Events list and
the outbox from which webhooks are delivered.

An event is written by one INSERT at once (no ORM object: it is never changed in the transaction
that writes it, and the payment path writes two per payment); `webhooks.route_new_event` decides
whether it waits for webhook delivery.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.db import db
from payments import objects, webhooks
from payments.models import Event

_INSERT = sa.insert(Event.__table__)


def record(tenant_id: uuid.UUID, merchant_id: uuid.UUID, livemode: bool, type_: str, obj: dict[str, Any]) -> str:
    """Write an event of `type_` about `obj` (a Stripe-shaped object); returns its id."""
    event_id = objects.new_id("evt")
    db.session.connection().execute(
        _INSERT,
        {
            "tenant_id": tenant_id,
            "id": event_id,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "type": type_,
            "object_id": obj["id"],
            "data": {"object": obj},
            "dispatched_at": webhooks.route_new_event(db.session, tenant_id, merchant_id, livemode, type_),
        },
    )
    return event_id
