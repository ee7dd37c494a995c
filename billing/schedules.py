"""Fee schedules as tenants keep them, the platform's fee per tenant, and what a capture is charged.

Use cases (each validates, writes, audits; the caller commits):
- `create_schedule`, `add_version` (immutable; in force from its `effective_from`, which is not
  in the past), `set_default`, `assign` (a merchant's schedule, or back to the default);
- `set_platform_fee` (platform admins, in the platform scope);
- `fees_for_capture` reads in ONE statement everything a capture's fees depend on (the version
  in force for the merchant, its volume this month, the channel account's cost, the platform's
  percentage) and computes them with `billing.fees`; `count_volume` adds the capture to the
  merchant's month, in the capture's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from billing.fees import (
    NO_FEE,
    FeeBreakdown,
    FeeRule,
    FeeRuleError,
    clean_percent,
    percent_fee,
    percent_plus_fixed,
    rule_for,
    validate_rules,
)
from billing.models import FeeSchedule, FeeScheduleVersion, MerchantFeeSchedule, PlatformFee
from core.db import db
from core.i18n import english, gettext
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.models import Merchant, Tenant

# A version "from now" typed into a form a moment ago is not in the past.
_CLOCK_SLACK = timedelta(minutes=5)


def _now() -> datetime:
    return datetime.now(UTC)


# --- schedules -----------------------------------------------------------------------------


def create_schedule(tenant_id: uuid.UUID, name: str, actor: Actor, *, is_default: bool = False) -> FeeSchedule:
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise InvalidInput(gettext("Give the schedule a name of at most 120 characters."), "name")
    # One create at a time per tenant: the name check and "the first becomes the default" hold.
    db.session.execute(sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    exists = db.session.execute(
        sa.select(FeeSchedule.id).where(
            FeeSchedule.tenant_id == tenant_id, sa.func.lower(FeeSchedule.name) == name.lower()
        )
    ).first()
    if exists:
        raise InvalidInput(gettext("There is already a schedule named %(name)s.", name=name), "name")
    schedule = FeeSchedule(tenant_id=tenant_id, id=uuid.uuid4(), name=name, is_default=False)
    db.session.add(schedule)
    db.session.flush()
    audit.record(tenant_id, actor, "fee_schedule.created", "fee_schedule", schedule.id, audit.created(name=name))
    if is_default or not _has_default(tenant_id):
        set_default(tenant_id, schedule.id, actor)
    return schedule


def _has_default(tenant_id: uuid.UUID) -> bool:
    return (
        db.session.execute(
            sa.select(FeeSchedule.id).where(FeeSchedule.tenant_id == tenant_id, FeeSchedule.is_default)
        ).first()
        is not None
    )


def get_schedule(tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> FeeSchedule | None:
    return db.session.get(FeeSchedule, (tenant_id, schedule_id))


def set_default(tenant_id: uuid.UUID, schedule_id: uuid.UUID, actor: Actor) -> None:
    """Merchants without a schedule of their own are charged by this one from now on."""
    schedule = get_schedule(tenant_id, schedule_id)
    if schedule is None:
        raise InvalidInput(gettext("That fee schedule does not exist."), "schedule_id")
    previous = db.session.execute(
        sa.select(FeeSchedule).where(FeeSchedule.tenant_id == tenant_id, FeeSchedule.is_default).with_for_update()
    ).scalar_one_or_none()
    if previous is not None and previous.id == schedule.id:
        return
    if previous is not None:
        previous.is_default = False
        db.session.flush()
    schedule.is_default = True
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "fee_schedule.default_set",
        "fee_schedule",
        schedule.id,
        audit.changes({"default": previous.name if previous else None}, {"default": schedule.name}),
    )


def versions(tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> list[FeeScheduleVersion]:
    """Newest first."""
    return list(
        db.session.execute(
            sa.select(FeeScheduleVersion)
            .where(FeeScheduleVersion.tenant_id == tenant_id, FeeScheduleVersion.schedule_id == schedule_id)
            .order_by(FeeScheduleVersion.number.desc())
        ).scalars()
    )


def in_force(version_list: list[FeeScheduleVersion], at: datetime | None = None) -> FeeScheduleVersion | None:
    """The version that applies at `at` (now): the latest `effective_from` not after it."""
    at = at or _now()
    live = [v for v in version_list if v.effective_from <= at]
    return max(live, key=lambda v: (v.effective_from, v.number), default=None)


def rules_of(version: FeeScheduleVersion) -> list[FeeRule]:
    return [FeeRule.from_json(rule) for rule in version.rules]


def add_version(
    tenant_id: uuid.UUID,
    schedule_id: uuid.UUID,
    rules: list[FeeRule],
    products: list[str],
    actor: Actor,
    *,
    effective_from: datetime | None = None,
    note: str = "",
) -> FeeScheduleVersion:
    """A new version of the schedule's rules, in force from `effective_from` (default now).
    Raises `FeeRuleError` (naming the rule and field) or `InvalidInput`; nothing is written then."""
    schedule = db.session.execute(
        sa.select(FeeSchedule)
        .where(FeeSchedule.tenant_id == tenant_id, FeeSchedule.id == schedule_id)
        .with_for_update()
    ).scalar_one_or_none()
    if schedule is None:
        raise InvalidInput(gettext("That fee schedule does not exist."), "schedule_id")
    checked = validate_rules(rules, products)
    if not checked:
        raise FeeRuleError(gettext("Add at least one rule: a product, a currency and its fee."), "product", 0)
    now = _now()
    effective_from = effective_from or now
    if effective_from.tzinfo is None:
        raise InvalidInput(gettext("The effective date needs a time zone."), "effective_from")
    if effective_from < now - _CLOCK_SLACK:
        raise InvalidInput(
            gettext("A new version cannot start in the past: fees already charged never change. Choose now or later."),
            "effective_from",
        )
    note = (note or "").strip()
    if len(note) > 500:
        raise InvalidInput(gettext("The note is longer than 500 characters."), "note")
    number = (
        db.session.execute(
            sa.select(sa.func.coalesce(sa.func.max(FeeScheduleVersion.number), 0)).where(
                FeeScheduleVersion.tenant_id == tenant_id, FeeScheduleVersion.schedule_id == schedule_id
            )
        ).scalar_one()
        + 1
    )
    version = FeeScheduleVersion(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        schedule_id=schedule_id,
        number=number,
        effective_from=max(effective_from, now),
        rules=[rule.to_json() for rule in checked],
        note=note,
        created_by=actor.email,
    )
    db.session.add(version)
    db.session.flush()
    with english():  # the audit record stays English whoever reads the page
        described = [f"{r.product} {r.currency} from {r.volume_from}: {r.describe()}" for r in checked]
    audit.record(
        tenant_id,
        actor,
        "fee_schedule.version_added",
        "fee_schedule",
        schedule_id,
        audit.created(
            version=number,
            effective_from=version.effective_from.isoformat(),
            rules=described,
        ),
    )
    return version


def assign(tenant_id: uuid.UUID, merchant_id: uuid.UUID, schedule_id: uuid.UUID | None, actor: Actor) -> None:
    """Put a merchant on a schedule (None: back to the tenant's default). Applies to the next capture."""
    merchant = db.session.get(Merchant, (tenant_id, merchant_id))
    if merchant is None:
        raise InvalidInput(gettext("That merchant does not exist."), "merchant_id")
    if schedule_id is not None and get_schedule(tenant_id, schedule_id) is None:
        raise InvalidInput(gettext("That fee schedule does not exist."), "schedule_id")
    current = db.session.get(MerchantFeeSchedule, (tenant_id, merchant_id), with_for_update=True)
    before = current.schedule_id if current else None
    if before == schedule_id:
        return
    if schedule_id is None:
        db.session.delete(current)
    elif current is None:
        db.session.add(MerchantFeeSchedule(tenant_id=tenant_id, merchant_id=merchant_id, schedule_id=schedule_id))
    else:
        current.schedule_id = schedule_id
        current.assigned_at = _now()
    db.session.flush()

    def name(sid):
        return get_schedule(tenant_id, sid).name if sid else "tenant default"

    audit.record(
        tenant_id,
        actor,
        "merchant.fee_schedule_assigned",
        "merchant",
        merchant_id,
        audit.changes({"fee_schedule": name(before)}, {"fee_schedule": name(schedule_id)}),
    )


def schedule_of(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> tuple[FeeSchedule | None, bool]:
    """The schedule that charges a merchant, and whether it is the tenant default (not assigned)."""
    own = db.session.get(MerchantFeeSchedule, (tenant_id, merchant_id))
    if own is not None:
        return get_schedule(tenant_id, own.schedule_id), False
    default = db.session.execute(
        sa.select(FeeSchedule).where(FeeSchedule.tenant_id == tenant_id, FeeSchedule.is_default)
    ).scalar_one_or_none()
    return default, True


def merchant_counts(tenant_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """How many merchants are assigned to each schedule (the default's count excludes the unassigned)."""
    rows = db.session.execute(
        sa.select(MerchantFeeSchedule.schedule_id, sa.func.count())
        .where(MerchantFeeSchedule.tenant_id == tenant_id)
        .group_by(MerchantFeeSchedule.schedule_id)
    ).all()
    return {schedule_id: count for schedule_id, count in rows}


# --- platform fee --------------------------------------------------------------------------


def set_platform_fee(
    tenant_id: uuid.UUID, percent: Any, actor: Actor, *, effective_from: datetime | None = None
) -> PlatformFee:
    """The platform's percentage of the tenant's captured amounts from `effective_from` (now).
    Run in the platform scope."""
    if percent is None or not str(percent).strip():
        raise InvalidInput(gettext("Give the platform fee as a percentage, for example 0.5."), "percent")
    try:
        value = clean_percent(percent)
    except FeeRuleError as exc:
        message = str(exc)
        raise InvalidInput(message[:1].upper() + message[1:] + ".", "percent") from None
    now = _now()
    effective_from = effective_from or now
    if effective_from.tzinfo is None:
        raise InvalidInput(gettext("The effective date needs a time zone."), "effective_from")
    if effective_from < now - _CLOCK_SLACK:
        raise InvalidInput(
            gettext("The platform fee cannot change in the past. Choose now or later."), "effective_from"
        )
    before = platform_fee_in_force(tenant_id)
    fee = PlatformFee(
        tenant_id=tenant_id, id=uuid.uuid4(), percent=value, effective_from=effective_from, created_by=actor.email
    )
    db.session.add(fee)
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "tenant.platform_fee_set",
        "tenant",
        tenant_id,
        audit.changes(
            {"platform_fee_percent": str(before.percent) if before else None},
            {"platform_fee_percent": str(value), "effective_from": effective_from.isoformat()},
        ),
    )
    return fee


def platform_fees(tenant_id: uuid.UUID) -> list[PlatformFee]:
    """Newest first."""
    return list(
        db.session.execute(
            sa.select(PlatformFee)
            .where(PlatformFee.tenant_id == tenant_id)
            .order_by(PlatformFee.effective_from.desc(), PlatformFee.created_at.desc())
        ).scalars()
    )


def platform_fee_in_force(tenant_id: uuid.UUID, at: datetime | None = None) -> PlatformFee | None:
    at = at or _now()
    return next((fee for fee in platform_fees(tenant_id) if fee.effective_from <= at), None)


# --- what a capture is charged ---------------------------------------------------------------


@dataclass(frozen=True)
class CaptureFees:
    """The fees of one captured amount: what the merchant pays (with its breakdown), what the
    channel costs, what the platform takes; the tenant keeps the rest of the merchant's fee."""

    merchant_fee: FeeBreakdown
    channel_cost: int
    platform_fee: int
    version_id: uuid.UUID | None = None

    @property
    def tenant_share(self) -> int:
        return self.merchant_fee.total - self.channel_cost - self.platform_fee


FREE = CaptureFees(NO_FEE, 0, 0)

_FEE_INPUTS = sa.text(
    """
    WITH schedule AS (
        SELECT COALESCE(
            (SELECT schedule_id FROM merchant_fee_schedules
              WHERE tenant_id = :tenant_id AND merchant_id = :merchant_id),
            (SELECT id FROM fee_schedules WHERE tenant_id = :tenant_id AND is_default)
        ) AS id
    )
    SELECT
        (SELECT json_build_array(v.id, v.rules) FROM fee_schedule_versions AS v, schedule
          WHERE v.tenant_id = :tenant_id AND v.schedule_id = schedule.id AND v.effective_from <= now()
          ORDER BY v.effective_from DESC, v.number DESC LIMIT 1) AS version,
        (SELECT amount FROM merchant_monthly_volumes AS m
          WHERE m.tenant_id = :tenant_id AND m.merchant_id = :merchant_id AND m.currency = :currency
            AND m.livemode = :livemode
            AND m.month = CAST(date_trunc('month', timezone(tenants.time_zone, now())) AS date)) AS volume,
        (SELECT costs -> :product FROM channel_accounts
          WHERE tenant_id = :tenant_id AND id = :account_id) AS cost,
        (SELECT CAST(percent AS text) FROM platform_fees
          WHERE tenant_id = :tenant_id AND effective_from <= now()
          ORDER BY effective_from DESC, created_at DESC LIMIT 1) AS platform_percent
    FROM tenants WHERE tenants.id = :tenant_id
    """
)


def fees_for_capture(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    channel_account_id: uuid.UUID | None,
    product: str | None,
    currency: str,
    livemode: bool,
    amount: int,
) -> CaptureFees:
    """The fees of capturing `amount`, by the rules in force now (one statement)."""
    row = (
        db.session.connection()
        .execute(
            _FEE_INPUTS,
            {
                "tenant_id": tenant_id,
                "merchant_id": merchant_id,
                "currency": currency,
                "livemode": livemode,
                "product": product or "",
                "account_id": channel_account_id,
            },
        )
        .one()
    )
    merchant_fee, version_id = NO_FEE, None
    if row.version is not None and product:
        version_id = uuid.UUID(row.version[0])
        rule = rule_for((FeeRule.from_json(r) for r in row.version[1]), product, currency, row.volume or 0)
        if rule is not None:
            merchant_fee = rule.fee(amount)
    channel_cost = 0
    if row.cost:
        channel_cost = percent_plus_fixed(
            amount, Decimal(str(row.cost.get("percent") or "0")), int(row.cost.get("fixed") or 0)
        )
    platform_fee = percent_fee(amount, Decimal(row.platform_percent)) if row.platform_percent else 0
    return CaptureFees(merchant_fee, channel_cost, platform_fee, version_id)


# Also run by the payment core inside its own statement on the capture's hot rows (one round trip).
VOLUME_UPSERT = """
    INSERT INTO merchant_monthly_volumes (tenant_id, merchant_id, month, currency, livemode, amount, count)
    SELECT tenants.id, :merchant_id, CAST(date_trunc('month', timezone(tenants.time_zone, now())) AS date),
           :currency, :livemode, :amount, 1
    FROM tenants WHERE tenants.id = :tenant_id
    ON CONFLICT (tenant_id, merchant_id, month, currency, livemode)
    DO UPDATE SET amount = merchant_monthly_volumes.amount + EXCLUDED.amount,
                  count = merchant_monthly_volumes.count + 1
"""
_COUNT_VOLUME = sa.text(VOLUME_UPSERT)


def count_volume(tenant_id: uuid.UUID, merchant_id: uuid.UUID, currency: str, livemode: bool, amount: int) -> None:
    """Add a capture to the merchant's volume this month (the tenant's calendar month)."""
    db.session.connection().execute(
        _COUNT_VOLUME,
        {
            "tenant_id": tenant_id,
            "merchant_id": merchant_id,
            "currency": currency,
            "livemode": livemode,
            "amount": amount,
        },
    )
