"""PaymentIntents: create, update, confirm, capture, cancel, retrieve, list (use cases).

How a confirmation talks to a channel without ever holding a database transaction open across
the call, and without ever charging twice:

1. In a transaction: lock the intent (or, for `create` with `confirm`, insert it), route it from
   the routing inputs read once (`RoutingInputs`), write a `PaymentAttempt` with the idempotency
   key the channel will receive, set the intent `processing`, commit.
2. Call the channel (no transaction open).
3. In a new transaction: lock the intent and the attempt and apply the outcome once
   (`apply_charge_result`); money that moved is posted to the ledger in that same transaction.

A channel that certainly did not take the money (connection refused, 5xx before acceptance,
refused configuration) hands the payment to the next route candidate. A timeout is not a
failure: the attempt stays `unknown`, the intent `processing`, and a job asks the channel with
the same idempotency key until the outcome is final (`payments.jobs.resolve_attempt`).

A payment created and confirmed in one request costs two transactions and sixteen
statements (docs/PERFORMANCE.md lists them), plus the risk screening's one (two when a tenant's
rules look back over recent payments); keep it so when changing this module.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from rq import Retry
from sqlalchemy.dialects.postgresql import JSONB

import ledger
from billing import coupons, schedules
from billing.schedules import CaptureFees
from core import queue
from core.db import db
from core.money import MoneyError, format_amount, normalise_currency
from payments import balance_transactions, channel_health, events, metrics, objects
from payments import products as catalogue
from payments.channel_adapters import adapter_of
from payments.channels.base import (
    CancelRequest,
    CaptureRequest,
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
from payments.errors import CardError, ChannelError, InvalidRequest, NotFound
from payments.models import RETURN_URL_MAX, ChannelAccount, PaymentAttempt, PaymentIntent, Refund
from payments.payer_details import (
    ELEMENT_PARAMS,
    ROUTING_PARTS,
    channel_elements,
    how_to_send,
    merge_payer_details,
    payer_elements,
)
from payments.route_planning import RoutingInputs

log = logging.getLogger(__name__)
MAX_AMOUNT = 99_999_999_999
METADATA_KEYS = 50
# Resolving an unknown outcome: ask again after these many seconds (about a day in all).
QUERY_BACKOFF = [5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 3600, 7200, 14400, 28800, 28800]


@dataclass(frozen=True)
class MerchantContext:
    """Who calls: a merchant of a tenant, in test or live mode (from the API key), and, when the
    key is a terminal's device key, that terminal (`payments.terminals`): it sees only the
    payments it created, and those carry it."""

    tenant_id: uuid.UUID
    merchant_id: uuid.UUID
    livemode: bool
    terminal_id: str | None = None
    # The terminal's serial number: what a channel knows the device by (the payer's `terminal_id` element).
    terminal_serial: str | None = None

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"


def _now() -> datetime:
    return datetime.now(UTC)


# --- validation ------------------------------------------------------------------------------


def clean_amount(value: Any, param: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            text = str(value).strip()
            if not text.isdigit():
                raise ValueError
            value = int(text)
        except ValueError:
            raise InvalidRequest(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None
    if value < 1 or value > MAX_AMOUNT:
        raise InvalidRequest(
            f"Amount must be at least 1 and at most {MAX_AMOUNT} (in the currency's smallest unit).",
            code="amount_too_small" if value < 1 else "amount_too_large",
            param=param,
        )
    return value


def clean_return_url(value: Any, param: str = "return_url") -> str | None:
    """An absolute http(s) address with a host and no user name or password, or None for ''."""
    text = ("" if value is None else str(value)).strip()
    if not text:
        return None
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or len(text) > RETURN_URL_MAX
        or any(ch.isspace() or ord(ch) < 32 for ch in text)
    ):
        raise InvalidRequest(
            f"{param} must be an absolute http:// or https:// address without a user name, at most "
            f"{RETURN_URL_MAX} characters.",
            code="url_invalid",
            param=param,
        )
    return text


def clean_currency(value: Any) -> str:
    try:
        return normalise_currency(str(value or ""))
    except MoneyError as exc:
        raise InvalidRequest(str(exc), code="parameter_invalid", param="currency") from exc


def merge_metadata(current: dict[str, str], given: Any) -> dict[str, str]:
    """Stripe's rule: given keys are set, a key set to "" is removed, other keys stay."""
    if given is None:
        return dict(current)
    if given == "":
        return {}
    if not isinstance(given, dict):
        raise InvalidRequest("Invalid metadata: pass an object of string keys and values.", param="metadata")
    merged = dict(current)
    for key, value in given.items():
        key = str(key)
        if len(key) > 40:
            raise InvalidRequest("Metadata keys can be at most 40 characters.", param=f"metadata[{key}]")
        if value in ("", None):
            merged.pop(key, None)
            continue
        value = str(value)
        if len(value) > 500:
            raise InvalidRequest("Metadata values can be at most 500 characters.", param=f"metadata[{key}]")
        merged[key] = value
    if len(merged) > METADATA_KEYS:
        raise InvalidRequest(f"Metadata can have at most {METADATA_KEYS} keys.", param="metadata")
    return merged


def product_for(payment_method: str, types: list[str]) -> str:
    """The product a payment method belongs to: card tokens and Stripe test cards are cards."""
    if payment_method.startswith(("pm_", "tok_", "card_", "src_")):
        return "card"
    if payment_method in catalogue.PRODUCTS:
        return payment_method
    if len(types) == 1:
        return types[0]
    raise InvalidRequest(f"No such PaymentMethod: '{payment_method}'", code="resource_missing", param="payment_method")


