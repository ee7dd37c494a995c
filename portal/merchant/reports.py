"""Merchant dashboard: reports (charts and tables of the merchant's payments by day, week or month),
exports of its lists and reports (a file now, or a job with a progress bar), and saved filters.

Every user of the merchant reads, exports and saves filters; exports and saved filters belong to
the merchant (its users alone see and download them). The shared work is in `portal.reporting`.
"""

from __future__ import annotations

import uuid

from flask import request
from flask_login import current_user

from clearing import listings
from clearing import reports as report_queries
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.i18n import format_amount
from portal.merchant import bp
from tenants.models import MERCHANT_ROLES

AUDIENCE = "merchant"


def scope() -> listings.Scope:
    return listings.Scope(current_user.tenant_id, current_user.merchant_id, reporting.tenant_zone())


@bp.route("/reports")
@merchant_role_required(*MERCHANT_ROLES)
def reports():
    own = scope()
    return theming.render(
        "reports/report.html",
        audience=AUDIENCE,
        title_name=current_user.merchant.name,
        merchants=[],
        **reporting.report_context(own, AUDIENCE, revenue=False),
        **reporting.tools(AUDIENCE, "reports", own),
    )


@bp.route("/exports", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def exports():
    return reporting.export_list(AUDIENCE, scope())


@bp.route("/exports", methods=["POST"])
@merchant_role_required(*MERCHANT_ROLES)
def create_export():
    return reporting.start_export(AUDIENCE, scope())


@bp.route("/exports/<uuid:export_id>")
@merchant_role_required(*MERCHANT_ROLES)
def export(export_id: uuid.UUID):
    own = scope()
    return reporting.export_page(AUDIENCE, own, reporting.get_export(own, export_id, AUDIENCE))


@bp.route("/exports/<uuid:export_id>/status")
@merchant_role_required(*MERCHANT_ROLES)
def export_status(export_id: uuid.UUID):
    return reporting.export_status(AUDIENCE, reporting.get_export(scope(), export_id, AUDIENCE))


@bp.route("/exports/<uuid:export_id>/download")
@merchant_role_required(*MERCHANT_ROLES)
def download_export(export_id: uuid.UUID):
    own = scope()
    return reporting.download(own, reporting.get_export(own, export_id, AUDIENCE))


@bp.route("/saved-filters", methods=["POST"])
@merchant_role_required(*MERCHANT_ROLES)
def save_filter():
    return reporting.save_filter(AUDIENCE, scope())


@bp.route("/saved-filters/<uuid:filter_id>/delete", methods=["POST"])
@merchant_role_required(*MERCHANT_ROLES)
def delete_saved_filter(filter_id: uuid.UUID):
    return reporting.delete_filter(AUDIENCE, scope(), filter_id)


def dashboard_charts() -> dict:
    """The last 30 days of the merchant's test or live payments, for its overview page."""
    own = scope()
    args = {"mode": request.args.get("mode", "test")}
    parsed = report_queries.parse(own, args)
    report = report_queries.run(parsed.query)
    return {
        "views": reporting.report_view(own, report, revenue=False),
        "report_mode": listings.mode_of(args),
        "format_amount": format_amount,
    }
