"""The lists people filter and export: payments, settlements, payouts, refunds, the audit log, the
tenant's merchants, suspense items, statement imports and payout batches, a merchant's charge
items, coupons and payment links (and the report's rows, in `clearing.reports`). One place per
list turns the query string into a statement, so the page and its export (a direct download or a
job, `clearing.exports`) select exactly the same rows.

Each `build` takes the filters as typed (a mapping of query-string values) and returns the
narrowed statement and a message per filter that cannot be used (that filter is then ignored,
and the page says so). A `Scope` is whose rows they are: one merchant's (its dashboard), the
whole tenant's (the console, where `merchant` filters by merchant name), or every tenant's (the
platform's audit log, `tenant_id` None; only the audit log reads that scope). Lists are newest first,
by (created_at, id), the order of `portal.pagination.newest_first` and of the export's keyset.

Money in exports: major units as exact `Decimal` (the currency's exponent applied, never a
float), next to a currency column; see `clearing.exports`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from billing import catalog, coupons
from billing.models import ChargeItem, Coupon
from clearing.models import IMPORT_STATUSES, SUSPENSE_KINDS, PayoutBatch, Settlement, StatementImport, SuspenseItem
from clearing.statement_formats import FORMATS as STATEMENT_FORMATS
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_major, to_minor
from payments import links
from payments.models import (
    INTENT_STATUSES,
    PAYOUT_STATUSES,
    REFUND_STATUSES,
    ChannelAccount,
    PaymentIntent,
    Payout,
    Refund,
)
from payments.order_models import PaymentLink
from payments.terminals import Terminal
from tenants.models import ONBOARDING_STATUSES, AuditEvent, Merchant, Tenant


@dataclass(frozen=True)
class Scope:
    """Whose rows: one merchant's (`merchant_id`), or every merchant's of the tenant (None); with
    `tenant_id` None, every tenant's (the platform's audit log, read in platform scope)."""

    tenant_id: uuid.UUID | None
    merchant_id: uuid.UUID | None
    zone: ZoneInfo
    # Who is looking (their e-mail): filters such as the suspense list's "assigned to me" read it.
    email: str | None = None

    @property
    def tenant_wide(self) -> bool:
        return self.merchant_id is None

    @property
    def platform(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True)
class Column:
    """One column of an export: its header and how to read it from a row. `money`: the value is
    minor units of the row's `currency`, written as major units."""

    header: str
    value: Callable[[Any, dict], Any]
    money: bool = False


@dataclass(frozen=True)
class ListKind:
    """An exportable list: its rows' model (ordered newest first by `created_at`, `id`), the filters
    its page reads, the statement they select, the file's columns, and `names`: what the columns
    look up for a chunk of rows in one query (merchant names, tenants, counts), passed to each
    column's `value`."""

    name: str
    model: Any
    filters: tuple[str, ...]
    build: Callable[[Scope, Mapping[str, str]], tuple[sa.Select, dict[str, str]]]
    columns: Callable[[Scope], list[Column]]
    names: Callable[[Scope, list], dict] | None = None
    # The keyset's instant column (with `id`) and direction: the page's order, which the file keeps.
    order: str = "created_at"
    ascending: bool = False


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


def like(value: str | None, *, prefix: bool = False) -> str | None:
    """What a user typed as an ILIKE pattern (wildcards in it taken literally): anywhere in the
    text, or at its start (`prefix`). None when nothing was typed."""
    text = (value or "").strip()
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix else f"%{escaped}%"


def _merchant_name_filter(statement: sa.Select, model, args: Mapping[str, str]) -> sa.Select:
    pattern = like(args.get("merchant"))
    if not pattern:
        return statement
    return statement.join(
        Merchant, sa.and_(Merchant.tenant_id == model.tenant_id, Merchant.id == model.merchant_id)
    ).where(Merchant.name.ilike(pattern))


def _created_in(statement: sa.Select, column, days: dict[str, date], zone: ZoneInfo) -> sa.Select:
    """`statement` narrowed to the calendar days `from`..`to` of `zone` (midnight to midnight there)."""
    if "from" in days:
        statement = statement.where(column >= datetime.combine(days["from"], time.min, tzinfo=zone))
    if "to" in days:
        statement = statement.where(column < datetime.combine(days["to"] + timedelta(days=1), time.min, tzinfo=zone))
    return statement


