"""What the merchant dashboard and the tenant console share about reports: the report page's charts
and tables, exports (the form on each list, the export's page, its status as JSON and its file),
and saved filters. Each audience's blueprint (`portal/merchant/reports.py`,
`portal/console/reports.py`) declares the routes and the roles, and passes its `Scope`.

Every list that can be exported names its page here (`PAGES`), with the filters the page reads:
the export form sends exactly those, and `clearing.listings` / `clearing.reports` turn them into
rows for the page and for the file alike. A page may be limited to some roles (the console's audit
log: admins), which then applies to its exports and saved filters too; the platform's audit log is
`direct_only` (no job, no saved filters: those rows are a tenant's, and it is every tenant's).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask import Response, abort, current_app, flash, g, jsonify, redirect, request, send_file, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length

from clearing import exports, listings, reports, saved_filters
from clearing.models import EXPORT_FORMATS, ReportExport
from core.db import db
from portal import charts, theming
from portal.forms import EXPIRED, ActionForm, field_error
from portal.i18n import format_amount
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput

EXPORTS_PAGE_SIZE = 20
STATUS_POLL_MS = 1000


@dataclass(frozen=True)
class Page:
    """A page whose filters can be saved and whose rows can be exported."""

    endpoint: str
    filters: tuple[str, ...]
    kind: str  # the export kind of its rows
    roles: tuple[str, ...] | None = None  # who may open it, export it and save its filters (None: all)
    direct_only: bool = False  # exports are direct downloads only (at most EXPORT_DIRECT_MAX_ROWS rows)


AUDIT_FILTERS = tuple(name for name in listings.AUDIT_FILTERS if name != "tenant")

PAGES: dict[str, dict[str, Page]] = {
    "merchant": {
        "payments": Page(
            "merchant.payments", ("q", "status", "from", "to", "currency", "min", "max", "mode"), "payments"
        ),
        "settlements": Page("merchant.settlements", ("from", "to", "currency", "mode"), "settlements"),
        "payouts": Page("merchant.payouts", ("status", "mode"), "payouts"),
        "refunds": Page("merchant.refunds_list", ("status", "from", "to", "currency", "mode"), "refunds"),
        "charge_items": Page("merchant.charge_items", listings.CATALOGUE_FILTERS, "charge_items"),
        "coupons": Page("merchant.coupons_list", listings.CATALOGUE_FILTERS, "coupons"),
        "payment_links": Page("merchant.payment_links", listings.LINK_FILTERS, "payment_links"),
        "reports": Page("merchant.reports", ("period", "from", "to", "by", "mode"), "report"),
    },
    "console": {
        "payments": Page(
            "console.payments", ("q", "status", "from", "to", "currency", "min", "max", "merchant", "mode"), "payments"
        ),
        "settlements": Page("console.clearing", ("merchant", "from", "to", "currency", "mode"), "settlements"),
        "merchants": Page("console.merchants", listings.MERCHANT_FILTERS, "merchants"),
        "audit": Page("console.audit_log", AUDIT_FILTERS, "audit", roles=("admin",)),
        "suspense": Page(
            "console.suspense", listings.SUSPENSE_FILTERS, "suspense", roles=("admin", "operator", "finance")
        ),
        "statement_imports": Page(
            "console.reconciliation",
            listings.IMPORT_FILTERS,
            "statement_imports",
            roles=("admin", "operator", "finance"),
        ),
        "payout_batches": Page(
            "console.payouts", listings.BATCH_FILTERS, "payout_batches", roles=("admin", "operator", "finance")
        ),
        "reports": Page("console.reports", reports.REPORT_FILTERS, "report"),
    },
    "platform": {
        "audit": Page("platform.audit_log", listings.AUDIT_FILTERS, "audit", direct_only=True),
    },
}


class SaveFilterForm(FlaskForm):
    name = StringField(lazy_gettext("Name"), validators=[Length(max=saved_filters.NAME_MAX)])
    page = HiddenField()
    query = HiddenField()


def tenant_zone() -> ZoneInfo:
    try:
        return ZoneInfo(g.tenant.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _may_open(page: Page) -> bool:
    return page.roles is None or getattr(current_user, "role", None) in page.roles


def page_of(audience: str, name: str) -> Page:
    """The page `name` of the audience; 404 if there is none, 403 if the user's role may not open it."""
    page = PAGES[audience].get(name)
    if page is None:
        abort(404)
    if not _may_open(page):
        abort(403)
    return page