def refuse_test_method(livemode: bool, payment_method: str | None) -> None:
    """Stripe's test payment methods (pm_card_...) exist only in test mode."""
    if livemode and is_test_payment_method(payment_method):
        raise InvalidRequest(
            f"Test payment methods cannot be used in live mode: {payment_method} is a test payment method. "
            "Use a live payment method, or a test key (sk_test_...).",
            code="live_mode_test_payment_method",
            param="payment_method",
        )


# --- reading -----------------------------------------------------------------------------------


def owned(ctx: MerchantContext, model, object_id: str, kind: str, *, param: str | None = None, lock: bool = False):
    """The caller's own object of `model` in the key's mode; anything else is 'No such <kind>'
    (another merchant's or tenant's id looks exactly like one that does not exist)."""
    statement = sa.select(model).where(
        model.tenant_id == ctx.tenant_id,
        model.merchant_id == ctx.merchant_id,
        model.livemode == ctx.livemode,
        model.id == str(object_id),
    )
    if lock:
        # Locked rows are read as they are now, not as this session last saw them.
        statement = statement.with_for_update().execution_options(populate_existing=True)
    row = db.session.execute(statement.where(*terminal_filter(ctx, model))).scalar_one_or_none()
    if row is None:
        raise NotFound(kind, str(object_id), param=param or kind)
    return row


def terminal_filter(ctx: MerchantContext, model) -> list:
    """What a terminal's device key may see of `model`: its own payments and their refunds (the
    API refuses a device key every other kind of object). Nothing more for the merchant's own keys."""
    if ctx.terminal_id is None:
        return []
    if model is PaymentIntent:
        return [PaymentIntent.terminal_id == ctx.terminal_id]
    if model is Refund:
        own = sa.select(PaymentIntent.id).where(
            PaymentIntent.tenant_id == ctx.tenant_id, PaymentIntent.terminal_id == ctx.terminal_id
        )
        return [Refund.payment_intent_id.in_(own)]
    return [sa.false()]


def get(ctx: MerchantContext, intent_id: str, *, lock: bool = False) -> PaymentIntent:
    return owned(ctx, PaymentIntent, intent_id, "payment_intent", param="intent", lock=lock)


def page(
    ctx: MerchantContext,
    model,
    *,
    limit: int = 10,
    starting_after: str | None = None,
    ending_before: str | None = None,
    filters=(),
) -> tuple[list, bool]:
    """Stripe's list semantics, newest first: `starting_after` pages towards older objects,
    `ending_before` towards newer ones; returns (objects, has_more)."""
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.", param="limit")
    base = sa.select(model).where(
        model.tenant_id == ctx.tenant_id,
        model.merchant_id == ctx.merchant_id,
        model.livemode == ctx.livemode,
        *terminal_filter(ctx, model),
        *filters,
    )
    newest_first = (model.created_at.desc(), model.id.desc())
    if starting_after or ending_before:
        cursor_id = starting_after or ending_before
        anchor = db.session.execute(
            sa.select(model.created_at, model.id).where(
                model.tenant_id == ctx.tenant_id,
                model.id == cursor_id,
                model.merchant_id == ctx.merchant_id,
                model.livemode == ctx.livemode,
            )
        ).one_or_none()
        if anchor is None:
            param = "starting_after" if starting_after else "ending_before"
            raise InvalidRequest(f"No such object: '{cursor_id}'", code="resource_missing", param=param)
        position = sa.tuple_(model.created_at, model.id)
        if starting_after:
            statement = base.where(position < sa.tuple_(*anchor)).order_by(*newest_first)
        else:
            statement = base.where(position > sa.tuple_(*anchor)).order_by(model.created_at, model.id)
    else:
        statement = base.order_by(*newest_first)
    rows = db.session.execute(statement.limit(limit + 1)).scalars().all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    if ending_before:
        rows.reverse()
    return rows, has_more


# --- create and update -------------------------------------------------------------------------


def _offered_types(inputs: RoutingInputs, amount: int, currency: str, requested: list[str] | None) -> list[str]:
    """The payment method types an intent offers (SPEC step 2): those the merchant asked for, or
    every product some active channel can take for this amount and currency; an error names what
    is available when nothing (or not what was asked for) is."""
    offered = inputs.offered(amount, currency)
    if requested:
        unavailable = [t for t in requested if t not in offered]
        if unavailable:
            raise InvalidRequest(
                f"The payment method type {unavailable[0]!r} is not available for {format_amount(amount, currency)} "
                f"with this account's channels; available: {', '.join(offered) or 'none'}.",
                code="payment_method_unavailable",
                param="payment_method_types",
            )
        return list(dict.fromkeys(requested))
    if not offered:
        raise InvalidRequest(
            f"No payment method can take {format_amount(amount, currency)} for this account: no active channel "
            "serves this amount and currency.",
            code="payment_method_unavailable",
            param="amount",
        )
    return offered


def with_terminal(details: dict[str, Any], ctx: MerchantContext) -> dict[str, Any]:
    """The payer details with the calling terminal's serial number as the payer's `terminal_id`
    element (what face pay requires): a terminal's own identity, which its requests cannot change."""
    if ctx.terminal_id is None:
        return details
    return {**details, "payer": {**(details.get("payer") or {}), "terminal_id": ctx.terminal_serial or ctx.terminal_id}}


