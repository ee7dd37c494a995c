"""Routing against the tenant's stored channel accounts and rules: the bridge from the database
to the pure router (`payments.routing`). Used by the payment core and the console's route tester."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from core.db import db
from payments.channel_accounts import rules_for
from payments.models import ChannelAccount, ChannelDailyUsage
from payments.routing import ChannelCandidate, ChannelCost, RouteDecision, RouteRequest, route
from tenants.models import Tenant


def tenant_today(tenant_id: uuid.UUID) -> date:
    """Today in the tenant's time zone: daily caps reset at the tenant's midnight."""
    zone = db.session.execute(sa.select(Tenant.time_zone).where(Tenant.id == tenant_id)).scalar_one()
    return datetime.now(ZoneInfo(zone)).date()


def candidate_of(account: ChannelAccount, used_today: int) -> ChannelCandidate:
    return ChannelCandidate(
        id=str(account.id),
        name=account.name,
        type=account.type,
        status=account.status,
        products=frozenset(account.products),
        currencies=frozenset({account.currency}),
        costs={
            code: ChannelCost(percent=Decimal(cost.get("percent", "0")), fixed=int(cost.get("fixed", 0)))
            for code, cost in account.costs.items()
        },
        min_amount=account.min_amount or 0,
        max_amount=account.max_amount,
        daily_cap=account.daily_cap,
        used_today=used_today,
        priority=account.priority,
        required_elements=frozenset(account.required_elements),
        # Health from live channel failures arrives with the payment core; until then every
        # stored account counts as healthy and only its status can pause it.
        healthy=True,
    )


def candidates(tenant_id: uuid.UUID, mode: str, day: date) -> list[ChannelCandidate]:
    """Every channel account of the tenant in `mode`, with what it has taken on `day`."""
    accounts = (
        db.session.execute(
            sa.select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.mode == mode)
        )
        .scalars()
        .all()
    )
    usage = dict(
        db.session.execute(
            sa.select(ChannelDailyUsage.channel_account_id, ChannelDailyUsage.amount).where(
                ChannelDailyUsage.tenant_id == tenant_id, ChannelDailyUsage.day == day
            )
        ).all()
    )
    return [candidate_of(account, usage.get(account.id, 0)) for account in accounts]


def plan(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    product: str,
    amount: int,
    currency: str,
    mode: str,
    payer_elements: set[str],
) -> RouteDecision:
    """Which channel account would take this payment now, and why, for every candidate."""
    forced, excluded = rules_for(tenant_id, merchant_id, product)
    request = RouteRequest(
        merchant_id=str(merchant_id),
        product=product,
        amount=amount,
        currency=currency,
        payer_elements=frozenset(payer_elements),
        rule_forced_channel_id=str(forced) if forced else None,
        rule_excluded_channel_ids=frozenset(str(channel) for channel in excluded),
    )
    return route(request, candidates(tenant_id, mode, tenant_today(tenant_id)))