def _days_filter(statement: sa.Select, column, args: Mapping[str, str], scope: Scope, errors: dict[str, str]):
    """`statement` narrowed to the tenant's calendar days `from`..`to` of `args` (of `column`); a bound
    that cannot be read goes into `errors` and is ignored."""
    days, day_errors = day_range(args)
    errors.update(day_errors)
    return _created_in(statement, column, days, scope.zone)


def _one_of(
    statement: sa.Select,
    args: Mapping[str, str],
    name: str,
    column,
    allowed,
    refusal: Callable[[str], str],
    errors: dict[str, str],
) -> sa.Select:
    """`statement` narrowed to `column == args[name]` when that value is one of `allowed`; another
    value goes into `errors` (`refusal(repr(value))`, a translated sentence) and is ignored."""
    value = (args.get(name) or "").strip()
    if value and value not in allowed:
        errors[name] = refusal(repr(value))
    elif value:
        statement = statement.where(column == value)
    return statement


def _currency_filter(statement: sa.Select, column, args: Mapping[str, str], errors: dict[str, str]):
    if not (args.get("currency") or "").strip():
        return statement, None
    try:
        currency = normalise_currency(args["currency"])
    except MoneyError as exc:
        errors["currency"] = str(exc)
        return statement, None
    return statement.where(column == currency), currency


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
    return [Column(gettext("Merchant"), lambda row, names: names.get(row.merchant_id, str(row.merchant_id)))]


def _merchant_names_of(scope: Scope, rows: list) -> dict:
    """The names of the chunk's merchants, for the tenant's lists (a merchant's own list names nobody)."""
    if not scope.tenant_wide:
        return {}
    return merchant_names(scope.tenant_id, {row.merchant_id for row in rows})


def _active_filter(statement: sa.Select, column, args: Mapping[str, str]) -> sa.Select:
    """The catalogue lists' `state`: active only, inactive only, or both (anything else: both, as
    the page shows)."""
    state = args.get("state") or ""
    if state == "active":
        return statement.where(column.is_(True))
    if state == "inactive":
        return statement.where(column.is_(False))
    return statement


def _state(active: bool) -> str:
    return "active" if active else "inactive"


def _yes(value: bool) -> str:
    return gettext("yes") if value else gettext("no")


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
    statement = _one_of(
        statement,
        args,
        "status",
        PaymentIntent.status,
        INTENT_STATUSES,
        lambda v: gettext("%(status)s is not a payment status.", status=v),
        errors,
    )
    # Calendar days of the tenant: midnight to midnight in its zone, not in UTC.
    statement = _days_filter(statement, PaymentIntent.created_at, args, scope, errors)
    statement, currency = _currency_filter(statement, PaymentIntent.currency, args, errors)
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
        Column(gettext("Payment"), lambda pi, _: pi.id),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda pi, _: _local(pi.created_at, scope)),
        *_merchant_column(scope),
        Column(gettext("Status"), lambda pi, _: pi.status),
        Column(gettext("Currency"), lambda pi, _: pi.currency.upper()),
        Column(gettext("Amount"), lambda pi, _: pi.amount, money=True),
        Column(gettext("Received"), lambda pi, _: pi.amount_received, money=True),
        Column(gettext("Refunded"), lambda pi, _: pi.amount_refunded, money=True),
        Column(gettext("Product"), lambda pi, _: pi.product or ""),
        Column(gettext("Description"), lambda pi, _: pi.description or ""),
        Column(gettext("Terminal"), lambda pi, _: pi.terminal_id or ""),
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
    statement, _ = _currency_filter(statement, Settlement.currency, args, errors)
    return statement, errors


def _settlement_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Business day"), lambda s, _: s.business_day.isoformat()),
        *_merchant_column(scope),
        Column(gettext("Mode"), lambda s, _: "live" if s.livemode else "test"),
        Column(gettext("Currency"), lambda s, _: s.currency.upper()),
        Column(gettext("Charges"), lambda s, _: s.charges_count),
        Column(gettext("Charges amount"), lambda s, _: s.charges_amount, money=True),
        Column(gettext("Refunds"), lambda s, _: s.refunds_count),
        Column(gettext("Refunds amount"), lambda s, _: s.refunds_amount, money=True),
        Column(gettext("Fees"), lambda s, _: s.fees, money=True),
        Column(gettext("Net"), lambda s, _: s.net, money=True),
        Column(gettext("Settled (%(zone)s)", zone=scope.zone.key), lambda s, _: _local(s.created_at, scope)),
    ]


