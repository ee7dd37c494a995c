"""Reports: what a tenant (all its merchants, or one) or a merchant took, per day, week or month of
the tenant's calendar, per currency, optionally broken down by product, channel account or merchant.

Each figure is counted when its event happened, in the tenant's time zone:
- attempted / succeeded: payments by when they were created; attempted = confirmed at least once
  (a route was planned), succeeded = status `succeeded`; success rate = succeeded / attempted;
- volume, captures and fees: captures (the `charge` balance transactions) by when they were captured;
  volume is the captured amount, fees the merchant fees charged on it;
- refunds: succeeded refunds (the `refund` balance transactions) by when they succeeded;
- revenue share (tenant reports): from each capture's ledger entry, as `clearing.revenue` reads it:
  merchant fees = −(tenant_revenue + platform_revenue), platform fee = −platform_revenue, channel
  cost = channel_fees; tenant revenue = merchant fees − channel cost − platform fee.
Amounts are integers in minor units, per currency; no figure mixes currencies. Every query is one
`GROUP BY` over rows of one tenant in a time range (indexes led by `tenant_id`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from clearing.listings import Column, Scope, day_range, mode_of
from core.db import db
from core.i18n import gettext
from payments.models import ChannelAccount
from tenants.models import Merchant

PERIODS = ("day", "week", "month")
DIMENSIONS = ("product", "channel", "merchant")
REPORT_FILTERS = ("period", "from", "to", "by", "merchant", "mode")
# How far back a report reaches when no `from` is given, per period (periods shown, today's included).
DEFAULT_SPAN = {"day": 30, "week": 12, "month": 12}
MAX_PERIODS = 400  # more buckets than this is not a chart anyone reads; the range is refused


@dataclass(frozen=True)
class ReportQuery:
    tenant_id: uuid.UUID
    zone: str
    first: date
    last: date
    period: str = "day"
    livemode: bool = False
    merchant_id: uuid.UUID | None = None
    by: str | None = None  # None, or one of DIMENSIONS


@dataclass
class ReportRow:
    period: date
    currency: str
    key: str | None = None  # the dimension's value: product code, channel account id, merchant id
    attempted: int = 0
    succeeded: int = 0
    captures: int = 0
    volume: int = 0
    fees: int = 0
    refund_count: int = 0
    refunds: int = 0
    merchant_fees: int = 0
    channel_costs: int = 0
    platform_fee: int = 0

    @property
    def success_rate(self) -> Decimal | None:
        """Succeeded / attempted as a percentage with one decimal (half up), None with no attempt."""
        if not self.attempted:
            return None
        return (Decimal(self.succeeded) * 100 / Decimal(self.attempted)).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )

    @property
    def tenant_revenue(self) -> int:
        return self.merchant_fees - self.channel_costs - self.platform_fee

    def add(self, other: ReportRow) -> None:
        for name in (
            "attempted",
            "succeeded",
            "captures",
            "volume",
            "fees",
            "refund_count",
            "refunds",
            "merchant_fees",
            "channel_costs",
            "platform_fee",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Report:
    query: ReportQuery
    periods: list[date]
    rows: list[ReportRow]  # one per (period, currency, key) with anything in it, in that order
    labels: dict[str, str] = field(default_factory=dict)  # key -> what people call it

    @property
    def currencies(self) -> list[str]:
        return sorted({row.currency for row in self.rows})

    def series(self, currency: str) -> list[ReportRow]:
        """Every period of the range (empty ones too) for `currency`, all keys summed."""
        totals = {start: ReportRow(start, currency) for start in self.periods}
        for row in self.rows:
            if row.currency == currency:
                totals[row.period].add(row)
        return [totals[start] for start in self.periods]

    def breakdown(self, currency: str) -> list[ReportRow]:
        """The whole range per key for `currency`, largest volume first."""
        totals: dict[str | None, ReportRow] = {}
        for row in self.rows:
            if row.currency == currency:
                totals.setdefault(row.key, ReportRow(self.periods[0], currency, row.key)).add(row)
        return sorted(totals.values(), key=lambda row: (-row.volume, -row.attempted, row.key or ""))

    def total(self, currency: str) -> ReportRow:
        total = ReportRow(self.periods[0], currency)
        for row in self.rows:
            if row.currency == currency:
                total.add(row)
        return total


def period_start(day: date, period: str) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday, as date_trunc's
    if period == "month":
        return day.replace(day=1)
    return day


def _next(start: date, period: str) -> date:
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def periods(first: date, last: date, period: str) -> list[date]:
    starts, start = [], period_start(first, period)
    while start <= last:
        starts.append(start)
        start = _next(start, period)
    return starts


def _key(by: str | None, alias: str = "pi") -> str:
    return {
        None: "NULL::text",
        "product": f"coalesce({alias}.product, '')",
        "channel": f"{alias}.channel_account_id::text",
        "merchant": f"{alias}.merchant_id::text",
    }[by]


def _bucket(column: str) -> str:
    return f"CAST(date_trunc(:unit, timezone(:zone, {column})) AS date)"


def _range(column: str) -> str:
    start, end = "timezone(:zone, CAST(:first AS timestamp))", "timezone(:zone, CAST(:after AS timestamp))"
    return f"{column} >= {start} AND {column} < {end}"


def _merchant(column: str, query: ReportQuery) -> str:
    return f" AND {column} = :merchant_id" if query.merchant_id is not None else ""


def _statements(query: ReportQuery) -> dict[str, sa.TextClause]:
    key = _key(query.by)
    payments = f"""
        SELECT {_bucket("pi.created_at")} AS period, pi.currency, {key} AS key,
               count(*) AS attempted, count(*) FILTER (WHERE pi.status = 'succeeded') AS succeeded
        FROM payment_intents AS pi
        WHERE pi.tenant_id = :tenant_id AND pi.livemode = :livemode AND {_range("pi.created_at")}
              AND (pi.routing IS NOT NULL OR pi.status = 'succeeded')
              {_merchant("pi.merchant_id", query)}
        GROUP BY 1, 2, 3"""
    captures = f"""
        SELECT {_bucket("bt.created_at")} AS period, bt.currency, {key} AS key,
               count(*) AS captures, sum(bt.amount) AS volume, sum(bt.fee) AS fees
        FROM balance_transactions AS bt
        JOIN payment_intents AS pi ON pi.tenant_id = bt.tenant_id AND pi.id = bt.source
        WHERE bt.tenant_id = :tenant_id AND bt.type = 'charge' AND bt.livemode = :livemode
              AND {_range("bt.created_at")} {_merchant("bt.merchant_id", query)}
        GROUP BY 1, 2, 3"""
    refunds = f"""
        SELECT {_bucket("bt.created_at")} AS period, bt.currency, {key} AS key,
               count(*) AS refund_count, -sum(bt.amount) AS refunds
        FROM balance_transactions AS bt
        JOIN refunds AS r ON r.tenant_id = bt.tenant_id AND r.id = bt.source
        JOIN payment_intents AS pi ON pi.tenant_id = r.tenant_id AND pi.id = r.payment_intent_id
        WHERE bt.tenant_id = :tenant_id AND bt.type = 'refund' AND bt.livemode = :livemode
              AND {_range("bt.created_at")} {_merchant("bt.merchant_id", query)}
        GROUP BY 1, 2, 3"""
    revenue = f"""
        SELECT {_bucket("e.created_at")} AS period, l.currency, {key} AS key,
               COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'tenant_revenue'), 0) AS tenant_revenue,
               COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'platform_revenue'), 0) AS platform_revenue,
               COALESCE(sum(l.amount) FILTER (WHERE a.purpose = 'channel_fees'), 0) AS channel_fees
        FROM journal_entries AS e
        JOIN payment_intents AS pi ON pi.tenant_id = e.tenant_id AND pi.id = e.reference
        JOIN journal_lines AS l ON l.tenant_id = e.tenant_id AND l.entry_id = e.id
        JOIN ledger_accounts AS a ON a.tenant_id = l.tenant_id AND a.id = l.account_id
        WHERE e.tenant_id = :tenant_id AND e.kind = 'payment.captured' AND e.livemode = :livemode
              AND a.purpose IN ('tenant_revenue', 'platform_revenue', 'channel_fees')
              AND {_range("e.created_at")} {_merchant("pi.merchant_id", query)}
        GROUP BY 1, 2, 3"""
    return {
        name: sa.text(sql)
        for name, sql in (("payments", payments), ("captures", captures), ("refunds", refunds), ("revenue", revenue))
    }


def run(query: ReportQuery) -> Report:
    """The report: one aggregate query per kind of event, merged per (period, currency, key)."""
    if query.period not in PERIODS:
        raise ValueError(f"unknown period {query.period!r}")
    if query.by not in (None, *DIMENSIONS):
        raise ValueError(f"unknown breakdown {query.by!r}")
    ZoneInfo(query.zone)  # PostgreSQL refuses an unknown zone with a less helpful message
    params = {
        "tenant_id": query.tenant_id,
        "livemode": query.livemode,
        "zone": query.zone,
        "unit": query.period,
        "first": query.first,
        "after": query.last + timedelta(days=1),
        "merchant_id": query.merchant_id,
    }
    found: dict[tuple[date, str, str | None], ReportRow] = {}

    def row(result) -> ReportRow:
        ident = (result.period, result.currency.upper(), result.key)
        if ident not in found:
            found[ident] = ReportRow(*ident)
        return found[ident]

    statements = _statements(query)
    for result in db.session.execute(statements["payments"], params):
        item = row(result)
        item.attempted, item.succeeded = result.attempted, result.succeeded
    for result in db.session.execute(statements["captures"], params):
        item = row(result)
        item.captures, item.volume, item.fees = result.captures, int(result.volume), int(result.fees)
    for result in db.session.execute(statements["refunds"], params):
        item = row(result)
        item.refund_count, item.refunds = result.refund_count, int(result.refunds)
    for result in db.session.execute(statements["revenue"], params):
        item = row(result)
        item.merchant_fees = -int(result.tenant_revenue + result.platform_revenue)
        item.platform_fee = -int(result.platform_revenue)
        item.channel_costs = int(result.channel_fees)
    rows = sorted(found.values(), key=lambda item: (item.period, item.currency, item.key or ""))
    return Report(query, periods(query.first, query.last, query.period), rows, labels(query, rows))


def labels(query: ReportQuery, rows: list[ReportRow]) -> dict[str, str]:
    """What people call each key: a channel account's or merchant's name, a product's code."""
    keys = {row.key for row in rows if row.key}
    if query.by == "channel" and keys:
        return {
            str(ident): name
            for ident, name in db.session.execute(
                sa.select(ChannelAccount.id, ChannelAccount.name).where(
                    ChannelAccount.tenant_id == query.tenant_id, ChannelAccount.id.in_([uuid.UUID(k) for k in keys])
                )
            )
        }
    if query.by == "merchant" and keys:
        return {
            str(ident): name
            for ident, name in db.session.execute(
                sa.select(Merchant.id, Merchant.name).where(
                    Merchant.tenant_id == query.tenant_id, Merchant.id.in_([uuid.UUID(k) for k in keys])
                )
            )
        }
    return {key: key for key in keys}