def create(
    ctx: MerchantContext,
    *,
    amount: Any,
    currency: Any,
    payment_method: str | None = None,
    payment_method_types: list[str] | None = None,
    capture_method: str = "automatic",
    confirm: bool = False,
    description: str | None = None,
    metadata: Any = None,
    payer_details: dict[str, Any] | None = None,
    return_url: str | None = None,
    attach: Callable[[PaymentIntent], None] | None = None,
) -> PaymentIntent:
    """`payer_details`: the parts `merge_payer_details` takes (receipt_email, billing_details,
    shipping, payer). `attach(intent)` adds rows that belong to the new intent (an order's lines,
    a coupon's redemption) to the session, so they are committed in the intent's transaction."""
    amount = clean_amount(amount)
    currency = clean_currency(currency)
    refuse_test_method(ctx.livemode, payment_method)
    details = with_terminal(merge_payer_details({}, payer_details), ctx)
    return_url = clean_return_url(return_url)
    if capture_method not in ("automatic", "manual", "automatic_async"):
        raise InvalidRequest("capture_method must be automatic or manual.", param="capture_method")
    capture_method = "manual" if capture_method == "manual" else "automatic"
    # Read once: what the intent offers and, when it is confirmed at once, its route.
    inputs = RoutingInputs.load(ctx.tenant_id, ctx.merchant_id, ctx.mode)
    types = _offered_types(inputs, amount, currency, payment_method_types)
    intent_id = objects.new_id("pi")
    pi = PaymentIntent(
        tenant_id=ctx.tenant_id,
        id=intent_id,
        merchant_id=ctx.merchant_id,
        livemode=ctx.livemode,
        amount=amount,
        currency=currency,
        capture_method=capture_method,
        payment_method=payment_method,
        payment_method_types=types,
        payment_method_types_chosen=bool(payment_method_types),
        description=description,
        metadata_=merge_metadata({}, metadata),
        payer_details=details,
        terminal_id=ctx.terminal_id,
        return_url=return_url,
        status="requires_confirmation" if payment_method else "requires_payment_method",
        client_secret=f"{intent_id}_secret_{objects.new_id('s')[2:]}",
        amount_capturable=0,
        amount_received=0,
        amount_refunded=0,
        # Set here rather than by the database, so the object is complete without a flush and the
        # intent is written by one INSERT together with its routing and first attempt.
        created_at=_now(),
    )
    db.session.add(pi)
    if attach is not None:
        db.session.flush()  # the intent's row first: the attached rows refer to it
        attach(pi)
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "payment_intent.created", objects.payment_intent(pi))
    if confirm:
        # The new intent is not visible to anyone before this transaction commits: no lock needed,
        # and the first attempt is committed together with the intent.
        return _confirm(ctx, pi, inputs, earlier_attempts=0, created=True)
    db.session.commit()
    return pi


def update(ctx: MerchantContext, intent_id: str, **fields: Any) -> PaymentIntent:
    refuse_test_method(ctx.livemode, fields.get("payment_method"))
    pi = get(ctx, intent_id, lock=True)
    given = fields.get("payer_details") or {}
    # As at Stripe, description and metadata may change in any status; what is charged only before confirmation.
    charged = [name for name in ("amount", "currency", "payment_method", "payment_method_types") if fields.get(name)]
    charged += [param for part, param in ROUTING_PARTS.items() if part in given]
    if charged and pi.status not in ("requires_payment_method", "requires_confirmation"):
        db.session.rollback()
        raise InvalidRequest(
            f"This PaymentIntent's status is {pi.status}; its {charged[0]} can no longer be updated.",
            code="payment_intent_unexpected_state",
            param=charged[0],
        )
    try:
        if "amount" in fields and fields["amount"] is not None:
            pi.amount = clean_amount(fields["amount"])
        if "currency" in fields and fields["currency"] is not None:
            pi.currency = clean_currency(fields["currency"])
        if {"amount", "currency", "payment_method_types"} & set(charged):
            # Another amount or currency may be served by other channels: what the intent offers
            # follows, as at creation; types the merchant chose stay chosen, and must still be available.
            if fields.get("payment_method_types"):
                pi.payment_method_types_chosen = True
            chosen = fields.get("payment_method_types") or (
                pi.payment_method_types if pi.payment_method_types_chosen else None
            )
            inputs = RoutingInputs.load(ctx.tenant_id, ctx.merchant_id, ctx.mode)
            pi.payment_method_types = _offered_types(inputs, pi.amount, pi.currency, chosen)
        if given:
            pi.payer_details = with_terminal(merge_payer_details(pi.payer_details, given), ctx)
    except InvalidRequest:
        db.session.rollback()
        raise
    if "description" in fields:
        pi.description = fields["description"] or None
    if "metadata" in fields:
        pi.metadata_ = merge_metadata(pi.metadata_ or {}, fields["metadata"])
    if "return_url" in fields:
        try:
            pi.return_url = clean_return_url(fields["return_url"])
        except InvalidRequest:
            db.session.rollback()
            raise
    if fields.get("payment_method"):
        pi.payment_method = fields["payment_method"]
        pi.status = "requires_confirmation"
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "payment_intent.updated", objects.payment_intent(pi))
    db.session.commit()
    return pi


# --- confirm -----------------------------------------------------------------------------------


def _account(tenant_id: uuid.UUID, account_id: uuid.UUID) -> ChannelAccount:
    return db.session.execute(
        sa.select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == account_id)
    ).scalar_one()


