"""Routing against the tenant's stored channel accounts and rules: the bridge from the database
to the pure router (`payments.routing`). Used by the payment core and the console's route tester.

`RoutingInputs.load` reads everything routing needs for one merchant in one mode with one
statement (the channel accounts joined with today's usage and the merchant's rules) and one
Redis round trip (the accounts' health, `payments.channel_health`), so a
payment reads them once: the products a PaymentIntent offers and the route of its confirmation
are both decided from the same inputs. Nothing is cached across requests, so a change in the
console takes effect on the next payment.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from core.db import db
from payments import channel_health
from payments import products as catalogue
from payments.channel_health import HEALTHY, Health
from payments.models import ChannelAccount, ChannelDailyUsage, RoutingRule
from payments.routing import ChannelCandidate, ChannelCost, RouteDecision, RouteRequest, route
from tenants.models import Tenant


def candidate_of(account: ChannelAccount, used_today: int, health: Health = HEALTHY) -> ChannelCandidate:
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
        healthy=health.healthy(),
        health_note="" if health.healthy() else health.describe(),
    )


def rules_in(rules: list[Rule], product: str | None) -> tuple[uuid.UUID | None, set[uuid.UUID]]:
    """(forced channel account id or None, excluded ids) among a merchant's rules, for one product."""
    applying = [r for r in rules if r.product is None or r.product == product]
    forced = sorted((r for r in applying if r.action == "force"), key=lambda r: r.product is None)
    excluded = {r.channel_account_id for r in applying if r.action == "exclude"}
    # A product-specific force beats an all-products one.
    return (forced[0].channel_account_id if forced else None), excluded


@dataclass(frozen=True)
class Rule:
    """A routing rule as routing reads it (`RoutingRule` rows): force or exclude an account."""

    channel_account_id: uuid.UUID
    action: str
    product: str | None


def _load_statement() -> sa.Select:
    """The accounts of a tenant's mode, each with what it took on the tenant's day, and the
    merchant's rules riding along on every row (one uncorrelated subquery, run once: with no
    account there is nothing to route, and no rule to apply either). Built once, with parameters."""
    tenant_id = sa.bindparam("tenant_id", type_=sa.Uuid)
    merchant_id = sa.bindparam("merchant_id", type_=sa.Uuid)
    today = (
        sa.select(sa.cast(sa.func.timezone(Tenant.time_zone, sa.func.now()), sa.Date))
        .where(Tenant.id == tenant_id)
        .scalar_subquery()
    )
    usage = (
        sa.select(ChannelDailyUsage.amount)
        .where(
            ChannelDailyUsage.tenant_id == tenant_id,
            ChannelDailyUsage.channel_account_id == ChannelAccount.id,
            ChannelDailyUsage.day == today,
        )
        .scalar_subquery()
    )
    rules_json = (
        sa.select(
            sa.func.json_agg(
                sa.func.json_build_array(RoutingRule.channel_account_id, RoutingRule.action, RoutingRule.product)
            )
        )
        .where(RoutingRule.tenant_id == tenant_id, RoutingRule.merchant_id == merchant_id)
        .scalar_subquery()
    )
    return sa.select(ChannelAccount, sa.func.coalesce(usage, 0), rules_json).where(
        ChannelAccount.tenant_id == tenant_id, ChannelAccount.mode == sa.bindparam("mode")
    )


_LOAD = _load_statement()


@dataclass(frozen=True)
class RoutingInputs:
    """What routing reads for one merchant in one mode, read once."""

    tenant_id: uuid.UUID
    merchant_id: uuid.UUID
    accounts: dict[uuid.UUID, ChannelAccount]
    candidates: tuple[ChannelCandidate, ...]
    rules: tuple[Rule, ...]
    health: dict[uuid.UUID, Health]

    @classmethod
    def load(cls, tenant_id: uuid.UUID, merchant_id: uuid.UUID, mode: str) -> RoutingInputs:
        rows = db.session.execute(_LOAD, {"tenant_id": tenant_id, "merchant_id": merchant_id, "mode": mode}).all()
        rules = (
            [Rule(uuid.UUID(account), action, product) for account, action, product in (rows[0][2] or [])]
            if rows
            else []
        )
        health = channel_health.states(account.id for account, _, _ in rows)
        return cls(
            tenant_id,
            merchant_id,
            {account.id: account for account, _, _ in rows},
            tuple(candidate_of(account, int(used), health.get(account.id, HEALTHY)) for account, used, _ in rows),
            tuple(rules),
            health,
        )

    def offered(self, amount: int, currency: str) -> list[str]:
        """The products at least one channel account can take for this payment (SPEC step 2)."""
        offered = []
        for code in catalogue.PRODUCTS:
            forced, excluded = rules_in(list(self.rules), code)
            usable = catalogue.offered_products(
                amount,
                currency,
                self.candidates,
                excluded_channel_ids={str(e) for e in excluded},
                forced_channel_id=str(forced) if forced else None,
            )
            if any(p.code == code for p in usable):
                offered.append(code)
        return offered

    def plan(self, product: str, amount: int, currency: str, payer_elements: set[str]) -> RouteDecision:
        """Which channel account would take this payment, and why, for every candidate."""
        forced, excluded = rules_in(list(self.rules), product)
        request = RouteRequest(
            merchant_id=str(self.merchant_id),
            product=product,
            amount=amount,
            currency=currency,
            payer_elements=frozenset(payer_elements),
            rule_forced_channel_id=str(forced) if forced else None,
            rule_excluded_channel_ids=frozenset(str(channel) for channel in excluded),
        )
        return route(request, self.candidates)


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
    return RoutingInputs.load(tenant_id, merchant_id, mode).plan(product, amount, currency, payer_elements)
