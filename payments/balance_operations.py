"""Wallet money movements of a merchant: top-ups, transfers between merchants, payouts (use cases).

Each use case posts its money movement to the ledger, writes the merchant's balance
transactions (`payments.balance_transactions`) and records the merchant's events
(`payments.events`: the Events list and webhooks) in one database transaction, and commits.
Events: `topup.created` and `topup.succeeded` (a test top-up succeeds at once), `transfer.created`
(for the sending merchant, whose object it is), `payout.created`, `payout.canceled`.

- Top-up (`tu_...`): the merchant adds money to its platform wallet: channel_receivable debit,
  merchant_available credit. In test mode it succeeds at once and no channel is charged. A live
  top-up needs a bank-transfer channel (the money must actually arrive before it is available);
  until one exists, live mode refuses top-ups with a 400 (`livemode_unsupported`).
- Transfer (`tr_...`): available money of the caller to the available balance of another
  merchant of the same tenant, in the same mode, in one balanced entry.
- Payout (`po_...`): a withdrawal request; the amount moves at once from merchant_available to
  merchant_reserved and the payout stays `pending`. Sending it to the bank (batch files,
  payouts_in_transit, `paid`/`failed`) comes with the clearing issue. Canceling a pending
  payout moves the amount back.

Concurrency: a transfer or payout must not spend more than is available, even when many run at
once. Each locks every account its entry will touch with `SELECT ... FOR UPDATE`, ordered by id
(the order `ledger.post` uses, so there is no deadlock), reads the available balance under that
lock, and only then posts; a concurrent movement of the same balance waits for the commit and
then reads the new balance.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

import ledger
from core.db import db
from ledger.models import LedgerAccount
from payments import balance_transactions, events, objects
from payments.errors import InvalidRequest, NotFound
from payments.intents import MerchantContext, clean_amount, clean_currency, merge_metadata, owned
from payments.models import BalanceTransaction, Payout, Topup, Transfer
from tenants.models import Merchant

DESCRIPTION_MAX = 1000


def _description(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) > DESCRIPTION_MAX:
        raise InvalidRequest(f"description can be at most {DESCRIPTION_MAX} characters.", param="description")
    return text


def _lock(accounts: list[LedgerAccount]) -> dict[uuid.UUID, LedgerAccount]:
    """Lock the accounts FOR UPDATE in id order (as `ledger.post` does) and reload their balances."""
    rows = (
        db.session.execute(
            sa.select(LedgerAccount)
            .where(
                LedgerAccount.tenant_id == accounts[0].tenant_id,
                LedgerAccount.id.in_([a.id for a in accounts]),
            )
            .order_by(LedgerAccount.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        .scalars()
        .all()
    )
    return {row.id: row for row in rows}


def _require_available(available: LedgerAccount, amount: int) -> None:
    """Call with `available` locked: refuse (and roll back) when it holds less than `amount`."""
    have = -available.balance  # credit-normal: what the merchant sees
    if have < amount:
        currency = available.currency.lower()  # (read first: the rollback may undo the account's creation)
        db.session.rollback()
        raise InvalidRequest(
            f"Insufficient funds: {amount} {currency} requested, {max(have, 0)} available.",
            code="insufficient_funds",
            param="amount",
        )


def _get(ctx: MerchantContext, model, object_id: str, kind: str, *, lock: bool = False):
    return owned(ctx, model, object_id, kind, lock=lock)


def get_topup(ctx: MerchantContext, topup_id: str) -> Topup:
    return _get(ctx, Topup, topup_id, "topup")


def get_transfer(ctx: MerchantContext, transfer_id: str) -> Transfer:
    return _get(ctx, Transfer, transfer_id, "transfer")


def get_payout(ctx: MerchantContext, payout_id: str, *, lock: bool = False) -> Payout:
    return _get(ctx, Payout, payout_id, "payout", lock=lock)


def get_balance_transaction(ctx: MerchantContext, txn_id: str) -> BalanceTransaction:
    return _get(ctx, BalanceTransaction, txn_id, "balance_transaction")


# --- top-ups -----------------------------------------------------------------------------------


def create_topup(
    ctx: MerchantContext, *, amount: Any, currency: Any, description: Any = None, metadata: Any = None
) -> Topup:
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    if ctx.livemode:
        raise InvalidRequest(
            "Top-ups are not available in live mode yet: a live top-up needs a bank-transfer channel, "
            "which this platform does not have yet. Use a test key (sk_test_...) to try top-ups.",
            code="livemode_unsupported",
        )
    topup = Topup(
        tenant_id=ctx.tenant_id,
        id=objects.new_id("tu"),
        merchant_id=ctx.merchant_id,
        livemode=ctx.livemode,
        amount=amount,
        currency=currency,
        status="succeeded",
        description=_description(description),
        metadata_=merge_metadata({}, metadata),
    )
    db.session.add(topup)
    receivable = ledger.account(ctx.tenant_id, "channel_receivable", currency, ctx.livemode)
    available = ledger.account(ctx.tenant_id, "merchant_available", currency, ctx.livemode, ctx.merchant_id)
    ledger.post(
        ctx.tenant_id,
        "topup.succeeded",
        topup.id,
        [(receivable, amount), (available, -amount)],
        ctx.livemode,
        description=f"{topup.id} top-up",
    )
    balance_transactions.record(
        ctx.tenant_id, ctx.merchant_id, ctx.livemode, "topup", amount, currency, topup.id, description=topup.description
    )
    db.session.flush()  # (the object's `created` comes from the database)
    for type_ in ("topup.created", "topup.succeeded"):
        events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, type_, topup_object(topup))
    db.session.commit()
    return topup


def topup_object(topup: Topup) -> dict[str, Any]:
    return {
        "id": topup.id,
        "object": "topup",
        "amount": topup.amount,
        "created": objects.unix(topup.created_at),
        "currency": topup.currency.lower(),
        "description": topup.description,
        "livemode": topup.livemode,
        "metadata": dict(topup.metadata_ or {}),
        "status": topup.status,
    }


# --- transfers ---------------------------------------------------------------------------------


def _destination(ctx: MerchantContext, destination: Any) -> uuid.UUID:
    """Another merchant of the caller's tenant; anything else is 'No such destination'."""
    text = str(destination or "")
    try:
        merchant_id = uuid.UUID(text)
    except ValueError:
        raise NotFound("destination", text, param="destination") from None
    found = db.session.execute(
        sa.select(Merchant.id).where(
            Merchant.tenant_id == ctx.tenant_id, Merchant.id == merchant_id, Merchant.status == "active"
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound("destination", text, param="destination")
    if merchant_id == ctx.merchant_id:
        raise InvalidRequest("A transfer's destination must be another merchant.", param="destination")
    return merchant_id


def create_transfer(
    ctx: MerchantContext,
    *,
    amount: Any,
    currency: Any,
    destination: Any,
    description: Any = None,
    metadata: Any = None,
) -> Transfer:
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    if not destination:
        raise InvalidRequest("Pass the destination merchant's id.", code="parameter_missing", param="destination")
    destination_id = _destination(ctx, destination)
    transfer = Transfer(
        tenant_id=ctx.tenant_id,
        id=objects.new_id("tr"),
        merchant_id=ctx.merchant_id,
        destination_id=destination_id,
        livemode=ctx.livemode,
        amount=amount,
        currency=currency,
        description=_description(description),
        metadata_=merge_metadata({}, metadata),
    )
    source = ledger.account(ctx.tenant_id, "merchant_available", currency, ctx.livemode, ctx.merchant_id)
    target = ledger.account(ctx.tenant_id, "merchant_available", currency, ctx.livemode, destination_id)
    locked = _lock([source, target])
    _require_available(locked[source.id], amount)
    db.session.add(transfer)
    ledger.post(
        ctx.tenant_id,
        "transfer.created",
        transfer.id,
        [(source, amount), (target, -amount)],
        ctx.livemode,
        description=f"{transfer.id} to merchant {destination_id}",
    )
    for merchant_id, signed in ((ctx.merchant_id, -amount), (destination_id, amount)):
        balance_transactions.record(
            ctx.tenant_id,
            merchant_id,
            ctx.livemode,
            "transfer",
            signed,
            currency,
            transfer.id,
            description=transfer.description,
        )
    db.session.flush()
    events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, "transfer.created", transfer_object(transfer))
    db.session.commit()
    return transfer


def transfer_object(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.id,
        "object": "transfer",
        "amount": transfer.amount,
        "created": objects.unix(transfer.created_at),
        "currency": transfer.currency.lower(),
        "description": transfer.description,
        "destination": str(transfer.destination_id),
        "livemode": transfer.livemode,
        "metadata": dict(transfer.metadata_ or {}),
    }


# --- payouts -----------------------------------------------------------------------------------


def create_payout(
    ctx: MerchantContext, *, amount: Any, currency: Any, description: Any = None, metadata: Any = None
) -> Payout:
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    payout = Payout(
        tenant_id=ctx.tenant_id,
        id=objects.new_id("po"),
        merchant_id=ctx.merchant_id,
        livemode=ctx.livemode,
        amount=amount,
        currency=currency,
        status="pending",
        description=_description(description),
        metadata_=merge_metadata({}, metadata),
    )
    available = ledger.account(ctx.tenant_id, "merchant_available", currency, ctx.livemode, ctx.merchant_id)
    reserved = ledger.account(ctx.tenant_id, "merchant_reserved", currency, ctx.livemode, ctx.merchant_id)
    locked = _lock([available, reserved])
    _require_available(locked[available.id], amount)
    db.session.add(payout)
    ledger.post(
        ctx.tenant_id,
        "payout.created",
        payout.id,
        [(available, amount), (reserved, -amount)],
        ctx.livemode,
        description=f"{payout.id} held for payout",
    )
    balance_transactions.record(
        ctx.tenant_id,
        ctx.merchant_id,
        ctx.livemode,
        "payout",
        -amount,
        currency,
        payout.id,
        description=payout.description,
    )
    db.session.flush()
    events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, "payout.created", payout_object(payout))
    db.session.commit()
    return payout


