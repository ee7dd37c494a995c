"""Merchant dashboard: payment links, their URL and QR code (PNG and SVG, to print).

Everyone of the merchant sees the links; only the owner creates, deactivates and activates them.
The QR code encodes the link's public address on the tenant's own host
(`/checkout/link/<link id>`), drawn by `segno`.
"""

from __future__ import annotations

import io
import uuid

import segno
from flask import abort, flash, g, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, FieldList, FormField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from billing import catalog
from clearing import listings
from payments import links
from payments.links import LinkInput, LinkItemInput
from payments.order_models import PaymentLink
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.forms import ActionForm, field_error, note_expired
from portal.i18n import format_amount
from portal.merchant import bp
from portal.merchant.catalog import list_args, local_moment, scope, tenant_zone
from portal.pagination import newest_first
from portal.sites import current_actor, tenant_base_url
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES

PAGE_SIZE = 25
ITEM_ROWS = 5


class LinkItemForm(FlaskForm):
    class Meta:
        csrf = False  # a row of the link's form, which carries the token

    charge_item = SelectField(_l("Charge item"), choices={}, validate_choice=False)
    quantity = IntegerField(_l("Quantity"), validators=[Optional(), NumberRange(min=1)], default=1)
    adjustable = BooleanField(_l("The payer may change it"))
    min_quantity = IntegerField(_l("Minimum"), validators=[Optional(), NumberRange(min=1)])
    max_quantity = IntegerField(_l("Maximum"), validators=[Optional(), NumberRange(min=1)])


class PaymentLinkForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(), Length(max=links.NAME_MAX)],
        description=_l("What the payer sees as the title, e.g. “Yoga class, 10 sessions”."),
    )
    mode = SelectField(
        _l("Mode"), choices=[SelectChoice("test", _l("Test (no real money)")), SelectChoice("live", _l("Live"))]
    )
    kind = SelectField(
        _l("Price"),
        choices=[SelectChoice("items", _l("From charge items")), SelectChoice("amount", _l("A fixed amount"))],
        default="items",
    )
    amount = StringField(_l("Amount"), description=_l("For a fixed amount, e.g. 25.00."))
    currency = StringField(_l("Currency"), validators=[Optional(), Length(min=3, max=3)], default="USD")
    items = FieldList(FormField(LinkItemForm), min_entries=ITEM_ROWS, max_entries=ITEM_ROWS)
    expires_at = DateTimeLocalField(_l("Expires at"), validators=[Optional()], format="%Y-%m-%dT%H:%M")
    max_payments = IntegerField(
        _l("Paid payments at most"), validators=[Optional(), NumberRange(min=1)], description=_l("Empty: no limit.")
    )
    allow_coupons = BooleanField(_l("Payers may enter a coupon code"), default=True)
    after_payment_url = StringField(
        _l("After paying, back to"),
        validators=[Optional(), Length(max=2000)],
        description=_l(
            "Optional: your page the payer returns to from the receipt, e.g. https://shop.example.com/thanks."
        ),
    )


def _link_form(formdata=None) -> PaymentLinkForm:
    form = PaymentLinkForm() if formdata is None else PaymentLinkForm(formdata=formdata)
    choices = {"": str(_("— none —"))} | {
        str(item.id): f"{item.name} · {format_amount(item.unit_amount, item.currency)} / {item.unit}"
        for item in catalog.active_items(current_user.tenant_id, current_user.merchant_id)
    }
    for row in form.items:
        row.charge_item.choices = choices
    return form


def _link_input(form: PaymentLinkForm) -> LinkInput:
    items = []
    if form.kind.data == "items":
        for row in form.items:
            chosen = row.charge_item.data
            if not chosen:
                continue
            try:
                ident = uuid.UUID(chosen)
            except ValueError:
                raise InvalidInput(_("Choose one of your charge items."), "items") from None
            items.append(
                LinkItemInput(
                    charge_item=ident,
                    quantity=row.quantity.data or 1,
                    adjustable=row.adjustable.data,
                    min_quantity=row.min_quantity.data,
                    max_quantity=row.max_quantity.data,
                )
            )
        if not items:
            raise InvalidInput(_("Choose at least one charge item (or a fixed amount)."), "items")
    return LinkInput(
        name=form.name.data or "",
        livemode=form.mode.data == "live",
        amount=(form.amount.data or "") if form.kind.data == "amount" else "",
        currency=form.currency.data or "",
        items=items,
        expires_at=local_moment(form.expires_at.data),
        max_payments=form.max_payments.data,
        allow_coupons=form.allow_coupons.data,
        after_payment_url=form.after_payment_url.data or "",
    )


