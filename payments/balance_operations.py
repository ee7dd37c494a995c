"""Wallet money movements of a merchant: top-ups, transfers between merchants, payouts (use cases).

Each use case posts its money movement to the ledger, writes the merchant's balance
transactions (`payments.balance_transactions`) and records the merchant's events
(`payments.events`: the Events list and webhooks) in one database transaction, and commits.
Events: `topup.created`, then `topup.succeeded` or `topup.failed`, `transfer.created`
(for the sending merchant, whose object it is), `payout.created`, `payout.canceled`.

- Top-up (`tu_...`): the merchant adds money to its platform wallet: channel_receivable debit,
  merchant_available credit, once the channel took it. `source` says what pays: a card token
  (pm_..., tok_...) is a card charge; `bank_transfer` asks the channel for a transfer the merchant
  makes (pending until the money arrives, the channel's instructions in `next_action`). A live
  top-up without a source is a bank transfer (Stripe's default source is the bank account); a test
  top-up without one succeeds at once and no channel is charged, as before. A charged top-up goes
  as a payment does (`payments.intents._confirm`): routed, written `pending` with the key the channel
  receives and committed before the call, the answer applied once under the top-up's row lock,
  failover while a channel certainly took nothing, a timeout left to `payments.jobs.resolve_topup`.
  When no channel can take it the request is refused (400) and nothing is written: code
  `livemode_unsupported` when no active live channel offers the product at all (the code live
  top-ups had before they existed), else `payment_method_unavailable`.
- Transfer (`tr_...`): available money of the caller to the available balance of another
  merchant of the same tenant, in the same mode, in one balanced entry.
- Payout (`po_...`): a withdrawal request, refused (`payouts_not_allowed`) until the merchant's
  KYC review approved it; the amount moves at once from merchant_available to
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

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from rq import Retry

import ledger
from core import queue
from core.db import db
from ledger.models import LedgerAccount
from payments import balance_transactions, channel_health, events, objects
from payments import products as catalogue
from payments.channel_adapters import adapter_of
from payments.channels.base import (
    ChannelConfigError,
    ChannelDeclined,
    ChannelInvalidRequest,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    is_test_payment_method,
)
from payments.errors import InvalidRequest, NotFound
from payments.intents import (
    QUERY_BACKOFF,
    MerchantContext,
    add_channel_usage,
    clean_amount,
    clean_currency,
    merge_metadata,
    owned,
)
from payments.models import BalanceTransaction, Payout, Topup, Transfer
from payments.route_planning import RoutingInputs
from tenants import audit
from tenants.models import Merchant

log = logging.getLogger(__name__)

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


# What may pay for a top-up. A card token is charged like a card payment; `bank_transfer` asks the
# channel for a transfer the merchant makes itself (the top-up stays pending until the money
# arrives). Other products need a payer at a terminal or in an app, which a top-up does not have.
TOPUP_PRODUCTS = ("card", "bank_transfer")
CARD_TOKEN_PREFIXES = ("pm_", "tok_", "card_", "src_")
STATEMENT_DESCRIPTOR_MAX = 15  # Stripe's limit for a top-up's statement descriptor
CHANNEL_LABELS = {"card": "card channel", "bank_transfer": "bank-transfer channel"}
_OPEN = ("started", "unknown")  # a charge status whose outcome is still to be applied


def _statement_descriptor(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) > STATEMENT_DESCRIPTOR_MAX or not text.isascii() or any(c in text for c in "<>\\'\"*"):
        raise InvalidRequest(
            f"statement_descriptor must be at most {STATEMENT_DESCRIPTOR_MAX} ASCII characters, without < > \\ ' \" *.",
            param="statement_descriptor",
        )
    return text


def _product_of_source(ctx: MerchantContext, source: Any) -> str | None:
    """The product a top-up's `source` stands for; None for a test top-up without one (it succeeds at
    once, as before, touching no channel). A live top-up without a source is a bank transfer, as at
    Stripe, where it defaults to the account's bank account."""
    if source in (None, ""):
        return "bank_transfer" if ctx.livemode else None
    text = str(source)
    if ctx.livemode and is_test_payment_method(text):
        raise InvalidRequest(
            f"Test payment methods cannot be used in live mode: {text} is a test payment method. "
            "Use a live card token (pm_... or tok_... from the channel), or a test key (sk_test_...).",
            code="live_mode_test_payment_method",
            param="source",
        )
    if text.startswith(CARD_TOKEN_PREFIXES):
        return "card"
    if text in TOPUP_PRODUCTS:
        return text
    raise InvalidRequest(
        f"No such source: '{text}'. Pass a card token (pm_..., tok_...) or one of: {', '.join(TOPUP_PRODUCTS[1:])}.",
        code="resource_missing",
        param="source",
    )


