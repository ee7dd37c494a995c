"""Daily settlement: a merchant's captured payments, less refunds and fees, move from its pending
balance to its available balance, one business day at a time.

Business day and T+N
--------------------
A tenant has a daily cut-off (local time in its time zone, default 00:00). A balance transaction
belongs to the business day whose cut-off follows it: with a 18:00 cut-off, Monday 17:59 is
Monday's and Monday 18:00 is Tuesday's; with 00:00, the business day is the calendar day. A
business day *closes* at its cut-off (for 00:00, at the next midnight). T+N: a business day's
money becomes available N days after it closes (N per merchant, default the tenant's, 0–30).

What a settlement does
----------------------
For each (merchant, currency, mode, business day) that is due, in ONE transaction: the day's
pending charges and refunds are marked available (`settlement_id` set), a `Settlement` row
records counts and sums (charges + refunds − fees = net), one journal entry moves the net from
`merchant_pending` to `merchant_available`, and the run's progress advances. The marking is an
`UPDATE ... RETURNING`, so the sums are of exactly the rows this transaction took: a second run
(or the same run resumed after a kill) finds nothing left for that day and changes nothing.

Payments held by a risk rule (`risk`)
-------------------------------------
A payment whose `risk_review` is "held" is left out, with its refunds, until the review releases
(or refunds) it; from then on its money belongs to the business day of the release
(`risk_released_at`), since the day it was captured may have been settled meanwhile.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

import ledger
from clearing.models import ClearingRun, ClearingSettings, MerchantSettlementTerms, Settlement
from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.models import Merchant, Tenant

DEFAULT_CUTOFF = time(0, 0)
DEFAULT_DELAY_DAYS = 1
MAX_DELAY_DAYS = 30


def _now() -> datetime:
    return datetime.now(UTC)


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    cutoff: time
    delay_days: int


def tenant_terms(tenant_id: uuid.UUID) -> Terms:
    row = db.session.get(ClearingSettings, tenant_id)
    if row is None:
        return Terms(DEFAULT_CUTOFF, DEFAULT_DELAY_DAYS)
    return Terms(row.cutoff, row.delay_days)


def tenant_zone(tenant_id: uuid.UUID) -> ZoneInfo:
    """The tenant's time zone (UTC when the stored name is unknown here)."""
    name = db.session.execute(sa.select(Tenant.time_zone).where(Tenant.id == tenant_id)).scalar_one()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _clean_delay(value, field: str) -> int:
    try:
        days = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(
            gettext("T+N is a whole number of days from 0 to %(limit)s.", limit=MAX_DELAY_DAYS), field
        ) from None
    if not 0 <= days <= MAX_DELAY_DAYS:
        raise InvalidInput(gettext("T+N is a whole number of days from 0 to %(limit)s.", limit=MAX_DELAY_DAYS), field)
    return days


def update_terms(tenant_id: uuid.UUID, cutoff: time, delay_days, actor: Actor) -> Terms:
    """Change the tenant's cut-off and default T+N (from the next run on; settled days stay)."""
    if not isinstance(cutoff, time) or cutoff.second or cutoff.microsecond:
        raise InvalidInput(gettext("The cut-off is a time of day in hours and minutes, like 18:00."), "cutoff")
    days = _clean_delay(delay_days, "delay_days")
    before = tenant_terms(tenant_id)
    if before == Terms(cutoff, days) and db.session.get(ClearingSettings, tenant_id) is not None:
        return before
    row = db.session.get(ClearingSettings, tenant_id, with_for_update=True)
    if row is None:
        row = ClearingSettings(tenant_id=tenant_id)
        db.session.add(row)
    row.cutoff, row.delay_days, row.updated_at = cutoff, days, _now()
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "clearing.terms_updated",
        "tenant",
        tenant_id,
        audit.changes(
            {"cutoff": before.cutoff.strftime("%H:%M"), "delay_days": before.delay_days},
            {"cutoff": cutoff.strftime("%H:%M"), "delay_days": days},
        ),
    )
    return Terms(cutoff, days)


