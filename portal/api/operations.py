"""What the merchant API does: one table of operations (method, URL rule, parameters, what it
returns, the handler), from which the routes are registered and the OpenAPI document is built.

A handler receives the caller's `MerchantContext` (from the API key), the validated
parameters and the URL's values; it calls one use case of the payment core and returns the
Stripe-shaped object. Use cases raise `PaymentError`s, which are already Stripe errors.
Everything is scoped to the key's merchant and mode: another merchant's or tenant's id is
"No such ..." (404 resource_missing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app, g, request

from core.db import db
from payments import (
    balance_operations,
    balance_transactions,
    intents,
    objects,
    orders,
    payer_details,
    refunds,
    webhooks,
)
from payments import products as catalogue
from payments.errors import InvalidRequest, NotFound
from payments.intents import MerchantContext
from payments.models import (
    BALANCE_TRANSACTION_TYPES,
    BalanceTransaction,
    Event,
    PaymentIntent,
    Payout,
    Refund,
    Topup,
    Transfer,
)
from payments.refunds import REASONS
from payments.webhooks import WebhookEndpoint
from portal.api import idempotency
from portal.api.params import Boolean, Integer, Metadata, Object, ObjectList, Param, Range, String, StringList
from tenants.audit import Actor

# --- shared parameters --------------------------------------------------------------------------

EXPAND = Param(StringList(), description="Fields to expand. No field of these objects is expandable yet.")
LIST_PARAMS = {
    "limit": Param(
        Integer(minimum=1, maximum=100), description="How many objects to return, between 1 and 100 (default 10)."
    ),
    "starting_after": Param(String(), description="An object id: the page of objects older than it."),
    "ending_before": Param(String(), description="An object id: the page of objects newer than it."),
    "created": Param(Range(), description="Only objects created at (or gt/gte/lt/lte) this Unix time."),
    "expand": EXPAND,
}
METADATA = Param(Metadata(), description="Key-value pairs to store on the object (merged on update).")
AMOUNT = Integer(minimum=1, maximum=intents.MAX_AMOUNT)
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")


@dataclass(frozen=True)
class Operation:
    method: str  # GET | POST | DELETE
    rule: str  # under /v1, in Flask's syntax: "/payment_intents/<intent>"
    endpoint: str
    summary: str
    handler: Callable[..., dict[str, Any]]
    returns: str  # a schema of the OpenAPI document: "payment_intent", "list:refund", ...
    params: dict[str, Param] = field(default_factory=dict)
    authenticated: bool = True
    path_params: dict[str, str] = field(default_factory=dict)  # URL value -> description

    @property
    def path(self) -> str:
        return "/v1" + self.rule


# --- helpers ------------------------------------------------------------------------------------


def _moment(seconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest(f"Invalid timestamp: {seconds}", param="created") from None


def created_filters(model, created: dict[str, int] | None) -> list:
    """`created` in Unix seconds against a microsecond column: `created[lte]=T` takes all of second T."""
    if not created:
        return []
    column, second = model.created_at, timedelta(seconds=1)
    conditions = []
    for bound, value in created.items():
        start = _moment(value)
        if bound == "eq":
            conditions += [column >= start, column < start + second]
        elif bound == "gt":
            conditions.append(column >= start + second)
        elif bound == "gte":
            conditions.append(column >= start)
        elif bound == "lt":
            conditions.append(column < start)
        elif bound == "lte":
            conditions.append(column < start + second)
    return conditions


def _exclusive(params: dict[str, Any], *names: str) -> None:
    given = [name for name in names if params.get(name)]
    if len(given) > 1:
        raise InvalidRequest(
            f"You may only specify one of these parameters: {', '.join(given)}.",
            code="parameters_exclusive",
            param=given[-1],
        )


def list_of(ctx: MerchantContext, model, serialize, params: dict[str, Any], filters=()) -> dict[str, Any]:
    _exclusive(params, "starting_after", "ending_before")
    rows, has_more = intents.page(
        ctx,
        model,
        limit=params.get("limit", 10),
        starting_after=params.get("starting_after") or None,
        ending_before=params.get("ending_before") or None,
        filters=[*filters, *created_filters(model, params.get("created"))],
    )
    return {"object": "list", "data": [serialize(row) for row in rows], "has_more": has_more, "url": request.path}


# --- PaymentIntents -----------------------------------------------------------------------------


def _payer_details(p: dict[str, Any]) -> dict[str, Any]:
    """The payer details a request sends, in the parts `payer_details.merge_payer_details` takes.
    `payment_method_data[type]` only names the kind of payment method (Stripe requires it): the
    payment method itself is `payment_method`."""
    given = {name: p[name] for name in ("receipt_email", "shipping", "payer") if name in p}
    if "payment_method_data" in p:
        given["billing_details"] = p["payment_method_data"].get("billing_details") or {}
    return given


def create_payment_intent(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    _exclusive(p, "automatic_payment_methods", "payment_method_types")
    fields = {
        "payment_method": p.get("payment_method") or None,
        "capture_method": p.get("capture_method", "automatic"),
        "confirm": p.get("confirm", False),
        "description": p.get("description") or None,
        "metadata": p.get("metadata"),
        "payer_details": _payer_details(p),
        "return_url": p.get("return_url"),
    }
    if "line_items" in p:
        return objects.payment_intent(_create_order(ctx, p, fields))
    if p.get("coupon"):
        raise InvalidRequest(
            "A coupon applies to line_items: give the order's line_items (charge items and quantities) with it.",
            param="coupon",
        )
    for name in ("amount", "currency"):
        if name not in p:
            raise InvalidRequest(
                f"Missing required param: {name}. Give amount and currency, or line_items to compute them.",
                code="parameter_missing",
                param=name,
            )
    pi = intents.create(
        ctx,
        amount=p["amount"],
        currency=p["currency"],
        payment_method_types=p.get("payment_method_types") or None,
        **fields,
    )
    return objects.payment_intent(pi)


def _create_order(ctx: MerchantContext, p: dict[str, Any], fields: dict[str, Any]):
    """A PaymentIntent for charge items: the amount is computed here (a given amount must equal it)."""
    wanted = [
        orders.ItemRequest(item["charge_item"], item.get("quantity", 1), f"line_items[{index}]")
        for index, item in enumerate(p["line_items"])
    ]
    lines, currency, allowed = orders.lines_from_items(ctx.tenant_id, ctx.merchant_id, wanted)
    if "currency" in p and p["currency"].strip().upper() != currency:
        raise InvalidRequest(
            f"currency ({p['currency']}) does not match the line items' currency ({currency.lower()}); "
            "leave currency out to have it taken from them.",
            param="currency",
        )
    types = p.get("payment_method_types") or None
    if types and allowed is not None:
        refused = [t for t in types if t not in allowed]
        if refused:
            raise InvalidRequest(
                f"The line items cannot be paid with {refused[0]}; they take {', '.join(allowed)}.",
                code="payment_method_unavailable",
                param="payment_method_types",
            )
    return orders.create_order(
        ctx,
        lines,
        currency,
        coupon_code=p.get("coupon") or None,
        payer_email=p.get("receipt_email") or None,
        payment_method_types=types or allowed,
        expected_amount=p.get("amount"),
        **fields,
    )


def list_payment_intents(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, PaymentIntent, objects.payment_intent, p)


def retrieve_payment_intent(ctx: MerchantContext, p: dict[str, Any], intent: str) -> dict[str, Any]:
    return objects.payment_intent(intents.get(ctx, intent))


def update_payment_intent(ctx: MerchantContext, p: dict[str, Any], intent: str) -> dict[str, Any]:
    fields = {
        name: p[name]
        for name in (
            "amount",
            "currency",
            "description",
            "metadata",
            "payment_method",
            "payment_method_types",
            "return_url",
        )
        if name in p
    }
    return objects.payment_intent(intents.update(ctx, intent, **fields, payer_details=_payer_details(p)))


def confirm_payment_intent(ctx: MerchantContext, p: dict[str, Any], intent: str) -> dict[str, Any]:
    pi = intents.confirm_intent(
        ctx,
        intent,
        payment_method=p.get("payment_method") or None,
        payer_details=_payer_details(p),
        return_url=p.get("return_url"),
    )
    return objects.payment_intent(pi)


def capture_payment_intent(ctx: MerchantContext, p: dict[str, Any], intent: str) -> dict[str, Any]:
    return objects.payment_intent(intents.capture(ctx, intent, amount_to_capture=p.get("amount_to_capture")))


def cancel_payment_intent(ctx: MerchantContext, p: dict[str, Any], intent: str) -> dict[str, Any]:
    return objects.payment_intent(intents.cancel(ctx, intent, cancellation_reason=p.get("cancellation_reason")))


# --- refunds, balance, events -------------------------------------------------------------------


def create_refund(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    refund = refunds.create(
        ctx,
        payment_intent=p["payment_intent"],
        amount=p.get("amount"),
        reason=p.get("reason"),
        metadata=p.get("metadata"),
        actor=_key_actor(),
    )
    return objects.refund(refund)


def list_refunds(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    filters = [Refund.payment_intent_id == p["payment_intent"]] if p.get("payment_intent") else []
    return list_of(ctx, Refund, objects.refund, p, filters)


def retrieve_refund(ctx: MerchantContext, p: dict[str, Any], refund: str) -> dict[str, Any]:
    return objects.refund(refunds.get_refund(ctx, refund))


def retrieve_balance(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return refunds.balance(ctx)


def _event_types(p: dict[str, Any]) -> list:
    """`type=payment_intent.succeeded`, `type=payment_intent.*` (a trailing wildcard), or `types[]=…`."""
    _exclusive(p, "type", "types")
    wanted = [p["type"]] if p.get("type") else p.get("types") or []
    conditions = []
    for name in wanted:
        if name.endswith("*"):
            prefix = name[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(Event.type.like(prefix + "%", escape="\\"))
        else:
            conditions.append(Event.type == name)
    return [sa.or_(*conditions)] if conditions else []


def list_events(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, Event, objects.event, p, _event_types(p))


def retrieve_event(ctx: MerchantContext, p: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002 - Stripe's name
    event = db.session.execute(
        sa.select(Event).where(
            Event.tenant_id == ctx.tenant_id,
            Event.merchant_id == ctx.merchant_id,
            Event.livemode == ctx.livemode,
            Event.id == id,
        )
    ).scalar_one_or_none()
    if event is None:
        raise NotFound("event", id, param="id")
    return objects.event(event)


# --- balance transactions, top-ups, transfers, payouts -----------------------------------------


def list_balance_transactions(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    filters = []
    if p.get("type"):
        filters.append(BalanceTransaction.type == p["type"])
    if p.get("source"):
        filters.append(BalanceTransaction.source == p["source"])
    return list_of(ctx, BalanceTransaction, balance_transactions.to_object, p, filters)


def retrieve_balance_transaction(ctx: MerchantContext, p: dict[str, Any], id: str) -> dict[str, Any]:  # noqa: A002
    return balance_transactions.to_object(balance_operations.get_balance_transaction(ctx, id))


def create_topup(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    topup = balance_operations.create_topup(
        ctx,
        amount=p["amount"],
        currency=p["currency"],
        source=p.get("source"),
        description=p.get("description"),
        metadata=p.get("metadata"),
        statement_descriptor=p.get("statement_descriptor"),
        actor=_key_actor(),
    )
    return balance_operations.topup_object(topup)


def list_topups(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, Topup, balance_operations.topup_object, p)


def retrieve_topup(ctx: MerchantContext, p: dict[str, Any], topup: str) -> dict[str, Any]:
    return balance_operations.topup_object(balance_operations.get_topup(ctx, topup))


def create_transfer(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    transfer = balance_operations.create_transfer(
        ctx,
        amount=p["amount"],
        currency=p["currency"],
        destination=p["destination"],
        description=p.get("description"),
        metadata=p.get("metadata"),
        actor=_key_actor(),
    )
    return balance_operations.transfer_object(transfer)


def list_transfers(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, Transfer, balance_operations.transfer_object, p)


def retrieve_transfer(ctx: MerchantContext, p: dict[str, Any], transfer: str) -> dict[str, Any]:
    return balance_operations.transfer_object(balance_operations.get_transfer(ctx, transfer))


def create_payout(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    payout = balance_operations.create_payout(
        ctx,
        amount=p["amount"],
        currency=p["currency"],
        description=p.get("description"),
        metadata=p.get("metadata"),
        actor=_key_actor(),
    )
    return balance_operations.payout_object(payout)


def list_payouts(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, Payout, balance_operations.payout_object, p)


def retrieve_payout(ctx: MerchantContext, p: dict[str, Any], payout: str) -> dict[str, Any]:
    return balance_operations.payout_object(balance_operations.get_payout(ctx, payout))


def cancel_payout(ctx: MerchantContext, p: dict[str, Any], payout: str) -> dict[str, Any]:
    return balance_operations.payout_object(balance_operations.cancel_payout(ctx, payout, _key_actor()))


# --- webhook endpoints --------------------------------------------------------------------------


def _key_actor() -> Actor:
    """Who the audit log names for an API call: the API key (its id; none for a terminal's device
    key), not a person. (`user` is for people who signed in; the key's creator did not make this
    call.)"""
    return Actor.api_key(g.get("api_key_id"), ip=request.remote_addr)


def _allow_private() -> bool:
    from portal.merchant.webhooks import allow_private_urls  # the dashboard's rule, one place

    return allow_private_urls(current_app.config)


def _endpoint(ctx: MerchantContext, endpoint_id: str) -> WebhookEndpoint:
    try:
        return webhooks.get_endpoint(ctx.tenant_id, ctx.merchant_id, endpoint_id, livemode=ctx.livemode)
    except NotFound:
        raise NotFound("webhook_endpoint", endpoint_id, param="webhook_endpoint") from None


def create_webhook_endpoint(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    endpoint, secret = webhooks.create_endpoint(
        ctx.tenant_id,
        ctx.merchant_id,
        ctx.livemode,
        p["url"],
        p["enabled_events"],
        _key_actor(),
        description=p.get("description"),
        metadata=p.get("metadata"),
        allow_private=_allow_private(),
    )
    return webhooks.endpoint_object(endpoint, secret)


def list_webhook_endpoints(ctx: MerchantContext, p: dict[str, Any]) -> dict[str, Any]:
    return list_of(ctx, WebhookEndpoint, webhooks.endpoint_object, p)


def retrieve_webhook_endpoint(ctx: MerchantContext, p: dict[str, Any], webhook_endpoint: str) -> dict[str, Any]:
    return webhooks.endpoint_object(_endpoint(ctx, webhook_endpoint))


def update_webhook_endpoint(ctx: MerchantContext, p: dict[str, Any], webhook_endpoint: str) -> dict[str, Any]:
    endpoint = webhooks.update_endpoint(
        _endpoint(ctx, webhook_endpoint),
        _key_actor(),
        url=p.get("url"),
        enabled_events=p.get("enabled_events"),
        description=p.get("description"),
        metadata=p.get("metadata"),
        disabled=p.get("disabled"),
        allow_private=_allow_private(),
    )
    return webhooks.endpoint_object(endpoint)


def delete_webhook_endpoint(ctx: MerchantContext, p: dict[str, Any], webhook_endpoint: str) -> dict[str, Any]:
    endpoint = _endpoint(ctx, webhook_endpoint)
    webhooks.delete_endpoint(endpoint, _key_actor())
    return {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}


def openapi_document(ctx: MerchantContext | None, p: dict[str, Any]) -> dict[str, Any]:
    return _openapi_for(request.url_root.rstrip("/"))


@functools.lru_cache(maxsize=64)
def _openapi_for(server_url: str) -> dict[str, Any]:
    """The document depends only on the operations table and the host: built once per host (it
    takes about 10 ms) and never changed after, so the same dict serves every request."""
    from portal.api import openapi

    return openapi.document(OPERATIONS, server_url)


# --- the table ----------------------------------------------------------------------------------

INTENT = {"intent": "The PaymentIntent's id (pi_...)."}
RETURN_URL = Param(
    String(max_length=2000),
    description="Where the hosted checkout sends the payer back after paying: an absolute http(s) address "
    "('' removes it).",
)
INTENT_UPDATE = {
    "amount": Param(
        AMOUNT, description="Amount in the currency's smallest unit (e.g. 100 cents for $1.00).", example=2000
    ),
    "currency": Param(String(max_length=3), description="Three-letter ISO currency code, lower case.", example="usd"),
    "description": Param(String(max_length=1000), description="An arbitrary string shown to the merchant."),
    "metadata": METADATA,
    "payment_method": Param(
        String(max_length=120), description="A payment method (e.g. pm_card_visa).", example="pm_card_visa"
    ),
    "return_url": RETURN_URL,
    "expand": EXPAND,
}

# What the merchant tells about the payer: Stripe's parameters, and `payer` for the elements Stripe
# has none for. A channel account may require some of them (routing rule 3).
ADDRESS = Object(
    {
        "line1": Param(String(max_length=200), description="Street line 1."),
        "line2": Param(String(max_length=200), description="Street line 2."),
        "city": Param(String(max_length=200)),
        "state": Param(String(max_length=200), description="State, county, province or region."),
        "postal_code": Param(String(max_length=200)),
        "country": Param(String(max_length=2), description="Two-letter ISO 3166-1 country code (e.g. US)."),
    }
)
PAYER_DETAILS = {
    "receipt_email": Param(
        String(max_length=254),
        description="Where the receipt goes ('' removes it); gives the payer element `email` a channel may require.",
    ),
    "payment_method_data": Param(
        Object(
            {
                "type": Param(
                    String(enum=tuple(catalogue.PRODUCTS)),
                    description="The kind of payment method (Stripe requires it); the payment method itself is "
                    "payment_method.",
                ),
                "billing_details": Param(
                    Object(
                        {
                            "name": Param(String(max_length=300), description="Gives the element `payer_name`."),
                            "email": Param(String(max_length=254), description="Gives the element `email`."),
                            "phone": Param(String(max_length=40), description="Gives the element `phone`."),
                            "address": Param(
                                ADDRESS,
                                description="Gives the element `billing_address` when it has line1 and country.",
                            ),
                        }
                    ),
                    description="The payer's billing details; replace the ones sent before.",
                ),
            }
        ),
        description="The payment method's billing details, as at Stripe: the payer elements a channel account may "
        "require (payer_name, email, phone, billing_address).",
    ),
    "shipping": Param(
        Object(
            {
                "name": Param(String(max_length=300), required=True),
                "address": Param(ADDRESS, required=True),
                "phone": Param(String(max_length=40)),
                "carrier": Param(String(max_length=300)),
                "tracking_number": Param(String(max_length=300)),
            }
        ),
        description="Where the goods go; replaces the shipping sent before. Not a billing address: it gives no "
        "payer element.",
    ),
    "payer": Param(
        Object(
            {
                key: Param(String(max_length=longest), description=f"Gives the element `{element}`.")
                for key, (element, longest) in payer_details.PAYER_FIELDS.items()
            }
        ),
        description="Platform extension (not a Stripe parameter) for the payer elements Stripe has no parameter "
        "for: "
        + ", ".join(f"payer[{key}] gives `{element}`" for key, (element, _) in payer_details.PAYER_FIELDS.items())
        + ". Keys are merged into what was sent before; '' removes one. A channel account that requires one of "
        "these takes the payment only when it is given; confirming without it is a 400 parameter_missing naming "
        "the parameter to send.",
    ),
}

WEBHOOK_ENDPOINT = {"webhook_endpoint": "The webhook endpoint's id (we_...)."}
WEBHOOK_FIELDS = {
    "url": Param(
        String(max_length=webhooks.URL_MAX),
        description="Where events are POSTed: an http(s) URL on the public internet (https in live mode).",
    ),
    "enabled_events": Param(
        StringList(),
        description="The event types to send, or ['*'] for all, present and future: "
        + ", ".join(webhooks.EVENT_TYPES)
        + ".",
    ),
    "description": Param(
        String(max_length=webhooks.DESCRIPTION_MAX), description="What the endpoint is for ('' clears it)."
    ),
    "metadata": METADATA,
    "expand": EXPAND,
}

MOVEMENT_FIELDS = {
    "amount": Param(AMOUNT, required=True, description="Amount in the currency's smallest unit.", example=1000),
    "currency": Param(
        String(max_length=3), required=True, description="Three-letter ISO currency code.", example="usd"
    ),
    "description": Param(String(max_length=1000), description="An arbitrary string shown to the merchant."),
    "metadata": METADATA,
    "expand": EXPAND,
}

TOPUP_FIELDS = {
    "source": Param(
        String(max_length=120),
        description=(
            "What pays: a card token (pm_..., tok_...; in test mode also pm_card_visa and the other test cards), "
            "charged through a card channel, or `bank_transfer`: the channel gives transfer instructions "
            "(next_action) and the top-up stays pending until the money arrives. Default: in live mode "
            "bank_transfer; in test mode none, and the top-up succeeds at once without a channel."
        ),
    ),
    "statement_descriptor": Param(
        String(max_length=15), description="Up to 15 ASCII characters for the source's statement."
    ),
}

PAYMENT_METHOD_TYPES = Param(
    StringList(),
    description="Payment method types to offer (e.g. card); default: all the account's channels take.",
)

OPERATIONS: list[Operation] = [
    Operation(
        "POST",
        "/payment_intents",
        "create_payment_intent",
        "Create a PaymentIntent (and confirm it at once with confirm=true)",
        create_payment_intent,
        "payment_intent",
        {
            **INTENT_UPDATE,
            "amount": Param(
                AMOUNT,
                description=INTENT_UPDATE["amount"].description
                + " Required unless line_items are given; with line_items, it may be left out (it is computed), "
                "and if given it must equal their total.",
                example=2000,
            ),
            "currency": Param(
                String(max_length=3),
                description="Three-letter ISO currency code. Required unless line_items are given (then it is the "
                "charge items' currency, and if given it must equal it).",
                example="usd",
            ),
            "line_items": Param(
                ObjectList(
                    {
                        "charge_item": Param(
                            String(max_length=40), required=True, description="The id of one of your charge items."
                        ),
                        "quantity": Param(Integer(minimum=1), description="How many units (default 1)."),
                    }
                ),
                description="The order: charge items and quantities, priced at the items' current unit prices. The "
                "PaymentIntent's amount is their total less the coupon's discount; the lines are kept with it.",
            ),
            "coupon": Param(
                String(max_length=40),
                description="A coupon code of yours (any case) applied to line_items. A coupon limited per payer "
                "needs receipt_email. Reserved with the PaymentIntent, given back if it is canceled.",
            ),
            "payment_method_types": PAYMENT_METHOD_TYPES,
            "automatic_payment_methods": Param(
                Object({"enabled": Param(Boolean(), required=True)}),
                description="Offer every payment method type the account's channels take (the default).",
            ),
            "capture_method": Param(String(enum=CAPTURE_METHODS), description="manual: authorise now, capture later."),
            "confirm": Param(Boolean(), description="Confirm the PaymentIntent at once (default false)."),
            **PAYER_DETAILS,
        },
    ),
    Operation(
        "GET",
        "/payment_intents",
        "list_payment_intents",
        "List PaymentIntents, newest first",
        list_payment_intents,
        "list:payment_intent",
        dict(LIST_PARAMS),
    ),
    Operation(
        "GET",
        "/payment_intents/<intent>",
        "retrieve_payment_intent",
        "Retrieve a PaymentIntent",
        retrieve_payment_intent,
        "payment_intent",
        {"expand": EXPAND},
        path_params=INTENT,
    ),
    Operation(
        "POST",
        "/payment_intents/<intent>",
        "update_payment_intent",
        "Update a PaymentIntent that is not confirmed yet (metadata: set keys, '' removes a key)",
        update_payment_intent,
        "payment_intent",
        {**INTENT_UPDATE, "payment_method_types": PAYMENT_METHOD_TYPES, **PAYER_DETAILS},
        path_params=INTENT,
    ),
    Operation(
        "POST",
        "/payment_intents/<intent>/confirm",
        "confirm_payment_intent",
        "Confirm a PaymentIntent: charge it through the routed channel",
        confirm_payment_intent,
        "payment_intent",
        {
            "payment_method": INTENT_UPDATE["payment_method"],
            "return_url": RETURN_URL,
            **PAYER_DETAILS,
            "expand": EXPAND,
        },
        path_params=INTENT,
    ),
    Operation(
        "POST",
        "/payment_intents/<intent>/capture",
        "capture_payment_intent",
        "Capture an authorised PaymentIntent (capture_method=manual), in full or in part",
        capture_payment_intent,
        "payment_intent",
        {
            "amount_to_capture": Param(AMOUNT, description="At most amount_capturable; default all of it."),
            "expand": EXPAND,
        },
        path_params=INTENT,
    ),
    Operation(
        "POST",
        "/payment_intents/<intent>/cancel",
        "cancel_payment_intent",
        "Cancel a PaymentIntent that is not paid (an authorisation is released at the channel)",
        cancel_payment_intent,
        "payment_intent",
        {"cancellation_reason": Param(String(enum=CANCELLATION_REASONS)), "expand": EXPAND},
        path_params=INTENT,
    ),
    Operation(
        "POST",
        "/refunds",
        "create_refund",
        "Refund a succeeded PaymentIntent, in full or in part",
        create_refund,
        "refund",
        {
            "payment_intent": Param(String(max_length=40), required=True, description="The PaymentIntent to refund."),
            "amount": Param(AMOUNT, description="At most what is not refunded yet; default all of it."),
            "reason": Param(String(enum=REASONS)),
            "metadata": METADATA,
            "expand": EXPAND,
        },
    ),
    Operation(
        "GET",
        "/refunds",
        "list_refunds",
        "List refunds, newest first",
        list_refunds,
        "list:refund",
        {**LIST_PARAMS, "payment_intent": Param(String(max_length=40), description="Only this PaymentIntent's.")},
    ),
    Operation(
        "GET",
        "/refunds/<refund>",
        "retrieve_refund",
        "Retrieve a refund",
        retrieve_refund,
        "refund",
        {"expand": EXPAND},
        path_params={"refund": "The refund's id (re_...)."},
    ),
    Operation(
        "GET",
        "/balance",
        "retrieve_balance",
        "Retrieve the balance, available and pending, per currency",
        retrieve_balance,
        "balance",
        {"expand": EXPAND},
    ),
    Operation(
        "GET",
        "/events",
        "list_events",
        "List events, newest first",
        list_events,
        "list:event",
        {
            **LIST_PARAMS,
            "type": Param(String(), description="Only events of this type; a trailing * matches a prefix."),
            "types": Param(StringList(), description="Only events of one of these types."),
        },
    ),
    Operation(
        "GET",
        "/events/<id>",
        "retrieve_event",
        "Retrieve an event",
        retrieve_event,
        "event",
        {"expand": EXPAND},
        path_params={"id": "The event's id (evt_...)."},
    ),
    Operation(
        "GET",
        "/balance_transactions",
        "list_balance_transactions",
        "List balance transactions (every movement of the balance), newest first",
        list_balance_transactions,
        "list:balance_transaction",
        {
            **LIST_PARAMS,
            "type": Param(String(enum=BALANCE_TRANSACTION_TYPES), description="Only transactions of this type."),
            "source": Param(
                String(max_length=40), description="Only transactions of this object (pi_, re_, tu_, ...)."
            ),
        },
    ),
    Operation(
        "GET",
        "/balance_transactions/<id>",
        "retrieve_balance_transaction",
        "Retrieve a balance transaction",
        retrieve_balance_transaction,
        "balance_transaction",
        {"expand": EXPAND},
        path_params={"id": "The balance transaction's id (txn_...)."},
    ),
    Operation(
        "POST",
        "/topups",
        "create_topup",
        "Top up the balance through one of the account's channels (pending until the channel answers; "
        "a test top-up without a source succeeds at once)",
        create_topup,
        "topup",
        {**MOVEMENT_FIELDS, **TOPUP_FIELDS},
    ),
    Operation(
        "GET", "/topups", "list_topups", "List top-ups, newest first", list_topups, "list:topup", dict(LIST_PARAMS)
    ),
    Operation(
        "GET",
        "/topups/<topup>",
        "retrieve_topup",
        "Retrieve a top-up",
        retrieve_topup,
        "topup",
        {"expand": EXPAND},
        path_params={"topup": "The top-up's id (tu_...)."},
    ),
    Operation(
        "POST",
        "/transfers",
        "create_transfer",
        "Transfer available money to another merchant of the same platform account",
        create_transfer,
        "transfer",
        {
            **MOVEMENT_FIELDS,
            "destination": Param(
                String(max_length=40), required=True, description="The receiving merchant's id (a UUID)."
            ),
        },
    ),
    Operation(
        "GET",
        "/transfers",
        "list_transfers",
        "List transfers, newest first",
        list_transfers,
        "list:transfer",
        dict(LIST_PARAMS),
    ),
    Operation(
        "GET",
        "/transfers/<transfer>",
        "retrieve_transfer",
        "Retrieve a transfer",
        retrieve_transfer,
        "transfer",
        {"expand": EXPAND},
        path_params={"transfer": "The transfer's id (tr_...)."},
    ),
    Operation(
        "POST",
        "/payouts",
        "create_payout",
        "Request a payout: the amount is held from the available balance at once (status pending)",
        create_payout,
        "payout",
        dict(MOVEMENT_FIELDS),
    ),
    Operation(
        "GET", "/payouts", "list_payouts", "List payouts, newest first", list_payouts, "list:payout", dict(LIST_PARAMS)
    ),
    Operation(
        "GET",
        "/payouts/<payout>",
        "retrieve_payout",
        "Retrieve a payout",
        retrieve_payout,
        "payout",
        {"expand": EXPAND},
        path_params={"payout": "The payout's id (po_...)."},
    ),
    Operation(
        "POST",
        "/payouts/<payout>/cancel",
        "cancel_payout",
        "Cancel a pending payout: the held amount is available again",
        cancel_payout,
        "payout",
        {"expand": EXPAND},
        path_params={"payout": "The payout's id (po_...)."},
    ),
    Operation(
        "POST",
        "/webhook_endpoints",
        "create_webhook_endpoint",
        "Create a webhook endpoint in the key's mode; the answer carries its signing secret, this once",
        create_webhook_endpoint,
        "webhook_endpoint",
        {
            **WEBHOOK_FIELDS,
            "url": Param(WEBHOOK_FIELDS["url"].type, required=True, description=WEBHOOK_FIELDS["url"].description),
            "enabled_events": Param(
                StringList(), required=True, description=WEBHOOK_FIELDS["enabled_events"].description
            ),
        },
    ),
    Operation(
        "GET",
        "/webhook_endpoints",
        "list_webhook_endpoints",
        "List webhook endpoints, newest first",
        list_webhook_endpoints,
        "list:webhook_endpoint",
        dict(LIST_PARAMS),
    ),
    Operation(
        "GET",
        "/webhook_endpoints/<webhook_endpoint>",
        "retrieve_webhook_endpoint",
        "Retrieve a webhook endpoint (without its secret)",
        retrieve_webhook_endpoint,
        "webhook_endpoint",
        {"expand": EXPAND},
        path_params=WEBHOOK_ENDPOINT,
    ),
    Operation(
        "POST",
        "/webhook_endpoints/<webhook_endpoint>",
        "update_webhook_endpoint",
        "Update a webhook endpoint: its URL, events, description or metadata, or disable (disabled=true) and enable it",
        update_webhook_endpoint,
        "webhook_endpoint",
        {
            **WEBHOOK_FIELDS,
            "disabled": Param(Boolean(), description="true: send it nothing until it is enabled again."),
        },
        path_params=WEBHOOK_ENDPOINT,
    ),
    Operation(
        "DELETE",
        "/webhook_endpoints/<webhook_endpoint>",
        "delete_webhook_endpoint",
        "Delete a webhook endpoint and its delivery log",
        delete_webhook_endpoint,
        "deleted:webhook_endpoint",
        path_params=WEBHOOK_ENDPOINT,
    ),
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This document: the OpenAPI description of what the API implements",
        openapi_document,
        "openapi",
        authenticated=False,
    ),
]

BY_ENDPOINT = {op.endpoint: op for op in OPERATIONS}

# What each POST creates or acts on, by the object it returns, and how to retrieve that object:
# the recovery point of its Idempotency-Key should its process die (`idempotency.Recovery`).
RETRIEVERS: dict[str, tuple[type, Callable[..., dict[str, Any]]]] = {
    "payment_intent": (PaymentIntent, retrieve_payment_intent),
    "refund": (Refund, retrieve_refund),
    "topup": (Topup, retrieve_topup),
    "transfer": (Transfer, retrieve_transfer),
    "payout": (Payout, retrieve_payout),
    "webhook_endpoint": (WebhookEndpoint, retrieve_webhook_endpoint),
}


def recovery_for(operation: Operation, values: dict[str, str]) -> idempotency.Recovery | None:
    """The object a POST acts on (the one its URL names) or creates (the first new one of the kind
    it returns), and how a retry answers with it."""
    if operation.returns not in RETRIEVERS:
        return None
    model, retrieve = RETRIEVERS[operation.returns]
    named = next(iter(values.values()), None)
    return idempotency.Recovery(model, lambda ctx, object_id: retrieve(ctx, {}, object_id), object_id=named)
