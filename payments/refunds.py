"""Refunds (full or partial) and the merchant's balance.

A refund first reserves its amount on the intent under a row lock (`amount_refunded` counts
refunds in flight), then calls the channel outside any transaction, then records the outcome.
So concurrent refunds can never together exceed what was received: the database refuses the
reservation that would (`refund_bound` check and the locked re-read).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from rq import Retry

import ledger
from core import queue
from core.db import db
from payments import balance_transactions, events, objects
from payments.channel_adapters import adapter_of
from payments.channels.base import (
    ChannelConfigError,
    ChannelDeclined,
    ChannelInvalidRequest,
    ChannelTimeout,
    ChannelUnavailable,
    RefundRequest,
    RefundStatus,
)
from payments.errors import ChannelError, InvalidRequest
from payments.intents import (
    QUERY_BACKOFF,
    MerchantContext,
    _account,
    clean_amount,
    get,
    merge_metadata,
    owned,
)
from payments.models import PaymentIntent, Refund
from tenants import audit

REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def get_refund(ctx: MerchantContext, refund_id: str) -> Refund:
    return owned(ctx, Refund, refund_id, "refund")


def create(
    ctx: MerchantContext,
    *,
    payment_intent: str | None,
    amount: Any = None,
    reason: str | None = None,
    metadata: Any = None,
    actor: audit.Actor | None = None,
) -> Refund:
    """`actor`: who asks (the API key, a signed-in user); the audit log names it (the system when None)."""
    if not payment_intent:
        raise InvalidRequest("Pass the payment_intent to refund.", code="parameter_missing", param="payment_intent")
    if reason is not None and reason not in REASONS:
        raise InvalidRequest(f"reason must be one of {', '.join(REASONS)}.", param="reason")
    pi = get(ctx, payment_intent, lock=True)
    if pi.status != "succeeded":
        db.session.rollback()
        raise InvalidRequest(
            f"This PaymentIntent has a status of {pi.status}; only a succeeded payment can be refunded.",
            code="charge_not_refundable",
            param="payment_intent",
        )
    remaining = pi.amount_received - pi.amount_refunded
    value = remaining if amount is None else clean_amount(amount)
    if remaining == 0:
        db.session.rollback()
        raise InvalidRequest(
            f"Charge for {pi.id} has already been refunded.", code="charge_already_refunded", param="payment_intent"
        )
    if value > remaining:
        db.session.rollback()
        raise InvalidRequest(
            f"Refund amount ({value}) is greater than unrefunded amount on the payment ({remaining}).",
            code="amount_too_large",
            param="amount",
        )
    refund = Refund(
        tenant_id=ctx.tenant_id,
        id=objects.new_id("re"),
        payment_intent_id=pi.id,
        merchant_id=pi.merchant_id,
        livemode=pi.livemode,
        amount=value,
        currency=pi.currency,
        status="pending",
        reason=reason,
        metadata_=merge_metadata({}, metadata),
    )
    db.session.add(refund)
    refunded_before = pi.amount_refunded
    pi.amount_refunded += value
    db.session.flush()
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "refund.created", objects.refund(refund))
    account = _account(ctx.tenant_id, pi.channel_account_id)
    request = RefundRequest(reference=pi.channel_reference, amount=value, idempotency_key=refund.id)
    refund_id = refund.id
    audit.record(
        ctx.tenant_id,
        actor or audit.Actor.system(),
        "payment.refunded",
        "payment_intent",
        pi.id,
        {
            "refund": {"after": refund.id},
            "amount": {"after": value},
            "currency": {"after": refund.currency},
            "reason": {"after": reason},
            "amount_refunded": {"before": refunded_before, "after": pi.amount_refunded},
        },
    )
    db.session.commit()
    return _call_channel(ctx, refund_id, account, request)


def _call_channel(ctx: MerchantContext, refund_id: str, account, request: RefundRequest) -> Refund:
    try:
        result = adapter_of(account).refund(request)
    except ChannelTimeout:
        # Unknown: the same idempotency key is sent again later, so the channel refunds once.
        queue.enqueue(
            "channels",
            retry_refund,
            ctx.tenant_id,
            ctx.merchant_id,
            ctx.livemode,
            refund_id,
            retry=Retry(max=len(QUERY_BACKOFF), interval=QUERY_BACKOFF),
        )
        return get_refund(ctx, refund_id)
    except (ChannelDeclined, ChannelInvalidRequest, ChannelUnavailable, ChannelConfigError) as exc:
        settle(ctx, refund_id, succeeded=False, failure_reason=str(exc))
        raise ChannelError(f"The channel refused the refund: {exc}", code="refund_failed") from exc
    succeeded = result.status == RefundStatus.SUCCEEDED
    if not succeeded and result.status != RefundStatus.FAILED:
        return get_refund(ctx, refund_id)
    return settle(
        ctx,
        refund_id,
        succeeded=succeeded,
        reference=result.reference,
        failure_reason=None if succeeded else "declined by the channel",
    )


def settle(
    ctx: MerchantContext,
    refund_id: str,
    *,
    succeeded: bool,
    reference: str | None = None,
    failure_reason: str | None = None,
) -> Refund:
    """Record a refund's final outcome once: succeeded posts the money back, failed releases the
    reservation on the intent."""
    refund = get_refund(ctx, refund_id)
    pi = db.session.execute(
        sa.select(PaymentIntent)
        .where(PaymentIntent.tenant_id == ctx.tenant_id, PaymentIntent.id == refund.payment_intent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    refund = db.session.execute(
        sa.select(Refund)
        .where(Refund.tenant_id == ctx.tenant_id, Refund.id == refund_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if refund.status != "pending":
        db.session.rollback()
        return refund
    if succeeded:
        refund.status = "succeeded"
        refund.channel_reference = reference
        pending = ledger.account(pi.tenant_id, "merchant_pending", pi.currency, pi.livemode, merchant_id=pi.merchant_id)
        receivable = ledger.account(pi.tenant_id, "channel_receivable", pi.currency, pi.livemode)
        ledger.post(
            pi.tenant_id,
            "refund.succeeded",
            refund.id,
            [(pending, refund.amount), (receivable, -refund.amount)],
            pi.livemode,
            description=f"{refund.id} for {pi.id}",
        )
        balance_transactions.for_refund(refund)
        events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "charge.refunded", objects.payment_intent(pi))
    else:
        refund.status = "failed"
        refund.failure_reason = (failure_reason or "failed")[:200]
        pi.amount_refunded -= refund.amount
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "refund.updated", objects.refund(refund))
    db.session.commit()
    return refund


def retry_refund(tenant_id, merchant_id, livemode: bool, refund_id: str) -> str:
    """Job: send a refund whose answer never came again, with the same idempotency key."""
    ctx = MerchantContext(tenant_id, merchant_id, livemode)
    refund = get_refund(ctx, refund_id)
    if refund.status != "pending":
        return refund.status
    pi = db.session.execute(
        sa.select(PaymentIntent).where(
            PaymentIntent.tenant_id == tenant_id, PaymentIntent.id == refund.payment_intent_id
        )
    ).scalar_one()
    account = _account(tenant_id, pi.channel_account_id)
    request = RefundRequest(reference=pi.channel_reference, amount=refund.amount, idempotency_key=refund.id)
    db.session.commit()
    result = _call_channel(ctx, refund_id, account, request)
    if result.status == "pending":
        raise ChannelTimeout(f"refund {refund_id}: the channel has not answered yet")
    return result.status


def balance(ctx: MerchantContext) -> dict[str, Any]:
    """Stripe's Balance object: what the merchant has, per currency, available and pending."""
    from ledger.models import LedgerAccount

    accounts = (
        db.session.execute(
            sa.select(LedgerAccount)
            .where(
                LedgerAccount.tenant_id == ctx.tenant_id,
                LedgerAccount.merchant_id == ctx.merchant_id,
                LedgerAccount.livemode == ctx.livemode,
                LedgerAccount.purpose.in_(("merchant_available", "merchant_pending")),
            )
            .order_by(LedgerAccount.currency)
        )
        .scalars()
        .all()
    )
    sums: dict[str, dict[str, int]] = {"available": {}, "pending": {}}
    for account in accounts:
        bucket = "available" if account.purpose == "merchant_available" else "pending"
        sums[bucket][account.currency] = sums[bucket].get(account.currency, 0) + ledger.merchant_balance(account)
    currencies = sorted(set(sums["available"]) | set(sums["pending"]))
    return {
        "object": "balance",
        "livemode": ctx.livemode,
        "available": [{"amount": sums["available"].get(c, 0), "currency": c.lower()} for c in currencies],
        "pending": [{"amount": sums["pending"].get(c, 0), "currency": c.lower()} for c in currencies],
    }