def _hidden_kinds(audience: str) -> set[str]:
    """Export kinds of pages the user's role may not open: their exports are not theirs to see."""
    return {page.kind for page in PAGES[audience].values() if not _may_open(page)}


def tools(audience: str, page_name: str, scope: listings.Scope, save_form: SaveFilterForm | None = None) -> dict:
    """What a list or report page shows under its filters: export buttons (with the page's filters as
    typed), the saved filters of this page, and the form that saves the current ones."""
    page = page_of(audience, page_name)
    filters = listings.typed(request.args, page.filters)
    # Saved filters are a tenant's (or a merchant's) rows: the platform's page has none.
    saving = not scope.platform
    saved = saved_filters.list_for(scope.tenant_id, scope.merchant_id, page_name) if saving else []
    return {
        "tools": {
            "audience": audience,
            "page": page_name,
            "endpoint": page.endpoint,
            "filters": filters,
            "saving": saving,
            "direct_only": page.direct_only,
            "saved": saved,
            "save_form": save_form or SaveFilterForm(formdata=None, page=page_name),
            "action_form": ActionForm(),
            "formats": EXPORT_FORMATS,
            "direct_max": current_app.config["EXPORT_DIRECT_MAX_ROWS"],
        }
    }


# --- exports -------------------------------------------------------------------------------------


