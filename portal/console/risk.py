"""Tenant console: risk and AML monitoring (`risk`).

- Alerts (`/console/risk`): what the rules raised, newest first, searchable (payment id, merchant,
  rule, reason), filterable by kind and action, keyset-paged; each alert has its page. All staff.
- Rules (`/console/risk/rules`): the tenant's rules as rows; staff read them, admins create,
  change and delete them (audited by `risk.rules`).
- Review queue (`/console/risk/review`): payments a rule held; admins and operators release them
  (their money goes to settlement) or refund them in full (audited by `risk.review`).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from core.db import db
from core.money import MoneyError, normalise_currency, to_major, to_minor
from payments.models import PaymentIntent
from portal import theming
from portal.access import tenant_role_required
from portal.console import STAFF, bp
from portal.console.onboarding import RISK_LABELS
from portal.forms import ActionForm, field_error, note_expired
from portal.pagination import newest_first, search_term
from portal.sites import current_actor
from risk import review, rules
from risk.models import ACTIONS, KINDS, RiskAlert, RiskRule
from risk.screening import LEVEL_FACTORS
from tenants.errors import InvalidInput
from tenants.models import Merchant

RULE_MANAGERS = ("admin",)
REVIEWERS = ("admin", "operator")
KIND_LABELS = {
    "velocity": _l("Velocity"),
    "large_amount": _l("Large amount"),
    "structuring": _l("Structuring (just under a threshold)"),
    "duplicate": _l("Duplicate payment"),
    "refund_share": _l("Refund share"),
}
ACTION_LABELS = {"flag": _l("Flag (alert only)"), "hold": _l("Hold for review"), "block": _l("Block")}
SUBJECT_LABELS = {"payer": _l("Payer (e-mail)"), "card": _l("Card (payment method)"), "merchant": _l("Merchant")}
REVIEW_LABELS = {"held": _l("Held"), "released": _l("Released"), "refunded": _l("Refunded")}


class RuleForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=rules.NAME_MAX)])
    kind = SelectField(_l("Looks at"), choices=[SelectChoice(value=k, label=v) for k, v in KIND_LABELS.items()])
    action = SelectField(_l("Action"), choices=[SelectChoice(value=k, label=v) for k, v in ACTION_LABELS.items()])
    currency = StringField(_l("Currency"), default="USD", validators=[DataRequired(), Length(max=3)])
    enabled = BooleanField(_l("Enabled"), default=True)
    subject = SelectField(
        _l("Whose payments"),
        choices=[
            SelectChoice(value="", label="—"),
            *(SelectChoice(value=k, label=v) for k, v in SUBJECT_LABELS.items()),
        ],
        description=_l("Velocity, structuring and duplicate rules count one payer's, card's or merchant's payments."),
    )
    window_minutes = StringField(_l("Window (minutes)"), description=_l("How far back the rule looks; 1440 is a day."))
    count_limit = StringField(
        _l("Number of payments"),
        description=_l("Velocity: more than this many fires. Structuring: this many or more fires."),
    )
    amount_limit = StringField(
        _l("Amount"),
        description=_l(
            "In the currency, e.g. 1000.00. Velocity: more than this in all fires; large amount and "
            "structuring: the threshold. Scaled by the merchant's risk level."
        ),
    )
    percent = StringField(
        _l("Percent"),
        description=_l("Structuring: how far below the threshold counts as just under it. Refund share: the share."),
    )


def _rule_form(rule: RiskRule | None = None, posted: bool = True) -> RuleForm:
    if posted:
        return RuleForm()
    if rule is None:
        return RuleForm(formdata=None)
    data = {
        "name": rule.name,
        "kind": rule.kind,
        "action": rule.action,
        "currency": rule.currency,
        "enabled": rule.enabled,
        "subject": rule.subject or "",
        "window_minutes": "" if rule.window_minutes is None else str(rule.window_minutes),
        "count_limit": "" if rule.count_limit is None else str(rule.count_limit),
        "amount_limit": "" if rule.amount_limit is None else str(to_major(rule.amount_limit, rule.currency)),
        "percent": "" if rule.percent is None else str(rule.percent),
    }
    return RuleForm(formdata=None, data=data)


def _spec(form: RuleForm) -> rules.RuleInput:
    """The rule the form describes; an amount that is not money in the currency names its field."""
    try:
        currency = normalise_currency(form.currency.data or "")
    except MoneyError as exc:
        raise InvalidInput(str(exc), "currency") from None
    amount = (form.amount_limit.data or "").strip()
    amount_limit = None
    if amount:
        try:
            amount_limit = to_minor(amount, currency)
        except MoneyError as exc:
            raise InvalidInput(str(exc), "amount_limit") from None
    return rules.RuleInput(
        name=form.name.data or "",
        kind=form.kind.data,
        action=form.action.data,
        currency=currency,
        enabled=bool(form.enabled.data),
        subject=form.subject.data or None,
        window_minutes=form.window_minutes.data,
        count_limit=form.count_limit.data,
        amount_limit=amount_limit,
        percent=form.percent.data,
    )


def _merchant_names(merchant_ids) -> dict[uuid.UUID, str]:
    if not merchant_ids:
        return {}
    return dict(
        db.session.execute(
            sa.select(Merchant.id, Merchant.name).where(
                Merchant.tenant_id == g.tenant.id, Merchant.id.in_(set(merchant_ids))
            )
        ).all()
    )


def _common() -> dict:
    return {
        "kind_labels": KIND_LABELS,
        "action_labels": ACTION_LABELS,
        "subject_labels": SUBJECT_LABELS,
        "review_labels": REVIEW_LABELS,
        "risk_labels": RISK_LABELS,
        "level_factors": [(RISK_LABELS[level], LEVEL_FACTORS[level]) for level in ("low", "medium", "high")],
        "can_manage_rules": g.get("user_role") in RULE_MANAGERS,
        "can_review": g.get("user_role") in REVIEWERS,
    }


# --- alerts ------------------------------------------------------------------------------------


@bp.route("/risk")
@tenant_role_required(*STAFF)
def risk_alerts():
    args = request.args
    kind = args.get("kind") or ""
    action = args.get("action") or ""
    errors = {}
    if kind and kind not in KINDS:
        errors["kind"], kind = _("%(value)s is not a kind of rule.", value=kind), ""
    if action and action not in ACTIONS:
        errors["action"], action = _("%(value)s is not an action.", value=action), ""
    filters = review.AlertFilters(q=search_term(args.get("q")), kind=kind or None, action=action or None)
    page = newest_first(
        review.alerts(g.tenant.id, filters), RiskAlert, args.get("after"), current_app.config["PAGE_SIZE"]
    )
    return theming.render(
        "console/risk_alerts.html",
        page=page,
        q=args.get("q", ""),
        kind=kind,
        action=action,
        errors=errors,
        merchant_names=_merchant_names([a.merchant_id for a in page.items]),
        held_count=review.held_count(g.tenant.id),
        **_common(),
    ), (422 if errors else 200)


@bp.route("/risk/alerts/<uuid:alert_id>")
@tenant_role_required(*STAFF)
def risk_alert(alert_id: uuid.UUID):
    alert = review.get_alert(g.tenant.id, alert_id)
    if alert is None:
        abort(404)
    payment = review.get_payment(g.tenant.id, alert.payment_intent_id) if alert.payment_intent_id else None
    rule = rules.get(g.tenant.id, alert.rule_id) if alert.rule_id else None
    return theming.render(
        "console/risk_alert.html",
        alert=alert,
        payment=payment,
        rule=rule,
        merchant_name=_merchant_names([alert.merchant_id]).get(alert.merchant_id, ""),
        form=ActionForm(),
        **_common(),
    )


# --- rules -------------------------------------------------------------------------------------


def _rules_page(form: RuleForm, status: int = 200):
    return theming.render("console/risk_rules.html", rules=rules.rules_of(g.tenant.id), form=form, **_common()), status


@bp.route("/risk/rules")
@tenant_role_required(*STAFF)
def risk_rules():
    return _rules_page(_rule_form(posted=False))


@bp.route("/risk/rules", methods=["POST"])
@tenant_role_required(*RULE_MANAGERS)
def create_risk_rule():
    form = _rule_form()
    if not form.validate_on_submit():
        note_expired(form)
        return _rules_page(form, 422)
    try:
        rule = rules.create(g.tenant.id, _spec(form), current_actor())
    except InvalidInput as exc:
        field_error(form, exc)
        return _rules_page(form, 422)
    flash(_("Rule %(name)s added; it applies from the next payment.", name=rule.name), "success")
    return redirect(url_for("console.risk_rules"))


def _rule(rule_id: uuid.UUID) -> RiskRule:
    rule = rules.get(g.tenant.id, rule_id)
    if rule is None:
        abort(404)
    return rule


def _edit_page(rule: RiskRule, form: RuleForm, status: int = 200):
    return theming.render("console/risk_rule.html", rule=rule, form=form, delete_form=ActionForm(), **_common()), status


@bp.route("/risk/rules/<uuid:rule_id>")
@tenant_role_required(*RULE_MANAGERS)
def risk_rule(rule_id: uuid.UUID):
    rule = _rule(rule_id)
    return _edit_page(rule, _rule_form(rule, posted=False))


@bp.route("/risk/rules/<uuid:rule_id>", methods=["POST"])
@tenant_role_required(*RULE_MANAGERS)
def update_risk_rule(rule_id: uuid.UUID):
    rule = _rule(rule_id)
    form = _rule_form()
    if not form.validate_on_submit():
        note_expired(form)
        return _edit_page(rule, form, 422)
    try:
        rule = rules.update(g.tenant.id, rule.id, _spec(form), current_actor())
    except InvalidInput as exc:
        field_error(form, exc)
        return _edit_page(_rule(rule_id), form, 422)
    except LookupError:
        abort(404)
    flash(_("Rule %(name)s saved; it applies from the next payment.", name=rule.name), "success")
    return redirect(url_for("console.risk_rules"))


@bp.route("/risk/rules/<uuid:rule_id>/delete", methods=["POST"])
@tenant_role_required(*RULE_MANAGERS)
def delete_risk_rule(rule_id: uuid.UUID):
    rule = _rule(rule_id)
    form = ActionForm()
    if not form.validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("console.risk_rule", rule_id=rule.id))
    name = rule.name
    try:
        rules.delete(g.tenant.id, rule.id, current_actor())
    except LookupError:
        abort(404)
    flash(_("Rule %(name)s deleted; its alerts stay.", name=name), "success")
    return redirect(url_for("console.risk_rules"))


# --- review queue ------------------------------------------------------------------------------


@bp.route("/risk/review")
@tenant_role_required(*REVIEWERS)
def risk_review():
    page = newest_first(
        review.held(g.tenant.id), PaymentIntent, request.args.get("after"), current_app.config["PAGE_SIZE"]
    )
    return theming.render(
        "console/risk_review.html",
        page=page,
        alerts=review.alerts_of_payment(g.tenant.id, [p.id for p in page.items]),
        merchant_names=_merchant_names([p.merchant_id for p in page.items]),
        form=ActionForm(),
        **_common(),
    )


def _held(intent_id: str) -> PaymentIntent:
    payment = review.get_payment(g.tenant.id, intent_id)
    if payment is None:
        abort(404)
    return payment


@bp.route("/risk/review/<intent_id>/release", methods=["POST"])
@tenant_role_required(*REVIEWERS)
def release_held_payment(intent_id: str):
    payment = _held(intent_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("console.risk_review"))
    try:
        review.release(g.tenant.id, payment.id, current_actor())
    except InvalidInput as exc:
        flash(exc.message, "error")
    else:
        flash(_("%(payment)s is released: its money goes to the next settlement.", payment=payment.id), "success")
    return redirect(url_for("console.risk_review"))


@bp.route("/risk/review/<intent_id>/refund", methods=["POST"])
@tenant_role_required(*REVIEWERS)
def refund_held_payment(intent_id: str):
    payment = _held(intent_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("console.risk_review"))
    try:
        refund = review.refund(g.tenant.id, payment.id, current_actor())
    except InvalidInput as exc:
        flash(exc.message, "error")
    else:
        flash(
            _(
                "%(payment)s is refunded in full (%(refund)s, %(status)s).",
                payment=payment.id,
                refund=refund.id,
                status=refund.status,
            ),
            "success",
        )
    return redirect(url_for("console.risk_review"))
