"""Alerts to a tenant's staff, e-mailed in the tenant's brand (jobs on the `mail` queue).

Core packages cannot import the portal, so they queue these by name (`core.queue.enqueue` with the
dotted path): `reconciliation_shorts` after an import that found platform-only records,
`risk_alerts` after a payment that fired risk rules (`risk.screening`).
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
from risk.models import RiskAlert
from tenants import branding
from tenants.models import Merchant, Tenant, User

ALERT_ROLES = ("admin", "finance")
RISK_ALERT_ROLES = ("admin",)


def _staff(tenant_id: uuid.UUID, roles: tuple[str, ...]):
    """The tenant's active staff (not merchant users) with one of `roles`: who an alert is e-mailed to."""
    return db.session.execute(
        sa.select(User).where(
            User.tenant_id == tenant_id,
            User.merchant_id.is_(None),
            User.role.in_(roles),
            User.is_active,
        )
    ).scalars()


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
    recipients = _staff(tenant.id, ALERT_ROLES)
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


def risk_alerts(tenant_id: str, alert_ids: list[str]) -> int:
    """E-mail the tenant's admins the risk alerts one payment raised (`risk.screening`). Returns how
    many e-mails were queued."""
    tenant = db.session.get(Tenant, uuid.UUID(tenant_id))
    rows = (
        db.session.execute(
            sa.select(RiskAlert)
            .where(RiskAlert.tenant_id == tenant.id, RiskAlert.id.in_([uuid.UUID(i) for i in alert_ids]))
            .order_by(RiskAlert.created_at, RiskAlert.id)
        )
        .scalars()
        .all()
    )
    if not rows:
        return 0
    merchants = dict(
        db.session.execute(
            sa.select(Merchant.id, Merchant.name).where(
                Merchant.tenant_id == tenant.id, Merchant.id.in_({row.merchant_id for row in rows})
            )
        ).all()
    )
    recipients = _staff(tenant.id, RISK_ALERT_ROLES)
    base = tenant_base_url(tenant)
    brand = BrandView.of(branding.brand(tenant.id, "published"))
    sent = 0
    for user in recipients:
        locale = recipient_locale(user, tenant)
        with language(locale):
            listed = [
                {
                    "rule": row.rule_name,
                    "action": row.action,
                    "merchant": merchants.get(row.merchant_id, ""),
                    "payment": row.payment_intent_id,
                    "amount": format_amount(row.amount, row.currency),
                    "reason": row.reason,
                    "livemode": row.livemode,
                    "link": f"{base}/console/risk/alerts/{row.id}",
                }
                for row in rows
            ]
        mail.send(
            user.email,
            "risk_alert",
            brand,
            _host(base),
            locale=locale,
            alerts=listed,
            strongest=max((row.action for row in rows), key=("flag", "hold", "block").index),
            link=f"{base}/console/risk",
        )
        sent += 1
    return sent
