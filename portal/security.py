"""The security headers of every response (written here rather than with flask-talisman, which is
unmaintained and cannot give each checkout the frame list of its own merchant).

- `Content-Security-Policy`: everything from the page's own origin; scripts also with the
  request's nonce (`{{ csp_nonce() }}` on an inline `<script>`), styles also inline (the brand's
  colours are an inline `<style>`, and templates use `style` attributes); no plugins; `<base>` only
  to the own origin. A channel's browser script (Stripe.js) is admitted for the page that loads it
  by `{{ external_script(url) }}`, with what that script needs to reach (`script_sources`).
  A response that sets its own policy (a KYC document) keeps it.
- Framing: nowhere (`frame-ancestors 'none'`, `X-Frame-Options: DENY`), except the console's
  brand preview in the console's own page (`'self'`, `SAMEORIGIN`) and the hosted checkout and
  payment link pages, which the merchant's allowed sites may frame (`tenants.frame_domains`;
  `frame-ancestors <those>` and no X-Frame-Options, which cannot name several sites).
- `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` (a view may send a stricter one).
- `Strict-Transport-Security` only on a request that came over HTTPS (`request.is_secure`; behind
  a proxy, ProxyFix sets the scheme from `X-Forwarded-Proto`).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, current_app, g, request
from markupsafe import Markup

from core.db import db
from payments.models import PaymentIntent
from payments.order_models import PaymentLink
from tenants.models import Merchant

# Pages that the console shows in a frame of its own.
FRAMED_BY_SELF = frozenset({"console.branding_preview"})
# Payer pages a merchant's site may frame: endpoint -> (model, view argument holding its id).
FRAMED_BY_MERCHANT = {
    "checkout.page": (PaymentIntent, "intent_id"),
    "checkout.pay": (PaymentIntent, "intent_id"),
    "paylinks.page": (PaymentLink, "link_id"),
}
# rq-dashboard's pages (platform admins only) run inline scripts and Underscore templates (eval).
RELAXED_SCRIPT_BLUEPRINTS = frozenset({"rq_dashboard"})
STRIPE_JS = "https://js.stripe.com"
# What Stripe.js needs besides its own origin (https://docs.stripe.com/security/guide#content-security-policy).
STRIPE_JS_SOURCES = {
    "script-src": ["https://js.stripe.com"],
    "connect-src": ["https://api.stripe.com", "https://m.stripe.network", "https://q.stripe.com"],
    "frame-src": ["https://js.stripe.com", "https://hooks.stripe.com"],
    "img-src": ["https://*.stripe.com"],
}


def csp_nonce() -> str:
    """The request's script nonce (made on first use)."""
    nonce = g.get("csp_nonce")
    if nonce is None:
        nonce = g.csp_nonce = secrets.token_urlsafe(16)
    return nonce


def script_sources(url: str) -> dict[str, list[str]]:
    """The sources a channel's browser script at `url` needs: Stripe's documented list for Stripe.js,
    else (a Stripe-compatible server serving its own stand-in) that server's origin for the script,
    its API calls and its frames."""
    parts = urlsplit(url)
    source = f"{parts.scheme}://{parts.netloc}"
    if source == STRIPE_JS:
        return STRIPE_JS_SOURCES
    return {"script-src": [source], "connect-src": [source], "frame-src": [source]}


def external_script(url: str) -> str:
    """`url`, admitted by this response's policy (for `<script src="{{ external_script(url) }}">`)."""
    extra = g.setdefault("csp_sources", {})
    for directive, sources in script_sources(url).items():
        extra.setdefault(directive, [])
        extra[directive] += [s for s in sources if s not in extra[directive]]
    return url


def _merchant_frame_ancestors() -> list[str]:
    found = FRAMED_BY_MERCHANT.get(request.endpoint or "")
    site = g.get("site")
    if found is None or site is None or not site.is_tenant:
        return []
    model, argument = found
    object_id = (request.view_args or {}).get(argument)
    # The merchant's list, through the page's object, in one statement.
    allowed = db.session.execute(
        sa.select(Merchant.frame_domains)
        .join(model, sa.and_(model.tenant_id == Merchant.tenant_id, model.merchant_id == Merchant.id))
        .where(model.tenant_id == site.tenant_id, model.id == object_id)
    ).scalar_one_or_none()
    return list(allowed or [])


def _framing(response) -> tuple[str, str | None]:
    """(frame-ancestors, X-Frame-Options or None)."""
    if request.endpoint in FRAMED_BY_SELF:
        return "'self'", "SAMEORIGIN"
    if request.endpoint in FRAMED_BY_MERCHANT and response.status_code < 500:
        origins = _merchant_frame_ancestors()
        if origins:
            return " ".join(origins), None
    return "'none'", "DENY"


def content_security_policy(frame_ancestors: str) -> str:
    extra: dict[str, list[str]] = g.get("csp_sources", {})
    scripts = ["'self'"]
    if request.blueprint in RELAXED_SCRIPT_BLUEPRINTS:
        scripts += ["'unsafe-inline'", "'unsafe-eval'"]
    elif g.get("csp_nonce"):
        scripts.append(f"'nonce-{g.csp_nonce}'")
    directives = {
        "default-src": ["'self'"],
        "script-src": scripts + extra.get("script-src", []),
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", *extra.get("img-src", [])],
        "connect-src": ["'self'", *extra.get("connect-src", [])],
        "frame-src": ["'self'", *extra.get("frame-src", [])],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": [frame_ancestors],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def _headers(response):
    headers = response.headers
    frame_ancestors, frame_options = _framing(response)
    headers.setdefault("Content-Security-Policy", content_security_policy(frame_ancestors))
    if frame_options:
        headers.setdefault("X-Frame-Options", frame_options)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", f"max-age={current_app.config['HSTS_MAX_AGE']}")
    return response


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csp_nonce"] = lambda: Markup(csp_nonce())
    app.jinja_env.globals["external_script"] = external_script
    app.after_request(_headers)