def create_topup(
    ctx: MerchantContext,
    *,
    amount: Any,
    currency: Any,
    source: Any = None,
    description: Any = None,
    metadata: Any = None,
    statement_descriptor: Any = None,
    actor: audit.Actor | None = None,
) -> Topup:
    """`actor`: who asks (the API key, a signed-in user); the audit log names it (the system when None)."""
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    description = _description(description)
    metadata = merge_metadata({}, metadata)
    descriptor = _statement_descriptor(statement_descriptor)
    product = _product_of_source(ctx, source)
    topup = Topup(
        tenant_id=ctx.tenant_id,
        id=objects.new_id("tu"),
        merchant_id=ctx.merchant_id,
        livemode=ctx.livemode,
        amount=amount,
        currency=currency,
        status="pending",
        description=description,
        metadata_=metadata,
        statement_descriptor=descriptor,
        charge_log=[],
    )
    actor = actor or audit.Actor.system()
    if product is None:
        return _test_topup(ctx, topup, actor)
    topup.source = str(source) if source not in (None, "") else None
    topup.product = product
    return _routed_topup(ctx, topup, actor)


def _audit_topup(ctx: MerchantContext, topup: Topup, actor: audit.Actor) -> None:
    audit.record(
        ctx.tenant_id,
        actor,
        "topup.created",
        "topup",
        topup.id,
        audit.created(
            merchant=str(ctx.merchant_id),
            amount=topup.amount,
            currency=topup.currency,
            livemode=topup.livemode,
            source=topup.source,
            status=topup.status,
        ),
    )


def _test_topup(ctx: MerchantContext, topup: Topup, actor: audit.Actor) -> Topup:
    """Test mode without a source: nothing to charge, the money is there at once (so even the
    `topup.created` event shows it succeeded, as it always has)."""
    topup.status = "succeeded"
    db.session.add(topup)
    db.session.flush()  # (the object's `created` comes from the database)
    events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, "topup.created", topup_object(topup))
    _succeed_topup(topup, None)
    _audit_topup(ctx, topup, actor)
    db.session.commit()
    return topup


def _succeed_topup(topup: Topup, account_id: uuid.UUID | None) -> None:
    """The money arrived: one balanced entry (the channel owes it to the platform, the merchant has
    it available), its balance transaction and `topup.succeeded`, in the caller's transaction."""
    topup.status = "succeeded"
    receivable = ledger.account(topup.tenant_id, "channel_receivable", topup.currency, topup.livemode)
    available = ledger.account(topup.tenant_id, "merchant_available", topup.currency, topup.livemode, topup.merchant_id)
    ledger.post(
        topup.tenant_id,
        "topup.succeeded",
        topup.id,
        [(receivable, topup.amount), (available, -topup.amount)],
        topup.livemode,
        description=f"{topup.id} top-up",
    )
    balance_transactions.record(
        topup.tenant_id,
        topup.merchant_id,
        topup.livemode,
        "topup",
        topup.amount,
        topup.currency,
        topup.id,
        description=topup.description,
    )
    if account_id is not None:
        # What the channel account took today counts against its daily cap, as a payment's does.
        add_channel_usage(topup.tenant_id, account_id, topup.amount)
    events.record(topup.tenant_id, topup.merchant_id, topup.livemode, "topup.succeeded", topup_object(topup))


def _fail_topup(topup: Topup, code: str, message: str) -> None:
    """No money came: the top-up is final, nothing is posted."""
    topup.status = "failed"
    topup.failure_code = code[:60]
    topup.failure_message = message[:500]
    events.record(topup.tenant_id, topup.merchant_id, topup.livemode, "topup.failed", topup_object(topup))


def _no_route(ctx: MerchantContext, topup: Topup, inputs: RoutingInputs, decision) -> InvalidRequest:
    """Nothing is written when no channel can take a top-up: the merchant is told what to configure."""
    product = topup.product
    currency = topup.currency
    label = CHANNEL_LABELS.get(product, f"{product} channel")
    others = [p for p in TOPUP_PRODUCTS if p != product]
    message = (
        f"No {ctx.mode} channel can take this top-up of {topup.amount} {currency.lower()} by {product}: "
        f"{decision.summary} Nothing was charged. A {ctx.mode} top-up by {product} needs an active {ctx.mode} "
        f"{label} taking {product} in {currency} for this amount: ask the platform operator to add or enable "
        f"one in Console → Channels, or pass another source ({', '.join(others)} or a card token)."
    )
    offered_anywhere = any(product in c.products and c.status == "active" for c in inputs.candidates)
    # Live mode with no active channel offering the product at all: live top-ups of this kind are not
    # available to the account (the code of the time before live top-ups, which clients may test for).
    code = "livemode_unsupported" if ctx.livemode and not offered_anywhere else "payment_method_unavailable"
    return InvalidRequest(message, code=code, param="source")


