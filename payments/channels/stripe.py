"""The Stripe channel: card payments as PaymentIntents over Stripe's REST API, through the adapter contract.

Two parts, as in Hyperswitch's connectors: `StripeAdapter` makes the HTTP calls, one method per flow;
the module-level functions map Stripe's objects and errors to ours, purely (no I/O), so that they are
tested on recorded answers.

| operation           | Stripe call                                                                           |
| ------------------- | ------------------------------------------------------------------------------------- |
| check_credentials   | GET /v1/balance (and its `livemode` must match the account's)                         |
| charge              | POST /v1/payment_intents: confirm=true, payment_method_types[0]=card, capture_method, |
|                     | metadata[payplat_key]=<our idempotency key>; Idempotency-Key: <our idempotency key>   |
| capture / cancel    | POST /v1/payment_intents/{id}/capture (amount_to_capture) / .../cancel                |
| refund              | POST /v1/refunds (payment_intent, amount, metadata[payplat_key]=<refund key>)         |
| payout              | POST /v1/payouts (amount, currency, destination, method=standard, description,        |
|                     | metadata[payplat_key]=<payout key>)                                                   |
| query(reference)    | GET /v1/payment_intents/{id}?expand[]=latest_charge                                   |
| query(idempotency_  | GET /v1/payment_intents?limit=100 newest first, filtered on metadata[payplat_key],    |
| key)                | up to `query_scan_limit` intents; past that, the Search API (see below)               |
| query_payout(       | GET /v1/payouts/{id}                                                                  |
| reference)          |                                                                                       |
| query_payout(       | GET /v1/payouts?limit=100 newest first, filtered on metadata[payplat_key], up to      |
| idempotency_key)    | `query_scan_limit` payouts (Stripe has no Search API for payouts: see below)          |
| fetch_statement     | GET /v1/balance_transactions?created[gte]&created[lt]&expand[]=data.source, paged     |
|                     | with starting_after until has_more is false                                           |
| parse_notification  | Stripe-Signature (t=…,v1=…, 300 s tolerance) with the account's webhook_secret        |
| sign_contract       | none: Stripe has no payment agreement to sign (`capabilities.contracts` is False):    |
|                     | ChannelNotSupported, naming the channel types that do sign contracts                  |

Every POST carries an `Idempotency-Key`: the charge's own key; captures, cancels, refunds and payouts a key
derived from theirs (`derived_key`), because Stripe's keys are one namespace per account across all endpoints
and a caller may reuse a payment's key for its refund. Stripe keeps keys for 24 hours: a retry after that
charges again, which is one more reason we resolve timeouts with `query` and never by charging again.

Finding a charge by our key. Stripe offers two ways: listing (strongly consistent: a PaymentIntent is listed
as soon as it exists) and the Search API (`metadata['payplat_key']:'…'`, one call however old the charge, but
eventually consistent: Stripe says data may take a minute or more to be searchable, and not to use search in
read-after-write flows; it is also not offered in every region). A query after a timeout is exactly a
read-after-write, seconds after the create, so listing comes first and finds the charge among the newest
intents; the Search API is used only when `query_scan_limit` intents were scanned without finding it, by
when the charge is old enough to be indexed. Only a list scanned to its end, or a search after a full scan,
answers "never taken" (`ChannelInvalidRequest` resource_missing).

Stripe PaymentIntent status → ours (`PAYMENT_INTENT_STATUS`, exhaustive: an unknown word is an error):

| Stripe                  | ours             | why                                                                  |
| ----------------------- | ---------------- | -------------------------------------------------------------------- |
| succeeded               | succeeded        |                                                                      |
| requires_capture        | requires_capture | authorised; `capture` or `cancel` it                                 |
| processing              | processing       | Stripe has not heard from the network yet                            |
| requires_action         | processing       | the payer must authenticate (3-D Secure); `next_action` says how     |
| requires_confirmation   | processing       | open and nothing taken (we confirm at creation, so rarely seen)      |
| requires_payment_method | failed           | we confirm at creation: this is a failed (declined) attempt          |
| canceled                | canceled         |                                                                      |

Stripe payout status → ours (`PAYOUT_STATUS`, exhaustive):

| Stripe     | ours    | why                                                                                |
| ---------- | ------- | ---------------------------------------------------------------------------------- |
| paid       | paid    | Stripe expects it in the bank; it may still turn failed days later (payout.failed) |
| pending    | pending | not yet submitted to the bank                                                      |
| in_transit | pending | submitted to the bank, not yet arrived                                             |
| failed     | failed  | the bank refused it; the money went back to the Stripe balance (failure_code)      |
| canceled   | failed  | cancelled before it was sent: nothing left the Stripe balance                      |

Finding a payout by our key (`query_payout`, after a `ChannelTimeout` from `payout`). The payout carries
metadata[payplat_key], and the list of payouts (newest first, strongly consistent) is scanned for it, as for
charges; Stripe's Search API does not cover payouts, so there is no fallback. A list scanned to its end answers
"never received" (`ChannelInvalidRequest` resource_missing, as `query`); `query_scan_limit` payouts scanned
without finding it answer nothing of the kind (`ChannelInvalidRequest` query_scan_limit_reached, naming the
setting), since an older payout may still carry the key and paying out again would pay twice. A timeout's
`idempotency_key` is ours, not the derived key sent to Stripe: it is what `query_payout` takes.

What went wrong → which error, and whether money may have moved. A POST moves money (charge, capture,
cancel, refund, payout); a GET (check_credentials, query, query_payout, fetch_statement) never does, so it has
no "unknown":

| what happened                                        | POST                       | GET                      |
| ---------------------------------------------------- | -------------------------- | ------------------------ |
| connect error: DNS, refused, reset while connecting, | `ChannelUnavailable`: the  | `ChannelUnavailable`     |
| TLS handshake, connect or pool timeout, proxy        | request never left         |                          |
| read or write timeout, connection reset or closed    | `ChannelTimeout`: UNKNOWN, | `ChannelUnavailable`     |
| after the request went out, an unreadable 2xx        | resolve with `query`       |                          |
| 400/404 invalid_request_error                        | `ChannelInvalidRequest`    | `ChannelInvalidRequest`  |
|                                                      | (Stripe's code)            |                          |
| 400 idempotency_error                                | `ChannelInvalidRequest`    | —                        |
|                                                      | idempotency_key_reused     |                          |
| 401                                                  | `ChannelConfigError`       | `ChannelConfigError`     |
| 402 (card_error, or any 402)                         | `ChannelDeclined`          | `ChannelDeclined`        |
|                                                      | (decline_code)             |                          |
| 403 (a restricted key without the permission)        | `ChannelConfigError`       | `ChannelConfigError`     |
| 409 (a request with this key is still running)       | `ChannelTimeout`           | `ChannelUnavailable`     |
| 429 (rate limited or lock timeout: refused before it | `ChannelUnavailable`       | `ChannelUnavailable`     |
| ran, Stripe stores no idempotent result for it)      |                            |                          |
| 5xx (Stripe: a 500's outcome is indeterminate; a 502 | `ChannelTimeout`           | `ChannelUnavailable`     |
| or 503 may come from a proxy after Stripe ran it)    |                            |                          |
| any other status                                     | `ChannelInvalidRequest`    | `ChannelInvalidRequest`  |

So `ChannelUnavailable`, which sends the payment to the next channel, is raised for a POST only when
Stripe certainly did not run it. No call is retried inside the adapter.

Credentials: `secret_key` (sk_… or a restricted rk_… key) goes only into the Authorization header, built per
request; `webhook_secret` (whsec_…) verifies notifications. Neither appears in messages, logs or `raw`; text
Stripe sends back is scrubbed of both before it is shown. Settings: `base_url` (default
https://api.stripe.com; https in live mode), `connect_timeout_s` (3), `read_timeout_s` (20), `api_version`
(the Stripe-Version header, default `API_VERSION`), `query_scan_limit` (1000), `notification_tolerance_s`
(300), `return_url` (optional: where Stripe sends the payer back after 3-D Secure), `test_instruments`
(`stripe`, the default, or `localstripe`: see below).

Test instruments (`test_instrument`, test mode only). Stripe knows every documented test payment method
(pm_card_visa, pm_card_chargeDeclined, pm_card_chargeDeclinedInsufficientFunds, ...), so with
`test_instruments: "stripe"` the mapping is the identity. A Stripe-compatible server that lacks them
(localstripe, below) is named by `test_instruments: "localstripe"`, which maps by `LOCALSTRIPE_INSTRUMENTS`:
cards that succeed → pm_card_visa, cards declined when charged → pm_card_chargeCustomerFail (localstripe's
only card declined at charge time; its decline carries no decline code, so every decline is card_declined).
A test method outside the table is sent unchanged (and localstripe answers resource_missing).

Connections. An adapter is built for every use (it holds one account's credentials), but it owns no
connection: `CLIENTS`, one per process, keeps an `httpx.Client` (with its kept-alive connections) per
`Transport`, that is per base URL, timeouts and pool limits, and nothing else. Every call leases the client of
its account's transport and sends the account's own secret key, Stripe-Version and Idempotency-Key as headers
of that request, so payments of every account with the same transport reuse the same connections, an edited
account (another base URL, timeouts or key) is called with its new settings by its next adapter, and no
credential is kept anywhere between calls. The clients keep no cookies. A forked process (a gunicorn worker,
an RQ work horse) starts with no client and opens its own connections.

What localstripe lacks (localstripe 1.15.10, the fake Stripe the tests run against), found by running it and
reading its source. The gaps that break one of our flows are shown by the tests named test_localstripe_*, and
those flows are tested against a local stand-in that answers as Stripe does:

- Idempotency-Key is ignored: the same key twice makes two PaymentIntents.
- PaymentIntent create refuses parameters it does not know: `description` (so the adapter sends it only
  when set) and `automatic_payment_methods` (the adapter sends `payment_method_types`, which on Stripe
  excludes automatic payment methods by itself).
- Test payment methods: only pm_card_visa, pm_card_visa_chargeDeclined (declined when attached, not when
  charged) and pm_card_chargeCustomerFail (declined when charged); pm_card_chargeDeclined and the other
  pm_card_chargeDeclined* are unknown (404).
- Declines are 402 with type invalid_request_error and code card_declined, no decline_code and no
  payment_intent (Stripe: type card_error, decline_code, the PaymentIntent): the adapter keys declines on
  the 402 and falls back to the code.
- PaymentIntents have no amount_received or amount_capturable, charges no amount_captured; latest_charge
  is always expanded, and PaymentIntent metadata is not copied to the charge.
- List endpoints take only limit and starting_after: `created[...]` filters are refused (400), so
  fetch_statement cannot run against it; lists come oldest first (Stripe: newest first); there is no
  Search API (404).
- A refund larger than what is left is accepted; a refund without an amount refunds the whole charge
  again even after partial refunds; a partial capture is recorded as a full capture plus a refund.
- A cancelled PaymentIntent can still be captured (Stripe: 400).
- Cancellation and refund reasons are refused (the adapter sends them only when they are Stripe's enums).
- Any key that starts with sk_ is accepted: only a non-sk_ key gets a 401.
- Only three test payment methods exist (above): `test_instruments: "localstripe"` maps Stripe's others.
- Payouts exist (create, retrieve, list, cancel) but only in EUR (any other currency is a 400 "Bad request");
  the destination sent is ignored (every payout gets an invented ba_… id), a payout is created pending and
  never moves on by itself, and the balance is neither checked nor moved (Stripe refuses a payout above the
  available balance: balance_insufficient). The request as Stripe receives it and Stripe's other payout
  statuses are tested on the stand-in. The list takes limit and starting_after and comes oldest first, so
  `query_payout` (by reference, and by our key through the list) runs against it; a payout whose answer was
  lost, and a list longer than `query_scan_limit`, are tested on the stand-in. As for charges, a payout's
  Idempotency-Key is ignored: the same key twice pays out twice.
- It always binds all interfaces (`::`) and writes its state to a fixed pickle file in the system's temporary folder.
- Its Stripe.js stand-in (`/js.stripe.com/v3/`, what the hosted checkout loads) has a `createPaymentMethod` that
  does nothing and returns nothing; `createToken` works and gives a token whose card (`card_…`) its PaymentIntents
  take as `payment_method`. The checkout's page uses `createPaymentMethod` and, only when that gives no payment
  method, the token's card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from payments.channels.base import (
    CancelRequest,
    Capabilities,
    CaptureRequest,
    ChannelAdapter,
    ChannelConfig,
    ChannelConfigError,
    ChannelDeclined,
    ChannelError,
    ChannelInvalidRequest,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    ContractRequest,
    ContractResult,
    InvalidNotification,
    Notification,
    PayoutRequest,
    PayoutResult,
    PayoutStatus,
    QueryResult,
    RefundRequest,
    RefundResult,
    RefundStatus,
    Secret,
    Statement,
    StatementLine,
    header,
    verified_body,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.stripe.com"
API_VERSION = "2024-06-20"
SIGNATURE_HEADER = "Stripe-Signature"
METADATA_KEY = "payplat_key"
PAGE_SIZE = 100
MAX_IDEMPOTENCY_KEY = 255

PAYMENT_INTENT_STATUS: Mapping[str, ChargeStatus] = MappingProxyType(
    {
        "succeeded": ChargeStatus.SUCCEEDED,
        "requires_capture": ChargeStatus.REQUIRES_CAPTURE,
        "processing": ChargeStatus.PROCESSING,
        "requires_action": ChargeStatus.PROCESSING,
        "requires_confirmation": ChargeStatus.PROCESSING,
        "requires_payment_method": ChargeStatus.FAILED,
        "canceled": ChargeStatus.CANCELED,
    }
)

REFUND_STATUS: Mapping[str, RefundStatus] = MappingProxyType(
    {
        "succeeded": RefundStatus.SUCCEEDED,
        "pending": RefundStatus.PENDING,
        "requires_action": RefundStatus.PENDING,
        "failed": RefundStatus.FAILED,
        "canceled": RefundStatus.FAILED,
    }
)

PAYOUT_STATUS: Mapping[str, PayoutStatus] = MappingProxyType(
    {
        "paid": PayoutStatus.PAID,
        "pending": PayoutStatus.PENDING,
        "in_transit": PayoutStatus.PENDING,
        "failed": PayoutStatus.FAILED,
        "canceled": PayoutStatus.FAILED,
    }
)

# Balance transaction types → StatementLine.kind; any other type (payout, adjustment, stripe_fee...) keeps
# Stripe's word.
STATEMENT_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "charge": "charge",
        "payment": "charge",
        "refund": "refund",
        "payment_refund": "refund",
        "payment_failure_refund": "refund",
    }
)

# `test_instruments` = "localstripe": Stripe's documented test payment methods → localstripe's own.
_LOCALSTRIPE_SUCCEEDS = "pm_card_visa"
_LOCALSTRIPE_DECLINES = "pm_card_chargeCustomerFail"
LOCALSTRIPE_INSTRUMENTS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "pm_card_visa",
                "pm_card_visa_debit",
                "pm_card_mastercard",
                "pm_card_mastercard_debit",
                "pm_card_mastercard_prepaid",
                "pm_card_amex",
                "pm_card_discover",
                "pm_card_diners",
                "pm_card_jcb",
                "pm_card_unionpay",
            ),
            _LOCALSTRIPE_SUCCEEDS,
        ),
        **dict.fromkeys(
            (
                "pm_card_chargeDeclined",
                "pm_card_chargeDeclinedInsufficientFunds",
                "pm_card_chargeDeclinedLostCard",
                "pm_card_chargeDeclinedStolenCard",
                "pm_card_chargeDeclinedExpiredCard",
                "pm_card_chargeDeclinedIncorrectCvc",
                "pm_card_chargeDeclinedProcessingError",
                "pm_card_chargeDeclinedFraudulent",
                "pm_card_chargeDeclinedVelocityLimitExceeded",
                # localstripe knows this one but declines it when attached, not when charged as Stripe does.
                "pm_card_visa_chargeDeclined",
                "pm_card_chargeCustomerFail",
            ),
            _LOCALSTRIPE_DECLINES,
        ),
    }
)
TEST_INSTRUMENTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"stripe": MappingProxyType({}), "localstripe": LOCALSTRIPE_INSTRUMENTS}
)

# The only values Stripe accepts for these parameters; free text goes into metadata instead.
CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

_ID = re.compile(r"^[A-Za-z0-9_]{1,255}$")


# --- pure mapping: statuses and objects ------------------------------------------------------


def to_charge_status(native: str) -> ChargeStatus:
    try:
        return PAYMENT_INTENT_STATUS[native]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Stripe PaymentIntent status {native!r}") from None


def to_refund_status(native: str) -> RefundStatus:
    try:
        return REFUND_STATUS[native]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Stripe refund status {native!r}") from None


def to_payout_status(native: str) -> PayoutStatus:
    try:
        return PAYOUT_STATUS[native]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Stripe payout status {native!r}") from None


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _id_of(value: Any) -> str | None:
    """An expandable field: Stripe sends the id, or the object when expanded."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _failure(error: Any) -> tuple[str | None, str | None]:
    """(code, message) of a PaymentIntent's last_payment_error: the decline code when there is one."""
    if not isinstance(error, Mapping):
        return None, None
    return error.get("decline_code") or error.get("code"), error.get("message")


