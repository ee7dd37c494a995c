"""A tenant's revenue per day: merchant fees − channel costs − platform fee, read from the ledger.

Each captured payment posts its fee split (`payments.intents._post_capture`): `tenant_revenue`
is credited the merchant fee less the platform fee, `platform_revenue` the platform fee, and
`channel_fees` debited the channel's cost. Per day (the tenant's calendar day) and currency:

    merchant fees = −(tenant_revenue + platform_revenue)
    platform fee  = −platform_revenue
    channel costs = channel_fees
    revenue       = merchant fees − channel costs − platform fee
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa

from core.db import db

_DAILY = sa.text(
    """
    SELECT CAST(timezone(tenants.time_zone, e.created_at) AS date) AS day, l.currency,
           COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'tenant_revenue'), 0) AS tenant_revenue,
           COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'platform_revenue'), 0) AS platform_revenue,
           COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'channel_fees'), 0) AS channel_fees
    FROM journal_entries AS e
    JOIN tenants ON tenants.id = e.tenant_id
    JOIN journal_lines AS l ON l.tenant_id = e.tenant_id AND l.entry_id = e.id
    JOIN ledger_accounts AS a ON a.tenant_id = l.tenant_id AND a.id = l.account_id
    WHERE e.tenant_id = :tenant_id AND e.livemode = :livemode
      AND a.purpose IN ('tenant_revenue', 'platform_revenue', 'channel_fees')
      AND e.created_at >= timezone(tenants.time_zone, CAST(:first AS timestamp))
      AND e.created_at < timezone(tenants.time_zone, CAST(:after AS timestamp))
    GROUP BY 1, 2
    ORDER BY 1, 2
    """
)


@dataclass(frozen=True)
class RevenueDay:
    day: date
    currency: str
    merchant_fees: int
    channel_costs: int
    platform_fee: int

    @property
    def revenue(self) -> int:
        return self.merchant_fees - self.channel_costs - self.platform_fee


def daily(tenant_id: uuid.UUID, first: date, last: date, *, livemode: bool) -> dict[str, list[RevenueDay]]:
    """Every day from `first` to `last` (the tenant's calendar days), per currency, zero days included."""
    rows = db.session.execute(
        _DAILY,
        {"tenant_id": tenant_id, "livemode": livemode, "first": first, "after": last + timedelta(days=1)},
    ).all()
    found = {
        (row.day, row.currency): RevenueDay(
            row.day,
            row.currency,
            merchant_fees=-(row.tenant_revenue + row.platform_revenue),
            channel_costs=row.channel_fees,
            platform_fee=-row.platform_revenue,
        )
        for row in rows
    }
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return {
        currency: [found.get((day, currency), RevenueDay(day, currency, 0, 0, 0)) for day in days]
        for currency in sorted({currency for _, currency in found})
    }
