"""The OpenAPI 3.0 document of the merchant API, generated from the operations table, so that it
lists exactly what is implemented: each operation's path, URL values, parameters (query string
for GET; for POST a body, form-encoded or JSON; objects nest as deepObject, `metadata[key]=…`,
lists repeat their name, `expand=a&expand=b`, or take Stripe's `expand[]=a`), the object it returns
and Stripe's error object. The object schemas below are checked against real answers by the
tests (every property the API returns is described, and nothing else).
"""

from __future__ import annotations

import re
from typing import Any

from payments.models import (
    BALANCE_TRANSACTION_STATUSES,
    BALANCE_TRANSACTION_TYPES,
    INTENT_STATUSES,
    PAYOUT_STATUSES,
    REFUND_STATUSES,
    TOPUP_STATUSES,
)
from payments.objects import ADDRESS_FIELDS
from payments.refunds import REASONS
from payments.webhooks import ENDPOINT_STATUSES
from portal.api.params import object_schema

VERSION = "2024-06-20"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


INTEGER = {"type": "integer"}
STRING = {"type": "string"}
TIMESTAMP = {"type": "integer", "format": "unix-time"}
METADATA = {"type": "object", "additionalProperties": STRING}
AMOUNTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {"amount": INTEGER, "currency": STRING},
        "additionalProperties": False,
    },
}