def _amount_captured(pi: Mapping[str, Any]) -> int:
    if "amount_received" in pi:
        return _int(pi["amount_received"] or 0, "amount_received")
    charge = pi.get("latest_charge")
    if not isinstance(charge, Mapping):
        return 0
    if "amount_captured" in charge:
        return _int(charge["amount_captured"] or 0, "amount_captured")
    # localstripe's objects carry neither amount_received nor amount_captured.
    if charge.get("captured") and charge.get("status") == "succeeded":
        return _int(charge.get("amount", 0), "amount")
    return 0


def _amount_refunded(pi: Mapping[str, Any]) -> int:
    charge = pi.get("latest_charge")
    return _int(charge.get("amount_refunded") or 0, "amount_refunded") if isinstance(charge, Mapping) else 0


def next_action_of(pi: Mapping[str, Any]) -> Mapping[str, str] | None:
    action = pi.get("next_action")
    if not isinstance(action, Mapping) or not isinstance(action.get("type"), str):
        return None
    shown = {"type": action["type"]}
    redirect = action.get("redirect_to_url")
    if isinstance(redirect, Mapping) and isinstance(redirect.get("url"), str):
        shown["url"] = redirect["url"]
    return MappingProxyType(shown)


def payment_intent_summary(pi: Mapping[str, Any]) -> Mapping[str, Any]:
    """What of a PaymentIntent is safe to show and store: never its client_secret, never card details."""
    code, message = _failure(pi.get("last_payment_error"))
    metadata = pi.get("metadata")
    return MappingProxyType(
        {
            "id": pi.get("id"),
            "object": "payment_intent",
            "status": pi.get("status"),
            "amount": pi.get("amount"),
            "amount_received": pi.get("amount_received"),
            "currency": pi.get("currency"),
            "capture_method": pi.get("capture_method"),
            "latest_charge": _id_of(pi.get("latest_charge")),
            "payment_method": _id_of(pi.get("payment_method")),
            "failure_code": code,
            "failure_message": message,
            "metadata": dict(metadata) if isinstance(metadata, Mapping) else {},
            "livemode": pi.get("livemode"),
            "created": pi.get("created"),
        }
    )


