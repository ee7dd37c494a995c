"""Risk alerts across tenants, for the platform's admins: per tenant, the alerts of the last day and
30 days, the blocks among them and the payments held now, and the latest alerts of every tenant
(newest first, keyset-paged). Platform scope is active for every request on the platform host."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, render_template, request

from core.db import db
from portal.access import platform_admin_required
from portal.pagination import newest_first
from portal.platform import bp
from risk import review
from risk.models import RiskAlert
from tenants.models import Merchant, Tenant


@bp.route("/risk")
@platform_admin_required
def risk():
    page = newest_first(sa.select(RiskAlert), RiskAlert, request.args.get("after"), current_app.config["PAGE_SIZE"])
    tenant_ids = {alert.tenant_id for alert in page.items}
    names = dict(db.session.execute(sa.select(Tenant.id, Tenant.name).where(Tenant.id.in_(tenant_ids))).all())
    merchants = dict(
        db.session.execute(
            sa.select(Merchant.id, Merchant.name).where(
                Merchant.tenant_id.in_(tenant_ids), Merchant.id.in_({a.merchant_id for a in page.items})
            )
        ).all()
    )
    return render_template(
        "platform/risk.html",
        overview=review.platform_overview(),
        page=page,
        tenant_names=names,
        merchant_names=merchants,
    )
