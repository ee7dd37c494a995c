"""Background jobs of the payment core (queue `channels`)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core.db import db
from payments.channels.base import ChannelInvalidRequest, ChannelTimeout, ChannelUnavailable, ChargeStatus
from payments.models import ChannelAccount, PaymentAttempt


class OutcomeStillUnknown(Exception):
    """The channel has no final answer yet; RQ retries the job with backoff."""


def resolve_attempt(tenant_id: uuid.UUID, attempt_id: str) -> str:
    """Ask the channel what became of an attempt whose answer never came, and apply it once.

    Asks by the idempotency key the channel received, never charges again. Safe to run twice
    or after a worker died: a final attempt is left as it is.
    """
    from payments.channel_adapters import adapter_of
    from payments.intents import apply_charge_result, apply_not_taken

    attempt = db.session.execute(
        sa.select(PaymentAttempt).where(
            PaymentAttempt.tenant_id == tenant_id, PaymentAttempt.id == uuid.UUID(attempt_id)
        )
    ).scalar_one()
    if attempt.status not in ("started", "unknown"):
        return attempt.status
    account = db.session.execute(
        sa.select(ChannelAccount).where(
            ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == attempt.channel_account_id
        )
    ).scalar_one()
    key = attempt.idempotency_key
    db.session.commit()
    try:
        result = adapter_of(account).query(idempotency_key=key)
    except (ChannelTimeout, ChannelUnavailable) as exc:
        raise OutcomeStillUnknown(f"attempt {attempt_id}: the channel did not answer ({exc})") from exc
    except ChannelInvalidRequest as exc:
        if exc.code != "resource_missing":
            raise
        return apply_not_taken(tenant_id, attempt.id, f"the channel has no such charge: {exc}").status
    if result.status == ChargeStatus.PROCESSING:
        raise OutcomeStillUnknown(f"attempt {attempt_id}: still processing at the channel")
    pi = apply_charge_result(tenant_id, attempt.id, result)
    return pi.status


SWEEP_GRACE_SECONDS = 60
# An attempt still `started` this long after it was written lost its process between writing the
# attempt and applying the channel's answer (a crash, a SIGKILL). Far longer than any channel call
# may take (the adapters' timeouts are at most a few minutes), so a live request is never raced.
ABANDONED_AFTER_SECONDS = 900
SWEEP_LIMIT = 500


def sweep_unknown_attempts() -> int:
    """Re-queue the resolution of attempts still `unknown` a minute after their last news, and of
    attempts abandoned while `started`, over all tenants (platform scope). A queued, scheduled or
    running resolution of the same attempt is kept (deterministic job id); one whose retries ran
    out starts again, so an outcome is asked for until the channel gives a final one. Returns how
    many attempts were looked at."""
    from datetime import UTC, datetime, timedelta

    from payments.intents import queue_resolution
    from tenants import isolation

    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=SWEEP_GRACE_SECONDS)
    abandoned = now - timedelta(seconds=ABANDONED_AFTER_SECONDS)
    with isolation.platform_scope(db.session):
        rows = db.session.execute(
            sa.select(PaymentAttempt.tenant_id, PaymentAttempt.id)
            .where(
                sa.or_(
                    sa.and_(PaymentAttempt.status == "unknown", PaymentAttempt.created_at < cutoff),
                    sa.and_(PaymentAttempt.status == "started", PaymentAttempt.created_at < abandoned),
                )
            )
            .order_by(PaymentAttempt.created_at)
            .limit(SWEEP_LIMIT)
        ).all()
        db.session.commit()
    for tenant_id, attempt_id in rows:
        with isolation.tenant_context(db.session, tenant_id):
            queue_resolution(tenant_id, attempt_id)
    return len(rows)
