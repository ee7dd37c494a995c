"""The merchant REST API at `/v1`, in Stripe's conventions so that Stripe's SDKs work against it
by changing only the base URL.

Only on a tenant's host. A request is authenticated by a secret key (`Authorization: Bearer
sk_...`, or HTTP Basic with the key as the user name) of the request's tenant; the key gives the
`MerchantContext` (tenant, merchant, test or live) every operation runs in. The operations are
one table (`operations.py`), which also yields the OpenAPI document at `/v1/openapi.json`.

Every answer is JSON with a `Request-Id`; every error, including an unknown URL, a wrong method,
a malformed body or a crash, is Stripe's error object (`errors.py`). POST requests with an
`Idempotency-Key` run once per key (`idempotency.py`). Keys are never logged or echoed beyond
their masked form.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException, default_exceptions

from core.db import db
from payments import terminals
from payments.errors import PaymentError
from payments.intents import MerchantContext
from portal.api import idempotency
from portal.api.errors import (
    ApiError,
    error_body,
    error_response,
    from_http_error,
    from_http_exception,
    internal_error,
    invalid_key,
    json_response,
    masked_key,
    new_request_id,
    no_key,
    unrecognized_url,
)
from portal.api.operations import BY_ENDPOINT, OPERATIONS, Operation, recovery_for
from portal.api.params import checked_text, malformed, parse_pairs, validate
from portal.extensions import csrf
from tenants import api_keys

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/v1")
csrf.exempt(bp)


def is_api_request() -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


# --- before the view ----------------------------------------------------------------------------


@bp.before_app_request
def _api_site():
    """For every /v1 path, before any view: a request id, and Stripe's 404 for an unknown URL or
    method, or for any host that is not a tenant's (the platform's host has no API)."""
    if not is_api_request():
        return None
    g.api_request_id = new_request_id()
    site = g.get("site")
    if site is None or not site.is_tenant or request.routing_exception is not None:
        return error_response(unrecognized_url())
    return None


@bp.before_request
def _authenticate():
    operation = BY_ENDPOINT.get((request.endpoint or "").removeprefix(f"{bp.name}."))
    g.api_ctx = g.api_key_id = None
    if operation is None or not operation.authenticated:
        return None
    secret = _presented_key()
    if not secret:
        raise no_key()
    if terminals.is_device_key(secret):
        return _authenticate_terminal(operation, secret)
    key = api_keys.authenticate(g.site.tenant_id, secret)
    if key is None:
        raise invalid_key(secret)
    g.api_ctx = MerchantContext(g.site.tenant_id, key.merchant_id, key.mode == "live")
    g.api_key_id = key.id  # the audit log's actor for what the call changes
    return None


# What a terminal's device key may do: take payments and refund them, nothing else of the API.
TERMINAL_OPERATIONS = frozenset(
    {
        "create_payment_intent",
        "retrieve_payment_intent",
        "confirm_payment_intent",
        "create_refund",
        "retrieve_refund",
    }
)


def _authenticate_terminal(operation: Operation, secret: str) -> None:
    terminal = terminals.authenticate(g.site.tenant_id, secret)
    if terminal is None:
        raise invalid_key(secret)
    if operation.endpoint not in TERMINAL_OPERATIONS:
        raise ApiError(
            f"The provided key '{masked_key(secret)}' is a terminal's device key, which does not have the "
            f"required permissions for this endpoint ({request.method} {request.path}). A device key may only "
            "create, confirm and retrieve its PaymentIntents and refund them; use the merchant's secret key.",
            http_status=403,
            code="secret_key_required",
        )
    g.api_ctx = MerchantContext(
        g.site.tenant_id,
        terminal.merchant_id,
        terminal.mode == "live",
        terminal_id=terminal.id,
        terminal_serial=terminal.serial_number,
    )


def _presented_key() -> str | None:
    """The secret key of `Authorization: Bearer <key>` or of HTTP Basic (`<key>:` as Stripe takes it)."""
    auth = request.authorization
    if auth is None:
        return None
    if auth.type == "bearer":
        return (auth.token or "").strip() or None
    if auth.type == "basic":
        return (auth.username or "").strip() or None
    return None


# --- parameters ---------------------------------------------------------------------------------


def request_params() -> dict[str, Any]:
    """The request's parameters as nested values: the query string, and for POST the body
    (form-encoded or JSON; the body wins over the query string)."""
    params = parse_pairs(request.args.items(multi=True))
    if request.method != "POST":
        return params
    raw = request.get_data(cache=True)
    if not raw.strip():
        return params
    mimetype = request.mimetype
    if mimetype == "application/json":
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise malformed(f"Invalid JSON body: {exc}.") from None
        except RecursionError:
            raise malformed("Invalid JSON body: it is nested too deeply.") from None
        if not isinstance(body, dict):
            raise malformed("Invalid JSON body: it must be an object of parameters.")
        return {**params, **body}
    if mimetype in ("application/x-www-form-urlencoded", ""):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("Invalid body: form-encoded parameters must be UTF-8.") from None
        return {**params, **parse_pairs(parse_qsl(text, keep_blank_values=True))}
    raise malformed(
        f"Unsupported Content-Type {mimetype!r}: send application/x-www-form-urlencoded or application/json."
    )


def _checked_expand(params: dict[str, Any]) -> None:
    expand = params.get("expand")
    if expand:
        raise ApiError(f"This property cannot be expanded ({expand[0]}).", param="expand")


# --- the view -----------------------------------------------------------------------------------


def _run(operation: Operation, ctx: MerchantContext | None, params: dict[str, Any], values: dict[str, str]):
    """Call the handler; its errors become Stripe error bodies, a crash a 500 (logged, not its details)."""
    try:
        return 200, operation.handler(ctx, params, **values)
    except PaymentError as exc:
        db.session.rollback()
        return exc.http_status, error_body(exc)
    except Exception:
        db.session.rollback()
        log.exception("%s %s failed (%s)", request.method, request.path, g.get("api_request_id"))
        return 500, error_body(internal_error())


def _view(operation: Operation):
    def view(**values: str) -> Response:
        for name, value in values.items():  # an id in the URL is looked up in text columns
            checked_text(value, name)
        params = validate(operation.params, request_params())
        _checked_expand(params)
        ctx = g.api_ctx
        key = request.headers.get("Idempotency-Key")
        if operation.method == "POST" and key is not None and ctx is not None:
            print_ = idempotency.fingerprint(request.method, request.path, params)
            status, body, headers = idempotency.run(
                ctx,
                idempotency.check_key(key),
                print_,
                lambda: _run(operation, ctx, params, values),
                recovery_for(operation, values),
            )
            return json_response(status, body, {"Idempotency-Key": key, **headers})
        status, body = _run(operation, ctx, params, values)
        return json_response(status, body)

    view.__name__ = operation.endpoint
    view.__doc__ = operation.summary
    return view


for _operation in OPERATIONS:
    bp.add_url_rule(
        _operation.rule, endpoint=_operation.endpoint, view_func=_view(_operation), methods=[_operation.method]
    )


# --- errors and headers -------------------------------------------------------------------------


@bp.errorhandler(PaymentError)
def _payment_error(exc: PaymentError):
    db.session.rollback()
    return error_response(exc)


def _http_error(exc: HTTPException):
    return error_response(from_http_exception(exc))


# Code-specific handlers: the portal's own error pages are registered per code, and Flask asks for
# a code's handler before a class's, so the API registers every code too.
for _code in default_exceptions:
    bp.register_error_handler(_code, _http_error)


@bp.errorhandler(Exception)
def _crash(exc: Exception):
    db.session.rollback()
    log.exception("%s %s failed (%s)", request.method, request.path, g.get("api_request_id"))
    return error_response(internal_error())


@bp.after_app_request
def _api_headers(response: Response) -> Response:
    """Every /v1 answer is JSON with a Request-Id: an error page of the portal (an unknown host, a
    suspended tenant) on a /v1 path is replaced by Stripe's error object."""
    if not is_api_request():
        return response
    if response.status_code >= 400 and response.mimetype != "application/json":
        error = from_http_error(response.status_code)
        response.set_data(json.dumps(error_body(error), indent=2) + "\n")
        response.status_code = error.http_status
        response.mimetype = "application/json"
    response.headers["Request-Id"] = g.get("api_request_id") or new_request_id()
    response.headers.setdefault("Cache-Control", "no-cache, no-store")
    return response


__all__ = ["ApiError", "bp", "is_api_request"]