def _object(name: str, properties: dict[str, Any], description: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object's schema: every property is always present, except the `optional` ones."""
    properties = {"object": {"type": "string", "enum": [name]}, **properties}
    return {
        "type": "object",
        "description": description,
        "required": sorted(set(properties) - set(optional)),
        "properties": properties,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "payment_intent": _object(
        "payment_intent",
        {
            "id": STRING,
            "amount": INTEGER,
            "amount_capturable": INTEGER,
            "amount_received": INTEGER,
            "amount_refunded": INTEGER,
            "canceled_at": _nullable(TIMESTAMP),
            "cancellation_reason": _nullable(STRING),
            "capture_method": {"type": "string", "enum": ["automatic", "manual"]},
            "client_secret": STRING,
            "confirmation_method": {"type": "string", "enum": ["automatic"]},
            "created": TIMESTAMP,
            "currency": STRING,
            "description": _nullable(STRING),
            "last_payment_error": _nullable(
                {
                    "type": "object",
                    "properties": {
                        "type": STRING,
                        "code": STRING,
                        "decline_code": _nullable(STRING),
                        "message": STRING,
                    },
                }
            ),
            "latest_charge": _nullable(STRING),
            "livemode": {"type": "boolean"},
            "metadata": METADATA,
            "next_action": _nullable({"type": "object"}),
            "payment_method": _nullable(STRING),
            "payment_method_types": {"type": "array", "items": STRING},
            "receipt_email": _nullable(STRING),
            "shipping": _nullable(
                {
                    "type": "object",
                    "properties": {
                        "address": {
                            "type": "object",
                            "properties": {key: _nullable(STRING) for key in ADDRESS_FIELDS},
                            "additionalProperties": False,
                        },
                        **{key: _nullable(STRING) for key in ("carrier", "name", "phone", "tracking_number")},
                    },
                    "additionalProperties": False,
                }
            ),
            "return_url": {
                **_nullable(STRING),
                "description": "The platform's own field: where the hosted checkout sends the payer back after paying.",
            },
            "status": {"type": "string", "enum": list(INTENT_STATUSES)},
            "terminal": {
                **_nullable(STRING),
                "description": "The platform's own field: the merchant's terminal (tmr_…) that created it, if one did.",
            },
        },
        "A merchant's order to collect a payment, through its life from creation to success or cancellation.",
    ),
    "refund": _object(
        "refund",
        {
            "id": STRING,
            "amount": INTEGER,
            "created": TIMESTAMP,
            "currency": STRING,
            "failure_reason": _nullable(STRING),
            "metadata": METADATA,
            "payment_intent": STRING,
            "reason": _nullable({"type": "string", "enum": list(REASONS)}),
            "status": {"type": "string", "enum": list(REFUND_STATUSES)},
        },
        "Money given back for a succeeded PaymentIntent, in full or in part.",
    ),
    "balance": _object(
        "balance",
        {"livemode": {"type": "boolean"}, "available": AMOUNTS, "pending": AMOUNTS},
        "What the merchant has per currency: available to pay out, and pending settlement.",
    ),
    "event": _object(
        "event",
        {
            "id": STRING,
            "api_version": STRING,
            "created": TIMESTAMP,
            "data": {
                "type": "object",
                "required": ["object"],
                "properties": {
                    "object": {
                        "oneOf": [_ref(name) for name in ("payment_intent", "refund", "topup", "transfer", "payout")]
                    }
                },
            },
            "livemode": {"type": "boolean"},
            "pending_webhooks": INTEGER,
            "request": {
                "type": "object",
                "properties": {"id": _nullable(STRING), "idempotency_key": _nullable(STRING)},
            },
            "type": STRING,
        },
        "Something that happened to one of the merchant's objects; data.object is the object then.",
    ),
    "balance_transaction": _object(
        "balance_transaction",
        {
            "id": STRING,
            "amount": INTEGER,
            "available_on": _nullable(TIMESTAMP),
            "created": TIMESTAMP,
            "currency": STRING,
            "description": _nullable(STRING),
            "fee": INTEGER,
            "fee_details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "amount": INTEGER,
                        "application": _nullable(STRING),
                        "currency": STRING,
                        "description": STRING,
                        "type": STRING,
                    },
                },
            },
            "livemode": {"type": "boolean"},
            "net": INTEGER,
            "source": STRING,
            "status": {"type": "string", "enum": list(BALANCE_TRANSACTION_STATUSES)},
            "type": {"type": "string", "enum": list(BALANCE_TRANSACTION_TYPES)},
        },
        "One movement of the merchant's balance; source is the object that moved it. Fees are 0 for now.",
    ),
    "topup": _object(
        "topup",
        {
            "id": STRING,
            "amount": INTEGER,
            "created": TIMESTAMP,
            "currency": STRING,
            "description": _nullable(STRING),
            "expected_availability_date": _nullable(TIMESTAMP),
            "failure_code": _nullable(STRING),
            "failure_message": _nullable(STRING),
            "livemode": {"type": "boolean"},
            "metadata": METADATA,
            "next_action": _nullable({"type": "object"}),
            "source": _nullable(STRING),
            "statement_descriptor": _nullable(STRING),
            "status": {"type": "string", "enum": list(TOPUP_STATUSES)},
        },
        "Money the merchant added to its available balance: pending while the channel has not answered, "
        "then succeeded (the amount is available) or failed (failure_code, failure_message; nothing moved). "
        "source is the card token or product that paid; next_action (not Stripe's) is what the payer must "
        "still do at the channel, such as a bank transfer's instructions.",
    ),
    "transfer": _object(
        "transfer",
        {
            "id": STRING,
            "amount": INTEGER,
            "created": TIMESTAMP,
            "currency": STRING,
            "description": _nullable(STRING),
            "destination": STRING,
            "livemode": {"type": "boolean"},
            "metadata": METADATA,
        },
        "Available money moved to another merchant of the same platform account.",
    ),
    "payout": _object(
        "payout",
        {
            "id": STRING,
            "amount": INTEGER,
            "arrival_date": _nullable(TIMESTAMP),
            "created": TIMESTAMP,
            "currency": STRING,
            "description": _nullable(STRING),
            "failure_code": _nullable(STRING),
            "failure_message": _nullable(STRING),
            "livemode": {"type": "boolean"},
            "metadata": METADATA,
            "status": {"type": "string", "enum": list(PAYOUT_STATUSES)},
        },
        "A withdrawal of available money; held at once, pending until it is sent to the bank in a batch "
        "(in_transit), then paid, or failed with the bank's reason and returned to the available balance.",
    ),
    "webhook_endpoint": _object(
        "webhook_endpoint",
        {
            "id": STRING,
            "api_version": _nullable(STRING),
            "application": _nullable(STRING),
            "created": TIMESTAMP,
            "description": _nullable(STRING),
            "enabled_events": {"type": "array", "items": STRING},
            "livemode": {"type": "boolean"},
            "metadata": METADATA,
            "secret": {
                "type": "string",
                "description": "The signing secret (whsec_...): only in the answer that creates the endpoint.",
            },
            "status": {"type": "string", "enum": list(ENDPOINT_STATUSES)},
            "url": STRING,
        },
        "A URL of the merchant that receives its events of one mode, signed with the endpoint's secret.",
        optional=("secret",),
    ),
    "deleted_webhook_endpoint": _object(
        "webhook_endpoint",
        {"id": STRING, "deleted": {"type": "boolean", "enum": [True]}},
        "What remains of a deleted webhook endpoint: its id.",
    ),
    "list": _object(
        "list",
        {"data": {"type": "array", "items": {}}, "has_more": {"type": "boolean"}, "url": STRING},
        "A page of objects, newest first; page on with starting_after (older) or ending_before (newer).",
    ),
    "error": {
        "type": "object",
        "description": "Stripe's error object.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": ["api_error", "card_error", "idempotency_error", "invalid_request_error"],
                    },
                    "code": STRING,
                    "message": STRING,
                    "param": STRING,
                    "decline_code": STRING,
                    "payment_intent": _ref("payment_intent"),
                },
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    },
}

