"""The lists people filter and export: payments, settlements, payouts (and the report's rows, in
`clearing.reports`). One place per list turns the query string into a statement, so the page and
its export (a direct download or a job, `clearing.exports`) select exactly the same rows.

Each `build` takes the filters as typed (a mapping of query-string values) and returns the
narrowed statement and a message per filter that cannot be used (that filter is then ignored,
and the page says so). A `Scope` is whose rows they are: one merchant's (its dashboard) or the
whole tenant's (the console, where `merchant` filters by merchant name). Lists are newest first,
by (created_at, id), the order of `portal.pagination.newest_first` and of the export's keyset.

Money in exports: major units as exact `Decimal` (the currency's exponent applied, never a
float), next to a currency column; see `clearing.exports`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from clearing.models import Settlement
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_major, to_minor
from payments.models import INTENT_STATUSES, PAYOUT_STATUSES, PaymentIntent, Payout
from payments.terminals import Terminal
from tenants.models import Merchant


@dataclass(frozen=True)
class Scope:
    """Whose rows: one merchant's (`merchant_id`), or every merchant's of the tenant (None)."""

    tenant_id: uuid.UUID
    merchant_id: uuid.UUID | None
    zone: ZoneInfo

    @property
    def tenant_wide(self) -> bool:
        return self.merchant_id is None


@dataclass(frozen=True)
class Column:
    """One column of an export: its header and how to read it from a row. `money`: the value is
    minor units of the row's `currency`, written as major units."""

    header: str
    value: Callable[[Any, dict], Any]
    money: bool = False


@dataclass(frozen=True)
class ListKind:
    name: str
    model: Any
    filters: tuple[str, ...]
    build: Callable[[Scope, Mapping[str, str]], tuple[sa.Select, dict[str, str]]]
    columns: Callable[[Scope], list[Column]]


def parse_day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(
            gettext("%(text)s is not a date: use YYYY-MM-DD, for example 2026-03-31.", text=repr(text))
        ) from None


def mode_of(args: Mapping[str, str]) -> str:
    return "live" if args.get("mode") == "live" else "test"