def charge_result(pi: Mapping[str, Any], cls: type[ChargeResult] = ChargeResult) -> Any:
    """A PaymentIntent as our ChargeResult (or QueryResult, with what was captured and refunded)."""
    if pi.get("object", "payment_intent") != "payment_intent":
        raise ValueError(f"expected a payment_intent, got {pi.get('object')!r}")
    code, message = _failure(pi.get("last_payment_error"))
    extra = {}
    if cls is QueryResult:
        extra = {"amount_captured": _amount_captured(pi), "amount_refunded": _amount_refunded(pi)}
    return cls(
        reference=_str(pi.get("id"), "id"),
        status=to_charge_status(pi.get("status")),
        amount=_int(pi.get("amount"), "amount"),
        currency=_str(pi.get("currency"), "currency").upper(),
        failure_code=code,
        failure_message=message,
        next_action=next_action_of(pi),
        raw=payment_intent_summary(pi),
        **extra,
    )


def refund_result(refund: Mapping[str, Any], charge_reference: str) -> RefundResult:
    return RefundResult(
        reference=_str(refund.get("id"), "id"),
        charge_reference=_id_of(refund.get("payment_intent")) or charge_reference,
        status=to_refund_status(refund.get("status")),
        amount=_int(refund.get("amount"), "amount"),
        currency=_str(refund.get("currency"), "currency").upper(),
        failure_code=refund.get("failure_reason"),
        raw=_object_summary(refund),
    )


