"""Rate limits (Flask-Limiter on the app's Redis): signing in, password reset requests, sign-ups and
the merchant API.

What is counted, per what, under which setting (`RATE_LIMITS`, see `portal.config`):

- `SIGN_IN_IP`: POSTs of any sign-in step per client IP: the password form and every other form of
  the `auth` blueprint that proves who someone is (a one-time code, a reset or invitation link).
- `SIGN_IN_EMAIL`: POSTs of the password form per site and e-mail typed, from any address.
- `PASSWORD_RESET_IP`, `PASSWORD_RESET_EMAIL`: password reset requests per client IP, and per site
  and e-mail typed.
- `SIGNUP_IP`: sign-ups per client IP.
- `API_KEY`: `/v1` calls with a valid key, per key id (a terminal's device key: per terminal);
  never keyed by the secret itself.
- `API_IP`: `/v1` requests without a valid key (none, a wrong one, the OpenAPI document) per client IP.

The limits are read from the config at each request, so a test may lower one for itself. The
views are wrapped when the app is built (`init_app`, after the blueprints are registered), so a
sign-in step added later to the `auth` blueprint is limited without naming it here. The per-key
limit of the API is checked when the view runs, after the blueprint has authenticated the key; a
request without a valid key is counted when its answer is known (`deduct_when`), so its IP limit
applies from the next request on.

A refusal is a 429 with `Retry-After` (seconds): the themed error page (`portal.errors`), or
Stripe's `rate_limit` error on `/v1` (`portal.api.errors`). If Redis does not answer, each process
counts in memory until Redis is back (`in_memory_fallback_enabled`), and any other failure of the
counting lets the request through (`swallow_errors`): pages and payments keep working.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter

EXTENSION = "payplat_limiter"
# `auth` views that are not a sign-in step: their own limits, or none (signing out).
NOT_SIGN_IN = frozenset({"auth.logout", "auth.forgot_password", "auth.signup"})
STORAGE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}


def _setting(name: str):
    return lambda: current_app.config["RATE_LIMITS"][name]


def client_ip() -> str:
    """The client's address (behind a proxy, ProxyFix has put the forwarded one here)."""
    return request.remote_addr or "unknown"


def _site() -> str:
    site = g.get("site")
    if site is not None and site.is_tenant:
        return f"tenant:{site.tenant_id}"
    return "platform"


def _typed_email() -> str:
    return (request.form.get("email") or "").strip().lower()


def email_key() -> str:
    """The account an attempt is about: the same e-mail on two tenants is two accounts."""
    return f"{_site()}:{_typed_email()}"


def _no_email() -> bool:
    return not _typed_email()


def api_client() -> str:
    ctx = g.get("api_ctx")
    if ctx is not None and ctx.terminal_id is not None:
        return f"terminal:{ctx.terminal_id}"
    return f"key:{g.get('api_key_id')}"


def _api_unauthenticated() -> bool:
    return g.get("api_ctx") is None


def _not_api() -> bool:
    from portal.api import is_api_request

    return not is_api_request()


def limiter() -> Limiter:
    return current_app.extensions[EXTENSION]


def init_app(app: Flask) -> None:
    """Build the app's limiter and wrap the limited views (after `register_blueprints`)."""
    storage_options = {**STORAGE_OPTIONS, **app.config.get("RATELIMIT_STORAGE_OPTIONS", {})}
    ext = Limiter(
        client_ip,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"] or app.config["REDIS_URL"],
        storage_options=storage_options,
        strategy=app.config["RATELIMIT_STRATEGY"],
        key_prefix="payplat",
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        headers_enabled=False,  # Retry-After only, on a refusal (`_retry_after`)
        application_limits=[
            ApplicationLimit(
                _setting("API_IP"),
                scope="api-ip",
                exempt_when=_not_api,
                deduct_when=lambda response: _api_unauthenticated(),
            )
        ],
    )
    ext.init_app(app)
    app.extensions[EXTENSION] = ext

    sign_in_ip = ext.shared_limit(_setting("SIGN_IN_IP"), "sign-in-ip", methods=["POST"])
    wrappers = {
        "auth.login": [
            sign_in_ip,
            ext.shared_limit(
                _setting("SIGN_IN_EMAIL"), "sign-in-email", key_func=email_key, methods=["POST"], exempt_when=_no_email
            ),
        ],
        "auth.forgot_password": [
            ext.shared_limit(_setting("PASSWORD_RESET_IP"), "reset-ip", methods=["POST"]),
            ext.shared_limit(
                _setting("PASSWORD_RESET_EMAIL"),
                "reset-email",
                key_func=email_key,
                methods=["POST"],
                exempt_when=_no_email,
            ),
        ],
        "auth.signup": [ext.shared_limit(_setting("SIGNUP_IP"), "signup-ip", methods=["POST"])],
    }
    api_key = ext.shared_limit(_setting("API_KEY"), "api-key", key_func=api_client, exempt_when=_api_unauthenticated)
    for endpoint in list(app.view_functions):
        blueprint = endpoint.partition(".")[0]
        if endpoint in wrappers:
            limits = wrappers[endpoint]
        elif blueprint == "auth" and endpoint not in NOT_SIGN_IN:
            limits = [sign_in_ip]
        elif blueprint == "api":
            limits = [api_key]
        else:
            continue
        view = app.view_functions[endpoint]
        for limit in limits:
            view = limit(view)
        app.view_functions[endpoint] = view

    app.after_request(_retry_after)


def retry_after_seconds() -> int | None:
    """Seconds until the limit this request broke lets requests through again."""
    breached = limiter().current_limit
    if breached is None or not breached.breached:
        return None
    try:
        return max(1, math.ceil(breached.window.reset_time - time.time()))
    except Exception:  # the counts' storage went away meanwhile: a guess beats no header
        return 1


def _retry_after(response):
    if response.status_code == 429 and "Retry-After" not in response.headers:
        seconds = retry_after_seconds()
        if seconds is not None:
            response.headers["Retry-After"] = str(seconds)
    return response