def _attachment(body: bytes, name: str, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def start_export(audience: str, scope: listings.Scope):
    """The export form's POST: a small export is the response itself; a larger one becomes a job
    and the browser goes to its page, which follows the progress."""
    page_name = request.form.get("page", "")
    page = page_of(audience, page_name)
    back = redirect(url_for(page.endpoint, **listings.typed(request.form, page.filters)))
    if not ActionForm().validate_on_submit():
        flash(EXPIRED, "error")
        return back
    fmt = request.form.get("format", "")
    if fmt not in EXPORT_FORMATS:
        flash(_("Choose CSV or Excel."), "error")
        return back
    filters = listings.typed(request.form, page.filters)
    rows = exports.count(scope, page.kind, filters)
    direct_max = current_app.config["EXPORT_DIRECT_MAX_ROWS"]
    if rows <= direct_max:
        body = exports.write_now(scope, page.kind, fmt, filters)
        exports.record_download(scope, page.kind, fmt, filters, rows, current_actor())
        name = exports.download_name(page.kind, fmt, datetime.now(UTC), scope.zone)
        return _attachment(body, name, exports.MIMETYPES[fmt])
    if page.direct_only:
        flash(
            _(
                "%(rows)s rows match, and this list exports at most %(max)s at once. "
                "Narrow the filters (a tenant, fewer days, an action) and export again.",
                rows=f"{rows:,}",
                max=f"{direct_max:,}",
            ),
            "error",
        )
        return back
    export = exports.request_export(scope, page.kind, fmt, filters, current_actor())
    flash(
        _("%(rows)s rows are being written to a file: this page shows the progress.", rows=f"{rows:,}"),
        "success",
    )
    return redirect(url_for(f"{audience}.export", export_id=export.id))


def get_export(scope: listings.Scope, export_id: uuid.UUID, audience: str) -> ReportExport:
    """An export of exactly this scope; another merchant's, the tenant staff's (for a merchant's
    user), another tenant's, one of a page the user's role may not open, or none is 404."""
    owner = (
        ReportExport.merchant_id.is_(None)
        if scope.merchant_id is None
        else ReportExport.merchant_id == scope.merchant_id
    )
    export = db.session.execute(
        sa.select(ReportExport).where(ReportExport.tenant_id == scope.tenant_id, ReportExport.id == export_id, owner)
    ).scalar_one_or_none()
    if export is None or export.kind in _hidden_kinds(audience):
        abort(404)
    return export


def status_of(audience: str, export: ReportExport) -> dict:
    ready = exports.file_of(export) is not None
    return {
        "id": str(export.id),
        "status": export.status,
        "rows_done": export.rows_done,
        "rows_total": export.rows_total,
        "error": export.error if export.status == "failed" else None,
        "download_url": url_for(f"{audience}.download_export", export_id=export.id) if ready else None,
    }


def export_page(audience: str, scope: listings.Scope, export: ReportExport):
    page = next((p for p in PAGES[audience].values() if p.kind == export.kind), None)
    return theming.render(
        "reports/export.html",
        audience=audience,
        export=export,
        state=status_of(audience, export),
        back_url=url_for(page.endpoint, **export.filters) if page else None,
        poll_ms=STATUS_POLL_MS,
        zone=scope.zone.key,
    )


def export_status(audience: str, export: ReportExport):
    response = jsonify(status_of(audience, export))
    response.headers["Cache-Control"] = "no-store"
    return response


def download(scope: listings.Scope, export: ReportExport):
    path = exports.file_of(export)
    if path is None:
        abort(404)
    name = exports.download_name(export.kind, export.format, export.created_at, scope.zone)
    response = send_file(path, mimetype=exports.MIMETYPES[export.format], as_attachment=True, download_name=name)
    response.headers["Cache-Control"] = "no-store"
    return response


def export_list(audience: str, scope: listings.Scope):
    owner = (
        ReportExport.merchant_id.is_(None)
        if scope.merchant_id is None
        else ReportExport.merchant_id == scope.merchant_id
    )
    statement = sa.select(ReportExport).where(ReportExport.tenant_id == scope.tenant_id, owner)
    hidden = _hidden_kinds(audience)
    if hidden:
        statement = statement.where(ReportExport.kind.not_in(hidden))
    page = newest_first(
        statement,
        ReportExport,
        request.args.get("after"),
        EXPORTS_PAGE_SIZE,
    )
    return theming.render(
        "reports/exports.html",
        audience=audience,
        page=page,
        paged=bool(request.args.get("after")),
        status_of=lambda export: status_of(audience, export),
        zone=scope.zone.key,
    )


# --- saved filters -------------------------------------------------------------------------------


def _save_page(audience: str, page_name: str, filters: dict, form: SaveFilterForm):
    """The save form again, with what was typed and the reason next to the name (422)."""
    page = page_of(audience, page_name)
    return theming.render(
        "reports/save_filter.html",
        audience=audience,
        form=form,
        filters=filters,
        back_url=url_for(page.endpoint, **filters),
    ), 422


def save_filter(audience: str, scope: listings.Scope):
    """The save form's POST: back to the page with the filters applied, or the form again (422)."""
    form = SaveFilterForm()
    page_name = form.page.data or ""
    page = page_of(audience, page_name)
    filters = listings.typed(dict(parse_qsl(form.query.data or "")), page.filters)
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            form.form_errors.append(EXPIRED)
        return _save_page(audience, page_name, filters, form)
    try:
        item = saved_filters.save(
            scope.tenant_id, scope.merchant_id, page_name, form.name.data, filters, current_actor()
        )
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _save_page(audience, page_name, filters, form)
    flash(_("Filters saved as “%(name)s”.", name=item.name), "success")
    return redirect(url_for(page.endpoint, **item.filters))


def delete_filter(audience: str, scope: listings.Scope, filter_id: uuid.UUID):
    item = saved_filters.get(scope.tenant_id, scope.merchant_id, filter_id)
    if item is None:
        abort(404)
    page = page_of(audience, item.page)
    if not ActionForm().validate_on_submit():
        flash(EXPIRED, "error")
        return redirect(url_for(page.endpoint))
    name = item.name
    saved_filters.delete(item)
    flash(_("The saved filter “%(name)s” is deleted.", name=name), "success")
    return redirect(url_for(page.endpoint))


# --- the report page -----------------------------------------------------------------------------

PERIOD_NAMES = {"day": lazy_gettext("day"), "week": lazy_gettext("week"), "month": lazy_gettext("month")}
DIMENSION_NAMES = {
    "product": lazy_gettext("Product"),
    "channel": lazy_gettext("Channel"),
    "merchant": lazy_gettext("Merchant"),
}


def _label(start, period: str) -> str:
    if period == "month":
        return start.strftime("%Y-%m")
    return start.isoformat()


def _colors() -> tuple[str, ...]:
    brand = getattr(g, "brand", None)
    primary = getattr(brand, "primary_color", None) or "#1d4ed8"
    accent = getattr(brand, "accent_color", None) or "#f59e0b"
    return (primary, accent, "#6b7280", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#84cc16")


def report_view(scope: listings.Scope, report: reports.Report, *, revenue: bool) -> list[dict]:
    """Per currency: the charts and the tables of `report`."""
    query = report.query
    labels = [_label(start, query.period) for start in report.periods]
    period = PERIOD_NAMES[query.period]
    colors = _colors()
    views = []
    for currency in report.currencies:
        series = report.series(currency)
        items = {
            "money": charts.money_bars(
                _("Volume, refunds and fees per %(period)s in %(currency)s", period=period, currency=currency),
                currency,
                labels,
                [
                    (_("Volume"), [row.volume for row in series]),
                    (_("Refunded"), [row.refunds for row in series]),
                    (_("Fees"), [row.fees for row in series]),
                ],
                colors,
            ),
            "counts": charts.count_bars(
                _("Payments per %(period)s in %(currency)s", period=period, currency=currency),
                labels,
                [
                    (_("Attempted"), [row.attempted for row in series]),
                    (_("Succeeded"), [row.succeeded for row in series]),
                ],
                colors,
            ),
            "rate": charts.percent_line(
                _(
                    "Success rate per %(period)s in %(currency)s (succeeded ÷ attempted)",
                    period=period,
                    currency=currency,
                ),
                labels,
                _("Success rate"),
                [row.success_rate for row in series],
                colors[1:],
            ),
        }
        if revenue:
            items["revenue"] = charts.money_bars(
                _("Revenue share per %(period)s in %(currency)s", period=period, currency=currency),
                currency,
                labels,
                [
                    (_("Tenant revenue"), [row.tenant_revenue for row in series]),
                    (_("Channel cost"), [row.channel_costs for row in series]),
                    (_("Platform fee"), [row.platform_fee for row in series]),
                ],
                colors,
                stacked=True,
            )
        breakdown = report.breakdown(currency) if query.by else []
        if breakdown:
            items["breakdown"] = charts.money_hbars(
                _(
                    "Volume by %(dimension)s in %(currency)s",
                    dimension=str(DIMENSION_NAMES[query.by]).lower(),
                    currency=currency,
                ),
                currency,
                [(report.labels.get(row.key or "", row.key or "—") or "—", row.volume) for row in breakdown],
                colors,
            )
        views.append(
            {
                "currency": currency,
                "charts": items,
                "series": list(zip(labels, series, strict=True)),
                "breakdown": [(report.labels.get(row.key or "", row.key or "—") or "—", row) for row in breakdown],
                "total": report.total(currency),
            }
        )
    return views


def report_context(scope: listings.Scope, audience: str, *, revenue: bool) -> dict:
    parsed = reports.parse(scope, request.args)
    report = reports.run(parsed.query)
    return {
        "report": report,
        "query": parsed.query,
        "errors": parsed.errors,
        "filters": listings.typed(request.args, PAGES[audience]["reports"].filters),
        "views": report_view(scope, report, revenue=revenue),
        "periods": reports.PERIODS,
        "period_names": PERIOD_NAMES,
        "dimensions": reports.DIMENSIONS if scope.tenant_wide else ("product", "channel"),
        "dimension_names": DIMENSION_NAMES,
        "revenue": revenue,
        "mode": listings.mode_of(request.args),
        "zone": scope.zone.key,
        "format_amount": format_amount,
    }