def payout_summary(payout: Mapping[str, Any]) -> Mapping[str, Any]:
    """What of a payout is safe to show and store: the destination by its id only (never the account's details)."""
    metadata = payout.get("metadata")
    keep = ("id", "status", "amount", "currency", "arrival_date", "method", "type", "failure_code", "failure_message")
    summary = {k: payout.get(k) for k in keep}
    summary |= {"object": "payout", "destination": _id_of(payout.get("destination"))}
    summary |= {"metadata": dict(metadata) if isinstance(metadata, Mapping) else {}, "livemode": payout.get("livemode")}
    return MappingProxyType(summary)


def payout_result(payout: Mapping[str, Any]) -> PayoutResult:
    if payout.get("object", "payout") != "payout":
        raise ValueError(f"expected a payout, got {payout.get('object')!r}")
    arrival = payout.get("arrival_date")
    failure_message = payout.get("failure_message")
    return PayoutResult(
        reference=_str(payout.get("id"), "id"),
        status=to_payout_status(payout.get("status")),
        amount=_int(payout.get("amount"), "amount"),
        currency=_str(payout.get("currency"), "currency").upper(),
        # A timestamp of the day's midnight, UTC: the date is what Stripe means.
        arrival_date=None if arrival is None else datetime.fromtimestamp(_int(arrival, "arrival_date"), UTC).date(),
        failure_code=payout.get("failure_code") or None,
        failure_message=failure_message if isinstance(failure_message, str) and failure_message else None,
        raw=payout_summary(payout),
    )


