"""Console: the tenant's fee schedules, their versions and rules, and which schedule a merchant is on.

Admins manage; operators read. The use cases in `billing.schedules` validate, write and audit;
these views commit. People type major units ("0.30") and the tenant's local time; the rules
store minor units and aware datetimes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask import abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import FieldList, Form, FormField, SelectField, StringField
from wtforms.validators import Length, Optional

from billing import schedules
from billing.fees import FeeRule, FeeRuleError, clean_percent
from billing.models import FeeSchedule, FeeScheduleVersion
from core.db import db
from core.money import MoneyError, normalise_currency, to_major, to_minor
from portal import theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.console.channels import _product_choices
from portal.forms import ActionForm, add_error, field_error
from portal.i18n import format_amount, format_when
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import Merchant

FEE_READERS = ("admin", "operator")
FEE_MANAGERS = ("admin",)
RULE_ROWS = 8  # empty rows offered below the rules of the version in force
EXAMPLE_AMOUNT = "100"  # the worked example: the fee on 100 major units of the rule's currency
AMOUNT_FIELDS = ("fixed", "minimum", "maximum", "volume_from")


# --- forms ---------------------------------------------------------------------------------


class ScheduleForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[Length(max=200)],
        description=_l("For example “Standard” or “High volume”. The first schedule becomes the default."),
    )


def _product_options():
    return [("", "—"), *_product_choices()]


class RuleRowForm(Form):
    """One rule of a new version (no CSRF token of its own: it is part of `VersionForm`)."""

    class Meta:
        def get_translations(self, form):
            # A plain WTForms form inside the version form: its built-in messages in the page's language too.
            from flask_wtf.i18n import translations

            return translations

    product = SelectField(_l("Product"), choices=_product_options, validators=[Optional()])
    currency = StringField(_l("Currency"), validators=[Length(max=10)])
    percent = StringField(_l("Percent"), validators=[Length(max=20)])
    fixed = StringField(_l("Fixed"), validators=[Length(max=30)])
    minimum = StringField(_l("Minimum"), validators=[Length(max=30)])
    maximum = StringField(_l("Maximum"), validators=[Length(max=30)])
    volume_from = StringField(_l("From monthly volume"), validators=[Length(max=30)])


class VersionForm(FlaskForm):
    effective_from = StringField(_l("In force from"), validators=[Optional(), Length(max=40)])
    note = StringField(
        _l("Note"), validators=[Length(max=600)], description=_l("Why the fees change; shown in the version history.")
    )
    rules = FieldList(FormField(RuleRowForm), min_entries=RULE_ROWS)


class AssignForm(FlaskForm):
    schedule_id = SelectField(_l("Fee schedule"), validate_choice=True)


# --- helpers -------------------------------------------------------------------------------


def _zone() -> ZoneInfo:
    """The tenant's time zone: effective dates are typed and shown in it."""
    try:
        return ZoneInfo(g.tenant.time_zone)
    except (ZoneInfoNotFoundError, ValueError):  # not validated when the tenant was created
        return ZoneInfo("UTC")


