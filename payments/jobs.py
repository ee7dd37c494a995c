"""Background jobs of the payment core (queue `channels`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core import sweeps
from core.db import db
from payments.channels.base import (
    ChannelInvalidRequest,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeResult,
    ChargeStatus,
)
from payments.models import ChannelAccount, PaymentAttempt, Topup


class OutcomeStillUnknown(Exception):
    """The channel has no final answer yet; RQ retries the job with backoff."""


def _ask_channel(tenant_id: uuid.UUID, account_id: uuid.UUID, key: str, what: str) -> tuple[ChargeResult | None, str]:
    """Ask a channel account what became of the charge it received with our `key`, with no
    transaction open across the call. Returns (the answer, "") or, when the channel says it never
    received it, (None, why); raises `OutcomeStillUnknown` when it does not answer."""
    from payments.channel_adapters import adapter_of

    account = db.session.execute(
        sa.select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == account_id)
    ).scalar_one()
    db.session.commit()
    try:
        return adapter_of(account).query(idempotency_key=key), ""
    except (ChannelTimeout, ChannelUnavailable) as exc:
        raise OutcomeStillUnknown(f"{what}: the channel did not answer ({exc})") from exc
    except ChannelInvalidRequest as exc:
        if exc.code != "resource_missing":
            raise
        return None, f"the channel has no such charge: {exc}"


def resolve_attempt(tenant_id: uuid.UUID, attempt_id: str) -> str:
    """Ask the channel what became of an attempt whose answer never came, and apply it once.

    Asks by the idempotency key the channel received, never charges again. Safe to run twice
    or after a worker died: a final attempt is left as it is.
    """
    from payments.intents import apply_charge_result, apply_not_taken

    attempt = db.session.execute(
        sa.select(PaymentAttempt).where(
            PaymentAttempt.tenant_id == tenant_id, PaymentAttempt.id == uuid.UUID(attempt_id)
        )
    ).scalar_one()
    if attempt.status not in ("started", "unknown"):
        return attempt.status
    result, missing = _ask_channel(
        tenant_id, attempt.channel_account_id, attempt.idempotency_key, f"attempt {attempt_id}"
    )
    if result is None:
        return apply_not_taken(tenant_id, attempt.id, missing).status
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


def _requeue_stale(stale: Callable[[datetime, datetime], sa.Select], queue: Callable[[uuid.UUID, Any], None]) -> int:
    """Re-queue the resolution of every channel call `stale(cutoff, abandoned)` selects as
    (tenant_id, id), over all tenants (platform scope): calls still `unknown` a minute after their
    last news, and calls abandoned while `started`. A queued, scheduled or running resolution is
    kept (deterministic job ids); one whose retries ran out starts again. Returns how many."""
    from tenants import isolation

    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=SWEEP_GRACE_SECONDS)
    abandoned = now - timedelta(seconds=ABANDONED_AFTER_SECONDS)
    with isolation.platform_scope(db.session):
        rows = db.session.execute(stale(cutoff, abandoned).limit(SWEEP_LIMIT)).all()
        db.session.commit()
    for tenant_id, object_id in rows:
        with isolation.tenant_context(db.session, tenant_id):
            queue(tenant_id, object_id)
    return len(rows)


# Run by the webhooks sweep every minute (`payments.webhooks.sweep`), recorded on its own.
@sweeps.recorded("payments", "Unknown channel outcomes (payments, top-ups)", 60)
def sweep_unknown_attempts() -> int:
    """Re-queue lost resolutions of payment attempts (`_requeue_stale`), so an outcome is asked for
    until the channel gives a final one. Returns how many attempts were looked at, top-ups'
    channel calls included (`sweep_unknown_topups`)."""
    from payments.intents import queue_resolution

    attempts = _requeue_stale(
        lambda cutoff, abandoned: (
            sa.select(PaymentAttempt.tenant_id, PaymentAttempt.id)
            .where(
                sa.or_(
                    sa.and_(PaymentAttempt.status == "unknown", PaymentAttempt.created_at < cutoff),
                    sa.and_(PaymentAttempt.status == "started", PaymentAttempt.created_at < abandoned),
                )
            )
            .order_by(PaymentAttempt.created_at)
        ),
        queue_resolution,
    )
    # Top-ups charged through a channel have the same kind of calls; counted with the attempts.
    return attempts + sweep_unknown_topups()


def resolve_topup(tenant_id: uuid.UUID, topup_id: str) -> str:
    """Ask the channel what became of a top-up's call whose answer never came (or that was still
    processing), and apply it once (`payments.balance_operations.apply_topup_result`).

    Asks by the idempotency key the channel received, never charges again. Safe to run twice or
    after a worker died: a final top-up is left as it is.
    """
    from payments.balance_operations import apply_topup_result, topup_not_taken

    topup = db.session.execute(sa.select(Topup).where(Topup.tenant_id == tenant_id, Topup.id == topup_id)).scalar_one()
    if topup.status != "pending" or topup.charge_status not in ("started", "unknown"):
        return topup.status
    key = topup.charge_key
    result, missing = _ask_channel(tenant_id, topup.channel_account_id, key, f"top-up {topup_id}")
    if result is None:
        return topup_not_taken(tenant_id, topup_id, key, missing).status
    if result.status in (ChargeStatus.PROCESSING, ChargeStatus.REQUIRES_CAPTURE):
        raise OutcomeStillUnknown(f"top-up {topup_id}: still {result.status} at the channel")
    return apply_topup_result(tenant_id, topup_id, key, result).status


def sweep_unknown_topups() -> int:
    """Re-queue lost resolutions of top-ups' channel calls (`_requeue_stale`), as
    `sweep_unknown_attempts` does for payments. Returns how many top-ups were looked at."""
    from payments.balance_operations import queue_topup_resolution

    return _requeue_stale(
        lambda cutoff, abandoned: (
            sa.select(Topup.tenant_id, Topup.id)
            .where(
                Topup.status == "pending",
                sa.or_(
                    sa.and_(Topup.charge_status == "unknown", Topup.charge_started_at < cutoff),
                    sa.and_(Topup.charge_status == "started", Topup.charge_started_at < abandoned),
                ),
            )
            .order_by(Topup.charge_started_at)
        ),
        queue_topup_resolution,
    )