def _object_summary(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if obj.get("object") == "payment_intent":
        return payment_intent_summary(obj)
    keep = ("id", "object", "status", "amount", "amount_refunded", "currency", "failure_code", "failure_reason")
    summary = {k: obj[k] for k in keep if k in obj}
    for link in ("payment_intent", "charge"):
        if link in obj:
            summary[link] = _id_of(obj[link])
    return MappingProxyType(summary)


def statement_line(txn: Mapping[str, Any]) -> StatementLine:
    """One balance transaction, with its source expanded: the charge or refund it records."""
    source = txn.get("source")
    source_obj = source if isinstance(source, Mapping) else {}
    metadata = source_obj.get("metadata")
    our_reference = metadata.get(METADATA_KEY, "") if isinstance(metadata, Mapping) else ""
    charge_reference = _id_of(source_obj.get("payment_intent")) or _id_of(source) or ""
    kind = _str(txn.get("type"), "type")
    return StatementLine(
        reference=_str(txn.get("id"), "id"),
        kind=STATEMENT_KINDS.get(kind, kind),
        amount=_int(txn.get("amount"), "amount"),
        currency=_str(txn.get("currency"), "currency").upper(),
        fee=_int(txn.get("fee", 0), "fee"),
        occurred_at=datetime.fromtimestamp(_int(txn.get("created"), "created"), UTC),
        charge_reference=charge_reference,
        our_reference=our_reference if isinstance(our_reference, str) else "",
    )


def notification_from_event(event: Mapping[str, Any]) -> Notification:
    """A Stripe event as our Notification. PaymentIntent events carry the intent's status, mapped; charge,
    refund and other events carry the charge reference and amount with status None (the charge's status
    did not change). Unknown event types are still returned, so that the endpoint acknowledges them."""
    if not isinstance(event, Mapping) or event.get("object", "event") != "event":
        raise ValueError("not an event object")
    event_id, event_type = _str(event.get("id"), "id"), _str(event.get("type"), "type")
    created = _int(event.get("created"), "created")
    obj = event["data"]["object"]
    if not isinstance(obj, Mapping):
        raise ValueError("data.object must be an object")
    kind = obj.get("object")
    status = failure_code = failure_message = amount = our_reference = None
    if kind == "payment_intent":
        reference = _str(obj.get("id"), "id")
        status = to_charge_status(obj.get("status"))
        failure_code, failure_message = _failure(obj.get("last_payment_error"))
        amount = _int(obj.get("amount"), "amount")
        metadata = obj.get("metadata")
        our_reference = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    elif kind == "charge":
        reference = _id_of(obj.get("payment_intent")) or _str(obj.get("id"), "id")
        field = "amount_refunded" if event_type == "charge.refunded" else "amount"
        amount = _int(obj.get(field), field)
        failure_code = obj.get("failure_code")
    elif kind == "refund":
        reference = _id_of(obj.get("payment_intent")) or _id_of(obj.get("charge"))
        amount = _int(obj.get("amount"), "amount")
        failure_code = obj.get("failure_reason")
    else:
        reference = _id_of(obj.get("payment_intent"))
        amount = obj.get("amount") if isinstance(obj.get("amount"), int) else None
    currency = obj.get("currency")
    return Notification(
        event_id=event_id,
        type=event_type,
        reference=reference,
        status=status,
        amount=amount,
        currency=currency.upper() if isinstance(currency, str) else None,
        failure_code=failure_code,
        failure_message=failure_message if isinstance(failure_message, str) else None,
        our_reference=our_reference if isinstance(our_reference, str) and our_reference else None,
        occurred_at=datetime.fromtimestamp(created, UTC),
        raw=MappingProxyType({"id": event_id, "type": event_type, "object": _object_summary(obj)}),
    )


# --- pure mapping: requests -----------------------------------------------------------------


def encode_form(params: Mapping[str, Any], prefix: str | None = None) -> list[tuple[str, str]]:
    """Stripe's form encoding: nested keys as `metadata[k]=v`, lists as `expand[0]=…`, booleans as
    true/false; None is left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        pairs.extend(_encode_value(f"{prefix}[{key}]" if prefix else str(key), value))
    return pairs


def _encode_value(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    if isinstance(value, Mapping):
        return encode_form(value, name)
    if isinstance(value, list | tuple):
        return [pair for i, item in enumerate(value) for pair in _encode_value(f"{name}[{i}]", item)]
    return [(name, str(value))]


def derived_key(operation: str, key: str) -> str:
    """The Idempotency-Key of a follow-up operation (capture, cancel, refund): its own namespace, so that a
    key reused from the payment never collides with the charge's at Stripe."""
    derived = f"{key}:{operation}"
    if len(derived) <= MAX_IDEMPOTENCY_KEY:
        return derived
    return f"{operation}:{hashlib.sha256(key.encode()).hexdigest()}"


def browser_script_url(base_url: str | None) -> str:
    """Where a payer's browser loads Stripe.js for an account: Stripe's own for Stripe's API, else
    the stand-in a Stripe-compatible server serves beside its API (localstripe: `/js.stripe.com/v3/`)."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if base == DEFAULT_BASE_URL:
        return "https://js.stripe.com/v3/"
    return f"{base}/js.stripe.com/v3/"


def charge_form(request: ChargeRequest, *, return_url: str | None = None) -> dict[str, Any]:
    return {
        "amount": request.amount,
        "currency": request.currency.lower(),
        "payment_method": request.payment_method,
        "payment_method_types": ["card"],
        "confirm": True,
        "capture_method": str(request.capture_method),
        "description": request.description or None,
        "return_url": return_url,
        "metadata": {**request.metadata, METADATA_KEY: request.idempotency_key},
        "expand": ["latest_charge"],
    }


def payout_form(request: PayoutRequest) -> dict[str, Any]:
    return {
        "amount": request.amount,
        "currency": request.currency.lower(),
        "destination": request.destination,
        # Instant payouts cost a fee and exist only for some debit cards: never chosen for the merchant.
        "method": "standard",
        "description": request.description or None,
        "metadata": {**request.metadata, METADATA_KEY: request.idempotency_key},
    }


def search_query(key: str) -> str:
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['{METADATA_KEY}']:'{escaped}'"


def object_with_key(objects: Iterable[Any], key: str) -> Mapping[str, Any] | None:
    """The first object (a PaymentIntent, a payout) whose metadata carries our idempotency key."""
    for obj in objects:
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        if isinstance(metadata, Mapping) and metadata.get(METADATA_KEY) == key:
            return obj
    return None


# --- pure mapping: errors -------------------------------------------------------------------


class Outcome(StrEnum):
    """What a failed call means, before it becomes one of the contract's errors."""

    DECLINED = "declined"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    CONFIG = "config"


# Transport failures raised before a single byte of the request could reach Stripe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)


def transport_outcome(exc: httpx.HTTPError, *, moves_money: bool) -> Outcome:
    if isinstance(exc, _NOT_SENT):
        return Outcome.UNAVAILABLE
    return Outcome.UNKNOWN if moves_money else Outcome.UNAVAILABLE


def http_outcome(status: int, error_type: str | None, *, moves_money: bool) -> Outcome:
    """The error table for an HTTP answer that is not a success (see the module's docstring)."""
    if status == 402 or error_type == "card_error":
        return Outcome.DECLINED
    if status in (401, 403):
        return Outcome.CONFIG
    if status == 429:
        return Outcome.UNAVAILABLE
    if status == 409 or status >= 500:
        return Outcome.UNKNOWN if moves_money else Outcome.UNAVAILABLE
    return Outcome.INVALID


def stripe_error(body: Any) -> Mapping[str, Any]:
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


# --- the adapter ----------------------------------------------------------------------------


class _Bearer(httpx.Auth):
    """The secret key goes into the Authorization header of one request, and nowhere else."""

    def __init__(self, key: Secret):
        self._key = key

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        yield request


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the process's HTTP connections -----------------------------------------------------------

USER_AGENT = "payplat-stripe/1"
MAX_CONNECTIONS = 100  # per transport: above gunicorn's threads per worker, so a burst never waits for a socket
MAX_KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY_S = 30.0
POOL_SIZE = 32  # distinct transports kept; the least recently used one past that is closed once idle


@dataclass(frozen=True)
class Transport:
    """Where and how to connect: what a pooled client is keyed by. Never who calls: no credential, no account."""

    base_url: str
    connect_timeout_s: float
    read_timeout_s: float
    max_connections: int = MAX_CONNECTIONS
    max_keepalive_connections: int = MAX_KEEPALIVE_CONNECTIONS

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                connect=self.connect_timeout_s,
                read=self.read_timeout_s,
                write=self.read_timeout_s,
                pool=self.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_keepalive_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
            headers={"User-Agent": USER_AGENT},
            # The client serves every account with this transport: a cookie one account's call got must never
            # ride along on another's, so none is kept.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            follow_redirects=False,
        )


class _Pooled:
    __slots__ = ("client", "users", "retired")

    def __init__(self, client: httpx.Client):
        self.client = client
        self.users = 0
        self.retired = False