def _routed_topup(ctx: MerchantContext, topup: Topup, actor: audit.Actor) -> Topup:
    """Charge the top-up through the route, as a payment is charged (`payments.intents._confirm`):
    the pending top-up and its first channel call are committed before the channel is called,
    the answer is applied once under the top-up's lock, a channel that certainly did not take the
    money hands over to the next candidate, and a timeout is left to a job."""
    merchant_name = db.session.execute(
        sa.select(Merchant.name).where(Merchant.tenant_id == ctx.tenant_id, Merchant.id == ctx.merchant_id)
    ).scalar_one()
    # A top-up's payer is the merchant itself: its name is what a bank transfer is matched by.
    given = {"payer_name": merchant_name}
    carried = set(given) | ({"payment_method"} if topup.product == "card" else set())
    inputs = RoutingInputs.load(ctx.tenant_id, ctx.merchant_id, ctx.mode)
    decision = inputs.plan(topup.product, topup.amount, topup.currency, carried)
    if decision.chosen is None:
        error = _no_route(ctx, topup, inputs, decision)
        db.session.rollback()
        raise error
    topup.routing = decision.to_record()
    db.session.add(topup)
    db.session.flush()  # (the object's `created` comes from the database)
    events.record(ctx.tenant_id, ctx.merchant_id, ctx.livemode, "topup.created", topup_object(topup))
    _audit_topup(ctx, topup, actor)
    topup_id = topup.id
    needed = catalogue.product(topup.product).required_elements
    payment_method = topup.source if topup.product == "card" else None
    for number, candidate in enumerate([decision.chosen, *decision.failover], start=1):
        if number > 1:  # failing over: the top-up was committed and unlocked meanwhile
            topup = _lock_topup(ctx.tenant_id, topup_id)
        account = inputs.accounts[uuid.UUID(candidate.id)]
        key = f"{topup_id}-charge-{number}"
        elements = {name: value for name, value in given.items() if name in needed | candidate.required_elements}
        topup.channel_account_id = account.id
        topup.charge_key = key
        topup.charge_status = "started"
        topup.charge_started_at = datetime.now(UTC)
        request = ChargeRequest(
            amount=topup.amount,
            currency=topup.currency,
            idempotency_key=key,
            product=topup.product,
            payment_method=payment_method,
            description=topup.description or "",
            metadata={
                "payplat_topup": topup_id,
                "payplat_key": key,
                # The contract has no statement descriptor yet: the channel sees it as metadata.
                **({"payplat_statement_descriptor": topup.statement_descriptor} if topup.statement_descriptor else {}),
            },
            elements=elements,
        )
        db.session.commit()
        try:
            adapter = adapter_of(account)
            if not ctx.livemode and request.payment_method:  # the channel's own test instrument
                request = replace(request, payment_method=adapter.test_instrument(request.payment_method))
            result = adapter.charge(request)
        except ChannelConfigError as exc:
            _note_not_taken(ctx.tenant_id, topup_id, key, str(exc))
            continue
        except ChannelUnavailable as exc:
            channel_health.record_failure(account.id, str(exc))
            _note_not_taken(ctx.tenant_id, topup_id, key, str(exc))
            continue
        except ChannelTimeout as exc:
            channel_health.record_failure(account.id, str(exc))
            topup = _note_unknown(ctx.tenant_id, topup_id, key, str(exc))
            queue_topup_resolution(ctx.tenant_id, topup_id)
            return topup
        except ChannelDeclined as exc:
            channel_health.record_success(account.id, inputs.health.get(account.id))
            message = "Your card was declined." if exc.decline_code == "generic_decline" else str(exc)
            return _refused(ctx.tenant_id, topup_id, key, "declined", exc.decline_code, message, exc.reference)
        except ChannelInvalidRequest as exc:
            channel_health.record_success(account.id, inputs.health.get(account.id))
            return _refused(ctx.tenant_id, topup_id, key, "failed", exc.code or "invalid_request", str(exc), None)
        channel_health.record_success(account.id, inputs.health.get(account.id))
        topup = apply_topup_result(ctx.tenant_id, topup_id, key, result)
        if topup.status == "pending":  # still processing at the channel (a transfer to arrive)
            queue_topup_resolution(ctx.tenant_id, topup_id)
        return topup
    topup = _lock_topup(ctx.tenant_id, topup_id)
    if topup.status == "pending":
        _fail_topup(
            topup,
            "channel_unavailable",
            "No payment channel could take the top-up; nothing was charged. Try again later.",
        )
        db.session.commit()
    else:
        db.session.rollback()
    return topup