ERROR_STATUSES = {
    "400": "Invalid request: an unknown or invalid parameter, an object in the wrong state, an idempotency key "
    "reused with other parameters",
    "401": "No API key, or an invalid one",
    "402": "The card was declined (card_error, with decline_code and the PaymentIntent)",
    "404": "No such object for this key (resource_missing), or an unknown URL",
    "409": "Another request with this Idempotency-Key is in progress (idempotency_key_in_use); retry",
    "429": "Too many requests",
    "500": "An error on our side",
    "502": "The payment channel failed; nothing was charged",
}


def _returns(name: str) -> dict[str, Any]:
    if name == "openapi":
        return {"type": "object", "description": "An OpenAPI 3.0 document."}
    if name.startswith("deleted:"):
        return _ref("deleted_" + name.split(":", 1)[1])
    if name.startswith("list:"):
        item = name.split(":", 1)[1]
        return {"allOf": [_ref("list"), {"type": "object", "properties": {"data": {"items": _ref(item)}}}]}
    return _ref(name)


def openapi_path(rule: str) -> str:
    """`/v1/payment_intents/<intent>` -> `/v1/payment_intents/{intent}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation(op) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": {"type": "string"}}
        for name, text in op.path_params.items()
    ]
    body = None
    if op.method in ("GET", "DELETE"):  # no body: parameters in the query string
        for name, param in op.params.items():
            entry = {"name": name, "in": "query", "required": param.required, "schema": param.type.schema()}
            if param.description:
                entry["description"] = param.description
            if param.type.style:
                entry.update(style=param.type.style, explode=True)
            parameters.append(entry)
    else:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Run the request once: the same key and parameters replay the first answer.",
                "schema": {"type": "string", "maxLength": 255},
            }
        )
        schema = object_schema(op.params)
        encoding = {name: {"style": p.type.style, "explode": True} for name, p in op.params.items() if p.type.style}
        form: dict[str, Any] = {"schema": schema}
        if encoding:
            form["encoding"] = encoding
        body = {
            "required": any(p.required for p in op.params.values()),
            "content": {"application/x-www-form-urlencoded": form, "application/json": {"schema": schema}},
        }
    headers = {"Request-Id": {"schema": STRING, "description": "This request's id (req_...)."}}
    success_headers = dict(headers)
    if op.method == "POST":
        success_headers["Idempotent-Replayed"] = {
            "schema": {"type": "string", "enum": ["true"]},
            "description": "Present when the answer is the stored answer of an earlier request with this key.",
        }
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful response.",
            "headers": success_headers,
            "content": {"application/json": {"schema": _returns(op.returns)}},
        }
    }
    for status, text in ERROR_STATUSES.items():
        if op.authenticated or status in ("400", "404", "429", "500"):
            responses[status] = {
                "description": text,
                "headers": headers,
                "content": {"application/json": {"schema": _ref("error")}},
            }
    operation: dict[str, Any] = {
        "operationId": op.endpoint,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = body
    if not op.authenticated:
        operation["security"] = []
    return operation


def document(operations, server_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Merchant API",
            "version": VERSION,
            "description": "Payments in Stripe's conventions: Stripe's official SDKs work with this API by changing "
            "the base URL. Authenticate with a secret key (Authorization: Bearer sk_test_... or sk_live_...).",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerAuth": []}, {"basicAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A secret key: sk_test_… or sk_live_…; or a terminal's device key (dk_test_…, dk_live_…),"
                        " which may only create, confirm and retrieve the terminal's PaymentIntents and refund them."
                    ),
                },
                "basicAuth": {"type": "http", "scheme": "basic", "description": "The secret key as the user name."},
            },
            "schemas": SCHEMAS,
        },
    }
