"""Console: clearing. The tenant's settlement settings (cut-off, default T+N), settlement runs
(start one now, follow its progress), the tenant's revenue per day, every merchant's
settlements, and a merchant's own T+N on the merchant page.

Admins, operators and finance read; admins and finance change settings and start runs. The
use cases in `clearing.settlement` validate, write and audit; these views commit.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, time, timedelta

import sqlalchemy as sa
from flask import flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import Length

from clearing import jobs, listings, revenue, settlement
from clearing.models import ClearingRun, Settlement
from core.db import db
from portal import reporting, theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.console.fees import _get_merchant, _zone
from portal.forms import ActionForm, field_error
from portal.i18n import format_amount
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import Merchant

CLEARING_READERS = ("admin", "operator", "finance")
CLEARING_MANAGERS = ("admin", "finance")
PAGE_SIZE = 25
FILTERS = ("merchant", "from", "to")
REVENUE_DAYS = 30
REFRESH_SECONDS = 3
RUNS_SHOWN = 20

# The revenue chart, in SVG user units: a gutter for the value labels on the left, the bars,
# and a line of day labels below.
CHART_GUTTER = 80
CHART_WIDTH = 600
CHART_HEIGHT = 160
CHART_PAD = 8
CHART_FOOT = 18


# --- forms ---------------------------------------------------------------------------------


class TermsForm(FlaskForm):
    cutoff = StringField(
        _l("Daily cut-off"),
        validators=[Length(max=10)],
        description=_l("HH:MM in the tenant's time zone; 00:00 makes business days calendar days."),
    )
    delay_days = StringField(
        _l("Default T+N (days)"),
        validators=[Length(max=10)],
        description=_l(
            "0 to %(num)s: money becomes available N days after its business day closes.",
            num=settlement.MAX_DELAY_DAYS,
        ),
    )


class MerchantTermsForm(FlaskForm):
    delay_days = StringField(_l("T+N (days)"), validators=[Length(max=10)])


# --- helpers -------------------------------------------------------------------------------

_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")


def _cutoff(text: str) -> time:
    """'18:00' -> time(18, 0); anything else is a ValueError with the message for the field."""
    text = (text or "").strip()
    if not text:
        raise ValueError(_("Give the cut-off as HH:MM, like 18:00 (00:00: business days are calendar days)."))
    match = _HH_MM.fullmatch(text)
    if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
        return time(int(match.group(1)), int(match.group(2)))
    raise ValueError(_("%(text)s is not a time of day: use HH:MM, like 18:00.", text=repr(text)))


def _can_manage() -> bool:
    return current_user.is_authenticated and getattr(current_user, "role", None) in CLEARING_MANAGERS


def _mode() -> str:
    return "live" if request.args.get("mode") == "live" else "test"


def _chart(currency: str, days: list[revenue.RevenueDay]) -> dict:
    """An SVG bar chart of revenue per day, laid out here so the template only draws it: bars
    above the zero line for days with revenue, below it for days with a loss."""
    values = [day.revenue for day in days]
    top, bottom = max(0, *values), min(0, *values)
    span = (top - bottom) or 1
    step = CHART_WIDTH / len(days)
    zero = CHART_PAD + top / span * CHART_HEIGHT
    bars = []
    for index, day in enumerate(days):
        height = abs(day.revenue) / span * CHART_HEIGHT
        if day.revenue and height < 1:
            height = 1  # a day with a little revenue is still seen
        bars.append(
            {
                "x": round(CHART_GUTTER + index * step + 1, 2),
                "y": round(zero - height if day.revenue >= 0 else zero, 2),
                "width": round(max(step - 2, 1), 2),
                "height": round(height, 2),
                "negative": day.revenue < 0,
                "title": _(
                    "%(day)s: revenue %(revenue)s (merchant fees %(merchant_fees)s, channel costs"
                    " %(channel_costs)s, platform fee %(platform_fee)s)",
                    day=day.day.isoformat(),
                    revenue=format_amount(day.revenue, currency),
                    merchant_fees=format_amount(day.merchant_fees, currency),
                    channel_costs=format_amount(day.channel_costs, currency),
                    platform_fee=format_amount(day.platform_fee, currency),
                ),
            }
        )
    total = sum(values)
    first, last = days[0].day.isoformat(), days[-1].day.isoformat()
    return {
        "currency": currency,
        "days": days,
        "bars": bars,
        "zero": round(zero, 2),
        "top_label": format_amount(top, currency),
        "bottom_label": format_amount(bottom, currency) if bottom < 0 else None,
        "bottom_y": CHART_PAD + CHART_HEIGHT,
        "top_y": CHART_PAD,
        "plot_height": CHART_HEIGHT,
        "view_width": CHART_GUTTER + CHART_WIDTH,
        "view_height": CHART_PAD * 2 + CHART_HEIGHT + CHART_FOOT,
        "gutter": CHART_GUTTER,
        "first": first,
        "last": last,
        "label": _(
            "Revenue per day in %(currency)s from %(first)s to %(last)s: %(total)s in total, best day %(best)s,"
            " worst day %(worst)s.",
            currency=currency,
            first=first,
            last=last,
            total=format_amount(total, currency),
            best=format_amount(max(values), currency),
            worst=format_amount(min(values), currency),
        ),
        "totals": {
            "merchant_fees": sum(day.merchant_fees for day in days),
            "channel_costs": sum(day.channel_costs for day in days),
            "platform_fee": sum(day.platform_fee for day in days),
            "revenue": total,
        },
    }


def _revenue(mode: str) -> tuple[list[dict], str, str, str | None]:
    """The charts of the last `REVENUE_DAYS` days (today included, the tenant's days), per currency,
    or why there are none."""
    last = datetime.now(tz=_zone()).date()
    first = last - timedelta(days=REVENUE_DAYS - 1)
    if _zone().key != g.tenant.time_zone:
        # `clearing.revenue` counts days in the tenant's zone in SQL, which refuses an unknown one.
        problem = _(
            "The tenant's time zone %(zone)s is not known, so its days cannot be counted.",
            zone=repr(g.tenant.time_zone),
        )
        return [], first.isoformat(), last.isoformat(), problem
    per_currency = revenue.daily(g.tenant.id, first, last, livemode=mode == "live")
    charts = [_chart(currency, days) for currency, days in per_currency.items()]
    return charts, first.isoformat(), last.isoformat(), None


def _settlement_list(args):
    """Every merchant's settlements, newest first, narrowed by merchant name and business day."""
    # The same filters as the list's export (`clearing.listings`).
    statement, errors = listings.settlements(listings.Scope(g.tenant.id, None, _zone()), args)
    page = newest_first(statement, Settlement, args.get("after"), PAGE_SIZE)
    ids = {item.merchant_id for item in page.items}
    names = (
        dict(
            db.session.execute(
                sa.select(Merchant.id, Merchant.name).where(Merchant.tenant_id == g.tenant.id, Merchant.id.in_(ids))
            ).all()
        )
        if ids
        else {}
    )
    return page, errors, names


def _settlement_runs() -> list[ClearingRun]:
    """The tenant's latest settlement runs, newest first (other kinds of clearing run are not
    settlement runs: their progress and outcome mean something else)."""
    return list(
        db.session.execute(
            sa.select(ClearingRun)
            .where(ClearingRun.tenant_id == g.tenant.id, ClearingRun.kind == "settlement")
            .order_by(ClearingRun.created_at.desc(), ClearingRun.id.desc())
            .limit(RUNS_SHOWN)
        ).scalars()
    )


def _terms_form(terms: settlement.Terms) -> TermsForm:
    if request.method == "POST":
        return TermsForm()
    return TermsForm(data={"cutoff": terms.cutoff.strftime("%H:%M"), "delay_days": str(terms.delay_days)})


def _page(form: TermsForm | None = None, status: int = 200):
    zone = _zone()
    terms = settlement.tenant_terms(g.tenant.id)
    runs = _settlement_runs()
    mode = _mode()
    charts, first, last, revenue_problem = _revenue(mode)
    page, errors, names = _settlement_list(request.args)
    return theming.render(
        "console/clearing.html",
        terms=terms,
        form=form if form is not None else _terms_form(terms),
        action_form=ActionForm(),
        can_manage=_can_manage(),
        runs=runs,
        refresh=REFRESH_SECONDS if any(run.status in jobs.ACTIVE for run in runs) else None,
        mode=mode,
        charts=charts,
        revenue_first=first,
        revenue_last=last,
        revenue_days=REVENUE_DAYS,
        revenue_problem=revenue_problem,
        page=page,
        errors=errors,
        filters={key: request.args[key] for key in FILTERS if request.args.get(key)},
        paged=bool(request.args.get("after")),
        merchant_names=names,
        zone=zone.key,
        format_amount=format_amount,
        **reporting.tools("console", "settlements", listings.Scope(g.tenant.id, None, zone)),
    ), status


# --- the page ------------------------------------------------------------------------------


@bp.route("/clearing")
@tenant_role_required(*CLEARING_READERS)
def clearing():
    return _page()


@bp.route("/clearing/terms", methods=["POST"])
@tenant_role_required(*CLEARING_MANAGERS)
def update_clearing_terms():
    form = TermsForm()
    if not form.validate_on_submit():
        return _page(form, 422)
    try:
        cutoff = _cutoff(form.cutoff.data)
    except ValueError as exc:
        form.cutoff.errors = [*form.cutoff.errors, str(exc)]
        return _page(form, 422)
    try:
        terms = settlement.update_terms(g.tenant.id, cutoff, form.delay_days.data or "", current_actor())
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _page(form, 422)
    db.session.commit()
    flash(
        _(
            "Settlement settings saved: cut-off %(cutoff)s (%(zone)s), default T+%(days)s. The next run uses them;"
            " settled days stay as they are.",
            cutoff=terms.cutoff.strftime("%H:%M"),
            zone=_zone().key,
            days=terms.delay_days,
        ),
        "success",
    )
    return redirect(url_for("console.clearing"))


@bp.route("/clearing/settlements/run", methods=["POST"])
@tenant_role_required(*CLEARING_MANAGERS)
def run_settlement():
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("console.clearing"))
    before = jobs.active_run(g.tenant.id)
    actor = current_actor()
    run = jobs.start_settlement(g.tenant.id, trigger="manual", requested_by=actor.email, actor=actor)
    if before is not None and run.id == before.id:
        flash(_("A settlement run is already in progress: it settles everything that is due."), "error")
    else:
        flash(_("Settlement run started: this page follows its progress."), "success")
    return redirect(url_for("console.clearing"))