# --- payouts -------------------------------------------------------------------------------------

PAYOUT_FILTERS = ("status", "merchant")


def payouts(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    statement = _scoped(Payout, scope, args)
    errors: dict[str, str] = {}
    statement = _one_of(
        statement,
        args,
        "status",
        Payout.status,
        PAYOUT_STATUSES,
        lambda v: gettext("%(status)s is not a payout status.", status=v),
        errors,
    )
    return statement, errors


def _payout_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Payout"), lambda p, _: p.id),
        Column(gettext("Requested (%(zone)s)", zone=scope.zone.key), lambda p, _: _local(p.created_at, scope)),
        *_merchant_column(scope),
        Column(gettext("Status"), lambda p, _: p.status),
        Column(gettext("Currency"), lambda p, _: p.currency.upper()),
        Column(gettext("Amount"), lambda p, _: p.amount, money=True),
        Column(gettext("Description"), lambda p, _: p.description or ""),
        Column(gettext("Failure"), lambda p, _: p.failure_message or ""),
    ]


# --- refunds -------------------------------------------------------------------------------------

REFUND_FILTERS = ("status", "from", "to", "currency", "merchant")


def refunds(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """Refunds of the scope in the mode of `args`, by status, the tenant's calendar days (of the
    refund's creation) and currency."""
    statement = _scoped(Refund, scope, args)
    errors: dict[str, str] = {}
    statement = _one_of(
        statement,
        args,
        "status",
        Refund.status,
        REFUND_STATUSES,
        lambda v: gettext("%(status)s is not a refund status.", status=v),
        errors,
    )
    statement = _days_filter(statement, Refund.created_at, args, scope, errors)
    statement, _ = _currency_filter(statement, Refund.currency, args, errors)
    return statement, errors


def _refund_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Refund"), lambda r, _: r.id),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda r, _: _local(r.created_at, scope)),
        *_merchant_column(scope),
        Column(gettext("Payment"), lambda r, _: r.payment_intent_id),
        Column(gettext("Status"), lambda r, _: r.status),
        Column(gettext("Currency"), lambda r, _: r.currency.upper()),
        Column(gettext("Amount"), lambda r, _: r.amount, money=True),
        Column(gettext("Reason"), lambda r, _: r.reason or ""),
        Column(gettext("Failure"), lambda r, _: r.failure_reason or ""),
    ]


# --- the audit log -------------------------------------------------------------------------------

AUDIT_FILTERS = ("q", "tenant", "actor", "action", "object_type", "object_id", "from", "to")


def _tenant_named(text: str) -> Tenant | None:
    """A tenant by its slug or id (the caller is in platform scope)."""
    try:
        by_id = uuid.UUID(text)
    except ValueError:
        return db.session.execute(sa.select(Tenant).where(Tenant.slug == text.lower())).scalar_one_or_none()
    return db.session.get(Tenant, by_id)


def _actor_email(scope: Scope):
    """Whose e-mails may be matched and shown: on the platform every actor's; on the tenant console only
    the tenant's own people's (it never names who at the platform acted)."""
    if scope.platform:
        return AuditEvent.actor_email
    return sa.case((AuditEvent.actor_kind == "user", AuditEvent.actor_email))