# --- the report's filters, as the page and its export read them -----------------------------------


@dataclass(frozen=True)
class ReportFilters:
    query: ReportQuery
    errors: dict[str, str]


def parse(scope: Scope, args: Mapping[str, str], today: date | None = None) -> ReportFilters:
    """The report that `args` (period, from, to, by, merchant, mode) ask for in `scope`, and a message
    per filter that cannot be used (the report then uses its default for that filter). A tenant's
    `merchant` is a merchant id (its reports page offers the list)."""
    errors: dict[str, str] = {}
    today = today or datetime.now(scope.zone).date()
    period = (args.get("period") or "day").strip()
    if period not in PERIODS:
        errors["period"] = gettext("%(period)s is not a period: choose day, week or month.", period=repr(period))
        period = "day"
    by = (args.get("by") or "").strip() or None
    allowed = DIMENSIONS if scope.tenant_wide else ("product", "channel")
    if by is not None and by not in allowed:
        errors["by"] = gettext(
            "%(by)s is not a breakdown: choose %(allowed)s.", by=repr(by), allowed=", ".join(allowed)
        )
        by = None
    days, day_errors = day_range(args)
    errors.update(day_errors)
    last = days.get("to", today)
    if "from" in days:
        first = days["from"]
    else:
        first = last
        for _ in range(DEFAULT_SPAN[period] - 1):
            first = period_start(first, period) - timedelta(days=1)
        first = period_start(first, period)
    if len(periods(first, last, period)) > MAX_PERIODS:
        errors["from"] = {
            "day": gettext(
                "That is more than %(limit)s days: choose a shorter range or a longer period.", limit=MAX_PERIODS
            ),
            "week": gettext(
                "That is more than %(limit)s weeks: choose a shorter range or a longer period.", limit=MAX_PERIODS
            ),
            "month": gettext(
                "That is more than %(limit)s months: choose a shorter range or a longer period.", limit=MAX_PERIODS
            ),
        }[period]
        first = last - timedelta(days=DEFAULT_SPAN["day"] - 1)
        period = "day"
    merchant_id = scope.merchant_id
    text = (args.get("merchant") or "").strip()
    if scope.tenant_wide and text:
        try:
            merchant_id = uuid.UUID(text)
        except ValueError:
            errors["merchant"] = gettext("Choose a merchant from the list.")
    query = ReportQuery(
        scope.tenant_id,
        scope.zone.key,
        first,
        last,
        period=period,
        livemode=mode_of(args) == "live",
        merchant_id=merchant_id,
        by=by,
    )
    return ReportFilters(query, errors)