def typed(args: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """What the user typed in the filters `names`, as typed (the form shows it again, links keep it)."""
    return {key: str(args[key]) for key in names if args.get(key)}


def day_range(args: Mapping[str, str]) -> tuple[dict[str, date], dict[str, str]]:
    """The `from`/`to` days of `args`, and a message per bound that cannot be read."""
    errors: dict[str, str] = {}
    days: dict[str, date] = {}
    for bound in ("from", "to"):
        text = (args.get(bound) or "").strip()
        if text:
            try:
                days[bound] = parse_day(text)
            except ValueError as exc:
                errors[bound] = str(exc)
    if "from" in days and "to" in days and days["from"] > days["to"]:
        errors["to"] = gettext("“To” is before “From”.")
        return {}, errors
    return days, errors


def _merchant_name_filter(statement: sa.Select, model, args: Mapping[str, str]) -> sa.Select:
    text = (args.get("merchant") or "").strip()
    if not text:
        return statement
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return statement.join(
        Merchant, sa.and_(Merchant.tenant_id == model.tenant_id, Merchant.id == model.merchant_id)
    ).where(Merchant.name.ilike(f"%{escaped}%"))


def _scoped(model, scope: Scope, args: Mapping[str, str], *, by_mode: bool = True) -> sa.Select:
    statement = sa.select(model).where(model.tenant_id == scope.tenant_id)
    if scope.merchant_id is not None:
        statement = statement.where(model.merchant_id == scope.merchant_id)
    else:
        statement = _merchant_name_filter(statement, model, args)
    if by_mode:
        statement = statement.where(model.livemode == (mode_of(args) == "live"))
    return statement


def _local(at: datetime | None, scope: Scope) -> str:
    return at.astimezone(scope.zone).strftime("%Y-%m-%d %H:%M:%S") if at else ""


def _merchant_column(scope: Scope) -> list[Column]:
    if not scope.tenant_wide:
        return []
    return [Column("Merchant", lambda row, names: names.get(row.merchant_id, str(row.merchant_id)))]


# --- payments ------------------------------------------------------------------------------------

PAYMENT_FILTERS = ("q", "status", "terminal", "from", "to", "currency", "min", "max", "merchant")


def _terminal_in_scope(scope: Scope, terminal_id: str) -> bool:
    """Whether the terminal is the scope's (deactivated ones too: their payments stay)."""
    statement = sa.select(Terminal.id).where(Terminal.tenant_id == scope.tenant_id, Terminal.id == terminal_id)
    if not scope.tenant_wide:
        statement = statement.where(Terminal.merchant_id == scope.merchant_id)
    return db.session.execute(statement).first() is not None


def payments(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """Payments of the scope in the mode of `args`, narrowed by id, status, the tenant's calendar
    days, currency and amount (major units of that currency)."""
    statement = _scoped(PaymentIntent, scope, args)
    errors: dict[str, str] = {}
    query = (args.get("q") or "").strip()
    if query:
        statement = statement.where(PaymentIntent.id == query)
    terminal = (args.get("terminal") or "").strip()
    if terminal and not _terminal_in_scope(scope, terminal):
        errors["terminal"] = gettext("%(terminal)s is not one of your terminals.", terminal=repr(terminal))
    elif terminal:
        statement = statement.where(PaymentIntent.terminal_id == terminal)
    status = (args.get("status") or "").strip()
    if status and status not in INTENT_STATUSES:
        errors["status"] = gettext("%(status)s is not a payment status.", status=repr(status))
    elif status:
        statement = statement.where(PaymentIntent.status == status)
    days, day_errors = day_range(args)
    errors.update(day_errors)
    # Calendar days of the tenant: midnight to midnight in its zone, not in UTC.
    if "from" in days:
        statement = statement.where(
            PaymentIntent.created_at >= datetime.combine(days["from"], time.min, tzinfo=scope.zone)
        )
    if "to" in days:
        end = datetime.combine(days["to"] + timedelta(days=1), time.min, tzinfo=scope.zone)
        statement = statement.where(PaymentIntent.created_at < end)
    currency = None
    if (args.get("currency") or "").strip():
        try:
            currency = normalise_currency(args["currency"])
        except MoneyError as exc:
            errors["currency"] = str(exc)
        else:
            statement = statement.where(PaymentIntent.currency == currency)
    amounts = {}
    for bound in ("min", "max"):
        text = (args.get(bound) or "").strip()
        if not text or "currency" in errors:
            continue
        if currency is None:
            # Amounts are minor units of one currency: "12" is 1200 in USD but 12 in JPY.
            errors[bound] = gettext("Choose a currency to filter by amount.")
            continue
        try:
            amounts[bound] = to_minor(text, currency)
        except MoneyError as exc:
            errors[bound] = str(exc)
    if "min" in amounts and "max" in amounts and amounts["min"] > amounts["max"]:
        errors["max"] = gettext("“Amount to” is less than “Amount from”.")
    else:
        if "min" in amounts:
            statement = statement.where(PaymentIntent.amount >= amounts["min"])
        if "max" in amounts:
            statement = statement.where(PaymentIntent.amount <= amounts["max"])
    return statement, errors


def _payment_columns(scope: Scope) -> list[Column]:
    return [
        Column("Payment", lambda pi, _: pi.id),
        Column(f"Created ({scope.zone.key})", lambda pi, _: _local(pi.created_at, scope)),
        *_merchant_column(scope),
        Column("Status", lambda pi, _: pi.status),
        Column("Currency", lambda pi, _: pi.currency.upper()),
        Column("Amount", lambda pi, _: pi.amount, money=True),
        Column("Received", lambda pi, _: pi.amount_received, money=True),
        Column("Refunded", lambda pi, _: pi.amount_refunded, money=True),
        Column("Product", lambda pi, _: pi.product or ""),
        Column("Description", lambda pi, _: pi.description or ""),
        Column("Terminal", lambda pi, _: pi.terminal_id or ""),
    ]


# --- settlements ---------------------------------------------------------------------------------

SETTLEMENT_FILTERS = ("from", "to", "currency", "merchant")


def business_day_filter(statement: sa.Select, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """`statement` narrowed to the business days `from`..`to` (both included) of `args`."""
    days, errors = day_range(args)
    if "from" in days:
        statement = statement.where(Settlement.business_day >= days["from"])
    if "to" in days:
        statement = statement.where(Settlement.business_day <= days["to"])
    return statement, errors


def settlements(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """A merchant's settlements in the mode of `args`; the tenant's of every mode (its clearing page
    lists them all), by merchant name. Both by business day and currency."""
    statement = _scoped(Settlement, scope, args, by_mode=not scope.tenant_wide)
    statement, errors = business_day_filter(statement, args)
    if (args.get("currency") or "").strip():
        try:
            currency = normalise_currency(args["currency"])
        except MoneyError as exc:
            errors["currency"] = str(exc)
        else:
            statement = statement.where(Settlement.currency == currency)
    return statement, errors


def _settlement_columns(scope: Scope) -> list[Column]:
    return [
        Column("Business day", lambda s, _: s.business_day.isoformat()),
        *_merchant_column(scope),
        Column("Mode", lambda s, _: "live" if s.livemode else "test"),
        Column("Currency", lambda s, _: s.currency.upper()),
        Column("Charges", lambda s, _: s.charges_count),
        Column("Charges amount", lambda s, _: s.charges_amount, money=True),
        Column("Refunds", lambda s, _: s.refunds_count),
        Column("Refunds amount", lambda s, _: s.refunds_amount, money=True),
        Column("Fees", lambda s, _: s.fees, money=True),
        Column("Net", lambda s, _: s.net, money=True),
        Column(f"Settled ({scope.zone.key})", lambda s, _: _local(s.created_at, scope)),
    ]


# --- payouts -------------------------------------------------------------------------------------

PAYOUT_FILTERS = ("status", "merchant")


def payouts(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    statement = _scoped(Payout, scope, args)
    errors: dict[str, str] = {}
    status = (args.get("status") or "").strip()
    if status and status not in PAYOUT_STATUSES:
        errors["status"] = gettext("%(status)s is not a payout status.", status=repr(status))
    elif status:
        statement = statement.where(Payout.status == status)
    return statement, errors


def _payout_columns(scope: Scope) -> list[Column]:
    return [
        Column("Payout", lambda p, _: p.id),
        Column(f"Requested ({scope.zone.key})", lambda p, _: _local(p.created_at, scope)),
        *_merchant_column(scope),
        Column("Status", lambda p, _: p.status),
        Column("Currency", lambda p, _: p.currency.upper()),
        Column("Amount", lambda p, _: p.amount, money=True),
        Column("Description", lambda p, _: p.description or ""),
        Column("Failure", lambda p, _: p.failure_message or ""),
    ]


KINDS: dict[str, ListKind] = {
    "payments": ListKind("payments", PaymentIntent, PAYMENT_FILTERS, payments, _payment_columns),
    "settlements": ListKind("settlements", Settlement, SETTLEMENT_FILTERS, settlements, _settlement_columns),
    "payouts": ListKind("payouts", Payout, PAYOUT_FILTERS, payouts, _payout_columns),
}


def merchant_names(tenant_id: uuid.UUID, ids) -> dict[uuid.UUID, str]:
    ids = set(ids)
    if not ids:
        return {}
    return dict(
        db.session.execute(
            sa.select(Merchant.id, Merchant.name).where(Merchant.tenant_id == tenant_id, Merchant.id.in_(ids))
        ).all()
    )


def major(amount: int, currency: str):
    """Minor units as the exact major-unit Decimal of `currency` (1250 EUR -> Decimal('12.50'))."""
    return to_major(amount, currency)