def audit_events(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """`AuditEvent`s of the scope's tenant (every tenant's on the platform, narrowed by `tenant`, its
    slug or id), by actor (an e-mail or part of one, `system`, and on the platform `platform`),
    action prefix, object type and id, the zone's calendar days, and a search."""
    values = {key: str(args[key]).strip() for key in AUDIT_FILTERS if (args.get(key) or "").strip()}
    errors: dict[str, str] = {}
    statement = sa.select(AuditEvent)
    email = _actor_email(scope)
    if not scope.platform:
        statement = statement.where(AuditEvent.tenant_id == scope.tenant_id)
    elif "tenant" in values:
        tenant = _tenant_named(values["tenant"])
        if tenant is None:
            errors["tenant"] = gettext("No tenant has the slug or id %(text)s.", text=values["tenant"])
        else:
            statement = statement.where(AuditEvent.tenant_id == tenant.id)
    pattern = like(values.get("q"))
    if pattern:
        statement = statement.where(
            sa.or_(
                AuditEvent.action.ilike(pattern),
                email.ilike(pattern),
                AuditEvent.object_type.ilike(pattern),
                AuditEvent.object_id.ilike(pattern),
                AuditEvent.ip.ilike(pattern),
            )
        )
    actor = values.get("actor")
    if actor:
        kinds = {"system": "system", "api_key": "api_key", "api key": "api_key"}
        if scope.platform:
            kinds["platform"] = "platform"
        if actor.lower() in kinds:
            statement = statement.where(AuditEvent.actor_kind == kinds[actor.lower()])
        else:
            statement = statement.where(email.ilike(like(actor)))
    if values.get("action"):
        # A prefix: "api_key." lists every action on API keys, "api_key.created" that one.
        statement = statement.where(AuditEvent.action.ilike(like(values["action"], prefix=True)))
    if values.get("object_type"):
        statement = statement.where(AuditEvent.object_type == values["object_type"])
    if values.get("object_id"):
        statement = statement.where(AuditEvent.object_id == values["object_id"])
    return _days_filter(statement, AuditEvent.created_at, values, scope, errors), errors


def _audit_tenants(scope: Scope, rows: list) -> dict:
    if not scope.platform:
        return {}
    ids = {row.tenant_id for row in rows}
    return {tenant.id: tenant for tenant in db.session.execute(sa.select(Tenant).where(Tenant.id.in_(ids))).scalars()}


def _actor(scope: Scope, event: AuditEvent) -> str:
    if event.actor_kind == "user":
        return event.actor_email or ""
    if event.actor_kind == "platform":
        return event.actor_email or "platform" if scope.platform else gettext("Platform operator")
    if event.actor_kind == "api_key":
        return gettext("API key %(id)s", id=event.actor_id) if event.actor_id else gettext("API key")
    return gettext("System")


def _audit_columns(scope: Scope) -> list[Column]:
    tenant = (
        [
            Column(
                gettext("Tenant"),
                lambda e, names: names[e.tenant_id].slug if e.tenant_id in names else str(e.tenant_id),
            )
        ]
        if scope.platform
        else []
    )
    return [
        Column(gettext("When (%(zone)s)", zone=scope.zone.key), lambda e, _: _local(e.created_at, scope)),
        *tenant,
        Column(gettext("Who"), lambda e, _: _actor(scope, e)),
        Column(gettext("Action"), lambda e, _: e.action),
        Column(gettext("Object type"), lambda e, _: e.object_type),
        Column(gettext("Object id"), lambda e, _: e.object_id),
        Column(
            gettext("Changes"),
            lambda e, _: json.dumps(e.changes or {}, ensure_ascii=False, sort_keys=True, default=str),
        ),
        Column(gettext("Event"), lambda e, _: str(e.id)),
        Column(gettext("IP address"), lambda e, _: e.ip or ""),
        Column(gettext("Chain position"), lambda e, _: e.seq),
        Column(gettext("Hash"), lambda e, _: e.hash),
    ]


# --- the tenant's merchants ----------------------------------------------------------------------

MERCHANT_FILTERS = ("q", "onboarding")


def merchants(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The tenant's merchants by name and onboarding state."""
    statement = sa.select(Merchant).where(Merchant.tenant_id == scope.tenant_id)
    errors: dict[str, str] = {}
    pattern = like(args.get("q"))
    if pattern:
        statement = statement.where(Merchant.name.ilike(pattern))
    statement = _one_of(
        statement,
        args,
        "onboarding",
        Merchant.onboarding_status,
        ONBOARDING_STATUSES,
        lambda v: gettext("%(state)s is not an onboarding state.", state=v),
        errors,
    )
    return statement, errors


def _merchant_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Name"), lambda m, _: m.name),
        Column(gettext("Status"), lambda m, _: m.status),
        Column(gettext("Onboarding state"), lambda m, _: m.onboarding_status),
        Column(gettext("Risk level"), lambda m, _: m.risk_level or ""),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda m, _: _local(m.created_at, scope)),
    ]


# --- a merchant's charge items, coupons and payment links ----------------------------------------

CATALOGUE_FILTERS = ("q", "state")
LINK_FILTERS = ("q", "state", "mode")


def _merchant_only(scope: Scope) -> uuid.UUID:
    if scope.merchant_id is None:
        raise ValueError("a merchant's list: the scope names no merchant")
    return scope.merchant_id