def _lock_topup(tenant_id: uuid.UUID, topup_id: str) -> Topup:
    return db.session.execute(
        sa.select(Topup)
        .where(Topup.tenant_id == tenant_id, Topup.id == topup_id)
        .with_for_update()
        # The row as locked, not as this session last saw it: the resolution job may have applied
        # the outcome while the channel was called.
        .execution_options(populate_existing=True)
    ).scalar_one()


def _lock_open(tenant_id: uuid.UUID, topup_id: str, key: str) -> Topup | None:
    """The locked top-up when the channel call `key` is still its open one; else None (rolled back):
    its outcome was applied already, by another request or the job."""
    topup = _lock_topup(tenant_id, topup_id)
    if topup.status != "pending" or topup.charge_key != key or topup.charge_status not in _OPEN:
        db.session.rollback()
        return None
    return topup


def _log(topup: Topup, outcome: str, detail: str | None = None, reference: str | None = None) -> None:
    """One line per channel call, kept on the top-up (which channel, which key, what came of it)."""
    line = {"channel_account_id": str(topup.channel_account_id), "key": topup.charge_key, "outcome": outcome}
    if detail:
        line["detail"] = detail[:300]
    if reference:
        line["reference"] = reference
    topup.charge_log = [*(topup.charge_log or []), line]


def _note_not_taken(tenant_id: uuid.UUID, topup_id: str, key: str, reason: str) -> None:
    """The channel certainly did not take the money: the call is over, the next candidate may try."""
    topup = _lock_open(tenant_id, topup_id, key)
    if topup is None:
        return
    topup.charge_status = "unavailable"
    _log(topup, "unavailable", reason)
    db.session.commit()


def _note_unknown(tenant_id: uuid.UUID, topup_id: str, key: str, reason: str) -> Topup:
    """No answer: money may have moved, so the top-up stays pending until the channel is asked."""
    topup = _lock_open(tenant_id, topup_id, key)
    if topup is None:
        return _lock_topup(tenant_id, topup_id)  # (read as it is now; the caller commits nothing)
    topup.charge_status = "unknown"
    _log(topup, "unknown", reason)
    db.session.commit()
    return topup


def _refused(
    tenant_id: uuid.UUID, topup_id: str, key: str, status: str, code: str, message: str, reference: str | None
) -> Topup:
    """The channel refused the charge (a decline, a request it rejects): failed, once, no money."""
    topup = _lock_open(tenant_id, topup_id, key)
    if topup is None:
        return _lock_topup(tenant_id, topup_id)
    topup.charge_status = status
    topup.channel_reference = reference
    _log(topup, status, message, reference)
    _fail_topup(topup, code, message)
    db.session.commit()
    return topup


def apply_topup_result(tenant_id: uuid.UUID, topup_id: str, key: str, result: ChargeResult) -> Topup:
    """Apply the channel's answer for the top-up's call `key` exactly once (the request that called
    and the resolution job may both get one: the second finds the top-up final)."""
    topup = _lock_open(tenant_id, topup_id, key)
    if topup is None:
        return _lock_topup(tenant_id, topup_id)
    topup.channel_reference = result.reference
    if result.next_action:
        topup.next_action = dict(result.next_action)
    if result.status == ChargeStatus.SUCCEEDED:
        topup.charge_status = "succeeded"
        _log(topup, "succeeded", reference=result.reference)
        _succeed_topup(topup, topup.channel_account_id)
    elif result.status in (ChargeStatus.FAILED, ChargeStatus.CANCELED):
        topup.charge_status = "declined"
        message = result.failure_message or "The channel declined the top-up."
        _log(topup, "declined", message, result.reference)
        _fail_topup(topup, result.failure_code or "card_declined", message)
    else:
        # Still processing at the channel (a transfer to arrive). A top-up is charged with automatic
        # capture, so `requires_capture` is not an outcome either: the job asks again.
        topup.charge_status = "unknown"
    db.session.commit()
    return topup