def _fail(pi: PaymentIntent, error: dict[str, Any]) -> None:
    pi.status = "requires_payment_method"
    pi.last_payment_error = error
    events.record(
        pi.tenant_id, pi.merchant_id, pi.livemode, "payment_intent.payment_failed", objects.payment_intent(pi)
    )


def confirm_intent(
    ctx: MerchantContext,
    intent_id: str,
    payment_method: str | None = None,
    payer_details: dict[str, Any] | None = None,
    return_url: str | None = None,
) -> PaymentIntent:
    refuse_test_method(ctx.livemode, payment_method)
    pi = get(ctx, intent_id, lock=True)
    if pi.status not in ("requires_payment_method", "requires_confirmation"):
        db.session.rollback()
        raise InvalidRequest(
            f"This PaymentIntent's status is {pi.status}; only one that requires a payment method or "
            "confirmation can be confirmed.",
            code="payment_intent_unexpected_state",
        )
    if payer_details:
        try:
            pi.payer_details = with_terminal(merge_payer_details(pi.payer_details, payer_details), ctx)
        except InvalidRequest:
            db.session.rollback()
            raise
    if return_url is not None:
        try:
            pi.return_url = clean_return_url(return_url)
        except InvalidRequest:
            db.session.rollback()
            raise
    if payment_method:
        pi.payment_method = payment_method
    if not pi.payment_method:
        db.session.rollback()
        raise InvalidRequest(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
            param="payment_method",
        )
    # Each attempt gets its own key towards the channel; a re-confirmation continues the count.
    earlier = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PaymentAttempt)
        .where(PaymentAttempt.tenant_id == ctx.tenant_id, PaymentAttempt.payment_intent_id == pi.id)
    )
    return _confirm(ctx, pi, RoutingInputs.load(ctx.tenant_id, ctx.merchant_id, ctx.mode), earlier_attempts=earlier)


# The risk screening of a confirmation (`risk.screening.screen`, which installs itself here when the
# app imports it: risk sits above payments). It runs in the first transaction, may add alerts or mark
# the intent held, and returns a payment error when a rule blocks the payment.
screen: Callable[[PaymentIntent], dict[str, Any] | None] | None = None