# --- a merchant's T+N -----------------------------------------------------------------------


def merchant_settlement_context(merchant: Merchant) -> dict:
    """What the console's merchant page shows about settlement: the merchant's T+N (its own or
    the tenant's default) and, for managers, the form that changes it."""
    own = settlement.merchant_delay(g.tenant.id, merchant.id)
    return {
        "settlement_delay": own,
        "settlement_default": settlement.tenant_terms(g.tenant.id).delay_days,
        "settlement_form": MerchantTermsForm(data={"delay_days": "" if own is None else str(own)}),
        "settlement_managers": CLEARING_MANAGERS,
    }


@bp.route("/merchants/<uuid:merchant_id>/settlement-terms", methods=["POST"])
@tenant_role_required(*CLEARING_MANAGERS)
def set_merchant_settlement_terms(merchant_id: uuid.UUID):
    merchant = _get_merchant(merchant_id)
    form = MerchantTermsForm()
    back = redirect(url_for("console.merchant", merchant_id=merchant.id))
    if not form.validate_on_submit():
        for messages in form.errors.values():
            for message in messages:
                flash(_("The T+N of %(name)s is unchanged: %(message)s", name=merchant.name, message=message), "error")
        return back
    try:
        settlement.set_merchant_delay(g.tenant.id, merchant.id, form.delay_days.data or "", current_actor())
    except InvalidInput as exc:
        db.session.rollback()
        flash(_("The T+N of %(name)s is unchanged: %(message)s", name=merchant.name, message=exc.message), "error")
        return back
    db.session.commit()
    own = settlement.merchant_delay(g.tenant.id, merchant.id)
    if own is None:
        default = settlement.tenant_terms(g.tenant.id).delay_days
        flash(
            _(
                "%(name)s follows the tenant default (T+%(default)s) from the next run.",
                name=merchant.name,
                default=default,
            ),
            "success",
        )
    else:
        flash(_("%(name)s settles at T+%(own)s from the next run.", name=merchant.name, own=own), "success")
    return back
