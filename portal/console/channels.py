"""Console: channel accounts, routing rules and the route tester (tenant admins; operators read)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _

from core.db import db
from core.money import MoneyError, to_major, to_minor
from payments import channel_accounts as accounts
from payments import channel_health, route_planning
from payments import products as catalogue
from payments.models import ChannelAccount, RoutingRule
from portal import theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.forms import ActionForm, RouteTestForm, RoutingRuleForm, channel_account_form, field_error
from portal.i18n import format_amount
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import Merchant


def _product_choices() -> list[tuple[str, str]]:
    return [(product.code, product.title) for product in catalogue.PRODUCTS.values()]


def _optional_minor(value: str | None, currency: str, field: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return to_minor(value, currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), field) from exc


def _input_from(form) -> accounts.ChannelAccountInput:
    currency = (form.currency.data or "").strip().upper()
    served = [code for code, _ in _product_choices() if getattr(form, f"serve_{code}").data]
    costs = {}
    for code in served:
        fixed = _optional_minor(getattr(form, f"fixed_{code}").data, currency, f"fixed_{code}") or 0
        costs[code] = {"percent": (getattr(form, f"percent_{code}").data or "0").strip(), "fixed": fixed}
    return accounts.ChannelAccountInput(
        name=form.name.data or "",
        type=form.type.data,
        mode=form.mode.data,
        status=form.status.data,
        base_url=form.base_url.data,
        currency=currency,
        credentials={"secret_key": form.secret_key.data or "", "webhook_secret": form.webhook_secret.data or ""},
        products=served,
        min_amount=_optional_minor(form.min_amount.data, currency, "min_amount"),
        max_amount=_optional_minor(form.max_amount.data, currency, "max_amount"),
        daily_cap=_optional_minor(form.daily_cap.data, currency, "daily_cap"),
        costs=costs,
        priority=int(form.priority.data),
        required_elements=[e for e in (form.required_elements.data or "").split(",") if e.strip()],
        settings={
            "latency_ms": form.latency_ms.data,
            "test_instruments": form.test_instruments.data,
            "publishable_key": form.publishable_key.data,
        },
    )


def _form_data(account: ChannelAccount) -> dict:
    def major(value):
        return str(to_major(value, account.currency)) if value is not None else ""

    data = {
        "name": account.name,
        "type": account.type,
        "mode": account.mode,
        "status": account.status,
        "base_url": account.base_url or "",
        "currency": account.currency,
        "min_amount": major(account.min_amount),
        "max_amount": major(account.max_amount),
        "daily_cap": major(account.daily_cap),
        "priority": str(account.priority),
        "required_elements": ", ".join(account.required_elements),
        "latency_ms": str(account.settings.get("latency_ms", "")),
        "test_instruments": account.settings.get("test_instruments", ""),
        "publishable_key": account.settings.get("publishable_key", ""),
    }
    for code, _label in _product_choices():
        data[f"serve_{code}"] = code in account.products
        cost = account.costs.get(code, {})
        data[f"percent_{code}"] = cost.get("percent", "")
        data[f"fixed_{code}"] = major(cost["fixed"]) if "fixed" in cost else ""
    return data


def _save(form, account: ChannelAccount | None):
    """Validate and save; returns the account, or None with the errors placed on the form."""
    known = {code for code, _ in _product_choices()}
    try:
        data = _input_from(form)
        if account is None:
            return accounts.create_channel_account(g.tenant.id, data, known, current_actor())
        accounts.update_channel_account(account, data, known, current_actor())
        return account
    except InvalidInput as exc:
        field_error(form, exc)
        return None


@bp.route("/channels")
@tenant_role_required("admin", "operator")
def channels():
    rows = (
        db.session.execute(sa.select(ChannelAccount).order_by(ChannelAccount.mode, ChannelAccount.name)).scalars().all()
    )
    return theming.render(
        "console/channels.html",
        accounts=rows,
        health=channel_health.states(account.id for account in rows),
        format_amount=format_amount,
        labels=dict(_product_choices()),
    )


@bp.route("/channels/new", methods=["GET", "POST"])
@tenant_role_required("admin")
def new_channel():
    form = channel_account_form(_product_choices(), data=None if request.method == "POST" else {"priority": "100"})
    if form.validate_on_submit():
        account = _save(form, None)
        if account is not None:
            flash(_("%(name)s is added. It takes payments from now on.", name=account.name), "success")
            return redirect(url_for("console.channel", account_id=account.id))
    status = 422 if form.errors or form.form_errors else 200
    return theming.render("console/channel_form.html", form=form, account=None, products=_product_choices()), status


def _get_account(account_id: uuid.UUID) -> ChannelAccount:
    account = accounts.get_channel_account(g.tenant.id, account_id)
    if account is None:
        abort(404)
    return account


@bp.route("/channels/<uuid:account_id>", methods=["GET", "POST"])
@tenant_role_required("admin")
def channel(account_id: uuid.UUID):
    account = _get_account(account_id)
    form = channel_account_form(_product_choices(), data=None if request.method == "POST" else _form_data(account))
    if form.validate_on_submit() and _save(form, account) is not None:
        flash(_("%(name)s is saved. The next payment uses the new settings.", name=account.name), "success")
        return redirect(url_for("console.channel", account_id=account.id))
    status = 422 if form.errors or form.form_errors else 200
    return theming.render("console/channel_form.html", form=form, account=account, products=_product_choices()), status


def _rule_form() -> RoutingRuleForm:
    form = RoutingRuleForm()
    form.merchant_id.choices = [
        (str(m.id), m.name) for m in db.session.execute(sa.select(Merchant).order_by(Merchant.name)).scalars()
    ]
    form.channel_account_id.choices = [
        (str(a.id), f"{a.name} ({a.mode}, {a.currency})")
        for a in db.session.execute(sa.select(ChannelAccount).order_by(ChannelAccount.name)).scalars()
    ]
    form.product.choices = [("", _("All products")), *_product_choices()]
    return form


def _tester_form() -> RouteTestForm:
    form = RouteTestForm(prefix="test")
    form.merchant_id.choices = [
        (str(m.id), m.name) for m in db.session.execute(sa.select(Merchant).order_by(Merchant.name)).scalars()
    ]
    form.product.choices = _product_choices()
    return form


def _routing_page(rule_form, tester, decision=None, status=200):
    rules = db.session.execute(
        sa.select(RoutingRule, Merchant.name, ChannelAccount.name)
        .join(Merchant, sa.and_(Merchant.tenant_id == RoutingRule.tenant_id, Merchant.id == RoutingRule.merchant_id))
        .join(
            ChannelAccount,
            sa.and_(
                ChannelAccount.tenant_id == RoutingRule.tenant_id, ChannelAccount.id == RoutingRule.channel_account_id
            ),
        )
        .order_by(Merchant.name, RoutingRule.created_at)
    ).all()
    return theming.render(
        "console/routing.html",
        rule_form=rule_form,
        tester=tester,
        rules=rules,
        decision=decision,
        action_form=ActionForm(),
        labels=dict(_product_choices()),
        format_amount=format_amount,
    ), status


@bp.route("/routing", methods=["GET"])
@tenant_role_required("admin", "operator")
def routing():
    return _routing_page(_rule_form(), _tester_form())


@bp.route("/routing/rules", methods=["POST"])
@tenant_role_required("admin")
def add_routing_rule():
    form = _rule_form()
    if form.validate_on_submit():
        try:
            accounts.add_rule(
                g.tenant.id,
                uuid.UUID(form.merchant_id.data),
                uuid.UUID(form.channel_account_id.data),
                form.action.data,
                form.product.data or None,
                current_actor(),
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("The rule is saved and applies to the next payment."), "success")
            return redirect(url_for("console.routing"))
    return _routing_page(form, _tester_form(), status=422)


@bp.route("/routing/rules/<uuid:rule_id>/delete", methods=["POST"])
@tenant_role_required("admin")
def remove_routing_rule(rule_id: uuid.UUID):
    rule = db.session.execute(
        sa.select(RoutingRule).where(RoutingRule.tenant_id == g.tenant.id, RoutingRule.id == rule_id)
    ).scalar_one_or_none()
    if rule is None:
        abort(404)
    if ActionForm().validate_on_submit():
        accounts.remove_rule(rule, current_actor())
        flash(_("The rule is removed."), "success")
    return redirect(url_for("console.routing"))


@bp.route("/routing/test", methods=["POST"])
@tenant_role_required("admin", "operator")
def test_route():
    tester = _tester_form()
    decision = None
    if tester.validate_on_submit():
        try:
            currency = tester.currency.data.strip().upper()
            amount = to_minor(tester.amount.data, currency)
            elements = {e.strip() for e in (tester.payer_elements.data or "").split(",") if e.strip()}
            decision = route_planning.plan(
                g.tenant.id,
                uuid.UUID(tester.merchant_id.data),
                tester.product.data,
                amount,
                currency,
                tester.mode.data,
                elements,
            )
        except MoneyError as exc:
            tester.amount.errors = [*tester.amount.errors, str(exc)]
    status = 200 if decision is not None else 422
    return _routing_page(_rule_form(), tester, decision, status)
