"""What the merchant tells about the payer: Stripe's `receipt_email`, `payment_method_data[billing_details]`
and `shipping`, and for the elements Stripe has no parameter for, the platform's `payer` object.

Stored as sent, in those four parts, on `PaymentIntent.payer_details`; the payer elements that
routing checks against a channel's required elements are derived from it (`payer_elements`).
Pure functions: validation raises Stripe-shaped `InvalidRequest` errors naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from payments import products as catalogue
from payments.errors import InvalidRequest
from payments.objects import ADDRESS_FIELDS

# The platform's `payer` object: its keys, the element each gives, and the longest value taken.
PAYER_FIELDS: dict[str, tuple[str, int]] = {
    "terminal_id": ("terminal_id", 100),
    "face_code": ("face_code", 2000),
    "openid": ("openid", 128),
    "wallet_id": ("wallet_id", 100),
    "bank_account": ("payer_bank_account", 64),
}
# How the caller sends each element, named in the error that asks for it.
ELEMENT_PARAMS: dict[str, str] = {
    "payment_method": "payment_method",
    "email": "receipt_email",
    "payer_name": "payment_method_data[billing_details][name]",
    "phone": "payment_method_data[billing_details][phone]",
    "billing_address": "payment_method_data[billing_details][address]",
    **{element: f"payer[{key}]" for key, (element, _) in PAYER_FIELDS.items()},
}
_SEND_ALSO = {
    "email": " (or payment_method_data[billing_details][email])",
    "billing_address": " with at least [line1] and [country]",
}
# The parts that decide where the payment can go: changed only before it is confirmed. The
# receipt e-mail and the shipping address may change later, as at Stripe.
ROUTING_PARTS = {"billing_details": "payment_method_data", "payer": "payer"}
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _text(value: Any, param: str, max_length: int) -> str | None:
    """A trimmed string, or None for "" (which unsets, as at Stripe)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid string: {param} must be a string.", param=param)
    value = value.strip()
    if len(value) > max_length:
        raise InvalidRequest(f"Invalid string: {param} must be at most {max_length} characters.", param=param)
    return value or None


def _fields(value: Any, param: str, known: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid object: {param} must be an object.", param=param)
    unknown = [f"{param}[{key}]" for key in value if key not in known]
    if unknown:
        raise InvalidRequest(
            f"Received unknown parameter: {unknown[0]}; {param} takes {', '.join(known)}.",
            code="parameter_unknown",
            param=unknown[0],
        )
    return value


def clean_email(value: Any, param: str) -> str | None:
    email = _text(value, param, 254)
    if email is not None and not _EMAIL_RE.match(email):
        raise InvalidRequest(
            f"Invalid email address: {email}. Send an address such as jenny.rosen@example.com.",
            code="email_invalid",
            param=param,
        )
    return email


def _clean_address(value: Any, param: str) -> dict[str, str]:
    given = _fields(value, param, ADDRESS_FIELDS)
    address = {key: text for key in ADDRESS_FIELDS if (text := _text(given.get(key), f"{param}[{key}]", 200))}
    country = address.get("country")
    if country is not None:
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise InvalidRequest(
                f"Invalid country {country!r}: send a two-letter ISO 3166-1 code such as US or DE.",
                param=f"{param}[country]",
            )
        address["country"] = country.upper()
    return address


def _clean_billing_details(value: Any, param: str) -> dict[str, Any]:
    given = _fields(value, param, ("name", "email", "phone", "address"))
    details: dict[str, Any] = {
        "name": _text(given.get("name"), f"{param}[name]", 300),
        "email": clean_email(given.get("email"), f"{param}[email]"),
        "phone": _text(given.get("phone"), f"{param}[phone]", 40),
    }
    if given.get("address") not in (None, ""):
        details["address"] = _clean_address(given["address"], f"{param}[address]")
    return {key: item for key, item in details.items() if item}


def _clean_shipping(value: Any) -> dict[str, Any]:
    given = _fields(value, "shipping", ("name", "phone", "carrier", "tracking_number", "address"))
    shipping: dict[str, Any] = {
        key: _text(given.get(key), f"shipping[{key}]", 300) for key in ("name", "phone", "carrier", "tracking_number")
    }
    if given.get("address") not in (None, ""):
        shipping["address"] = _clean_address(given["address"], "shipping[address]")
    return {key: item for key, item in shipping.items() if item}


def _merge_payer(current: dict[str, str], value: Any) -> dict[str, str]:
    """Like metadata: the given keys are set, a key set to "" is removed, the others stay."""
    merged = dict(current)
    for key, item in _fields(value, "payer", PAYER_FIELDS).items():
        text = _text(item, f"payer[{key}]", PAYER_FIELDS[key][1])
        if text is None:
            merged.pop(key, None)
        else:
            merged[key] = text
    return merged


def merge_payer_details(current: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """`current` with the parts of `given` applied: `receipt_email` ("" unsets it), `billing_details`
    and `shipping` (each replaces what was sent before, as a new payment method does at Stripe),
    `payer` (merged key by key). A new dict, so the change is written."""
    details = dict(current or {})
    for part, value in (given or {}).items():
        if part == "receipt_email":
            details[part] = clean_email(value, "receipt_email")
        elif part == "billing_details":
            details[part] = _clean_billing_details(value or {}, "payment_method_data[billing_details]")
        elif part == "shipping":
            details[part] = _clean_shipping(value or {})
        elif part == "payer":
            details[part] = _merge_payer(details.get("payer") or {}, value or {})
        else:
            raise ValueError(f"unknown part of the payer details: {part!r}")
    return {part: value for part, value in details.items() if value}


def payer_values(details: dict[str, Any] | None) -> dict[str, Any]:
    """The payer elements the details give, by element name (an address is a dict of its parts).
    An address counts as the billing address only with a street line and a country; the shipping
    address never does."""
    details = details or {}
    billing = details.get("billing_details") or {}
    address = billing.get("address") or {}
    values: dict[str, Any] = {
        "email": details.get("receipt_email") or billing.get("email"),
        "payer_name": billing.get("name"),
        "phone": billing.get("phone"),
        "billing_address": address if address.get("line1") and address.get("country") else None,
    }
    payer = details.get("payer") or {}
    for key, (element, _) in PAYER_FIELDS.items():
        values[element] = payer.get(key)
    return {element: value for element, value in values.items() if value}


def payer_elements(details: dict[str, Any] | None) -> frozenset[str]:
    return frozenset(payer_values(details))


def channel_elements(details: dict[str, Any] | None) -> dict[str, str]:
    """The elements as the channel request carries them: strings, an address on one line."""
    return {
        element: ", ".join(value[key] for key in ADDRESS_FIELDS if value.get(key)) if isinstance(value, dict) else value
        for element, value in payer_values(details).items()
    }


def how_to_send(element: str) -> str:
    if element not in ELEMENT_PARAMS:
        # A channel account may name an element the platform has no parameter for.
        return (
            f"{element}: no API parameter carries it (a channel account requires an element the platform does "
            "not know; ask your payment provider to correct that channel account's required elements)"
        )
    return f"{catalogue.ELEMENTS[element]}: send {ELEMENT_PARAMS[element]}{_SEND_ALSO.get(element, '')}"
