"""Merchant dashboard: charge items (收费项目) and coupons.

Everyone of the merchant sees them; only the owner creates, changes, deactivates and activates
them. Lists are searchable, filterable (active or not) and keyset-paginated.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from billing import catalog, coupons
from billing.catalog import ChargeItemInput
from billing.coupons import CouponInput
from billing.models import ChargeItem, Coupon
from clearing import listings
from core.money import to_major
from payments import orders
from payments import products as catalogue
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.forms import ActionForm, field_error, labelled, note_expired
from portal.i18n import format_amount
from portal.merchant import bp
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES

PAGE_SIZE = 25
ACTIVE_FILTERS = {"": None, "active": True, "inactive": False}


def tenant_zone() -> ZoneInfo:
    try:
        return ZoneInfo(g.tenant.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_moment(value: datetime | None) -> datetime | None:
    """A `datetime-local` value typed in the tenant's time zone, as an aware moment."""
    return value.replace(tzinfo=tenant_zone()) if value is not None else None


def scope() -> listings.Scope:
    return listings.Scope(current_user.tenant_id, current_user.merchant_id, tenant_zone())


def list_args() -> tuple[str, str, bool | None]:
    q = (request.args.get("q") or "").strip()
    state = request.args.get("state", "")
    return q, state if state in ACTIVE_FILTERS else "", ACTIVE_FILTERS.get(state)


# --- charge items ------------------------------------------------------------------------------


class ChargeItemForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=catalog.NAME_MAX)])
    unit = StringField(
        _l("Unit"),
        validators=[Optional(), Length(max=catalog.UNIT_MAX)],
        description=_l("What one is: piece, hour, month… (default: piece)."),
    )
    unit_price = StringField(
        _l("Unit price"), validators=[DataRequired()], description=_l("In the currency, e.g. 12.50 (not in cents).")
    )
    currency = StringField(_l("Currency"), validators=[DataRequired(), Length(min=3, max=3)], default="USD")
    tax_inclusive = BooleanField(_l("The price includes tax"), default=True)
    payment_method_types = SelectMultipleField(
        _l("May be paid with"),
        choices=labelled(dict(catalogue.TITLES)),
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        description=_l("None ticked: every payment method your channels take."),
    )


def _item_input(form: ChargeItemForm, active: bool = True) -> ChargeItemInput:
    return ChargeItemInput(
        name=form.name.data or "",
        unit_price=form.unit_price.data or "",
        currency=form.currency.data or "",
        unit=form.unit.data or "",
        tax_inclusive=form.tax_inclusive.data,
        active=active,
        payment_method_types=form.payment_method_types.data or [],
    )


def _item(item_id: uuid.UUID) -> ChargeItem:
    item = catalog.get_item(current_user.tenant_id, current_user.merchant_id, item_id)
    if item is None:
        abort(404)
    return item


@bp.route("/charge-items")
@merchant_role_required(*MERCHANT_ROLES)
def charge_items():
    q, state, _active = list_args()
    own = scope()
    # The same filters as the list's export (`clearing.listings`), so the file has the page's rows.
    statement, _errors = listings.charge_items(own, request.args)
    page = newest_first(statement, ChargeItem, request.args.get("after"), PAGE_SIZE)
    return theming.render(
        "merchant/charge_items.html",
        page=page,
        q=q,
        state=state,
        paged=bool(request.args.get("after")),
        format_amount=format_amount,
        action_form=ActionForm(),
        **reporting.tools("merchant", "charge_items", own),
    )


@bp.route("/charge-items/new", methods=["GET", "POST"])
@merchant_role_required("owner")
def new_charge_item():
    form = ChargeItemForm()
    if form.validate_on_submit():
        try:
            item = catalog.create_item(
                current_user.tenant_id,
                current_user.merchant_id,
                _item_input(form),
                set(catalogue.PRODUCTS),
                current_actor(),
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("The charge item %(name)s is saved.", name=item.name), "success")
            return redirect(url_for("merchant.charge_items"))
    note_expired(form)
    status = 422 if form.errors or form.form_errors else 200
    return theming.render("merchant/charge_item_form.html", form=form, item=None), status