def _confirm(
    ctx: MerchantContext, pi: PaymentIntent, inputs: RoutingInputs, *, earlier_attempts: int, created: bool = False
) -> PaymentIntent:
    """Route the (locked or new) intent and charge through the route, failing over while a channel
    certainly did not take the money. The routing decision and the first attempt are committed
    together, before the channel is called."""
    intent_id = pi.id
    try:
        product = product_for(pi.payment_method, pi.payment_method_types)
        if product not in pi.payment_method_types:
            raise InvalidRequest(
                f"This PaymentIntent does not offer {product}.",
                code="payment_method_unavailable",
                param="payment_method",
            )
    except InvalidRequest:
        # A new intent is kept (as when created and confirmed in two calls); a confirmation changes nothing.
        if created:
            db.session.commit()
        else:
            db.session.rollback()
        raise
    # What the payment carries: its payment method, and what the merchant sent about the payer. A
    # product's other elements (a face-pay terminal, a transfer's payer name) come the same way, so
    # a payment without them is refused here, before any channel is called.
    decision = inputs.plan(product, pi.amount, pi.currency, {"payment_method"} | payer_elements(pi.payer_details))
    pi.product = product
    pi.routing = decision.to_record()
    pi.last_payment_error = None
    if decision.chosen is None and decision.ask_payer_for:
        missing = sorted(decision.ask_payer_for)
        message = (
            f"{decision.summary} Nothing was charged. "
            + "; ".join(how_to_send(element) for element in missing)
            + f". Send {'them' if len(missing) > 1 else 'it'} with the confirmation, or update the PaymentIntent "
            "and confirm it again."
        )
        param = next((ELEMENT_PARAMS[e] for e in missing if e in ELEMENT_PARAMS), "payment_method")
        _fail(pi, {"type": "invalid_request_error", "code": "parameter_missing", "param": param, "message": message})
        db.session.commit()
        raise InvalidRequest(message, code="parameter_missing", param=param, payment_intent=objects.payment_intent(pi))
    if decision.chosen is None:
        _fail(pi, {"type": "invalid_request_error", "code": "payment_method_unavailable", "message": decision.summary})
        db.session.commit()
        raise InvalidRequest(decision.summary, code="payment_method_unavailable", param="payment_method")
    # Risk rules (`risk.screening`, installed into `screen`): alerts, a hold, or a block before any channel call.
    refusal = screen(pi) if screen is not None else None
    if refusal is not None:
        _fail(pi, refusal)
        db.session.commit()
        raise CardError(
            refusal["message"],
            code="card_declined",
            decline_code=refusal["decline_code"],
            param="payment_method",
            payment_intent=objects.payment_intent(pi),
        )
    route = [decision.chosen, *decision.failover]
    given = channel_elements(pi.payer_details)
    needed = catalogue.product(product).required_elements
    for number, candidate in enumerate(route, start=earlier_attempts + 1):
        if number > earlier_attempts + 1:  # failing over: the intent was committed and unlocked meanwhile
            pi = get(ctx, intent_id, lock=True)
        pi.status = "processing"
        pi.channel_account_id = uuid.UUID(candidate.id)
        # Only what this channel and the product need: the payer's details go nowhere else.
        elements = {name: value for name, value in given.items() if name in needed | candidate.required_elements}
        db.session.flush()  # the intent's row first: the attempt refers to it
        attempt_id = uuid.uuid4()
        key = f"{pi.id}-charge-{number}"
        # One INSERT, no ORM object: nothing else in this transaction touches the attempt.
        db.session.connection().execute(
            _INSERT_ATTEMPT,
            {
                "tenant_id": ctx.tenant_id,
                "id": attempt_id,
                "payment_intent_id": pi.id,
                "channel_account_id": uuid.UUID(candidate.id),
                "kind": "charge",
                "status": "started",
                "idempotency_key": key,
                "amount": pi.amount,
                "request": {
                    "product": product,
                    "amount": pi.amount,
                    "currency": pi.currency,
                    "capture_method": pi.capture_method,
                    "channel": candidate.name,
                    # Which payer elements went with it, not their values (those stay on the intent).
                    "elements": sorted(elements),
                },
            },
        )
        account = inputs.accounts[uuid.UUID(candidate.id)]
        request = ChargeRequest(
            amount=pi.amount,
            currency=pi.currency,
            idempotency_key=key,
            product=product,
            payment_method=pi.payment_method,
            capture_method=pi.capture_method,
            description=pi.description or "",
            metadata={"payplat_payment_intent": pi.id, "payplat_key": key},
            elements=elements,
        )
        db.session.commit()
        try:
            adapter = adapter_of(account)
            if not ctx.livemode and request.payment_method:  # the channel's own test instrument
                request = replace(request, payment_method=adapter.test_instrument(request.payment_method))
            result = adapter.charge(request)
        except ChannelConfigError as exc:
            _finish_attempt(ctx, attempt_id, "unavailable", error=str(exc))
            continue
        except ChannelUnavailable as exc:
            channel_health.record_failure(account.id, str(exc))
            _finish_attempt(ctx, attempt_id, "unavailable", error=str(exc))
            continue
        except ChannelTimeout as exc:
            channel_health.record_failure(account.id, str(exc))
            _finish_attempt(ctx, attempt_id, "unknown", error=str(exc))
            queue_resolution(ctx.tenant_id, attempt_id)
            return get(ctx, intent_id)
        except ChannelDeclined as exc:
            channel_health.record_success(account.id, inputs.health.get(account.id))
            return _declined(ctx, intent_id, attempt_id, exc)
        except ChannelInvalidRequest as exc:
            channel_health.record_success(account.id, inputs.health.get(account.id))
            error = {"type": "invalid_request_error", "code": exc.code or "invalid_request", "message": str(exc)}
            _fail_attempt(ctx, intent_id, attempt_id, "failed", error, str(exc))
            raise InvalidRequest(str(exc), code=exc.code or "invalid_request", param="payment_method") from exc
        channel_health.record_success(account.id, inputs.health.get(account.id))
        return apply_charge_result(ctx.tenant_id, attempt_id, result, intent_id=intent_id)
    pi = get(ctx, intent_id, lock=True)
    before = pi.status
    _fail(
        pi,
        {
            "type": "api_error",
            "code": "channel_unavailable",
            "message": "No payment channel could take the payment; nothing was charged. Try again later.",
        },
    )
    counted = metrics.payment_outcome(pi, before)
    db.session.commit()
    metrics.count_payment(counted)
    raise ChannelError(
        "No payment channel could take the payment; nothing was charged. Try again later.",
        code="channel_unavailable",
        payment_intent=objects.payment_intent(pi),
    )


_INSERT_ATTEMPT = sa.insert(PaymentAttempt.__table__)


def queue_resolution(tenant_id: uuid.UUID, attempt_id: uuid.UUID) -> None:
    """Ask the channel later what became of an attempt. One job per attempt (its id is derived
    from the attempt), so the sweep can re-queue a lost one without doubling a live one. Never
    fails the caller: with Redis away the attempt stays `unknown` and the sweep queues it later."""
    from payments.jobs import resolve_attempt

    try:
        queue.enqueue(
            "channels",
            resolve_attempt,
            tenant_id,
            str(attempt_id),
            job_id=f"resolve-{attempt_id}",
            if_absent=True,
            retry=Retry(max=len(QUERY_BACKOFF), interval=QUERY_BACKOFF),
        )
    except Exception:  # the queue is best effort here; the per-minute sweep is the guarantee
        log.warning("could not queue the resolution of attempt %s; the sweep will", attempt_id, exc_info=True)


_ATTEMPTS = PaymentAttempt.__table__


