"""Balance transactions (`txn_...`): each movement of a merchant's balance as the merchant sees it.

`record()` is called in the same transaction as the `ledger.post()` that moves the money, by the
use case that moves it (a captured payment, a succeeded refund, a top-up, a transfer, a payout
and its cancellation), so the list can never disagree with the ledger's balances.

Fees: a charge carries the merchant's fee by the tenant's fee schedule (`billing`), its breakdown
in `fee_details` and `net = amount - fee`; every other type has no fee (a refund does not give the
fee back, as with Stripe). `available_on` is set for money that is available at once; for charges and
refunds (they move the merchant's pending balance) it stays empty until clearing releases them.

This module imports no use case, so `payments.intents` and `payments.refunds` can call it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from billing.fees import NO_FEE, FeeBreakdown
from core.db import db
from payments import objects
from payments.models import BalanceTransaction, PaymentIntent, Refund

_INSERT = sa.insert(BalanceTransaction.__table__)


def record(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    livemode: bool,
    type_: str,
    amount: int,
    currency: str,
    source: str,
    *,
    status: str = "available",
    description: str | None = None,
    fee: FeeBreakdown = NO_FEE,
) -> str:
    """Write one balance transaction in the caller's transaction (never commits); returns its id.
    One INSERT at once, no ORM object: nothing changes it in the transaction that writes it."""
    txn_id = objects.new_id("txn")
    db.session.connection().execute(
        _INSERT,
        {
            "tenant_id": tenant_id,
            "id": txn_id,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "amount": amount,
            "currency": currency,
            "fee": fee.total,
            "fee_details": fee.details(currency),
            "net": amount - fee.total,
            "type": type_,
            "source": source,
            "status": status,
            "description": description,
            "available_on": datetime.now(UTC) if status == "available" else None,
        },
    )
    return txn_id


def for_charge(pi: PaymentIntent, amount: int, fee: FeeBreakdown = NO_FEE) -> str:
    """A captured payment: `amount` less `fee` added to the merchant's pending balance."""
    return record(
        pi.tenant_id,
        pi.merchant_id,
        pi.livemode,
        "charge",
        amount,
        pi.currency,
        pi.id,
        status="pending",
        description=pi.description,
        fee=fee,
    )


def for_refund(refund: Refund) -> str:
    """A succeeded refund: its amount taken from the merchant's pending balance."""
    return record(
        refund.tenant_id,
        refund.merchant_id,
        refund.livemode,
        "refund",
        -refund.amount,
        refund.currency,
        refund.id,
        status="pending",
        description=f"Refund for {refund.payment_intent_id}",
    )


def to_object(txn: BalanceTransaction) -> dict[str, Any]:
    """Stripe's BalanceTransaction object."""
    return {
        "id": txn.id,
        "object": "balance_transaction",
        "amount": txn.amount,
        "available_on": objects.unix(txn.available_on),
        "created": objects.unix(txn.created_at),
        "currency": txn.currency.lower(),
        "description": txn.description,
        "fee": txn.fee,
        "fee_details": list(txn.fee_details or []),
        "livemode": txn.livemode,
        "net": txn.net,
        "source": txn.source,
        "status": txn.status,
        "type": txn.type,
    }