def charge_items(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The merchant's charge items by name and state (active, inactive)."""
    statement = catalog.items_query(scope.tenant_id, _merchant_only(scope), search=like(args.get("q")))
    return _active_filter(statement, ChargeItem.active, args), {}


def _charge_item_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Charge item"), lambda i, _: str(i.id)),
        Column(gettext("Name"), lambda i, _: i.name),
        Column(gettext("Unit"), lambda i, _: i.unit),
        Column(gettext("Currency"), lambda i, _: i.currency.upper()),
        Column(gettext("Unit price"), lambda i, _: i.unit_amount, money=True),
        Column(gettext("Price includes tax"), lambda i, _: _yes(i.tax_inclusive)),
        Column(gettext("Paid with"), lambda i, _: ", ".join(i.payment_method_types or [])),
        Column(gettext("State"), lambda i, _: _state(i.active)),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda i, _: _local(i.created_at, scope)),
    ]


def coupon_list(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The merchant's coupons by code and state (active, inactive)."""
    statement = coupons.coupons_query(scope.tenant_id, _merchant_only(scope), search=like(args.get("q")))
    return _active_filter(statement, Coupon.active, args), {}


def _percent(coupon: Coupon):
    # Basis points as an exact percentage: 1250 -> Decimal("12.5").
    return (Decimal(coupon.percent_off_bp) / 100).normalize() if coupon.percent_off_bp is not None else None


def _coupon_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Code"), lambda c, _: c.code),
        Column(gettext("Discount"), lambda c, _: c.kind),
        Column(gettext("Percentage off"), lambda c, _: _percent(c)),
        Column(gettext("Currency"), lambda c, _: (c.currency or "").upper()),
        Column(gettext("Amount off"), lambda c, _: c.amount_off, money=True),
        Column(gettext("Minimum order amount"), lambda c, _: c.min_amount, money=True),
        Column(gettext("Expires (%(zone)s)", zone=scope.zone.key), lambda c, _: _local(c.expires_at, scope)),
        Column(gettext("Uses in all"), lambda c, _: c.max_redemptions),
        Column(gettext("Uses per payer"), lambda c, _: c.max_per_payer),
        Column(gettext("State"), lambda c, _: _state(c.active)),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda c, _: _local(c.created_at, scope)),
    ]


def payment_links(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The merchant's payment links of the mode of `args`, by name or id and state."""
    statement = links.links_query(
        scope.tenant_id, _merchant_only(scope), livemode=mode_of(args) == "live", search=like(args.get("q"))
    )
    return _active_filter(statement, PaymentLink.active, args), {}


def _paid_counts(scope: Scope, rows: list) -> dict:
    return links.paid_counts(scope.tenant_id, [row.id for row in rows])


def _payment_link_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Payment link"), lambda p, _: p.id),
        Column(gettext("Name"), lambda p, _: p.name),
        Column(gettext("Mode"), lambda p, _: "live" if p.livemode else "test"),
        Column(gettext("Price"), lambda p, _: p.kind),
        Column(gettext("Currency"), lambda p, _: p.currency.upper()),
        Column(gettext("Amount"), lambda p, _: p.amount, money=True),
        Column(gettext("Paid"), lambda p, paid: paid.get(p.id, 0)),
        Column(gettext("Paid payments at most"), lambda p, _: p.max_payments),
        Column(gettext("Expires (%(zone)s)", zone=scope.zone.key), lambda p, _: _local(p.expires_at, scope)),
        Column(gettext("Payers may enter a coupon code"), lambda p, _: _yes(p.allow_coupons)),
        Column(gettext("State"), lambda p, _: _state(p.active)),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda p, _: _local(p.created_at, scope)),
    ]


# --- suspense items (the console's reconciliation) -------------------------------------------

SUSPENSE_FILTERS = ("status", "kind", "currency", "assignee", "mine")
# The suspense list's status filter: "unresolved" (open or waiting for write-off approval) unless asked.
SUSPENSE_STATUSES = ("unresolved", "open", "pending_write_off", "resolved", "written_off", "all")
SUSPENSE_OPEN = ("open", "pending_write_off")


