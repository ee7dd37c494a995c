"""The hosted checkout: `/checkout/<intent id>?client_secret=…` on a tenant's host, for payers.

Public (a payer has no account): the PaymentIntent's client secret admits the payer, and anything
that does not match (no secret, a wrong one, another tenant's intent) is the same 404 naming
nothing. The page shows the merchant, the order's lines (`order_lines`), the amount as stored, and
the card form of the channel a card payment is routed to: the sandbox's test payment methods, or
Stripe.js with the account's publishable key, so that card numbers never reach the platform. Paying
posts (with CSRF) only the chosen payment method's id; `payments.checkout.pay` confirms the intent
under its lock. Every answer is `Cache-Control: no-store` and sends no referrer (the URL carries the
client secret).
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, g, jsonify, make_response, redirect, request, url_for
from flask_babel import gettext as _

from payments import checkout, orders
from payments.errors import CardError, ChannelError, InvalidRequest, NotFound
from payments.models import PaymentIntent
from portal import theming
from portal.access import host_guard
from portal.i18n import format_amount

log = logging.getLogger(__name__)
bp = Blueprint("checkout", __name__)
bp.before_request(host_guard("tenant"))


@bp.after_request
def _private(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def order_lines(intent: PaymentIntent) -> list[tuple[str, int | None, int]]:
    """The lines of the order the payer pays: (description, quantity, amount in minor units); the
    order's item lines and its discount line (no quantity), which sum to the intent's amount, or one
    line for a payment created with a bare amount."""
    lines = orders.lines_of(intent.tenant_id, intent.id)
    if not lines:
        return [(intent.description or checkout.merchant_name(intent), 1, intent.amount)]
    return [(line.description, line.quantity if line.kind == "item" else None, line.amount) for line in lines]


def _decline_message(error: dict | None) -> str | None:
    """What the payer reads about the last attempt, in the page's language."""
    if not error:
        return None
    code = error.get("decline_code") or error.get("code")
    messages = {
        "insufficient_funds": _("Your card has insufficient funds. Try another card."),
        "expired_card": _("Your card has expired. Try another card."),
        "incorrect_cvc": _("Your card's security code is incorrect. Try again or use another card."),
        "processing_error": _("An error occurred while processing your card. Try again in a little bit."),
        "channel_unavailable": _("The payment could not be processed right now; nothing was charged. Try again later."),
    }
    if code in messages:
        return messages[code]
    if error.get("code") == "card_declined" or error.get("type") == "card_error":
        return _("Your card was declined. Try another card.")
    return _("The payment did not go through; nothing was charged. Try again or choose another way to pay.")


def _open(intent_id: str, secret: str | None) -> PaymentIntent:
    try:
        return checkout.open_intent(g.tenant.id, intent_id, secret)
    except NotFound:
        abort(404)


def _page_url(pi: PaymentIntent, secret: str) -> str:
    return url_for("checkout.page", intent_id=pi.id, client_secret=secret)


def _test_method_labels(entry: checkout.CardEntry) -> list[tuple[str, str]]:
    brands = {
        "pm_card_visa": "Visa",
        "pm_card_mastercard": "Mastercard",
        "pm_card_amex": "American Express",
        "pm_card_visa_debit": "Visa Debit",
        "pm_card_unionpay": "UnionPay",
    }
    labels = [(m, _("%(brand)s test card — succeeds", brand=brands.get(m, m))) for m in entry.succeeding]
    reasons = {
        "generic_decline": _("generic decline"),
        "insufficient_funds": _("insufficient funds"),
        "expired_card": _("expired card"),
        "incorrect_cvc": _("incorrect security code"),
        "fraudulent": _("suspected fraud"),
        "processing_error": _("processing error"),
    }
    labels += [
        (m, _("Test card — declined (%(reason)s)", reason=reasons.get(code, code))) for m, code in entry.declining
    ]
    return labels


def _render(pi: PaymentIntent, secret: str, *, error: str | None = None, chosen: str | None = None, status=200):
    lines = order_lines(pi)
    common = {
        "intent": pi,
        "client_secret": secret,
        "lines": [(text, quantity, format_amount(amount, pi.currency)) for text, quantity, amount in lines],
        "total": format_amount(pi.amount, pi.currency),
        "status_url": url_for("checkout.status", intent_id=pi.id, client_secret=secret),
        "page_url": _page_url(pi, secret),
    }
    if pi.status in ("succeeded", "canceled", "requires_capture"):
        return theming.render("checkout/result.html", merchant=checkout.merchant_name(pi), **common), status
    if pi.status == "processing":
        return theming.render("checkout/processing.html", merchant=checkout.merchant_name(pi), **common), status
    offer = checkout.offer(pi)
    if offer.unavailable_reason:
        log.warning("checkout of %s offers no card: %s", pi.id, offer.unavailable_reason)
    entry = offer.card_entry
    return (
        theming.render(
            "checkout/pay.html",
            merchant=offer.merchant_name,
            offer=offer,
            entry=entry,
            test_methods=_test_method_labels(entry) if entry and entry.channel_type == "sandbox" else [],
            error=error,
            last_error=None if error else _decline_message(pi.last_payment_error),
            chosen=chosen,
            **common,
        ),
        status,
    )


@bp.get("/<intent_id>")
def page(intent_id: str):
    secret = request.args.get("client_secret", "")
    return _render(_open(intent_id, secret), secret)


@bp.post("/<intent_id>")
def pay(intent_id: str):
    secret = request.form.get("client_secret", "")
    method = request.form.get("payment_method", "")
    try:
        checkout.pay(g.tenant.id, intent_id, secret, method)
    except NotFound:
        abort(404)
    except (CardError, ChannelError):
        pass  # the intent keeps the outcome (last_payment_error): the page shows it and offers a retry
    except InvalidRequest as exc:
        if exc.code != "payment_intent_unexpected_state":
            # Nothing was charged: the form again, with what the payer chose and why it was refused.
            message = (
                _("Choose how to pay.")
                if exc.code == "parameter_missing" and exc.param == "payment_method" and not method
                else _("This payment method cannot be used for this payment. Choose another one.")
            )
            return _render(_open(intent_id, secret), secret, error=message, chosen=method, status=422)
        # Already processing, paid or canceled (a second submission): the page shows where it stands.
    return redirect(url_for("checkout.page", intent_id=intent_id, client_secret=secret))


@bp.get("/<intent_id>/status")
def status(intent_id: str):
    try:
        current = checkout.status(g.tenant.id, intent_id, request.args.get("client_secret", ""))
    except NotFound:
        return make_response(jsonify(error={"type": "not_found", "message": "Not found."}), 404)
    return jsonify(status=current)