@bp.route("/charge-items/<uuid:item_id>", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def charge_item(item_id: uuid.UUID):
    item = _item(item_id)
    form = ChargeItemForm(
        formdata=None,
        name=item.name,
        unit=item.unit,
        unit_price=str(to_major(item.unit_amount, item.currency)),
        currency=item.currency,
        tax_inclusive=item.tax_inclusive,
        payment_method_types=list(item.payment_method_types or []),
    )
    return theming.render("merchant/charge_item_form.html", form=form, item=item, action_form=ActionForm())


@bp.route("/charge-items/<uuid:item_id>", methods=["POST"])
@merchant_role_required("owner")
def update_charge_item(item_id: uuid.UUID):
    item = _item(item_id)
    form = ChargeItemForm()
    if form.validate_on_submit():
        try:
            catalog.update_item(item, _item_input(form, item.active), set(catalogue.PRODUCTS), current_actor())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(
                _("The charge item %(name)s is saved; orders already made keep their prices.", name=item.name),
                "success",
            )
            return redirect(url_for("merchant.charge_items"))
    note_expired(form)
    html = theming.render("merchant/charge_item_form.html", form=form, item=item, action_form=ActionForm())
    return html, 422


@bp.route("/charge-items/<uuid:item_id>/active", methods=["POST"])
@merchant_role_required("owner")
def set_charge_item_active(item_id: uuid.UUID):
    item = _item(item_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
    else:
        active = request.form.get("active") == "1"
        catalog.set_active(item, active, current_actor())
        if active:
            flash(_("%(name)s is active: it can be sold again.", name=item.name), "success")
        else:
            flash(_("%(name)s is deactivated: new orders and links cannot use it.", name=item.name), "success")
    return redirect(url_for("merchant.charge_items"))


# --- coupons -----------------------------------------------------------------------------------


class CouponForm(FlaskForm):
    code = StringField(
        _l("Code"),
        validators=[DataRequired(), Length(max=coupons.CODE_MAX)],
        description=_l("What payers type, e.g. SUMMER10 (upper or lower case does not matter)."),
    )
    kind = SelectField(
        _l("Discount"),
        choices=[SelectChoice("percent", _l("A percentage")), SelectChoice("fixed", _l("A fixed amount"))],
    )
    percent_off = StringField(_l("Percentage off"), description=_l("For a percentage, e.g. 12.5."))
    amount_off = StringField(_l("Amount off"), description=_l("For a fixed amount, in the currency, e.g. 5.00."))
    currency = StringField(
        _l("Currency"),
        validators=[Optional(), Length(min=3, max=3)],
        description=_l("Needed for a fixed amount or a minimum; a percentage without one applies to any currency."),
    )
    min_amount = StringField(_l("Minimum order amount"), description=_l("Optional, in the currency, e.g. 20.00."))
    expires_at = DateTimeLocalField(_l("Expires at"), validators=[Optional()], format="%Y-%m-%dT%H:%M")
    max_redemptions = IntegerField(
        _l("Uses in all"), validators=[Optional(), NumberRange(min=1)], description=_l("Empty: no limit.")
    )
    max_per_payer = IntegerField(
        _l("Uses per payer"),
        validators=[Optional(), NumberRange(min=1)],
        description=_l("Counted by the payer's e-mail. Empty: no limit."),
    )


def _coupon_input(form: CouponForm, active: bool = True) -> CouponInput:
    return CouponInput(
        code=form.code.data or "",
        kind=form.kind.data,
        percent_off=form.percent_off.data or "",
        amount_off=form.amount_off.data or "",
        currency=form.currency.data or "",
        min_amount=form.min_amount.data or "",
        expires_at=local_moment(form.expires_at.data),
        max_redemptions=form.max_redemptions.data,
        max_per_payer=form.max_per_payer.data,
        active=active,
    )


def _coupon(coupon_id: uuid.UUID) -> Coupon:
    coupon = coupons.get_coupon(current_user.tenant_id, current_user.merchant_id, coupon_id)
    if coupon is None:
        abort(404)
    return coupon


def _coupon_page(form: CouponForm, coupon: Coupon | None, status: int = 200):
    usage = orders.coupon_usage(current_user.tenant_id, [coupon.id])[coupon.id] if coupon else None
    html = theming.render(
        "merchant/coupon_form.html",
        form=form,
        coupon=coupon,
        usage=usage,
        zone=tenant_zone().key,
        action_form=ActionForm(),
    )
    return html, status


@bp.route("/coupons")
@merchant_role_required(*MERCHANT_ROLES)
def coupons_list():
    q, state, _active = list_args()
    own = scope()
    statement, _errors = listings.coupon_list(own, request.args)
    page = newest_first(statement, Coupon, request.args.get("after"), PAGE_SIZE)
    return theming.render(
        "merchant/coupons.html",
        page=page,
        q=q,
        state=state,
        paged=bool(request.args.get("after")),
        usage=orders.coupon_usage(current_user.tenant_id, [c.id for c in page.items]),
        describe=coupons.describe,
        format_amount=format_amount,
        zone=tenant_zone(),
        action_form=ActionForm(),
        **reporting.tools("merchant", "coupons", own),
    )


@bp.route("/coupons/new", methods=["GET", "POST"])
@merchant_role_required("owner")
def new_coupon():
    form = CouponForm()
    if form.validate_on_submit():
        try:
            coupon = coupons.create_coupon(
                current_user.tenant_id, current_user.merchant_id, _coupon_input(form), current_actor()
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("The coupon %(code)s is saved.", code=coupon.code), "success")
            return redirect(url_for("merchant.coupons_list"))
    note_expired(form)
    return _coupon_page(form, None, 422 if form.errors or form.form_errors else 200)


@bp.route("/coupons/<uuid:coupon_id>", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def coupon(coupon_id: uuid.UUID):
    found = _coupon(coupon_id)
    currency = found.currency
    form = CouponForm(
        formdata=None,
        code=found.code,
        kind=found.kind,
        percent_off=coupons.percent_input(found),
        amount_off=str(to_major(found.amount_off, currency)) if found.amount_off is not None else "",
        currency=currency or "",
        min_amount=str(to_major(found.min_amount, currency)) if found.min_amount is not None else "",
        expires_at=found.expires_at.astimezone(tenant_zone()).replace(tzinfo=None) if found.expires_at else None,
        max_redemptions=found.max_redemptions,
        max_per_payer=found.max_per_payer,
    )
    return _coupon_page(form, found)


@bp.route("/coupons/<uuid:coupon_id>", methods=["POST"])
@merchant_role_required("owner")
def update_coupon(coupon_id: uuid.UUID):
    found = _coupon(coupon_id)
    form = CouponForm()
    if form.validate_on_submit():
        try:
            coupons.update_coupon(found, _coupon_input(form, found.active), current_actor())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(
                _("The coupon %(code)s is saved; orders already made keep their discount.", code=found.code), "success"
            )
            return redirect(url_for("merchant.coupons_list"))
    note_expired(form)
    return _coupon_page(form, found, 422)


@bp.route("/coupons/<uuid:coupon_id>/active", methods=["POST"])
@merchant_role_required("owner")
def set_coupon_active(coupon_id: uuid.UUID):
    found = _coupon(coupon_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
    else:
        active = request.form.get("active") == "1"
        coupons.set_active(found, active, current_actor())
        if active:
            flash(_("The coupon %(code)s is active again.", code=found.code), "success")
        else:
            flash(_("The coupon %(code)s is deactivated: payers can no longer use it.", code=found.code), "success")
    return redirect(url_for("merchant.coupons_list"))