def merchant_delay(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> int | None:
    """The merchant's own T+N, or None when it follows the tenant's."""
    row = db.session.get(MerchantSettlementTerms, (tenant_id, merchant_id))
    return None if row is None else row.delay_days


def set_merchant_delay(tenant_id: uuid.UUID, merchant_id: uuid.UUID, delay_days, actor: Actor) -> None:
    """Give a merchant its own T+N (None or "": follow the tenant's default)."""
    if db.session.get(Merchant, (tenant_id, merchant_id)) is None:
        raise InvalidInput(gettext("That merchant does not exist."), "merchant_id")
    days = None if delay_days is None or str(delay_days).strip() == "" else _clean_delay(delay_days, "delay_days")
    row = db.session.get(MerchantSettlementTerms, (tenant_id, merchant_id), with_for_update=True)
    before = None if row is None else row.delay_days
    if before == days:
        return
    if days is None:
        db.session.delete(row)
    elif row is None:
        db.session.add(MerchantSettlementTerms(tenant_id=tenant_id, merchant_id=merchant_id, delay_days=days))
    else:
        row.delay_days = days
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "merchant.settlement_terms_set",
        "merchant",
        merchant_id,
        audit.changes({"delay_days": before}, {"delay_days": days}),
    )


# --- what is due ---------------------------------------------------------------------------

# The tenant's settings, with defaults; then each pending charge or refund with its business day
# and the moment that day's money becomes available. Shared by the look-up and the marking.
_PENDING = """
    WITH cfg AS (
        SELECT tenants.id AS tenant_id, tenants.time_zone AS tz,
               COALESCE(s.cutoff, TIME '00:00') AS cutoff, COALESCE(s.delay_days, 1) AS delay
        FROM tenants LEFT JOIN clearing_settings AS s ON s.tenant_id = tenants.id
        WHERE tenants.id = :tenant_id
    ), pending AS (
        SELECT bt.tenant_id, bt.id, bt.merchant_id, bt.currency, bt.livemode, bt.type, bt.amount, bt.fee, bt.net,
               CAST(timezone(cfg.tz, GREATEST(bt.created_at, reviewed.risk_released_at))
                    - CAST(cfg.cutoff AS interval) AS date)
                 + CASE WHEN cfg.cutoff = TIME '00:00' THEN 0 ELSE 1 END AS day,
               COALESCE(terms.delay_days, cfg.delay) AS delay, cfg.tz, cfg.cutoff
        FROM balance_transactions AS bt
        CROSS JOIN cfg
        LEFT JOIN merchant_settlement_terms AS terms
               ON terms.tenant_id = bt.tenant_id AND terms.merchant_id = bt.merchant_id
        LEFT JOIN refunds AS refund
               ON bt.type = 'refund' AND refund.tenant_id = bt.tenant_id AND refund.id = bt.source
        LEFT JOIN payment_intents AS reviewed
               ON reviewed.tenant_id = bt.tenant_id AND reviewed.id = COALESCE(refund.payment_intent_id, bt.source)
              AND reviewed.risk_review IS NOT NULL
        WHERE bt.tenant_id = :tenant_id AND bt.status = 'pending' AND bt.settlement_id IS NULL
          AND bt.type IN ('charge', 'refund')
          AND reviewed.risk_review IS DISTINCT FROM 'held'
    ), due AS (
        SELECT * FROM pending
        WHERE timezone(tz, (day + cutoff)
                           + CASE WHEN cutoff = TIME '00:00' THEN INTERVAL '1 day' ELSE INTERVAL '0' END
                           + delay * INTERVAL '1 day') <= :now
    )
"""

_DUE_GROUPS = sa.text(
    _PENDING
    + """
    SELECT merchant_id, currency, livemode, day, count(*) AS transactions
    FROM due GROUP BY merchant_id, currency, livemode, day
    ORDER BY day, merchant_id, currency, livemode
    """
)

_MARK = sa.text(
    _PENDING
    + """
    UPDATE balance_transactions AS bt
    SET status = 'available', available_on = :now, settlement_id = :settlement_id
    FROM due
    WHERE bt.tenant_id = due.tenant_id AND bt.id = due.id
      AND due.merchant_id = :merchant_id AND due.currency = :currency AND due.livemode = :livemode
      AND due.day = :day
      AND bt.status = 'pending' AND bt.settlement_id IS NULL
    RETURNING bt.type, bt.amount, bt.fee, bt.net
    """
)


@dataclass(frozen=True)
class Group:
    merchant_id: uuid.UUID
    currency: str
    livemode: bool
    day: date
    transactions: int