class ClientPool:
    """The process's `httpx.Client`s, one per `Transport`, shared by every adapter and thread of the process
    (httpx clients are thread-safe), so that payments reuse kept-alive connections. A client is leased for one
    call: one retired (evicted, or by `clear`) while in use closes when its last call ends.

    A forked child (gunicorn workers, RQ's work horses) starts empty: the parent's clients hold the parent's
    sockets, which the child must neither use nor close."""

    def __init__(self, size: int = POOL_SIZE):
        self.size = size
        # The parent's clients, in a forked child: kept referenced, never used, since collecting them would close
        # the parent's sockets.
        self._inherited: list[OrderedDict[Transport, _Pooled]] = []
        self._start()

    def _start(self) -> None:
        # A lock some other thread of the parent held at fork time stays locked in the child: a new one.
        self._lock = threading.Lock()
        self._entries: OrderedDict[Transport, _Pooled] = OrderedDict()
        self._pid = os.getpid()

    def after_fork(self) -> None:
        self._inherited.append(self._entries)
        self._start()

    @contextmanager
    def lease(self, transport: Transport) -> Iterator[httpx.Client]:
        if self._pid != os.getpid():  # forked without os.fork's hooks (a C extension's fork)
            self.after_fork()
        evicted = []
        with self._lock:
            entry = self._entries.get(transport)
            if entry is None:
                entry = self._entries[transport] = _Pooled(transport.client())
                while len(self._entries) > self.size:
                    evicted.append(self._retire(self._entries.popitem(last=False)[1]))
            else:
                self._entries.move_to_end(transport)
            entry.users += 1
        self._close(evicted)
        try:
            yield entry.client
        finally:
            with self._lock:
                entry.users -= 1
                done = entry.retired and entry.users == 0
            self._close([entry] if done else [])

    def clear(self) -> None:
        """Retire every client: idle ones close now, busy ones when their calls end; the next call opens anew."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            idle = [self._retire(entry) for entry in entries]
        self._close(idle)

    def transports(self) -> list[Transport]:
        with self._lock:
            return list(self._entries)

    @staticmethod
    def _retire(entry: _Pooled) -> _Pooled | None:
        entry.retired = True
        return entry if entry.users == 0 else None

    @staticmethod
    def _close(entries: list[_Pooled | None]) -> None:
        for entry in entries:
            if entry is not None:
                entry.client.close()


CLIENTS = ClientPool()
os.register_at_fork(after_in_child=CLIENTS.after_fork)


class StripeAdapter(ChannelAdapter):
    type_name = "stripe"
    label = "Stripe"
    capabilities = Capabilities(
        products=frozenset({"card"}),
        manual_capture=True,
        cancel=True,
        refunds=True,
        payouts=True,
        contracts=False,  # Stripe has no agreement to sign: see sign_contract
        notifications=True,
        statements=True,
    )

    def __init__(self, config: ChannelConfig, *, clock: Callable[[], datetime] = _utcnow):
        super().__init__(config)
        self._clock = clock
        self.base_url = self._base_url()
        self.connect_timeout_s = self._number("connect_timeout_s", 3.0)
        self.read_timeout_s = self._number("read_timeout_s", 20.0)
        self.query_scan_limit = self._whole("query_scan_limit", 1000)
        self.notification_tolerance_s = self._whole("notification_tolerance_s", 300)
        self.api_version = self._text("api_version", API_VERSION)
        self.return_url = self._text("return_url", None)
        self.test_instruments = self._text("test_instruments", "stripe")
        if self.test_instruments not in TEST_INSTRUMENTS:
            raise self._bad_setting("test_instruments", f"one of {', '.join(TEST_INSTRUMENTS)}", self.test_instruments)
        self.transport = Transport(
            base_url=self.base_url, connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.read_timeout_s
        )

    # --- settings ---

    def _bad_setting(self, name: str, wanted: str, value: Any) -> ChannelConfigError:
        return ChannelConfigError(
            f"channel {self.channel}: setting {name} must be {wanted}, got {value!r}; "
            f"fix it in Console → Channels → {self.config.name}",
            channel=self.channel,
        )

    def _number(self, name: str, default: float) -> float:
        value = self.config.settings.get(name, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 600:
            raise self._bad_setting(name, "a number of seconds between 0 and 600", value)
        return float(value)

    def _whole(self, name: str, default: int) -> int:
        value = self.config.settings.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._bad_setting(name, "a whole number of at least 1", value)
        return value

    def _text(self, name: str, default: str | None) -> str | None:
        value = self.config.settings.get(name, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self._bad_setting(name, "a non-empty text", value)
        return value

    def _base_url(self) -> str:
        value = self.config.settings.get("base_url", DEFAULT_BASE_URL)
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise self._bad_setting("base_url", "an http(s) URL such as https://api.stripe.com", value)
        if self.config.livemode and parts.scheme != "https":
            raise self._bad_setting("base_url", "an https URL in live mode", value)
        return value.rstrip("/")

    def _scrub(self, text: str) -> str:
        """Text from Stripe or from the network stack, with any credential of this account masked."""
        for secret in self.config.credentials.values():
            if secret and secret.reveal() in text:
                text = text.replace(secret.reveal(), secret.masked)
        return text

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        query_key: str | None = None,
    ) -> Mapping[str, Any]:
        """One call to Stripe: the decoded object, or the contract's error for whatever went wrong.

        `query_key` is the key a `ChannelTimeout` names, the one the caller queries by (default: the
        Idempotency-Key sent)."""
        moves_money = method == "POST"
        timeout_key = query_key or idempotency_key
        auth = _Bearer(self.credential("secret_key"))
        pairs = encode_form(params or {})
        # Everything that belongs to the account travels with the request: the client is shared (see CLIENTS).
        headers = {"Stripe-Version": self.api_version}
        started = time.monotonic()
        try:
            with CLIENTS.lease(self.transport) as client:
                if moves_money:
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                    if idempotency_key:
                        headers["Idempotency-Key"] = idempotency_key
                    response = client.post(path, content=urlencode(pairs).encode(), headers=headers, auth=auth)
                else:
                    response = client.get(path, params=pairs, headers=headers, auth=auth)
        except httpx.HTTPError as exc:
            outcome = transport_outcome(exc, moves_money=moves_money)
            reason = self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            log.warning(
                "stripe %s %s failed after %.0f ms (%s): %s", method, path, _ms(started), self.config.id, reason
            )
            raise self._error(outcome, operation, reason=reason, idempotency_key=timeout_key) from None
        log.info(
            "stripe %s %s -> %s in %.0f ms (request %s, channel %s)",
            method,
            path,
            response.status_code,
            _ms(started),
            response.headers.get("Request-Id", "-"),
            self.config.id,
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if isinstance(body, Mapping):
                return body
            outcome = Outcome.UNKNOWN if moves_money else Outcome.UNAVAILABLE
            reason = f"an unreadable {response.status_code} answer"
            raise self._error(outcome, operation, reason=reason, idempotency_key=timeout_key)
        error = stripe_error(body)
        outcome = http_outcome(response.status_code, error.get("type"), moves_money=moves_money)
        raise self._error(
            outcome,
            operation,
            reason=f"HTTP {response.status_code}",
            error=error,
            status=response.status_code,
            idempotency_key=timeout_key,
        )

    def _error(
        self,
        outcome: Outcome,
        operation: str,
        *,
        reason: str,
        error: Mapping[str, Any] | None = None,
        status: int | None = None,
        idempotency_key: str | None = None,
    ) -> ChannelError:
        error = error or {}
        message = self._scrub(str(error.get("message") or "")).rstrip(".")
        said = f": {message}" if message else ""
        channel = self.channel
        if outcome is Outcome.DECLINED:
            code = error.get("decline_code") or error.get("code") or "card_declined"
            return ChannelDeclined(
                f"channel {channel} declined the {operation}{said}",
                channel=channel,
                decline_code=str(code),
                reference=_id_of(error.get("payment_intent")),
            )
        if outcome is Outcome.CONFIG:
            key = self.config.credentials.get("secret_key")
            if status == 403:
                fix = f"the key {key} may not make a {operation} (Stripe answered 403): use a secret key or grant"
                fix += " the permission to this restricted key"
            else:
                fix = f"the secret key {key} was refused by Stripe"
            return ChannelConfigError(
                f"channel {channel}: {fix}: update it in Console → Channels → {self.config.name}", channel=channel
            )
        if outcome is Outcome.UNAVAILABLE:
            return ChannelUnavailable(
                f"channel {channel}: Stripe did not run the {operation} ({reason}{said}); nothing was done",
                channel=channel,
            )
        if outcome is Outcome.UNKNOWN:
            return ChannelTimeout(
                f"channel {channel}: no usable answer from Stripe to the {operation} ({reason}{said}); "
                "the outcome is unknown until queried",
                channel=channel,
                idempotency_key=idempotency_key or "",
            )
        code = error.get("code") or ("idempotency_key_reused" if error.get("type") == "idempotency_error" else None)
        return ChannelInvalidRequest(
            f"channel {channel}: Stripe refused the {operation} ({reason}){said}",
            channel=channel,
            code=str(code or ("resource_missing" if status == 404 else "invalid_request")),
        )

    def _read(self, mapping: Callable[..., Any], obj: Any, *args, operation: str, idempotency_key: str | None = None):
        """Apply a mapping function to Stripe's answer; an answer we cannot read is an error, not a guess."""
        try:
            return mapping(obj, *args)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            outcome = Outcome.UNKNOWN if idempotency_key is not None else Outcome.UNAVAILABLE
            reason = f"an answer we cannot read: {self._scrub(str(exc))}"
            raise self._error(outcome, operation, reason=reason, idempotency_key=idempotency_key) from None

    def _path_id(self, reference: str, what: str) -> str:
        if not isinstance(reference, str) or not _ID.match(reference):
            raise ChannelInvalidRequest(
                f"channel {self.channel}: {reference!r} is not a Stripe {what} id",
                channel=self.channel,
                code="resource_missing",
            )
        return reference

    # --- the contract ---

    def test_instrument(self, payment_method: str) -> str:
        if self.config.livemode:  # a live account never gets a test method swapped in
            return payment_method
        return TEST_INSTRUMENTS[self.test_instruments].get(payment_method, payment_method)

    def check_credentials(self) -> None:
        balance = self._call("GET", "/v1/balance", operation="credential check")
        livemode = balance.get("livemode")
        if isinstance(livemode, bool) and livemode != self.config.livemode:
            key = self.config.credentials.get("secret_key")
            wanted, got = ("live", "test") if self.config.livemode else ("test", "live")
            raise ChannelConfigError(
                f"channel {self.channel} is in {wanted} mode but its secret key {key} is a {got} key: "
                f"set a {wanted} key in Console → Channels → {self.config.name}",
                channel=self.channel,
            )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.check_charge_request(request)
        if not request.payment_method:
            raise ChannelInvalidRequest(
                f"channel {self.channel}: a card charge needs the payment method Stripe tokenised",
                channel=self.channel,
                code="missing_elements",
            )
        key = request.idempotency_key
        pi = self._call(
            "POST",
            "/v1/payment_intents",
            params=charge_form(request, return_url=self.return_url),
            idempotency_key=key,
            operation="charge",
        )
        result = self._read(charge_result, pi, operation="charge", idempotency_key=key)
        if result.status in (ChargeStatus.FAILED, ChargeStatus.CANCELED):
            raise ChannelDeclined(
                f"channel {self.channel} declined the charge: {result.failure_message or result.status}",
                channel=self.channel,
                decline_code=result.failure_code or str(result.status),
                reference=result.reference,
            )
        return result

    def query(self, reference: str | None = None, *, idempotency_key: str | None = None) -> QueryResult:
        if (reference is None) == (idempotency_key is None):
            raise ValueError("query needs exactly one of reference or idempotency_key")
        if reference is not None:
            pi = self._call(
                "GET",
                f"/v1/payment_intents/{self._path_id(reference, 'PaymentIntent')}",
                params={"expand": ["latest_charge"]},
                operation="query",
            )
        else:
            pi = self._find_by_key(idempotency_key)
        return self._read(charge_result, pi, QueryResult, operation="query")

    def _scan_for_key(
        self, path: str, key: str, *, operation: str, expand: list[str] | None = None
    ) -> tuple[Mapping[str, Any] | None, int, bool]:
        """Page through a list, newest first, for the object whose metadata carries our key, up to
        `query_scan_limit` objects: (the object or None, how many were scanned, whether the list ended)."""
        scanned, cursor = 0, None
        while scanned < self.query_scan_limit:
            page = self._call(
                "GET",
                path,
                params={
                    "limit": min(PAGE_SIZE, self.query_scan_limit - scanned),
                    "starting_after": cursor,
                    "expand": expand,
                },
                operation=operation,
            )
            items = self._read(_page_data, page, operation=operation)
            found = object_with_key(items, key)
            if found is not None:
                return found, scanned + len(items), False
            scanned += len(items)
            if not page.get("has_more") or not items:
                return None, scanned, True
            cursor = self._read(_last_id, items, operation=operation)
        return None, scanned, False

    def _find_by_key(self, key: str) -> Mapping[str, Any]:
        found, scanned, complete = self._scan_for_key(
            "/v1/payment_intents", key, operation="query", expand=["data.latest_charge"]
        )
        if found is not None:
            return found
        if complete:
            raise self._never_taken(key, f"none of the {scanned} payment intents on the account carries it")
        # Old enough to have left the newest intents, so old enough for the (eventually consistent) search index.
        page = self._call(
            "GET",
            "/v1/payment_intents/search",
            params={"query": search_query(key), "limit": 1, "expand": ["data.latest_charge"]},
            operation="query",
        )
        found = object_with_key(self._read(_page_data, page, operation="query"), key)
        if found is None:
            raise self._never_taken(key, f"not among the newest {scanned} payment intents, nor found by search")
        return found

    def _never_taken(self, key: str, why: str) -> ChannelInvalidRequest:
        return ChannelInvalidRequest(
            f"channel {self.channel}: no charge was made with idempotency key {key!r} ({why}): Stripe never took it",
            channel=self.channel,
            code="resource_missing",
        )

    def capture(self, request: CaptureRequest) -> ChargeResult:
        reference = self._path_id(request.reference, "PaymentIntent")
        key = derived_key("capture", request.idempotency_key)
        pi = self._call(
            "POST",
            f"/v1/payment_intents/{reference}/capture",
            params={"amount_to_capture": request.amount, "expand": ["latest_charge"]},
            idempotency_key=key,
            operation="capture",
        )
        return self._read(charge_result, pi, operation="capture", idempotency_key=key)

    def cancel(self, request: CancelRequest) -> ChargeResult:
        reference = self._path_id(request.reference, "PaymentIntent")
        key = derived_key("cancel", request.idempotency_key)
        reason = request.reason if request.reason in CANCELLATION_REASONS else None
        pi = self._call(
            "POST",
            f"/v1/payment_intents/{reference}/cancel",
            params={"cancellation_reason": reason, "expand": ["latest_charge"]},
            idempotency_key=key,
            operation="cancel",
        )
        return self._read(charge_result, pi, operation="cancel", idempotency_key=key)

    def refund(self, request: RefundRequest) -> RefundResult:
        reference = self._path_id(request.reference, "PaymentIntent")
        key = derived_key("refund", request.idempotency_key)
        metadata = {**request.metadata, METADATA_KEY: request.idempotency_key}
        reason = None
        if request.reason in REFUND_REASONS:
            reason = request.reason
        elif request.reason:
            metadata["payplat_reason"] = request.reason[:500]
        refund = self._call(
            "POST",
            "/v1/refunds",
            params={"payment_intent": reference, "amount": request.amount, "reason": reason, "metadata": metadata},
            idempotency_key=key,
            operation="refund",
        )
        return self._read(refund_result, refund, reference, operation="refund", idempotency_key=key)

    def payout(self, request: PayoutRequest) -> PayoutResult:
        # A timeout names our key (what query_payout takes), not the derived one Stripe receives.
        ours, key = request.idempotency_key, derived_key("payout", request.idempotency_key)
        payout = self._call(
            "POST", "/v1/payouts", params=payout_form(request), idempotency_key=key, query_key=ours, operation="payout"
        )
        return self._read(payout_result, payout, operation="payout", idempotency_key=ours)

    def query_payout(self, reference: str | None = None, *, idempotency_key: str | None = None) -> PayoutResult:
        if (reference is None) == (idempotency_key is None):
            raise ValueError("query_payout needs exactly one of reference or idempotency_key")
        if reference is not None:
            payout = self._call("GET", f"/v1/payouts/{self._path_id(reference, 'payout')}", operation="payout query")
        else:
            payout = self._find_payout_by_key(idempotency_key)
        return self._read(payout_result, payout, operation="payout query")

    def _find_payout_by_key(self, key: str) -> Mapping[str, Any]:
        found, scanned, complete = self._scan_for_key("/v1/payouts", key, operation="payout query")
        if found is not None:
            return found
        if complete:
            raise ChannelInvalidRequest(
                f"channel {self.channel}: no payout was made with idempotency key {key!r} (none of the {scanned} "
                "payouts on the account carries it): Stripe never received it",
                channel=self.channel,
                code="resource_missing",
            )
        # Stripe has no search for payouts: an older payout may carry the key, so "never received" is not known.
        raise ChannelInvalidRequest(
            f"channel {self.channel}: no payout among the newest {scanned} carries idempotency key {key!r}, and "
            "Stripe cannot search payouts, so whether it was made is unknown: raise query_scan_limit in Console → "
            f"Channels → {self.config.name}, or find metadata payplat_key in Stripe's Dashboard",
            channel=self.channel,
            code="query_scan_limit_reached",
        )

    def sign_contract(self, request: ContractRequest) -> ContractResult:
        from payments.channels import ADAPTERS  # the registry imports this module

        signers = sorted(name for name, adapter in ADAPTERS.items() if adapter.capabilities.contracts)
        error = self.not_supported("contract signing")
        error.message += (
            ": Stripe has no payment agreement to sign (its nearest equivalent, a card saved with a SetupIntent for "
            "later off-session charges, is not offered through this channel); sign the agreement through a "
            f"channel of a type that signs contracts ({', '.join(signers) or 'none yet'})"
        )
        error.args = (error.message,)
        raise error

    def fetch_statement(self, day: date) -> Statement:
        """The day's balance transactions (UTC day, by creation): charges positive, refunds negative, Stripe's
        fee on each line; `our_reference` is the payplat_key Stripe copied from the PaymentIntent to its charge,
        or the one we set on the refund."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        lines: list[StatementLine] = []
        cursor = None
        while True:
            page = self._call(
                "GET",
                "/v1/balance_transactions",
                params={
                    "created": {"gte": int(start.timestamp()), "lt": int(end.timestamp())},
                    "limit": PAGE_SIZE,
                    "starting_after": cursor,
                    "expand": ["data.source"],
                },
                operation="statement download",
            )
            transactions = self._read(_page_data, page, operation="statement download")
            for txn in transactions:
                line = self._read(statement_line, txn, operation="statement download")
                if start <= line.occurred_at < end:
                    lines.append(line)
            if not page.get("has_more") or not transactions:
                break
            last = self._read(_last_id, transactions, operation="statement download")
            if last == cursor:
                raise self._error(Outcome.UNAVAILABLE, "statement download", reason="paging did not advance")
            cursor = last
        lines.sort(key=lambda line: (line.occurred_at, line.reference))
        return Statement(channel_id=self.config.id, day=day, lines=tuple(lines))

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        body = verified_body(
            self.channel,
            self.credential("webhook_secret"),
            header(headers, SIGNATURE_HEADER),
            body,
            now=self._clock().timestamp(),
            tolerance=self.notification_tolerance_s,
        )
        try:
            return notification_from_event(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidNotification(
                f"notification for channel {self.channel} is not a Stripe event: {self._scrub(str(exc))}",
                channel=self.channel,
            ) from None


def _page_data(page: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = page["data"]
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise ValueError("a list's data must be a list of objects")
    return data


def _last_id(items: list[Mapping[str, Any]]) -> str:
    return _str(items[-1].get("id"), "id")


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
