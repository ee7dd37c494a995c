"""Our rows as Stripe-shaped objects (what the API returns and what events carry).

Pure functions: no database access, no Flask. Currencies are lower-case and times are Unix
seconds, as in Stripe's API, so Stripe's SDKs read them unchanged.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime
from typing import Any

from payments.models import Event, PaymentIntent, Refund

_ALPHABET = string.ascii_letters + string.digits
# Stripe's address object, in its order.
ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code", "country")


def new_id(prefix: str) -> str:
    """`pi_3PqL...`: a prefix and 24 random base-62 characters, as Stripe's ids look."""
    # 24 digits of one 143-bit random number (62**24 < 2**143): one call to the system's random
    # source instead of one per character.
    number = secrets.randbits(143)
    digits = []
    for _ in range(24):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(digits)}"


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _shipping(shipping: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stripe's shape: every field present, null when not given."""
    if not shipping:
        return None
    address = shipping.get("address") or {}
    return {
        "address": {key: address.get(key) for key in ADDRESS_FIELDS},
        **{key: shipping.get(key) for key in ("carrier", "name", "phone", "tracking_number")},
    }


def payment_intent(pi: PaymentIntent) -> dict[str, Any]:
    # Of the payer details only what Stripe's PaymentIntent itself carries: billing details and the
    # platform's `payer` elements belong to the payment method, which has no object here.
    details = pi.payer_details or {}
    return {
        "id": pi.id,
        "object": "payment_intent",
        "amount": pi.amount,
        "amount_capturable": pi.amount_capturable,
        "amount_received": pi.amount_received,
        "amount_refunded": pi.amount_refunded,
        "canceled_at": unix(pi.canceled_at),
        "cancellation_reason": pi.cancellation_reason,
        "capture_method": pi.capture_method,
        "client_secret": pi.client_secret,
        "confirmation_method": "automatic",
        "created": unix(pi.created_at),
        "currency": pi.currency.lower(),
        "description": pi.description,
        "last_payment_error": pi.last_payment_error,
        "latest_charge": pi.channel_reference,
        "livemode": pi.livemode,
        "metadata": dict(pi.metadata_ or {}),
        "next_action": None,
        "payment_method": pi.payment_method,
        "payment_method_types": list(pi.payment_method_types or []),
        "receipt_email": details.get("receipt_email"),
        # The platform's own field: where the hosted checkout sends the payer back after paying.
        "return_url": pi.return_url,
        "shipping": _shipping(details.get("shipping")),
        "status": pi.status,
        # The platform's own field: the terminal (`tmr_...`) that created it, if one did.
        "terminal": pi.terminal_id,
    }


def refund(re: Refund) -> dict[str, Any]:
    return {
        "id": re.id,
        "object": "refund",
        "amount": re.amount,
        "created": unix(re.created_at),
        "currency": re.currency.lower(),
        "failure_reason": re.failure_reason,
        "metadata": dict(re.metadata_ or {}),
        "payment_intent": re.payment_intent_id,
        "reason": re.reason,
        "status": re.status,
    }


def event(ev: Event) -> dict[str, Any]:
    return {
        "id": ev.id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": unix(ev.created_at),
        "data": ev.data,
        "livemode": ev.livemode,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": ev.type,
    }
