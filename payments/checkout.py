"""The hosted checkout of a PaymentIntent (use cases): what a payer is shown, and paying.

A payer has no account. The intent's client secret, which the merchant hands to the payer's
browser, is what admits them: it is compared in constant time, and an unknown intent, another
tenant's intent and a wrong secret are the same `NotFound`. Everything charged comes from the
stored intent (amount, currency, what it offers); the browser sends only which payment method
to use, and for a card only the channel's token of it, never a card number.

The card is entered in the form of the channel the router would send a card payment to now:
the sandbox's test payment methods (test mode only), or, for a `stripe` account, Stripe.js
loaded from the account's API base with its publishable key. Paying is
`payments.intents.confirm_intent`, under the intent's lock: a second confirmation of an intent
that is processing or paid is refused by its state, so a double submission never charges twice.
"""

from __future__ import annotations

import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.db import db
from payments import intents
from payments.channels import sandbox, stripe
from payments.errors import InvalidRequest, NotFound
from payments.models import PaymentIntent
from payments.payer_details import payer_elements
from payments.route_planning import RoutingInputs
from tenants.models import Merchant

# What this page can collect from a payer's browser. The other products need what a page cannot
# give (a terminal, a face scan, a member wallet) or the channel's instructions (a QR code, bank
# details), which a PaymentIntent does not keep yet.
CHECKOUT_PRODUCTS = ("card",)
# Stripe's ids of a tokenised card (pm_…; card_… from a token) and the test payment methods.
_PAYMENT_METHOD = re.compile(r"^(pm|card|src|tok)_[A-Za-z0-9_]{1,116}$")


@dataclass(frozen=True)
class CardEntry:
    """How the payer enters a card: `sandbox` (pick a test payment method) or `stripe` (Stripe.js)."""

    channel_type: str
    succeeding: tuple[str, ...] = ()
    # pm_card_… → the decline code it causes, for the page's labels.
    declining: tuple[tuple[str, str], ...] = ()
    publishable_key: str | None = None
    script_url: str | None = None


@dataclass(frozen=True)
class Offer:
    """What the payer can do now: the products offered for the amount, and how to enter a card."""

    merchant_name: str
    methods: tuple[str, ...]
    card_entry: CardEntry | None
    # Set when card payments are routed to a channel this page cannot collect a card for.
    unavailable_reason: str | None = None


def open_intent(tenant_id: uuid.UUID, intent_id: str, client_secret: str | None) -> PaymentIntent:
    """The tenant's intent whose client secret is `client_secret`; anything else is NotFound."""
    pi = db.session.execute(
        sa.select(PaymentIntent).where(PaymentIntent.tenant_id == tenant_id, PaymentIntent.id == str(intent_id)[:40])
    ).scalar_one_or_none()
    given = (client_secret or "").encode()
    expected = pi.client_secret.encode() if pi is not None else b"\0" * 64
    if not hmac.compare_digest(expected, given) or pi is None:
        raise NotFound("payment_intent", str(intent_id)[:40])
    return pi


def merchant_name(pi: PaymentIntent) -> str:
    return db.session.execute(
        sa.select(Merchant.name).where(Merchant.tenant_id == pi.tenant_id, Merchant.id == pi.merchant_id)
    ).scalar_one()


def _context(pi: PaymentIntent) -> intents.MerchantContext:
    return intents.MerchantContext(pi.tenant_id, pi.merchant_id, pi.livemode)


def offer(pi: PaymentIntent) -> Offer:
    """The products offered now for the intent's amount and currency (by the tenant's channels, as the
    core computes them for every intent), among those the intent allows and this page can collect;
    and for a card, the form of the channel a card payment would be routed to."""
    name = merchant_name(pi)
    ctx = _context(pi)
    inputs = RoutingInputs.load(ctx.tenant_id, ctx.merchant_id, ctx.mode)
    offered = inputs.offered(pi.amount, pi.currency)
    methods = tuple(p for p in offered if p in pi.payment_method_types and p in CHECKOUT_PRODUCTS)
    if "card" not in methods:
        return Offer(name, methods, None)
    decision = inputs.plan("card", pi.amount, pi.currency, {"payment_method"} | payer_elements(pi.payer_details))
    if decision.chosen is None:
        return Offer(name, (), None, unavailable_reason=decision.summary)
    account = inputs.accounts[uuid.UUID(decision.chosen.id)]
    if account.type == "sandbox":
        return Offer(
            name,
            methods,
            CardEntry(
                "sandbox",
                succeeding=tuple(sorted(sandbox.SUCCEEDING_METHODS)),
                declining=tuple((method, code) for method, (code, _) in sandbox.DECLINING_METHODS.items()),
            ),
        )
    if account.type == "stripe":
        key = (account.settings or {}).get("publishable_key")
        if not key:
            return Offer(
                name,
                (),
                None,
                unavailable_reason=f"channel account {account.name!r} has no publishable key: set it in "
                "Console → Channels, so that Stripe.js can take the card in the payer's browser",
            )
        return Offer(
            name,
            methods,
            CardEntry("stripe", publishable_key=key, script_url=stripe.browser_script_url(account.base_url)),
        )
    return Offer(name, (), None, unavailable_reason=f"channel type {account.type!r} has no card form for the checkout")


def pay(tenant_id: uuid.UUID, intent_id: str, client_secret: str | None, payment_method: Any) -> PaymentIntent:
    """Confirm the intent with the payment method the payer's browser chose or the channel tokenised.

    Raises what `confirm_intent` raises: `CardError` on a decline (the intent asks for another
    payment method), `InvalidRequest` with code `payment_intent_unexpected_state` when the intent is
    already processing, paid or canceled (a double submission), `ChannelError` when no channel took it."""
    pi = open_intent(tenant_id, intent_id, client_secret)
    method = str(payment_method or "").strip()
    if not _PAYMENT_METHOD.match(method):
        db.session.rollback()
        raise InvalidRequest("Choose how to pay.", code="parameter_missing", param="payment_method")
    ctx, intent_id = _context(pi), pi.id
    db.session.rollback()  # confirm_intent locks the intent in a transaction of its own
    return intents.confirm_intent(ctx, intent_id, payment_method=method)


def status(tenant_id: uuid.UUID, intent_id: str, client_secret: str | None) -> str:
    """What the processing page polls: the intent's status (`processing` until the channel's answer is in)."""
    current = open_intent(tenant_id, intent_id, client_secret).status
    db.session.rollback()
    return current