def export_rows(report: Report) -> list[ReportRow]:
    """The rows an export of the report writes: without a breakdown, the page's tables (every
    period of the range per currency, empty ones too); with one, every (period, currency, key) that
    has something in it."""
    if report.query.by:
        return report.rows
    return [row for currency in report.currencies for row in report.series(currency)]


def columns(scope: Scope, query: ReportQuery, report_labels: Mapping[str, str]) -> list[Column]:
    """The report's rows as an export writes them (one row per period, currency and key)."""
    dimension = {"product": "Product", "channel": "Channel", "merchant": "Merchant"}
    cols = [
        Column(query.period.title(), lambda row, _: row.period.isoformat()),
        Column("Currency", lambda row, _: row.currency),
    ]
    if query.by:
        cols.append(Column(dimension[query.by], lambda row, _: report_labels.get(row.key or "", row.key or "")))
    cols += [
        Column("Attempted", lambda row, _: row.attempted),
        Column("Succeeded", lambda row, _: row.succeeded),
        Column("Success rate (%)", lambda row, _: row.success_rate),
        Column("Captures", lambda row, _: row.captures),
        Column("Volume", lambda row, _: row.volume, money=True),
        Column("Refunds", lambda row, _: row.refund_count),
        Column("Refunded", lambda row, _: row.refunds, money=True),
        Column("Fees", lambda row, _: row.fees, money=True),
    ]
    if scope.tenant_wide:
        cols += [
            Column("Channel cost", lambda row, _: row.channel_costs, money=True),
            Column("Platform fee", lambda row, _: row.platform_fee, money=True),
            Column("Tenant revenue", lambda row, _: row.tenant_revenue, money=True),
        ]
    return cols
