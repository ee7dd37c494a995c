"""Alerts to a tenant's staff, e-mailed in the tenant's brand (jobs on the `mail` queue).

Core packages cannot import the portal, so they queue these by name (`core.queue.enqueue` with the
dotted path): `reconciliation_shorts` after an import that found platform-only records.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask_babel import gettext

from clearing.models import StatementImport, SuspenseItem
from core.db import db
from portal import mail
from portal.i18n import format_amount, language, recipient_locale
from portal.invitations import _host
from portal.sites import BrandView, tenant_base_url
from tenants import branding
from tenants.models import Tenant, User

ALERT_ROLES = ("admin", "finance")


def reconciliation_shorts(tenant_id: str, import_id: str) -> int:
    """E-mail the tenant's admins and finance users that records are missing from a statement
    (possible loss). Returns how many e-mails were queued."""
    tenant = db.session.get(Tenant, uuid.UUID(tenant_id))
    row = db.session.get(StatementImport, (tenant.id, uuid.UUID(import_id)))
    if row is None or not (row.counts or {}).get("short"):
        return 0
    items = db.session.execute(
        sa.select(SuspenseItem.currency, sa.func.count(), sa.func.sum(SuspenseItem.amount))
        .where(
            SuspenseItem.tenant_id == tenant.id,
            SuspenseItem.kind == "short",
            SuspenseItem.status.in_(("open", "pending_write_off")),
        )
        .group_by(SuspenseItem.currency)
        .order_by(SuspenseItem.currency)
    ).all()
    recipients = db.session.execute(
        sa.select(User).where(
            User.tenant_id == tenant.id,
            User.merchant_id.is_(None),
            User.role.in_(ALERT_ROLES),
            User.is_active,
        )
    ).scalars()
    base = tenant_base_url(tenant)
    brand = BrandView.of(branding.brand(tenant.id, "published"))
    sent = 0
    for user in recipients:
        locale = recipient_locale(user, tenant)
        with language(locale):
            totals = [
                gettext("%(count)s for %(amount)s", count=count, amount=format_amount(int(total), currency))
                for currency, count, total in items
            ]
        mail.send(
            user.email,
            "reconciliation_alert",
            brand,
            _host(base),
            locale=locale,
            filename=row.filename,
            missing=row.counts["short"],
            first_day=row.counts.get("first_day"),
            last_day=row.counts.get("last_day"),
            totals=totals,
            link=f"{base}/console/suspense?kind=short",
        )
        sent += 1
    return sent
