"""Merchant dashboard: balances, settlements (filters, pages), a settlement's transactions, and
its statement as CSV and PDF.

Every user of the merchant reads them. Business days are the tenant's (its cut-off and time
zone decide them, see `clearing.settlement`); times are shown in the tenant's time zone.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Response, abort, g, request
from flask_login import current_user

from clearing import listings, statements
from clearing.models import Settlement
from core.db import db
from payments import intents, refunds
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.i18n import format_amount
from portal.merchant import bp
from portal.merchant.payments import _mode, _tenant_zone
from portal.pagination import newest_first
from tenants.models import MERCHANT_ROLES

PAGE_SIZE = 25
FILTERS = ("from", "to", "currency")


def _balances(livemode: bool) -> list[dict]:
    """Pending and available per currency of the signed-in merchant in one mode."""
    ctx = intents.MerchantContext(current_user.tenant_id, current_user.merchant_id, livemode)
    balance = refunds.balance(ctx)
    available = {item["currency"]: item["amount"] for item in balance["available"]}
    return [
        {
            "currency": item["currency"].upper(),
            "pending": format_amount(item["amount"], item["currency"]),
            "available": format_amount(available.get(item["currency"], 0), item["currency"]),
        }
        for item in balance["pending"]
    ]


@bp.route("/settlements")
@merchant_role_required(*MERCHANT_ROLES)
def settlements():
    args = request.args
    mode = _mode()
    zone = _tenant_zone()
    scope = listings.Scope(current_user.tenant_id, current_user.merchant_id, zone)
    # The same filters as the page's export (`clearing.listings`).
    statement, errors = listings.settlements(scope, args)
    page = newest_first(statement, Settlement, args.get("after"), PAGE_SIZE)
    filters = {key: args[key] for key in FILTERS if args.get(key)}
    return theming.render(
        "merchant/settlements.html",
        page=page,
        mode=mode,
        filters=filters,
        errors=errors,
        paged=bool(args.get("after")),
        balances=_balances(mode == "live"),
        zone=zone.key,
        format_amount=format_amount,
        **reporting.tools("merchant", "settlements", scope),
    )


def _settlement(settlement_id: uuid.UUID) -> Settlement:
    """A settlement of the signed-in user's own merchant; any other id (another merchant's,
    another tenant's, none) is 404."""
    settlement = db.session.execute(
        sa.select(Settlement).where(
            Settlement.tenant_id == current_user.tenant_id,
            Settlement.merchant_id == current_user.merchant_id,
            Settlement.id == settlement_id,
        )
    ).scalar_one_or_none()
    if settlement is None:
        abort(404)
    return settlement


@bp.route("/settlements/<uuid:settlement_id>")
@merchant_role_required(*MERCHANT_ROLES)
def settlement(settlement_id: uuid.UUID):
    item = _settlement(settlement_id)
    zone = _tenant_zone()
    return theming.render(
        "merchant/settlement.html",
        settlement=item,
        rows=statements.statement_rows(item),
        zone=zone.key,
        format_amount=format_amount,
    )


def _download(item: Settlement, body: str | bytes, extension: str, mimetype: str) -> Response:
    name = f"settlement-{item.business_day.isoformat()}-{item.currency}.{extension}"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.route("/settlements/<uuid:settlement_id>/statement.csv")
@merchant_role_required(*MERCHANT_ROLES)
def settlement_csv(settlement_id: uuid.UUID):
    item = _settlement(settlement_id)
    return _download(item, statements.to_csv(item, _tenant_zone()), "csv", "text/csv")


@bp.route("/settlements/<uuid:settlement_id>/statement.pdf")
@merchant_role_required(*MERCHANT_ROLES)
def settlement_pdf(settlement_id: uuid.UUID):
    item = _settlement(settlement_id)
    # The statement's header carries the tenant's published brand, as the pages do.
    pdf = statements.to_pdf(item, current_user.merchant.name, g.brand.display_name, _tenant_zone())
    return _download(item, pdf, "pdf", "application/pdf")