def _local(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return f"{format_when(moment)} ({_zone().key})"


def _sentence(message: str) -> str:
    """billing.fees speaks in clauses ("a percentage must be …"); the page shows sentences."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith(".") else message + "."


def _get_schedule(schedule_id: uuid.UUID) -> FeeSchedule:
    schedule = schedules.get_schedule(g.tenant.id, schedule_id)
    if schedule is None:
        abort(404)
    return schedule


def _get_merchant(merchant_id: uuid.UUID) -> Merchant:
    merchant = db.session.execute(
        sa.select(Merchant).where(Merchant.tenant_id == g.tenant.id, Merchant.id == merchant_id)
    ).scalar_one_or_none()
    if merchant is None:
        abort(404)
    return merchant


def _major(amount: int | None, currency: str) -> str:
    return "" if amount is None else str(to_major(amount, currency))


def _row_data(rule: FeeRule) -> dict[str, str]:
    return {
        "product": rule.product,
        "currency": rule.currency,
        "percent": format(rule.percent.normalize(), "f"),
        "fixed": _major(rule.fixed, rule.currency),
        "minimum": _major(rule.minimum, rule.currency),
        "maximum": _major(rule.maximum, rule.currency),
        "volume_from": _major(rule.volume_from, rule.currency),
    }


def _example(rule: FeeRule) -> dict:
    """The fee on 100 of the rule's currency, with its parts, for the page's worked example."""
    amount = to_minor(EXAMPLE_AMOUNT, rule.currency)
    breakdown = rule.fee(amount)
    return {
        "amount": format_amount(amount, rule.currency),
        "total": format_amount(breakdown.total, rule.currency),
        "parts": [(part.description, format_amount(part.amount, rule.currency)) for part in breakdown.parts],
    }


def _is_blank(row: RuleRowForm) -> bool:
    texts = [(row[name].data or "").strip() for name in ("currency", "percent", "fixed", "minimum", "maximum")]
    volume = (row.volume_from.data or "").strip()
    return not row.product.data and not any(texts) and volume in ("", "0")


def _rules_from(form: VersionForm) -> tuple[list[FeeRule], list[int], bool]:
    """The rules typed into the non-blank rows, which row each came from, and whether every row
    could be read (errors are placed next to their row's field)."""
    rules: list[FeeRule] = []
    rows: list[int] = []
    readable = True
    for index, entry in enumerate(form.rules):
        row = entry.form
        if _is_blank(row):
            continue
        ok = True
        if not row.product.data:
            add_error(row.product, _("Choose the product this rule charges."))
            ok = False
        currency_text = (row.currency.data or "").strip()
        currency = None
        if not currency_text:
            add_error(row.currency, _("Give the currency of this rule, for example USD."))
            ok = False
        else:
            try:
                currency = normalise_currency(currency_text)
            except MoneyError as exc:
                add_error(row.currency, str(exc))
                ok = False
        try:
            percent = clean_percent(row.percent.data or "")
        except FeeRuleError as exc:
            add_error(row.percent, _sentence(str(exc)))
            ok = False
        amounts: dict[str, int | None] = {}
        for name in AMOUNT_FIELDS:
            text = (row[name].data or "").strip()
            if not text:
                amounts[name] = None if name in ("minimum", "maximum") else 0
            elif currency is not None:
                try:
                    amounts[name] = to_minor(text, currency)
                except MoneyError as exc:
                    add_error(row[name], str(exc))
                    ok = False
        if ok:
            rules.append(
                FeeRule(
                    product=row.product.data,
                    currency=currency,
                    percent=percent,
                    fixed=amounts["fixed"],
                    minimum=amounts["minimum"],
                    maximum=amounts["maximum"],
                    volume_from=amounts["volume_from"],
                )
            )
            rows.append(index)
        readable = readable and ok
    return rules, rows, readable


def _effective_from(form: VersionForm) -> tuple[datetime | None, bool]:
    """The typed local date and time as an aware datetime (None: now), and whether it could be read."""
    text = (form.effective_from.data or "").strip()
    if not text:
        return None, True
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        add_error(
            form.effective_from, _("%(text)s is not a date and time: use the form 2026-03-31T14:30.", text=repr(text))
        )
        return None, False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_zone())
    return moment, True


def _version_form(in_force: FeeScheduleVersion | None) -> VersionForm:
    if request.method == "POST":
        return VersionForm()
    rules = [_row_data(rule) for rule in schedules.rules_of(in_force)] if in_force else []
    rows = rules + [{} for _row in range(max(RULE_ROWS - len(rules), 2))]
    return VersionForm(data={"rules": rows, "effective_from": "", "note": ""})


def _default_name() -> str | None:
    return db.session.execute(
        sa.select(FeeSchedule.name).where(FeeSchedule.tenant_id == g.tenant.id, FeeSchedule.is_default)
    ).scalar_one_or_none()


def _assign_form(current: FeeSchedule | None, is_default: bool) -> AssignForm:
    form = AssignForm(data=None if request.method == "POST" else {"schedule_id": "" if is_default else str(current.id)})
    default = _default_name()
    statement = sa.select(FeeSchedule).where(FeeSchedule.tenant_id == g.tenant.id).order_by(FeeSchedule.name)
    options = db.session.execute(statement).scalars().all()
    form.schedule_id.choices = [
        ("", _("Tenant default (%(name)s)", name=default) if default else _("Tenant default (none yet: no fees)")),
        *[(str(s.id), s.name) for s in options],
    ]
    return form


def merchant_fee_context(merchant: Merchant) -> dict:
    """What the console's merchant page shows about fees: the schedule that charges the merchant
    and, for admins, the form that changes it."""
    schedule, is_default = schedules.schedule_of(g.tenant.id, merchant.id)
    return {
        "fee_schedule": schedule,
        "fee_schedule_is_default": is_default,
        "fee_form": _assign_form(schedule, is_default),
        "fee_readers": FEE_READERS,
    }


# --- schedules -----------------------------------------------------------------------------


def _schedules_page(form: ScheduleForm, status: int = 200):
    tenant_id = g.tenant.id
    rows = (
        db.session.execute(
            sa.select(FeeSchedule)
            .where(FeeSchedule.tenant_id == tenant_id)
            .order_by(FeeSchedule.is_default.desc(), FeeSchedule.name)
        )
        .scalars()
        .all()
    )
    all_versions = (
        db.session.execute(
            sa.select(FeeScheduleVersion)
            .where(FeeScheduleVersion.tenant_id == tenant_id)
            .order_by(FeeScheduleVersion.number.desc())
        )
        .scalars()
        .all()
    )
    by_schedule: dict[uuid.UUID, list[FeeScheduleVersion]] = {}
    for version in all_versions:
        by_schedule.setdefault(version.schedule_id, []).append(version)
    counts = schedules.merchant_counts(tenant_id)
    merchants = db.session.scalar(
        sa.select(sa.func.count()).select_from(Merchant).where(Merchant.tenant_id == tenant_id)
    )
    unassigned = merchants - sum(counts.values())
    now = datetime.now(tz=_zone())
    listing = []
    for schedule in rows:
        versions = by_schedule.get(schedule.id, [])
        upcoming = [v for v in versions if v.effective_from > now]
        listing.append(
            {
                "schedule": schedule,
                "in_force": schedules.in_force(versions),
                "next": min(upcoming, key=lambda v: (v.effective_from, v.number)) if upcoming else None,
                "assigned": counts.get(schedule.id, 0),
                "unassigned": unassigned if schedule.is_default else 0,
            }
        )
    return theming.render(
        "console/fees.html", form=form, schedules=listing, local=_local, can_manage=_can_manage()
    ), status


def _can_manage() -> bool:
    return current_user.is_authenticated and getattr(current_user, "role", None) in FEE_MANAGERS


@bp.route("/fees", methods=["GET", "POST"])
@tenant_role_required(*FEE_READERS)
def fee_schedules():
    form = ScheduleForm()
    if request.method == "POST":
        if not _can_manage():
            abort(403)
        if form.validate_on_submit():
            try:
                schedule = schedules.create_schedule(g.tenant.id, form.name.data or "", current_actor())
            except InvalidInput as exc:
                db.session.rollback()
                field_error(form, exc)
            else:
                db.session.commit()
                if schedule.is_default:
                    message = _(
                        "%(name)s is created. Add its first version of fees below. It is the default: merchants"
                        " without a schedule of their own use it.",
                        name=schedule.name,
                    )
                else:
                    message = _("%(name)s is created. Add its first version of fees below.", name=schedule.name)
                flash(message, "success")
                return redirect(url_for("console.fee_schedule", schedule_id=schedule.id))
        return _schedules_page(form, 422)
    return _schedules_page(form)


def _schedule_page(schedule: FeeSchedule, form: VersionForm | None = None, status: int = 200):
    versions = schedules.versions(g.tenant.id, schedule.id)
    current = schedules.in_force(versions)
    rules = schedules.rules_of(current) if current else []
    labels = dict(_product_choices())
    now = datetime.now(tz=_zone())
    return theming.render(
        "console/fee_schedule.html",
        schedule=schedule,
        versions=versions,
        in_force=current,
        rules=[(rule, _example(rule)) for rule in rules],
        labels=labels,
        format_amount=format_amount,
        local=_local,
        now=now,
        zone=_zone().key,
        form=form if form is not None else _version_form(current),
        action_form=ActionForm(),
        can_manage=_can_manage(),
        assigned=schedules.merchant_counts(g.tenant.id).get(schedule.id, 0),
    ), status


@bp.route("/fees/<uuid:schedule_id>")
@tenant_role_required(*FEE_READERS)
def fee_schedule(schedule_id: uuid.UUID):
    return _schedule_page(_get_schedule(schedule_id))


@bp.route("/fees/<uuid:schedule_id>/versions", methods=["POST"])
@tenant_role_required(*FEE_MANAGERS)
def add_fee_version(schedule_id: uuid.UUID):
    schedule = _get_schedule(schedule_id)
    form = VersionForm()
    if not form.validate_on_submit():
        return _schedule_page(schedule, form, 422)
    rules, rows, readable = _rules_from(form)
    effective_from, readable_date = _effective_from(form)
    if not (readable and readable_date):
        return _schedule_page(schedule, form, 422)
    try:
        version = schedules.add_version(
            g.tenant.id,
            schedule.id,
            rules,
            list(dict(_product_choices())),
            current_actor(),
            effective_from=effective_from,
            note=form.note.data or "",
        )
    except FeeRuleError as exc:
        db.session.rollback()
        if exc.index is not None and exc.index < len(rows):
            # The use case counts the rules it was given; the page counts rows, blank ones too.
            row = form.rules[rows[exc.index]].form
            add_error(getattr(row, exc.field or "", None) or row.product, _sentence(str(exc)))
        else:
            form.form_errors.append(_sentence(str(exc)))
        return _schedule_page(schedule, form, 422)
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _schedule_page(schedule, form, 422)
    db.session.commit()
    if version.effective_from <= datetime.now(tz=version.effective_from.tzinfo):
        flash(
            _(
                "Version %(number)s of %(name)s is saved. The next payment uses the new fees.",
                number=version.number,
                name=schedule.name,
            ),
            "success",
        )
    else:
        flash(
            _(
                "Version %(number)s of %(name)s is saved. Payments from %(effective_from)s use the new fees; until"
                " then the current fees apply.",
                number=version.number,
                name=schedule.name,
                effective_from=_local(version.effective_from),
            ),
            "success",
        )
    return redirect(url_for("console.fee_schedule", schedule_id=schedule.id))


@bp.route("/fees/<uuid:schedule_id>/default", methods=["POST"])
@tenant_role_required(*FEE_MANAGERS)
def set_default_fee_schedule(schedule_id: uuid.UUID):
    schedule = _get_schedule(schedule_id)
    if ActionForm().validate_on_submit():
        schedules.set_default(g.tenant.id, schedule.id, current_actor())
        db.session.commit()
        flash(
            _(
                "%(name)s is the default now. The next payment of every merchant without a schedule of its own"
                " uses its fees.",
                name=schedule.name,
            ),
            "success",
        )
    else:
        flash(_("The form expired; try again."), "error")
    return redirect(url_for("console.fee_schedule", schedule_id=schedule.id))


# --- a merchant's schedule ------------------------------------------------------------------


@bp.route("/merchants/<uuid:merchant_id>/fee-schedule", methods=["POST"])
@tenant_role_required(*FEE_MANAGERS)
def assign_fee_schedule(merchant_id: uuid.UUID):
    merchant = _get_merchant(merchant_id)
    current, is_default = schedules.schedule_of(g.tenant.id, merchant.id)
    form = _assign_form(current, is_default)
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for message in errors:
                flash(_("The fee schedule is unchanged: %(message)s", message=message), "error")
        return redirect(url_for("console.merchant", merchant_id=merchant.id))
    chosen = uuid.UUID(form.schedule_id.data) if form.schedule_id.data else None
    try:
        schedules.assign(g.tenant.id, merchant.id, chosen, current_actor())
    except InvalidInput as exc:
        db.session.rollback()
        flash(_("The fee schedule is unchanged: %(message)s", message=exc.message), "error")
        return redirect(url_for("console.merchant", merchant_id=merchant.id))
    db.session.commit()
    if chosen is None:
        default = _default_name()
        target = _("the tenant default (%(name)s)", name=default) if default else _("the tenant default")
    else:
        target = schedules.get_schedule(g.tenant.id, chosen).name
    flash(
        _("%(name)s is on %(target)s. The next payment uses the new fees.", name=merchant.name, target=target),
        "success",
    )
    return redirect(url_for("console.merchant", merchant_id=merchant.id))
