"""The payer's page of a payment link: `/checkout/link/<link id>` on the tenant's host.

No sign-in: anyone with the link (or its QR code) may open it. It shows the merchant, the items
and quantities, lets the payer type a coupon and see the lines and the total recomputed by the
server, asks for an e-mail, and "Continue to payment" creates the order and its PaymentIntent and
sends the payer to the hosted checkout (`/checkout/<intent id>?client_secret=...`). A link that is
expired, deactivated or used up answers 410 with a page saying so, and creates nothing.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, g, redirect, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional

from billing.coupons import CouponRefused
from core.db import db
from payments import links
from payments.errors import PaymentError
from payments.order_models import PaymentLink
from portal import theming
from portal.access import host_guard
from portal.forms import add_error, note_expired
from portal.i18n import format_amount
from tenants.models import Merchant

bp = Blueprint("paylinks", __name__)
bp.before_request(host_guard("tenant"))

REASONS = {
    "inactive": _l("The merchant has switched this payment link off."),
    "expired": _l("This payment link has expired."),
    "used_up": _l("This payment link has been used as often as the merchant allows."),
}


class LinkPayForm(FlaskForm):
    coupon = StringField(_l("Coupon code"), validators=[Optional(), Length(max=40)])
    email = EmailField(
        _l("E-mail"),
        validators=[DataRequired(_l("Give your e-mail: the receipt goes there.")), Email(), Length(max=254)],
        description=_l("Your receipt is sent to this address."),
    )


def _link(link_id: str) -> PaymentLink:
    link = links.public_link(g.tenant.id, link_id)
    if link is None:
        abort(404)
    return link


def _unavailable(link: PaymentLink, reason: str, merchant: Merchant | None):
    html = theming.render(
        "paylinks/unavailable.html", link=link, merchant=merchant, message=REASONS.get(reason, REASONS["inactive"])
    )
    return html, 410


def _quantities(link: PaymentLink) -> dict[int, str]:
    return {
        line.position: request.form.get(f"quantity-{line.position}", str(line.quantity))
        for line in links.lines_of_link(link)
        if line.adjustable
    }


def _page(link: PaymentLink, merchant: Merchant, form: LinkPayForm, quantities: dict[int, str], status: int = 200):
    quote, quantity_errors = None, {}
    coupon = (form.coupon.data or "").strip() or None
    try:
        quote = links.quote_for(link, quantities, coupon, None)
    except CouponRefused as exc:
        add_error(form.coupon, exc.message)
        status = 422
        quote = _quote_without_coupon(link, quantities, quantity_errors)
    except PaymentError as exc:
        quantity_errors[exc.param] = exc.message
        status = 422
        quote = _quote_without_coupon(link, {}, {})
    html = theming.render(
        "paylinks/link.html",
        link=link,
        merchant=merchant,
        form=form,
        lines=links.lines_of_link(link),
        quantities=quantities,
        quantity_errors=quantity_errors,
        quote=quote,
        format_amount=format_amount,
    )
    return html, status


def _quote_without_coupon(link, quantities, errors):
    try:
        return links.quote_for(link, quantities, None, None)
    except PaymentError as exc:
        errors[exc.param] = exc.message
        return links.quote_for(link, {}, None, None)


@bp.route("/<link_id>", methods=["GET", "POST"])
def page(link_id: str):
    link = _link(link_id)
    merchant = db.session.get(Merchant, (link.tenant_id, link.merchant_id))
    try:
        reason = links.unavailable_reason(link)
        if reason is None and link.kind == "items":
            links.order_lines(link)  # an item switched off since makes the link unpayable
    except links.LinkUnavailable as exc:
        reason = exc.reason
    if reason:
        return _unavailable(link, reason, merchant)
    if request.method == "GET":
        return _page(link, merchant, LinkPayForm(formdata=None), {})
    form = LinkPayForm()
    quantities = _quantities(link)
    if request.form.get("action") != "pay":
        # "Apply": show the lines and total for the coupon and quantities typed; nothing is written.
        return _page(link, merchant, form, quantities)
    if not form.validate():
        note_expired(form)
        return _page(link, merchant, form, quantities, 422)
    try:
        pi = links.pay(
            g.tenant.id,
            link.id,
            quantities=quantities,
            coupon_code=(form.coupon.data or "").strip() or None,
            payer_email=form.email.data.strip(),
        )
    except links.LinkUnavailable as exc:
        return _unavailable(link, exc.reason, merchant)
    except PaymentError as exc:
        field = {"coupon": form.coupon, "receipt_email": form.email}.get(exc.param or "")
        if field is not None:
            add_error(field, exc.message)
        elif (exc.param or "").startswith("quantity-"):
            form.form_errors.append(exc.message)
        else:
            form.form_errors.append(_("The payment could not be started: %(reason)s", reason=exc.message))
        return _page(link, merchant, form, quantities, 422)
    return redirect(f"/checkout/{pi.id}?{urlencode({'client_secret': pi.client_secret})}", code=303)