def cancel_payout(ctx: MerchantContext, payout_id: str) -> Payout:
    payout = get_payout(ctx, payout_id, lock=True)
    if payout.status != "pending":
        db.session.rollback()
        raise InvalidRequest(
            f"This payout has a status of {payout.status}; only a pending payout can be canceled.",
            code="payout_not_cancelable",
        )
    available = ledger.account(ctx.tenant_id, "merchant_available", payout.currency, ctx.livemode, ctx.merchant_id)
    reserved = ledger.account(ctx.tenant_id, "merchant_reserved", payout.currency, ctx.livemode, ctx.merchant_id)
    ledger.post(
        ctx.tenant_id,
        "payout.canceled",
        payout.id,
        [(reserved, payout.amount), (available, -payout.amount)],
        ctx.livemode,
        description=f"{payout.id} canceled: released",
    )
    payout.status = "canceled"
    payout.canceled_at = datetime.now(UTC)
    balance_transactions.record(
        ctx.tenant_id,
        ctx.merchant_id,
        ctx.livemode,
        "payout_cancel",
        payout.amount,
        payout.currency,
        payout.id,
        description=f"Cancellation of {payout.id}",
    )
    events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, "payout.canceled", payout_object(payout))
    db.session.commit()
    return payout


def payout_object(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "object": "payout",
        "amount": payout.amount,
        "arrival_date": None,
        "created": objects.unix(payout.created_at),
        "currency": payout.currency.lower(),
        "description": payout.description,
        "livemode": payout.livemode,
        "metadata": dict(payout.metadata_ or {}),
        "status": payout.status,
    }
