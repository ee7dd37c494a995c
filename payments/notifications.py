"""Channel notifications: a channel tells us what became of a payment (use case; it commits).

The channel POSTs to `/channels/notify/<channel account id>` on the tenant's host. The account's
adapter verifies the signature and reads the event; the attempt it names is found by the idempotency key
we sent (when the channel echoes it) or else by the channel's reference, and the outcome is applied with
`payments.intents.apply_charge_result`, under the same locks and with the same once-only rule as an
answer to the call itself or to a query. So a notification delivered twice, or after the query job
already learned the outcome, changes nothing the second time. Each verified notification is kept once
per (channel account, the channel's event id) in `channel_notifications`, after it was handled: a
repeat delivery is recognised there and answered without touching the payment again (a repeat that
races the first is still harmless, by the once-only rule). A notification about nothing of ours (a
payment made elsewhere on the account, an event without a payment status) is acknowledged and ignored,
so that the channel stops sending it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.db import db
from payments.channel_adapters import adapter_of
from payments.channels.base import ChargeResult, Notification
from payments.intents import apply_charge_result
from payments.models import ChannelAccount, ChannelNotification, PaymentAttempt

log = logging.getLogger(__name__)


class NoSuchChannelAccount(LookupError):
    """The URL names no channel account of this tenant."""


@dataclass(frozen=True)
class Received:
    """What a verified notification did: `applied` to a payment, `ignored` and why, or nothing as a `duplicate`."""

    event_id: str
    outcome: str
    reason: str = ""
    payment_intent_id: str | None = None


def receive(tenant_id: uuid.UUID, account_id: uuid.UUID, headers: Mapping[str, str], body: bytes) -> Received:
    """Verify and apply one notification. Raises `NoSuchChannelAccount`, and the adapter's
    `InvalidNotification` (bad signature or format) or `ChannelConfigError` (no webhook secret) with
    nothing changed."""
    account = db.session.execute(
        sa.select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == account_id)
    ).scalar_one_or_none()
    if account is None:
        db.session.rollback()
        raise NoSuchChannelAccount(str(account_id))
    adapter = adapter_of(account)
    try:
        notification = adapter.parse_notification(headers, body)
        if _seen(tenant_id, account_id, notification.event_id):
            log.info(
                "channel notification %s on channel account %s received again: already handled",
                notification.event_id,
                account_id,
            )
            return Received(notification.event_id, "duplicate")
        attempt = _attempt_named(tenant_id, account_id, notification)
        attempt_id, attempt_amount = (attempt.id, attempt.amount) if attempt is not None else (None, None)
    finally:
        db.session.rollback()  # only read so far; the outcome is applied in a transaction of its own
    if attempt_id is None:
        return _ignored(tenant_id, account_id, notification, "it names no payment made through this channel account")
    if notification.status is None or notification.reference is None:
        return _ignored(tenant_id, account_id, notification, "it carries no payment status")
    result = ChargeResult(
        reference=notification.reference,
        status=notification.status,
        amount=notification.amount if notification.amount is not None else attempt_amount,
        currency=notification.currency or "",
        failure_code=notification.failure_code,
        failure_message=notification.failure_message,
        raw={**dict(notification.raw.get("object") or {}), "notification": notification.event_id},
    )
    pi = apply_charge_result(tenant_id, attempt_id, result)
    log.info(
        "channel notification %s (%s) on channel account %s: applied to attempt %s; %s is %s",
        notification.event_id,
        notification.type,
        account_id,
        attempt_id,
        pi.id,
        pi.status,
    )
    _keep(tenant_id, account_id, notification, "applied", payment_intent_id=pi.id)
    return Received(notification.event_id, "applied", payment_intent_id=pi.id)


def _seen(tenant_id: uuid.UUID, account_id: uuid.UUID, event_id: str) -> bool:
    return (
        db.session.execute(
            sa.select(ChannelNotification.id).where(
                ChannelNotification.tenant_id == tenant_id,
                ChannelNotification.channel_account_id == account_id,
                ChannelNotification.event_id == event_id,
            )
        ).first()
        is not None
    )


def _keep(
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    notification: Notification,
    outcome: str,
    *,
    reason: str | None = None,
    payment_intent_id: str | None = None,
) -> None:
    db.session.execute(
        pg_insert(ChannelNotification)
        .values(
            tenant_id=tenant_id,
            id=uuid.uuid4(),
            channel_account_id=account_id,
            event_id=notification.event_id[:255],
            type=(notification.type or "")[:100],
            outcome=outcome,
            reason=reason[:300] if reason else None,
            payment_intent_id=payment_intent_id,
        )
        .on_conflict_do_nothing(constraint="uq_channel_notifications_event")
    )
    db.session.commit()


def _attempt_named(tenant_id: uuid.UUID, account_id: uuid.UUID, notification: Notification) -> PaymentAttempt | None:
    """The attempt the notification is about: by our idempotency key (unique, indexed) when the channel
    echoes it, else the latest charge attempt whose answer carried the channel's reference."""
    of_account = sa.select(PaymentAttempt).where(
        PaymentAttempt.tenant_id == tenant_id, PaymentAttempt.channel_account_id == account_id
    )
    if notification.our_reference:
        attempt = db.session.execute(
            of_account.where(PaymentAttempt.idempotency_key == notification.our_reference)
        ).scalar_one_or_none()
        if attempt is not None:
            return attempt
    if not notification.reference:
        return None
    return db.session.execute(
        of_account.where(
            PaymentAttempt.kind == "charge", PaymentAttempt.response["reference"].astext == notification.reference
        )
        .order_by(PaymentAttempt.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()


def _ignored(tenant_id: uuid.UUID, account_id: uuid.UUID, notification: Notification, reason: str) -> Received:
    log.info(
        "channel notification %s (%s) on channel account %s about %s ignored: %s",
        notification.event_id,
        notification.type,
        account_id,
        notification.reference,
        reason,
    )
    _keep(tenant_id, account_id, notification, "ignored", reason=reason)
    return Received(notification.event_id, "ignored", reason=reason)
