"""Console: the tenant's reports (charts and tables of every merchant's payments, or one merchant's,
by day, week or month, with the tenant's revenue share), the payments of every merchant (search,
filters, pages), exports of the console's lists and reports, and the staff's saved filters.

Every staff role reads, exports and saves filters; exports and saved filters belong to the
tenant's staff (merchants' users never see them). The shared work is in `portal.reporting`.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import g, request
from flask_login import current_user

from clearing import listings
from core.db import db
from payments.models import INTENT_STATUSES
from portal import reporting, theming
from portal.access import tenant_role_required
from portal.console import STAFF, bp
from portal.i18n import format_amount
from portal.pagination import newest_first
from tenants.models import Merchant

AUDIENCE = "console"
PAGE_SIZE = 25
MERCHANTS_LISTED = 1000


def scope() -> listings.Scope:
    return listings.Scope(g.tenant.id, None, reporting.tenant_zone(), email=getattr(current_user, "email", None))


def _merchants() -> list[tuple[uuid.UUID, str]]:
    return list(
        db.session.execute(
            sa.select(Merchant.id, Merchant.name)
            .where(Merchant.tenant_id == g.tenant.id)
            .order_by(Merchant.name)
            .limit(MERCHANTS_LISTED)
        ).all()
    )


@bp.route("/reports")
@tenant_role_required(*STAFF)
def reports():
    own = scope()
    return theming.render(
        "reports/report.html",
        audience=AUDIENCE,
        title_name=g.brand.display_name,
        merchants=_merchants(),
        **reporting.report_context(own, AUDIENCE, revenue=True),
        **reporting.tools(AUDIENCE, "reports", own),
    )


@bp.route("/payments")
@tenant_role_required(*STAFF)
def payments():
    own = scope()
    args = request.args
    statement, errors = listings.payments(own, args)
    page = newest_first(statement, listings.KINDS["payments"].model, args.get("after"), PAGE_SIZE)
    filters = listings.typed(args, reporting.PAGES[AUDIENCE]["payments"].filters)
    return theming.render(
        "console/payments.html",
        page=page,
        mode=listings.mode_of(args),
        filters={key: value for key, value in filters.items() if key != "mode"},
        statuses=INTENT_STATUSES,
        errors=errors,
        paged=bool(args.get("after")),
        names=listings.merchant_names(g.tenant.id, {pi.merchant_id for pi in page.items}),
        zone=own.zone.key,
        format_amount=format_amount,
        **reporting.tools(AUDIENCE, "payments", own),
    )


@bp.route("/exports", methods=["GET"])
@tenant_role_required(*STAFF)
def exports():
    return reporting.export_list(AUDIENCE, scope())


@bp.route("/exports", methods=["POST"])
@tenant_role_required(*STAFF)
def create_export():
    return reporting.start_export(AUDIENCE, scope())


@bp.route("/exports/<uuid:export_id>")
@tenant_role_required(*STAFF)
def export(export_id: uuid.UUID):
    own = scope()
    return reporting.export_page(AUDIENCE, own, reporting.get_export(own, export_id, AUDIENCE))


@bp.route("/exports/<uuid:export_id>/status")
@tenant_role_required(*STAFF)
def export_status(export_id: uuid.UUID):
    return reporting.export_status(AUDIENCE, reporting.get_export(scope(), export_id, AUDIENCE))


@bp.route("/exports/<uuid:export_id>/download")
@tenant_role_required(*STAFF)
def download_export(export_id: uuid.UUID):
    own = scope()
    return reporting.download(own, reporting.get_export(own, export_id, AUDIENCE))


@bp.route("/saved-filters", methods=["POST"])
@tenant_role_required(*STAFF)
def save_filter():
    return reporting.save_filter(AUDIENCE, scope())


@bp.route("/saved-filters/<uuid:filter_id>/delete", methods=["POST"])
@tenant_role_required(*STAFF)
def delete_saved_filter(filter_id: uuid.UUID):
    return reporting.delete_filter(AUDIENCE, scope(), filter_id)