@dataclass(frozen=True)
class LockedAttempt:
    """An attempt as an outcome transaction reads it (locked together with its intent); its
    changes are written by `_set_attempt`, one UPDATE, with no ORM object to keep."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    kind: str
    status: str
    amount: int


# An attempt's new state in one statement, built once: the response only when one is given, the
# finish time once the outcome is final (an `unknown` attempt is still open).
_SET_ATTEMPT = sa.text(
    """
    UPDATE payment_attempts
    SET status = CAST(:status AS varchar), error = :error, response = COALESCE(:response, response),
        finished_at = CASE WHEN CAST(:status AS varchar) = 'unknown' THEN finished_at ELSE now() END
    WHERE tenant_id = :tenant_id AND id = :attempt_id
    """
).bindparams(
    sa.bindparam("response", type_=JSONB(none_as_null=True)),
    sa.bindparam("tenant_id", type_=sa.Uuid),
    sa.bindparam("attempt_id", type_=sa.Uuid),
)


def _set_attempt(
    tenant_id: uuid.UUID,
    attempt_id: uuid.UUID,
    status: str,
    *,
    error: str | None = None,
    response: dict[str, Any] | None = None,
) -> None:
    db.session.connection().execute(
        _SET_ATTEMPT,
        {
            "tenant_id": tenant_id,
            "attempt_id": attempt_id,
            "status": status,
            "error": error[:500] if error else None,
            "response": response,
        },
    )


def _finish_attempt(ctx: MerchantContext, attempt_id: uuid.UUID, status: str, *, error: str) -> None:
    _set_attempt(ctx.tenant_id, attempt_id, status, error=error)
    db.session.commit()


def _fail_attempt(
    ctx: MerchantContext,
    intent_id: str,
    attempt_id: uuid.UUID,
    status: str,
    error: dict[str, Any],
    detail: str,
    response: dict[str, Any] | None = None,
) -> PaymentIntent:
    """The channel refused the attempt: fail it and its intent, once. Another actor (a channel's
    notification, the query job) may have applied the outcome while the channel was called; then
    nothing is written again (no second `payment_failed` event)."""
    pi, attempt = _lock_attempt(ctx.tenant_id, attempt_id, intent_id)
    if attempt.status not in ("started", "unknown"):
        db.session.rollback()
        return get(ctx, intent_id)
    before = pi.status
    _set_attempt(attempt.tenant_id, attempt.id, status, error=detail, response=response)
    _fail(pi, error)
    counted = metrics.payment_outcome(pi, before)
    db.session.commit()
    metrics.count_payment(counted)
    return pi


def _declined(ctx: MerchantContext, intent_id: str, attempt_id: uuid.UUID, exc: ChannelDeclined) -> PaymentIntent:
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": exc.decline_code,
        "message": "Your card was declined." if exc.decline_code == "generic_decline" else str(exc),
    }
    pi = _fail_attempt(
        ctx,
        intent_id,
        attempt_id,
        "declined",
        error,
        str(exc),
        response={"decline_code": exc.decline_code, "reference": getattr(exc, "reference", None)},
    )
    raise CardError(
        error["message"],
        code="card_declined",
        decline_code=exc.decline_code,
        param="payment_method",
        payment_intent=objects.payment_intent(pi),
    )


# What a channel account took today, on the tenant's calendar day, in one statement.
_USAGE_UPSERT = """
    INSERT INTO channel_daily_usage (tenant_id, channel_account_id, day, amount, count)
    SELECT tenants.id, :account_id, CAST(timezone(tenants.time_zone, now()) AS date), :amount, 1
    FROM tenants WHERE tenants.id = :tenant_id
    ON CONFLICT (tenant_id, channel_account_id, day)
    DO UPDATE SET amount = channel_daily_usage.amount + EXCLUDED.amount, count = channel_daily_usage.count + 1