def topup_not_taken(tenant_id: uuid.UUID, topup_id: str, key: str, reason: str) -> Topup:
    """The channel says it never received the call whose answer was lost: nothing was charged, the
    top-up fails (the merchant may create another)."""
    topup = _lock_open(tenant_id, topup_id, key)
    if topup is None:
        return _lock_topup(tenant_id, topup_id)
    topup.charge_status = "unavailable"
    _log(topup, "unavailable", reason)
    _fail_topup(topup, "channel_unavailable", "The payment channel never received the top-up; nothing was charged.")
    db.session.commit()
    return topup


def queue_topup_resolution(tenant_id: uuid.UUID, topup_id: str) -> None:
    """Ask the channel later what became of a top-up's call. One job per top-up (its id is derived
    from the top-up), so the sweep can re-queue a lost one without doubling a live one. Never fails
    the caller: with Redis away the top-up stays pending and the sweep queues it later."""
    from payments.jobs import resolve_topup

    try:
        queue.enqueue(
            "channels",
            resolve_topup,
            tenant_id,
            topup_id,
            job_id=f"resolve-topup-{topup_id}",
            if_absent=True,
            retry=Retry(max=len(QUERY_BACKOFF), interval=QUERY_BACKOFF),
        )
    except Exception:  # the queue is best effort here; the per-minute sweep is the guarantee
        log.warning("could not queue the resolution of top-up %s; the sweep will", topup_id, exc_info=True)


def topup_object(topup: Topup) -> dict[str, Any]:
    return {
        "id": topup.id,
        "object": "topup",
        "amount": topup.amount,
        "created": objects.unix(topup.created_at),
        "currency": topup.currency.lower(),
        "description": topup.description,
        "expected_availability_date": None,
        "failure_code": topup.failure_code,
        "failure_message": topup.failure_message,
        "livemode": topup.livemode,
        "metadata": dict(topup.metadata_ or {}),
        # Not Stripe's: what the payer must still do at the channel (a bank transfer's instructions).
        "next_action": dict(topup.next_action) if topup.next_action else None,
        "source": topup.source or topup.product,
        "statement_descriptor": topup.statement_descriptor,
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
    actor: audit.Actor | None = None,
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
    audit.record(
        ctx.tenant_id,
        actor or audit.Actor.system(),
        "transfer.created",
        "transfer",
        transfer.id,
        audit.created(
            merchant=str(ctx.merchant_id),
            destination=str(destination_id),
            amount=amount,
            currency=currency,
            livemode=ctx.livemode,
        ),
    )
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


def _require_payouts_allowed(ctx: MerchantContext) -> None:
    """Payouts send money to a bank account, so only an active merchant whose KYC review approved
    it may request one (in either mode: a draft merchant's test integration learns the refusal early)."""
    merchant = db.session.get(Merchant, (ctx.tenant_id, ctx.merchant_id))
    if merchant is not None and merchant.can_move_real_money:
        return
    if merchant is not None and merchant.status == "active":
        reason = (
            f"your business is not approved yet (onboarding status: {merchant.onboarding_status.replace('_', ' ')})"
        )
    else:
        reason = "the merchant is not active"
    raise InvalidRequest(
        f"Payouts are not allowed: {reason}. Payouts open once the review approves your business.",
        code="payouts_not_allowed",
    )


def create_payout(
    ctx: MerchantContext,
    *,
    amount: Any,
    currency: Any,
    description: Any = None,
    metadata: Any = None,
    actor: audit.Actor | None = None,
) -> Payout:
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    _require_payouts_allowed(ctx)
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
    audit.record(
        ctx.tenant_id,
        actor or audit.Actor.system(),
        "payout.requested",
        "payout",
        payout.id,
        audit.created(merchant=str(ctx.merchant_id), amount=amount, currency=currency, livemode=ctx.livemode),
    )
    db.session.commit()
    return payout


def cancel_payout(ctx: MerchantContext, payout_id: str, actor: audit.Actor | None = None) -> Payout:
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
    audit.record(
        ctx.tenant_id,
        actor or audit.Actor.system(),
        "payout.canceled",
        "payout",
        payout.id,
        audit.changes({"status": "pending"}, {"status": payout.status}),
    )
    db.session.commit()
    return payout


def payout_object(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "object": "payout",
        "amount": payout.amount,
        "arrival_date": objects.unix(payout.paid_at) if payout.paid_at else None,
        "created": objects.unix(payout.created_at),
        "currency": payout.currency.lower(),
        "description": payout.description,
        "failure_code": payout.failure_code,
        "failure_message": payout.failure_message,
        "livemode": payout.livemode,
        "metadata": dict(payout.metadata_ or {}),
        "status": payout.status,
    }