def suspense_items(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The tenant's suspense items by status (unresolved unless asked), kind, currency, assignee and
    "assigned to me" (`mine`: the scope's `email`). Oldest first, by `opened_at`."""
    statement = sa.select(SuspenseItem).where(SuspenseItem.tenant_id == scope.tenant_id)
    errors: dict[str, str] = {}
    status = (args.get("status") or "").strip() or "unresolved"
    if status not in SUSPENSE_STATUSES:
        errors["status"] = gettext("%(status)s is not a suspense status.", status=repr(status))
        status = "unresolved"
    if status == "unresolved":
        statement = statement.where(SuspenseItem.status.in_(SUSPENSE_OPEN))
    elif status != "all":
        statement = statement.where(SuspenseItem.status == status)
    kind = (args.get("kind") or "").strip()
    if kind and kind not in SUSPENSE_KINDS:
        errors["kind"] = gettext("%(kind)s is not a kind of suspense item.", kind=repr(kind))
    elif kind:
        statement = statement.where(SuspenseItem.kind == kind)
    statement, _ = _currency_filter(statement, SuspenseItem.currency, args, errors)
    assignee = (args.get("assignee") or "").strip().lower()
    if assignee:
        statement = statement.where(SuspenseItem.assignee == assignee)
    if args.get("mine") == "1":
        statement = statement.where(SuspenseItem.assignee == (scope.email or "").lower())
    return statement, errors


def source_name(names: dict, channel_account_id: uuid.UUID | None, livemode: bool) -> str:
    """Where a statement or an item came from: a channel account's name, or the tenant's bank."""
    if channel_account_id is None:
        return gettext("Bank (live)") if livemode else gettext("Bank (test)")
    return names.get(channel_account_id, str(channel_account_id))


def channel_account_names(scope: Scope, rows: list) -> dict:
    ids = {row.channel_account_id for row in rows if row.channel_account_id}
    if not ids:
        return {}
    return dict(
        db.session.execute(
            sa.select(ChannelAccount.id, ChannelAccount.name).where(
                ChannelAccount.tenant_id == scope.tenant_id, ChannelAccount.id.in_(ids)
            )
        ).all()
    )


def _suspense_columns(scope: Scope) -> list[Column]:
    now = datetime.now(scope.zone)
    return [
        Column(gettext("Item"), lambda i, _: str(i.id)),
        Column(gettext("Opened (%(zone)s)", zone=scope.zone.key), lambda i, _: _local(i.opened_at, scope)),
        Column(gettext("Age (days)"), lambda i, _: ((i.resolved_at or now) - i.opened_at).days),
        Column(gettext("Kind"), lambda i, _: i.kind),
        Column(gettext("Status"), lambda i, _: i.status),
        Column(gettext("Mode"), lambda i, _: "live" if i.livemode else "test"),
        Column(gettext("Source"), lambda i, names: source_name(names, i.channel_account_id, i.livemode)),
        Column(gettext("Currency"), lambda i, _: i.currency.upper()),
        # What the item put on suspense is debit-positive; the statement less the platform is its negative.
        Column(gettext("Statement less platform"), lambda i, _: -i.amount, money=True),
        Column(gettext("Description"), lambda i, _: i.description or ""),
        Column(gettext("Assignee"), lambda i, _: i.assignee or ""),
        Column(gettext("Resolution"), lambda i, _: i.resolution or ""),
        Column(gettext("Resolved (%(zone)s)", zone=scope.zone.key), lambda i, _: _local(i.resolved_at, scope)),
    ]


# --- statement imports (the console's reconciliation page) -----------------------------------

# `file_format`, not `format`: the export form posts the file's format as `format`.
IMPORT_FILTERS = ("status", "file_format", "from", "to")


def statement_imports(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The tenant's statement imports by status, format and the tenant's calendar days of their creation."""
    statement = sa.select(StatementImport).where(StatementImport.tenant_id == scope.tenant_id)
    errors: dict[str, str] = {}
    statement = _one_of(
        statement,
        args,
        "status",
        StatementImport.status,
        IMPORT_STATUSES,
        lambda v: gettext("%(status)s is not an import status.", status=v),
        errors,
    )
    statement = _one_of(
        statement,
        args,
        "file_format",
        StatementImport.format,
        STATEMENT_FORMATS,
        lambda v: gettext("%(format)s is not a statement format.", format=v),
        errors,
    )
    return _days_filter(statement, StatementImport.created_at, args, scope, errors), errors


def _import_columns(scope: Scope) -> list[Column]:
    def count(name: str):
        return lambda i, _: (i.counts or {}).get(name, "")

    return [
        Column(gettext("Import"), lambda i, _: str(i.id)),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda i, _: _local(i.created_at, scope)),
        Column(gettext("Source"), lambda i, names: source_name(names, i.channel_account_id, i.livemode)),
        Column(gettext("Mode"), lambda i, _: "live" if i.livemode else "test"),
        Column(gettext("File"), lambda i, _: i.filename),
        Column(gettext("Format"), lambda i, _: i.format),
        Column(gettext("Status"), lambda i, _: i.status),
        Column(gettext("Lines"), count("lines")),
        Column(gettext("Already imported"), count("duplicates")),
        Column(gettext("Matched"), count("matched")),
        Column(gettext("Statement only"), count("long")),
        Column(gettext("Amounts differ"), count("mismatch")),
        Column(gettext("Platform only"), count("short")),
        Column(gettext("Error"), lambda i, _: (f"line {i.error_line}: {i.error}" if i.error_line else i.error) or ""),
        Column(gettext("Who"), lambda i, _: i.uploaded_by or ""),
    ]


# --- payout batches (the console's payouts page) -----------------------------------------------

BATCH_FILTERS = ("currency", "mode", "from", "to")
BATCH_MODES = ("live", "test")


def payout_batches(scope: Scope, args: Mapping[str, str]) -> tuple[sa.Select, dict[str, str]]:
    """The tenant's payout batches by currency, mode (both unless asked) and the tenant's calendar days."""
    statement = sa.select(PayoutBatch).where(PayoutBatch.tenant_id == scope.tenant_id)
    errors: dict[str, str] = {}
    statement, _ = _currency_filter(statement, PayoutBatch.currency, args, errors)
    mode = (args.get("mode") or "").strip()
    if mode and mode not in BATCH_MODES:
        errors["mode"] = gettext("%(mode)s is not a mode: live or test.", mode=repr(mode))
    elif mode:
        statement = statement.where(PayoutBatch.livemode == (mode == "live"))
    return _days_filter(statement, PayoutBatch.created_at, args, scope, errors), errors


def _batch_columns(scope: Scope) -> list[Column]:
    return [
        Column(gettext("Reference"), lambda b, _: b.reference),
        Column(gettext("Created (%(zone)s)", zone=scope.zone.key), lambda b, _: _local(b.created_at, scope)),
        Column(gettext("Mode"), lambda b, _: "live" if b.livemode else "test"),
        Column(gettext("Currency"), lambda b, _: b.currency.upper()),
        Column(gettext("Payouts"), lambda b, _: b.count),
        Column(gettext("Total"), lambda b, _: b.total, money=True),
        Column(gettext("Paid"), lambda b, _: b.paid_count),
        Column(gettext("Failed"), lambda b, _: b.failed_count),
        Column(gettext("Created by"), lambda b, _: b.created_by or ""),
    ]


KINDS: dict[str, ListKind] = {
    "payments": ListKind("payments", PaymentIntent, PAYMENT_FILTERS, payments, _payment_columns, _merchant_names_of),
    "settlements": ListKind(
        "settlements", Settlement, SETTLEMENT_FILTERS, settlements, _settlement_columns, _merchant_names_of
    ),
    "payouts": ListKind("payouts", Payout, PAYOUT_FILTERS, payouts, _payout_columns, _merchant_names_of),
    "refunds": ListKind("refunds", Refund, REFUND_FILTERS, refunds, _refund_columns, _merchant_names_of),
    "audit": ListKind("audit", AuditEvent, AUDIT_FILTERS, audit_events, _audit_columns, _audit_tenants),
    "merchants": ListKind("merchants", Merchant, MERCHANT_FILTERS, merchants, _merchant_columns),
    "charge_items": ListKind("charge_items", ChargeItem, CATALOGUE_FILTERS, charge_items, _charge_item_columns),
    "coupons": ListKind("coupons", Coupon, CATALOGUE_FILTERS, coupon_list, _coupon_columns),
    "payment_links": ListKind(
        "payment_links", PaymentLink, LINK_FILTERS, payment_links, _payment_link_columns, _paid_counts
    ),
    "suspense": ListKind(
        "suspense",
        SuspenseItem,
        SUSPENSE_FILTERS,
        suspense_items,
        _suspense_columns,
        channel_account_names,
        order="opened_at",
        ascending=True,
    ),
    "statement_imports": ListKind(
        "statement_imports",
        StatementImport,
        IMPORT_FILTERS,
        statement_imports,
        _import_columns,
        channel_account_names,
    ),
    "payout_batches": ListKind("payout_batches", PayoutBatch, BATCH_FILTERS, payout_batches, _batch_columns),
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