def _link(link_id: str) -> PaymentLink:
    link = links.get_link(current_user.tenant_id, current_user.merchant_id, link_id)
    if link is None:
        abort(404)
    return link


def public_url(link: PaymentLink) -> str:
    """The address payers open (and the QR code holds): on the tenant's own host."""
    return tenant_base_url(g.tenant) + url_for("paylinks.page", link_id=link.id)


def _mode() -> str:
    return "live" if request.args.get("mode") == "live" else "test"


@bp.route("/payment-links")
@merchant_role_required(*MERCHANT_ROLES)
def payment_links():
    q, state, _active = list_args()
    mode = _mode()
    own = scope()
    # The same filters as the list's export (`clearing.listings`), so the file has the page's rows.
    statement, _errors = listings.payment_links(own, request.args)
    page = newest_first(statement, PaymentLink, request.args.get("after"), PAGE_SIZE)
    return theming.render(
        "merchant/payment_links.html",
        page=page,
        q=q,
        state=state,
        mode=mode,
        paged=bool(request.args.get("after")),
        paid=links.paid_counts(current_user.tenant_id, [link.id for link in page.items]),
        format_amount=format_amount,
        zone=tenant_zone(),
        **reporting.tools("merchant", "payment_links", own),
    )


@bp.route("/payment-links/new", methods=["GET", "POST"])
@merchant_role_required("owner")
def new_payment_link():
    form = _link_form()
    if form.validate_on_submit():
        try:
            link = links.create_link(
                current_user.tenant_id, current_user.merchant_id, _link_input(form), current_actor()
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("The payment link is ready: share its address or print its QR code."), "success")
            return redirect(url_for("merchant.payment_link", link_id=link.id))
    note_expired(form)
    status = 422 if form.errors or form.form_errors else 200
    return theming.render("merchant/payment_link_form.html", form=form, zone=tenant_zone().key), status


@bp.route("/payment-links/<link_id>")
@merchant_role_required(*MERCHANT_ROLES)
def payment_link(link_id: str):
    link = _link(link_id)
    return theming.render(
        "merchant/payment_link.html",
        link=link,
        url=public_url(link),
        lines=links.lines_of_link(link),
        paid=links.paid_counts(link.tenant_id, [link.id])[link.id],
        unavailable=links.unavailable_reason(link),
        format_amount=format_amount,
        zone=tenant_zone(),
        action_form=ActionForm(),
    )


def _qr(link: PaymentLink, kind: str):
    qr = segno.make(public_url(link), error="m")
    out = io.BytesIO()
    if kind == "png":
        qr.save(out, kind="png", scale=10, border=4)
        mimetype = "image/png"
    else:
        qr.save(out, kind="svg", scale=10, border=4, title=link.name)
        mimetype = "image/svg+xml"
    response = make_response(out.getvalue())
    response.mimetype = mimetype
    if request.args.get("download"):
        response.headers["Content-Disposition"] = f'attachment; filename="payment-link-{link.id}.{kind}"'
    return response


@bp.route("/payment-links/<link_id>/qr.png")
@merchant_role_required(*MERCHANT_ROLES)
def payment_link_qr_png(link_id: str):
    return _qr(_link(link_id), "png")


@bp.route("/payment-links/<link_id>/qr.svg")
@merchant_role_required(*MERCHANT_ROLES)
def payment_link_qr_svg(link_id: str):
    return _qr(_link(link_id), "svg")


@bp.route("/payment-links/<link_id>/active", methods=["POST"])
@merchant_role_required("owner")
def set_payment_link_active(link_id: str):
    link = _link(link_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
    else:
        active = request.form.get("active") == "1"
        links.set_active(link, active, current_actor())
        if active:
            flash(_("The payment link is active again."), "success")
        else:
            flash(_("The payment link is deactivated: payers who open it are told it cannot be paid."), "success")
    return redirect(url_for("merchant.payment_link", link_id=link.id))
