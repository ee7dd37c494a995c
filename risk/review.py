"""The review of payments a risk rule held, and the tenant's alerts.

A held payment was charged, but its money stays in the merchant's pending balance: settlement
leaves it out (`clearing.settlement`). The tenant's staff either release it (its money then
settles with the business day of the release) or refund it in full through the ordinary refund
(`payments.refunds.create`, reason `fraudulent`), which posts to the ledger and tells the
merchant by its webhook events; both are audited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db import db
from core.i18n import gettext
from core.money import format_amount
from payments import intents, refunds
from payments.errors import PaymentError
from payments.models import PaymentIntent, Refund
from risk.models import ACTIONS, KINDS, RiskAlert
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.models import Merchant, Tenant


def _now() -> datetime:
    return datetime.now(UTC)


# --- held payments -------------------------------------------------------------------------


# A held payment waits for review once money is on its way (charged, authorised, or being charged).
CHARGED = ("processing", "requires_capture", "succeeded")


def _held_where(tenant_id: uuid.UUID):
    return (
        PaymentIntent.tenant_id == tenant_id,
        PaymentIntent.risk_review == "held",
        PaymentIntent.status.in_(CHARGED),
    )


def held(tenant_id: uuid.UUID) -> sa.Select:
    """The held payments of the tenant (the review queue), for paging newest first."""
    return sa.select(PaymentIntent).where(*_held_where(tenant_id))


def held_count(tenant_id: uuid.UUID) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(PaymentIntent).where(*_held_where(tenant_id)))


def _locked(tenant_id: uuid.UUID, intent_id: str) -> PaymentIntent | None:
    return db.session.execute(
        sa.select(PaymentIntent)
        .where(PaymentIntent.tenant_id == tenant_id, PaymentIntent.id == intent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def get_payment(tenant_id: uuid.UUID, intent_id: str) -> PaymentIntent | None:
    return db.session.execute(
        sa.select(PaymentIntent).where(PaymentIntent.tenant_id == tenant_id, PaymentIntent.id == intent_id)
    ).scalar_one_or_none()


def release(tenant_id: uuid.UUID, intent_id: str, actor: Actor) -> PaymentIntent:
    """Let a held payment's money go to settlement (from the next run, as of today's business day)."""
    pi = _locked(tenant_id, intent_id)
    if pi is None:
        db.session.rollback()
        raise LookupError(intent_id)
    if pi.risk_review != "held":
        db.session.rollback()
        raise InvalidInput(gettext("%(payment)s is not held for review (any more).", payment=intent_id))
    pi.risk_review, pi.risk_released_at = "released", _now()
    audit.record(
        tenant_id,
        actor,
        "payment.risk_released",
        "payment_intent",
        pi.id,
        audit.changes({"risk_review": "held"}, {"risk_review": "released"}),
    )
    db.session.commit()
    return pi


def refund(tenant_id: uuid.UUID, intent_id: str, actor: Actor) -> Refund:
    """Refund a held payment in full through the refund use case, then close its review."""
    pi = get_payment(tenant_id, intent_id)
    if pi is None:
        raise LookupError(intent_id)
    if pi.risk_review != "held":
        raise InvalidInput(gettext("%(payment)s is not held for review (any more).", payment=intent_id))
    ctx = intents.MerchantContext(tenant_id, pi.merchant_id, pi.livemode)
    try:
        made = refunds.create(ctx, payment_intent=pi.id, reason="fraudulent")
    except PaymentError as exc:
        raise InvalidInput(exc.message) from None
    refund_id, amount, currency, status = made.id, made.amount, made.currency, made.status
    if status == "failed":
        raise InvalidInput(gettext("The channel refused the refund of %(payment)s; it stays held.", payment=intent_id))
    pi = _locked(tenant_id, intent_id)
    before = pi.risk_review
    if before == "held":
        pi.risk_review, pi.risk_released_at = "refunded", _now()
    audit.record(
        tenant_id,
        actor,
        "payment.risk_refunded",
        "payment_intent",
        pi.id,
        {
            "risk_review": {"before": before, "after": pi.risk_review},
            "refund": {"after": refund_id},
            "amount": {"after": amount},
            "currency": {"after": currency},
            "status": {"after": status},
        },
    )
    db.session.commit()
    return db.session.get(Refund, (tenant_id, refund_id))


# --- alerts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertFilters:
    q: str | None = None  # an ILIKE pattern (`portal.pagination.search_term`)
    kind: str | None = None
    action: str | None = None
    merchant_id: uuid.UUID | None = None


def alerts(tenant_id: uuid.UUID, filters: AlertFilters) -> sa.Select:
    """The tenant's alerts matching `filters`, for paging newest first; the search finds a payment
    id, a rule's name, a merchant's name or words of the reason."""
    statement = sa.select(RiskAlert).where(RiskAlert.tenant_id == tenant_id)
    if filters.kind in KINDS:
        statement = statement.where(RiskAlert.kind == filters.kind)
    if filters.action in ACTIONS:
        statement = statement.where(RiskAlert.action == filters.action)
    if filters.merchant_id is not None:
        statement = statement.where(RiskAlert.merchant_id == filters.merchant_id)
    if filters.q:
        merchants = sa.select(Merchant.id).where(Merchant.tenant_id == tenant_id, Merchant.name.ilike(filters.q))
        statement = statement.where(
            sa.or_(
                RiskAlert.payment_intent_id.ilike(filters.q),
                RiskAlert.rule_name.ilike(filters.q),
                RiskAlert.reason.ilike(filters.q),
                RiskAlert.merchant_id.in_(merchants),
            )
        )
    return statement


def get_alert(tenant_id: uuid.UUID, alert_id: uuid.UUID) -> RiskAlert | None:
    return db.session.execute(
        sa.select(RiskAlert).where(RiskAlert.tenant_id == tenant_id, RiskAlert.id == alert_id)
    ).scalar_one_or_none()


def alerts_of_payment(tenant_id: uuid.UUID, intent_ids: list[str]) -> dict[str, list[RiskAlert]]:
    found: dict[str, list[RiskAlert]] = {}
    if not intent_ids:
        return found
    rows = db.session.execute(
        sa.select(RiskAlert)
        .where(RiskAlert.tenant_id == tenant_id, RiskAlert.payment_intent_id.in_(intent_ids))
        .order_by(RiskAlert.created_at, RiskAlert.id)
    ).scalars()
    for alert in rows:
        found.setdefault(alert.payment_intent_id, []).append(alert)
    return found


@dataclass(frozen=True)
class TenantAlerts:
    tenant_id: uuid.UUID
    name: str
    slug: str
    last_day: int
    last_30_days: int
    blocked_30_days: int
    held_now: int
    latest: datetime | None


def platform_overview() -> list[TenantAlerts]:
    """Per tenant (platform scope): alerts of the last day and 30 days, blocks, held payments now."""
    now = _now()
    counts = (
        sa.select(
            RiskAlert.tenant_id,
            sa.func.count().filter(RiskAlert.created_at >= now - timedelta(days=1)).label("day"),
            sa.func.count().label("month"),
            sa.func.count().filter(RiskAlert.action == "block").label("blocked"),
            sa.func.max(RiskAlert.created_at).label("latest"),
        )
        .where(RiskAlert.created_at >= now - timedelta(days=30))
        .group_by(RiskAlert.tenant_id)
        .subquery()
    )
    holds = (
        sa.select(PaymentIntent.tenant_id, sa.func.count().label("held"))
        .where(PaymentIntent.risk_review == "held", PaymentIntent.status.in_(CHARGED))
        .group_by(PaymentIntent.tenant_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(
            Tenant.id,
            Tenant.name,
            Tenant.slug,
            sa.func.coalesce(counts.c.day, 0),
            sa.func.coalesce(counts.c.month, 0),
            sa.func.coalesce(counts.c.blocked, 0),
            sa.func.coalesce(holds.c.held, 0),
            counts.c.latest,
        )
        .outerjoin(counts, counts.c.tenant_id == Tenant.id)
        .outerjoin(holds, holds.c.tenant_id == Tenant.id)
        .order_by(sa.func.coalesce(counts.c.month, 0).desc(), Tenant.name)
    ).all()
    return [TenantAlerts(*row) for row in rows]


def describe(alert: RiskAlert) -> str:
    """One line for an e-mail or a list: the rule, what it did, the payment and its amount."""
    return gettext(
        "%(rule)s (%(action)s): %(payment)s, %(amount)s — %(reason)s",
        rule=alert.rule_name,
        action=alert.action,
        payment=alert.payment_intent_id or "—",
        amount=format_amount(alert.amount, alert.currency),
        reason=alert.reason,
    )
