"""Balance transactions (`txn_...`): each movement of a merchant's balance as the merchant sees it.

`record()` is called in the same transaction as the `ledger.post()` that moves the money, by the
use case that moves it (a captured payment, a succeeded refund, a top-up, a transfer, a payout
and its cancellation), so the list can never disagree with the ledger's balances.

Fees: `fee` is 0, `fee_details` empty and `net` equal to `amount` for now. Fee schedules (what a
tenant charges its merchants per payment) arrive with the clearing issue, which will fill these
fields for charges. `available_on` is set for money that is available at once; for charges and
refunds (they move the merchant's pending balance) it stays empty until clearing releases them.

This module imports no use case, so `payments.intents` and `payments.refunds` can call it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

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
            "fee": 0,
            "fee_details": [],
            "net": amount,
            "type": type_,
            "source": source,
            "status": status,
            "description": description,
            "available_on": datetime.now(UTC) if status == "available" else None,
        },
    )
    return txn_id


def for_charge(pi: PaymentIntent, amount: int) -> str:
    """A captured payment: `amount` added to the merchant's pending balance."""
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
