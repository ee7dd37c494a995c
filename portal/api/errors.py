"""Stripe's error object for every answer of the merchant API that is not a success.

`{"error": {"type", "code", "message", "param", ...}}` with Stripe's status codes: 400 bad
request, 401 no or bad key, 402 card declined, 404 no such object or URL, 409 idempotency key in
use, 429 too many requests, 500 our fault, 502 the channel's. The payment use cases raise
`PaymentError`s already shaped like this; the API raises `ApiError` for its own refusals.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

from payments.errors import PaymentError

_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX_RE = re.compile(r"^(?:sk|rk|pk|dk)_(?:test|live)_")


class ApiError(PaymentError):
    """A refusal of the API layer itself (authentication, parsing, unknown URL, idempotency)."""

    def __init__(self, message: str, *, type_: str = "invalid_request_error", http_status: int = 400, **kwargs):
        super().__init__(message, http_status=http_status, **kwargs)
        self.type = type_


def new_request_id() -> str:
    """`req_` and 14 random base-62 characters, as Stripe's request ids look."""
    return "req_" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, indent=2) + "\n", status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_body(exc: PaymentError) -> dict[str, Any]:
    return {"error": exc.to_dict()}


def error_response(exc: PaymentError) -> Response:
    return json_response(exc.http_status, error_body(exc))


def unrecognized_url() -> ApiError:
    return ApiError(f"Unrecognized request URL ({request.method}: {request.path}).", http_status=404)


def masked_key(secret: str) -> str:
    """`sk_test_****abcd`: the kind of key and its last four characters, never more of it."""
    prefix = KEY_PREFIX_RE.match(secret)
    head = prefix.group(0) if prefix else ""
    rest = secret[len(head) :]
    tail = rest[-4:] if len(rest) >= 12 and rest[-4:].isascii() and rest[-4:].isprintable() else ""
    return f"{head}****{tail}"


def no_key() -> ApiError:
    return ApiError(
        "You did not provide an API key. You need to provide your API key in the Authorization header, "
        "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        http_status=401,
    )


def invalid_key(secret: str) -> ApiError:
    return ApiError(f"Invalid API Key provided: {masked_key(secret)}", http_status=401)


def internal_error() -> ApiError:
    return ApiError(
        "An unknown error occurred on our side; nothing more was done. Try again later.",
        type_="api_error",
        http_status=500,
    )


# What an HTTP error of the framework (raised outside our views) means in Stripe's terms.
_HTTP_MESSAGES = {
    400: "The request could not be understood.",
    403: "This account cannot use the API at the moment.",
    413: "The request body is too large.",
    # Stripe's `rate_limit` (type invalid_request_error); `Retry-After` says when to try again (`portal.limits`).
    429: "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
}


def from_http_error(status: int) -> ApiError:
    """A Stripe error for a framework error code: unknown routes and methods are 404 as at Stripe,
    an oversized body is a 400, 5xx are api_error."""
    if status in (404, 405):
        return unrecognized_url()
    if status >= 500:
        return internal_error()
    if status == 413:
        return ApiError(_HTTP_MESSAGES[413], http_status=400)
    code = "rate_limit" if status == 429 else None
    return ApiError(_HTTP_MESSAGES.get(status, "The request could not be processed."), http_status=status, code=code)


def from_http_exception(exc: HTTPException) -> ApiError:
    return from_http_error(exc.code or 500)