"""
_ADD_USAGE = sa.text(_USAGE_UPSERT)
# A payment charged and captured at once adds to the channel's day and to the merchant's month
# (billing's volume tally for fee tiers) in one round trip on those hot rows.
_ADD_USAGE_AND_VOLUME = sa.text(
    f"""
    WITH usage AS ({_USAGE_UPSERT} RETURNING 1), volume AS ({schedules.VOLUME_UPSERT} RETURNING 1)
    SELECT (SELECT count(*) FROM usage), (SELECT count(*) FROM volume)
    """
)


def add_channel_usage(tenant_id: uuid.UUID, account_id: uuid.UUID, amount: int) -> None:
    """What a channel account took counts against its daily cap (the tenant's calendar day): for
    payments, and for anything else that brings money in through a channel (top-ups)."""
    db.session.connection().execute(_ADD_USAGE, {"tenant_id": tenant_id, "account_id": account_id, "amount": amount})


def _add_usage(pi: PaymentIntent, amount: int) -> None:
    add_channel_usage(pi.tenant_id, pi.channel_account_id, amount)


def _post_capture(pi: PaymentIntent, amount: int, fees: CaptureFees, *, with_usage: bool = False) -> None:
    """One entry for a capture: the channel owes the amount less its cost; the merchant's pending
    balance gets the amount less its fee; the platform and the tenant share the fee. Zero lines
    (no fee, no cost) are left out. `with_usage`: the charge happened in this same transaction,
    so the channel's daily usage is added by the same statement as the merchant's volume."""
    if with_usage:
        db.session.connection().execute(
            _ADD_USAGE_AND_VOLUME,
            {
                "tenant_id": pi.tenant_id,
                "account_id": pi.channel_account_id,
                "merchant_id": pi.merchant_id,
                "currency": pi.currency,
                "livemode": pi.livemode,
                "amount": amount,
            },
        )
    else:
        schedules.count_volume(pi.tenant_id, pi.merchant_id, pi.currency, pi.livemode, amount)

    def ref(purpose: str, merchant_id: uuid.UUID | None = None):
        return ledger.account_ref(pi.tenant_id, purpose, pi.currency, pi.livemode, merchant_id)

    fee = fees.merchant_fee.total
    lines = [
        (ref("channel_receivable"), amount - fees.channel_cost),
        (ref("channel_fees"), fees.channel_cost),
        (ref("merchant_pending", pi.merchant_id), -(amount - fee)),
        (ref("platform_revenue"), -fees.platform_fee),
        (ref("tenant_revenue"), -(fee - fees.platform_fee)),
    ]
    ledger.post(
        pi.tenant_id,
        "payment.captured",
        pi.id,
        [(account, value) for account, value in lines if value],
        pi.livemode,
        description=f"{pi.id} captured",
    )


# Statements on rows every payment of a tenant writes (the ledger's shared accounts, a channel's
# daily usage): run last, after everything else of the transaction is written, right before the
# commit, so their row locks are held as briefly as possible.
HotWork = list[Callable[[], None]]


def _succeed(pi: PaymentIntent, amount: int, hot: HotWork, *, with_usage: bool = False) -> None:
    pi.status = "succeeded"
    pi.amount_received = amount
    pi.amount_capturable = 0
    fees = schedules.fees_for_capture(
        pi.tenant_id, pi.merchant_id, pi.channel_account_id, pi.product, pi.currency, pi.livemode, amount
    )
    balance_transactions.for_charge(pi, amount, fees.merchant_fee)
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "payment_intent.succeeded", objects.payment_intent(pi))
    hot.append(lambda: _post_capture(pi, amount, fees, with_usage=with_usage))


def _lock_statement(intent_known: bool) -> sa.Select:
    """Lock an attempt's intent, then the attempt, in one statement: the intent comes first in
    the FROM list, so its row is locked before the attempt's, as every writer does. Built once."""
    tenant_id = sa.bindparam("tenant_id", type_=sa.Uuid)
    attempt_id = sa.bindparam("attempt_id", type_=sa.Uuid)
    intent_id = (
        sa.bindparam("intent_id", type_=sa.String)
        if intent_known
        else sa.select(PaymentAttempt.payment_intent_id)
        .where(PaymentAttempt.tenant_id == tenant_id, PaymentAttempt.id == attempt_id)
        .scalar_subquery()
    )
    attempts = PaymentAttempt.__table__.c
    return (
        sa.select(PaymentIntent, attempts.tenant_id, attempts.id, attempts.kind, attempts.status, attempts.amount)
        .join(
            PaymentAttempt.__table__,
            sa.and_(attempts.tenant_id == PaymentIntent.tenant_id, attempts.payment_intent_id == PaymentIntent.id),
        )
        .where(PaymentIntent.tenant_id == tenant_id, PaymentIntent.id == intent_id, attempts.id == attempt_id)
        .with_for_update()
        # The rows as locked, not as this session last saw them: another process (a channel's
        # notification, the query job) may have applied the outcome while the channel was called.
        .execution_options(populate_existing=True)
    )


_LOCK_BY_INTENT = _lock_statement(intent_known=True)
_LOCK_BY_ATTEMPT = _lock_statement(intent_known=False)


def _lock_attempt(
    tenant_id: uuid.UUID, attempt_id: uuid.UUID, intent_id: str | None = None
) -> tuple[PaymentIntent, LockedAttempt]:
    """Lock an attempt's intent, then the attempt: every writer locks in this order."""
    if intent_id is None:
        row = db.session.execute(_LOCK_BY_ATTEMPT, {"tenant_id": tenant_id, "attempt_id": attempt_id}).one()
    else:
        row = db.session.execute(
            _LOCK_BY_INTENT, {"tenant_id": tenant_id, "attempt_id": attempt_id, "intent_id": intent_id}
        ).one()
    return row[0], LockedAttempt(*row[1:])


def apply_charge_result(
    tenant_id: uuid.UUID, attempt_id: uuid.UUID, result: ChargeResult, *, intent_id: str | None = None
) -> PaymentIntent:
    """Apply a channel's answer for an attempt exactly once (a late notification and a query
    result for the same attempt may both arrive: the second finds the attempt final).
    `intent_id`, when the caller knows it, saves looking it up."""
    pi, attempt = _lock_attempt(tenant_id, attempt_id, intent_id)
    if attempt.status not in ("started", "unknown"):
        db.session.rollback()
        return pi
    hot: HotWork = []
    before = pi.status
    with db.session.no_autoflush:
        applied = _apply(pi, attempt, result, hot)
    if not applied:
        db.session.rollback()
        return pi
    db.session.flush()
    for work in hot:
        work()
    counted = metrics.payment_outcome(pi, before)
    db.session.commit()
    metrics.count_payment(counted)
    return pi


def _apply(pi: PaymentIntent, attempt: LockedAttempt, result: ChargeResult, hot: HotWork) -> bool:
    """Change the intent and the attempt by the channel's answer, leaving the statements on shared
    rows to `hot`; False when there is nothing to apply yet."""
    response = {"reference": result.reference, "status": str(result.status), **dict(result.raw or {})}
    pi.channel_reference = result.reference
    if attempt.kind == "capture":
        if result.status == ChargeStatus.SUCCEEDED:
            _set_attempt(attempt.tenant_id, attempt.id, "succeeded", response=response)
            _succeed(pi, getattr(result, "amount_captured", 0) or attempt.amount, hot)
        elif result.status in (ChargeStatus.FAILED, ChargeStatus.CANCELED):
            _set_attempt(attempt.tenant_id, attempt.id, "failed", response=response, error=result.failure_message)
        else:
            return False
    elif result.status == ChargeStatus.SUCCEEDED:
        _set_attempt(attempt.tenant_id, attempt.id, "succeeded", response=response)
        _succeed(pi, pi.amount, hot, with_usage=True)
    elif result.status == ChargeStatus.REQUIRES_CAPTURE:
        _set_attempt(attempt.tenant_id, attempt.id, "requires_capture", response=response)
        hot.append(lambda: _add_usage(pi, pi.amount))
        pi.status = "requires_capture"
        pi.amount_capturable = pi.amount
        events.record(
            pi.tenant_id,
            pi.merchant_id,
            pi.livemode,
            "payment_intent.amount_capturable_updated",
            objects.payment_intent(pi),
        )
    elif result.status in (ChargeStatus.FAILED, ChargeStatus.CANCELED):
        _set_attempt(attempt.tenant_id, attempt.id, "declined", response=response, error=result.failure_message)
        _fail(
            pi,
            {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": result.failure_code,
                "message": result.failure_message or "Your card was declined.",
            },
        )
    else:
        # Still processing at the channel (a QR code to scan, a transfer to arrive).
        _set_attempt(attempt.tenant_id, attempt.id, "unknown", response=response)
    return True


def apply_not_taken(tenant_id: uuid.UUID, attempt_id: uuid.UUID, reason: str) -> PaymentIntent:
    """The channel says it never received an attempt whose answer we lost: nothing was charged,
    so the payment may be tried again (once, under the same locks as any outcome)."""
    pi, attempt = _lock_attempt(tenant_id, attempt_id)
    if attempt.status not in ("started", "unknown"):
        db.session.rollback()
        return pi
    before = pi.status
    _set_attempt(tenant_id, attempt_id, "unavailable", error=reason)
    if pi.status == "processing" and attempt.kind == "charge":
        _fail(
            pi,
            {
                "type": "api_error",
                "code": "channel_unavailable",
                "message": "The payment channel never received the payment; nothing was charged.",
            },
        )
    counted = metrics.payment_outcome(pi, before)
    db.session.commit()
    metrics.count_payment(counted)
    return pi


# --- capture and cancel ------------------------------------------------------------------------


def capture(ctx: MerchantContext, intent_id: str, amount_to_capture: Any = None) -> PaymentIntent:
    pi = get(ctx, intent_id, lock=True)
    if pi.status != "requires_capture":
        db.session.rollback()
        raise InvalidRequest(
            f"This PaymentIntent could not be captured because it has a status of {pi.status}. "
            "Only a PaymentIntent with status requires_capture can be captured.",
            code="payment_intent_unexpected_state",
        )
    amount = pi.amount_capturable if amount_to_capture is None else clean_amount(amount_to_capture, "amount_to_capture")
    if amount > pi.amount_capturable:
        db.session.rollback()
        raise InvalidRequest(
            f"The amount to capture ({amount}) is greater than the amount capturable ({pi.amount_capturable}).",
            code="amount_too_large",
            param="amount_to_capture",
        )
    attempt = PaymentAttempt(
        tenant_id=ctx.tenant_id,
        payment_intent_id=pi.id,
        channel_account_id=pi.channel_account_id,
        kind="capture",
        status="started",
        idempotency_key=f"{pi.id}-capture",
        amount=amount,
        request={"amount": amount},
    )
    db.session.add(attempt)
    account = _account(ctx.tenant_id, pi.channel_account_id)
    request = CaptureRequest(reference=pi.channel_reference, amount=amount, idempotency_key=attempt.idempotency_key)
    attempt_id = attempt.id
    db.session.commit()
    try:
        result = adapter_of(account).capture(request)
    except ChannelTimeout as exc:
        _finish_attempt(ctx, attempt_id, "unknown", error=str(exc))
        queue_resolution(ctx.tenant_id, attempt_id)
        return get(ctx, intent_id)
    except (ChannelUnavailable, ChannelConfigError, ChannelDeclined, ChannelInvalidRequest) as exc:
        _finish_attempt(ctx, attempt_id, "failed", error=str(exc))
        raise ChannelError(f"The channel did not capture the payment: {exc}", code="capture_failed") from exc
    return apply_charge_result(ctx.tenant_id, attempt_id, result)


def cancel(ctx: MerchantContext, intent_id: str, cancellation_reason: str | None = None) -> PaymentIntent:
    pi = get(ctx, intent_id, lock=True)
    if pi.status not in ("requires_payment_method", "requires_confirmation", "requires_capture"):
        db.session.rollback()
        raise InvalidRequest(
            f"You cannot cancel this PaymentIntent because it has a status of {pi.status}.",
            code="payment_intent_unexpected_state",
        )
    if pi.status == "requires_capture":
        # Release the authorisation at the channel first; nothing is held open meanwhile.
        account = _account(ctx.tenant_id, pi.channel_account_id)
        request = CancelRequest(
            reference=pi.channel_reference, idempotency_key=f"{pi.id}-cancel", reason=cancellation_reason or ""
        )
        db.session.commit()
        try:
            adapter_of(account).cancel(request)
        except (ChannelUnavailable, ChannelTimeout, ChannelConfigError) as exc:
            raise ChannelError(f"The channel could not release the authorisation: {exc}", code="cancel_failed") from exc
        pi = get(ctx, intent_id, lock=True)
        if pi.status != "requires_capture":
            db.session.rollback()
            return pi
    pi.status = "canceled"
    pi.cancellation_reason = cancellation_reason
    pi.canceled_at = _now()
    pi.amount_capturable = 0
    # A coupon use the payment held is given back with the cancellation.
    coupons.release_for(pi.tenant_id, pi.id)
    events.record(pi.tenant_id, pi.merchant_id, pi.livemode, "payment_intent.canceled", objects.payment_intent(pi))
    db.session.commit()
    return pi