def due_groups(tenant_id: uuid.UUID, now: datetime | None = None) -> list[Group]:
    """The (merchant, currency, mode, business day) groups whose money is due at `now`."""
    rows = db.session.execute(_DUE_GROUPS, {"tenant_id": tenant_id, "now": now or _now()}).all()
    return [Group(*row) for row in rows]


# --- settling ------------------------------------------------------------------------------


def settle_group(tenant_id: uuid.UUID, group: Group, now: datetime, run_id: uuid.UUID | None) -> Settlement | None:
    """Settle one group in the caller's transaction (the caller commits); None when another run
    already took every transaction of it."""
    settlement_id = uuid.uuid4()
    rows = db.session.execute(
        _MARK,
        {
            "tenant_id": tenant_id,
            "now": now,
            "settlement_id": settlement_id,
            "merchant_id": group.merchant_id,
            "currency": group.currency,
            "livemode": group.livemode,
            "day": group.day,
        },
    ).all()
    if not rows:
        return None
    sums: dict[str, int] = defaultdict(int)
    for type_, amount, fee, _net in rows:
        sums[f"{type_}s_count"] += 1
        sums[f"{type_}s_amount"] += amount
        sums["fees"] += fee
    net = sum(row.net for row in rows)
    settlement = Settlement(
        tenant_id=tenant_id,
        id=settlement_id,
        merchant_id=group.merchant_id,
        currency=group.currency,
        livemode=group.livemode,
        business_day=group.day,
        charges_count=sums["charges_count"],
        charges_amount=sums["charges_amount"],
        refunds_count=sums["refunds_count"],
        refunds_amount=sums["refunds_amount"],
        fees=sums["fees"],
        net=net,
        run_id=run_id,
    )
    db.session.add(settlement)
    db.session.flush()
    if net:
        pending = ledger.account_ref(tenant_id, "merchant_pending", group.currency, group.livemode, group.merchant_id)
        available = ledger.account_ref(
            tenant_id, "merchant_available", group.currency, group.livemode, group.merchant_id
        )
        ledger.post(
            tenant_id,
            "settlement",
            str(settlement_id),
            [(pending, net), (available, -net)],
            group.livemode,
            description=f"settlement of {group.day.isoformat()}",
        )
    audit.record(
        tenant_id,
        Actor.system(),
        "settlement.created",
        "settlement",
        settlement_id,
        audit.created(
            merchant=str(group.merchant_id),
            currency=group.currency,
            livemode=group.livemode,
            business_day=group.day.isoformat(),
            charges_amount=settlement.charges_amount,
            refunds_amount=settlement.refunds_amount,
            fees=settlement.fees,
            net=net,
        ),
    )
    return settlement


def settle(tenant_id: uuid.UUID, run: ClearingRun, now: datetime | None = None) -> dict:
    """Settle everything due for the tenant, one committed transaction per group, advancing
    `run` (total, processed) as it goes; returns the outcome it also stores on the run."""
    now = now or _now()
    groups = due_groups(tenant_id, now)
    run.total = run.processed + len(groups)
    db.session.commit()
    for group in groups:
        settle_group(tenant_id, group, now, run.id)
        run.processed += 1
        db.session.commit()
    run.outcome = run_outcome(tenant_id, run.id)
    db.session.commit()
    return run.outcome


def run_outcome(tenant_id: uuid.UUID, run_id: uuid.UUID) -> dict:
    """What a run settled, from its settlements (exact, also for a run resumed after a kill)."""
    rows = db.session.execute(
        sa.select(
            Settlement.currency,
            Settlement.livemode,
            sa.func.count(),
            sa.func.sum(Settlement.charges_count + Settlement.refunds_count),
            sa.func.sum(Settlement.net),
            sa.func.count(sa.distinct(Settlement.merchant_id)),
        )
        .where(Settlement.tenant_id == tenant_id, Settlement.run_id == run_id)
        .group_by(Settlement.currency, Settlement.livemode)
        .order_by(Settlement.currency, Settlement.livemode)
    ).all()
    merchants = db.session.execute(
        sa.select(sa.func.count(sa.distinct(Settlement.merchant_id))).where(
            Settlement.tenant_id == tenant_id, Settlement.run_id == run_id
        )
    ).scalar_one()
    return {
        "settlements": sum(row[2] for row in rows),
        "transactions": int(sum(row[3] for row in rows)),
        "merchants": merchants,
        "net": [{"currency": c, "livemode": live, "amount": int(net)} for c, live, _, _, net, _ in rows],
    }
