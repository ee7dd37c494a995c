"""Coupons: a merchant's discount codes, and their redemptions (use cases).

A code is unique per merchant whatever its case ("SUMMER" and "summer" are one coupon) and is
matched that way. A coupon takes a percentage (stored in basis points: 12.5 % is 1250) or a
fixed amount in its currency, applies from a minimum order amount, until it expires, and at
most `max_redemptions` times in all and `max_per_payer` times per payer (the payer's e-mail).
The arithmetic is `billing.pricing` (pure).

Limits under concurrency: every redemption first locks the coupon's row (`lock_for_order`,
`SELECT ... FOR UPDATE`), then checks and counts under that lock and writes the redemption in
the same transaction as the order and its PaymentIntent (`reserve`). Two payers redeeming the
last use at once are serialised by the lock: the second sees the first's redemption. A
redemption is held from the moment the PaymentIntent is created and given back (`release_for`)
when that payment is canceled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from billing import catalog
from billing.models import Coupon, CouponRedemption
from billing.pricing import Discount, percent_text
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, format_amount, normalise_currency, to_minor
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

CODE_MAX = 40
MAX_AMOUNT = 99_999_999_999


class CouponRefused(ValueError):
    """A coupon that cannot be used for this order now; `param` names what to change ("coupon",
    or "receipt_email" when the payer's e-mail is needed to count uses per payer)."""

    def __init__(self, message: str, param: str = "coupon"):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class CouponInput:
    """What a merchant typed. `percent_off` ("12.5") for a percentage coupon, `amount_off`
    ("5.00", in `currency`) for a fixed one; `min_amount` in `currency` too."""

    code: str
    kind: str
    percent_off: str = ""
    amount_off: str = ""
    currency: str = ""
    min_amount: str = ""
    expires_at: datetime | None = None
    max_redemptions: int | None = None
    max_per_payer: int | None = None
    active: bool = True


def _now() -> datetime:
    return datetime.now(UTC)


def _basis_points(text: str) -> int:
    try:
        percent = Decimal((text or "").strip())
    except InvalidOperation:
        raise InvalidInput(
            gettext("%(text)s is not a percentage; write it like 12.5", text=repr(text)), "percent_off"
        ) from None
    if not percent.is_finite() or percent <= 0 or percent > 100:
        raise InvalidInput(gettext("A percentage is more than 0 and at most 100."), "percent_off")
    points = percent * 100
    if points != points.to_integral_value():
        raise InvalidInput(gettext("A percentage has at most two decimals (12.25)."), "percent_off")
    return int(points)


def _clean(spec: CouponInput, *, new: bool) -> dict:
    code = (spec.code or "").strip()
    if not code:
        raise InvalidInput(gettext("Give the coupon a code, e.g. SUMMER10."), "code")
    if len(code) > CODE_MAX or not all(c.isalnum() or c in "-_" for c in code):
        raise InvalidInput(
            gettext("A code has up to %(limit)s letters, digits, '-' or '_' (no spaces).", limit=CODE_MAX), "code"
        )
    if spec.kind not in ("percent", "fixed"):
        raise InvalidInput(gettext("Choose a percentage or a fixed amount."), "kind")
    currency = None
    if (spec.currency or "").strip():
        try:
            currency = normalise_currency(spec.currency)
        except MoneyError as exc:
            raise InvalidInput(str(exc), "currency") from None
    values: dict = {"code": code, "kind": spec.kind, "percent_off_bp": None, "amount_off": None}
    if spec.kind == "percent":
        values["percent_off_bp"] = _basis_points(spec.percent_off)
    else:
        if currency is None:
            raise InvalidInput(gettext("A fixed amount needs its currency, e.g. USD."), "currency")
        values["amount_off"] = _amount(
            spec.amount_off, currency, "amount_off", gettext("Give the amount taken off, e.g. 5.00.")
        )
        if values["amount_off"] == 0:
            raise InvalidInput(gettext("The amount taken off must be more than 0."), "amount_off")
    values["min_amount"] = None
    if (spec.min_amount or "").strip():
        if currency is None:
            raise InvalidInput(gettext("A minimum order amount needs its currency, e.g. USD."), "currency")
        values["min_amount"] = _amount(spec.min_amount, currency, "min_amount", "")
    values["currency"] = currency
    if spec.expires_at is not None and new and spec.expires_at <= _now():
        raise InvalidInput(gettext("The expiry is in the past."), "expires_at")
    values["expires_at"] = spec.expires_at
    for name in ("max_redemptions", "max_per_payer"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise InvalidInput(gettext("A limit is at least 1 (leave it empty for no limit)."), name)
        values[name] = value
    values["active"] = bool(spec.active)
    return values


def _amount(text: str, currency: str, field: str, missing: str) -> int:
    if not (text or "").strip():
        raise InvalidInput(missing, field)
    try:
        amount = to_minor(text, currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), field) from None
    if amount < 0 or amount > MAX_AMOUNT:
        raise InvalidInput(gettext("The amount must be at least 0 and at most 999,999,999.99."), field)
    return amount


def _audit_values(values: dict) -> dict:
    out = dict(values)
    if isinstance(out.get("expires_at"), datetime):
        out["expires_at"] = out["expires_at"].isoformat()
    return out


def _values(coupon: Coupon) -> dict:
    return {
        "code": coupon.code,
        "kind": coupon.kind,
        "percent_off_bp": coupon.percent_off_bp,
        "amount_off": coupon.amount_off,
        "currency": coupon.currency,
        "min_amount": coupon.min_amount,
        "expires_at": coupon.expires_at,
        "max_redemptions": coupon.max_redemptions,
        "max_per_payer": coupon.max_per_payer,
        "active": coupon.active,
    }


def _code_taken(tenant_id: uuid.UUID, merchant_id: uuid.UUID, code: str, other_than: uuid.UUID | None) -> bool:
    statement = sa.select(Coupon.id).where(
        Coupon.tenant_id == tenant_id, Coupon.merchant_id == merchant_id, sa.func.lower(Coupon.code) == code.lower()
    )
    if other_than is not None:
        statement = statement.where(Coupon.id != other_than)
    return db.session.execute(statement).first() is not None


def create_coupon(tenant_id: uuid.UUID, merchant_id: uuid.UUID, spec: CouponInput, actor: Actor) -> Coupon:
    values = _clean(spec, new=True)
    if _code_taken(tenant_id, merchant_id, values["code"], None):
        raise InvalidInput(
            gettext("You already have a coupon %(code)s (codes ignore upper/lower case).", code=values["code"]),
            "code",
        )
    coupon = Coupon(tenant_id=tenant_id, merchant_id=merchant_id, **values)
    db.session.add(coupon)
    db.session.flush()
    audit.record(tenant_id, actor, "coupon.created", "coupon", coupon.id, audit.created(**_audit_values(values)))
    db.session.commit()
    return coupon


def update_coupon(coupon: Coupon, spec: CouponInput, actor: Actor) -> Coupon:
    """New terms apply to orders made from now on; orders already made keep their discount."""
    values = _clean(spec, new=False)
    if _code_taken(coupon.tenant_id, coupon.merchant_id, values["code"], coupon.id):
        raise InvalidInput(
            gettext("You already have a coupon %(code)s (codes ignore upper/lower case).", code=values["code"]),
            "code",
        )
    before = _audit_values(_values(coupon))
    for name, value in values.items():
        setattr(coupon, name, value)
    change = audit.changes(before, _audit_values(values))
    if change:
        audit.record(coupon.tenant_id, actor, "coupon.updated", "coupon", coupon.id, change)
    db.session.commit()
    return coupon


def set_active(coupon: Coupon, active: bool, actor: Actor) -> bool:
    return catalog.switch_active(coupon, "coupon", active, actor)


def get_coupon(tenant_id: uuid.UUID, merchant_id: uuid.UUID, coupon_id: uuid.UUID | str) -> Coupon | None:
    try:
        ident = coupon_id if isinstance(coupon_id, uuid.UUID) else uuid.UUID(str(coupon_id))
    except ValueError:
        return None
    return db.session.execute(
        sa.select(Coupon).where(Coupon.tenant_id == tenant_id, Coupon.merchant_id == merchant_id, Coupon.id == ident)
    ).scalar_one_or_none()


def coupons_query(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, *, search: str | None = None, active: bool | None = None
) -> sa.Select:
    statement = sa.select(Coupon).where(Coupon.tenant_id == tenant_id, Coupon.merchant_id == merchant_id)
    if search:
        statement = statement.where(Coupon.code.ilike(search))
    if active is not None:
        statement = statement.where(Coupon.active == active)
    return statement


def describe(coupon: Coupon) -> str:
    if coupon.kind == "percent":
        return f"{percent_text(coupon.percent_off_bp)}% off"
    return f"{format_amount(coupon.amount_off, coupon.currency)} off"


def discount(coupon: Coupon) -> Discount:
    """The coupon's terms for `billing.pricing.quote`."""
    return Discount(
        code=coupon.code,
        percent_off_bp=coupon.percent_off_bp,
        amount_off=coupon.amount_off,
        currency=coupon.currency,
        min_amount=coupon.min_amount,
    )


# --- redemption ------------------------------------------------------------------------------


def find_for_order(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, code: str, *, lock: bool = False, now: datetime | None = None
) -> Coupon:
    """The merchant's coupon of `code` (any case), if it may be used now; else `CouponRefused`
    saying why. `lock`: lock its row until the transaction ends (before reserving it)."""
    text = (code or "").strip()
    statement = sa.select(Coupon).where(
        Coupon.tenant_id == tenant_id, Coupon.merchant_id == merchant_id, sa.func.lower(Coupon.code) == text.lower()
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    coupon = db.session.execute(statement).scalar_one_or_none() if text else None
    if coupon is None or not coupon.active:
        raise CouponRefused(gettext("The coupon code %(text)s is not valid.", text=repr(text)))
    if coupon.expires_at is not None and coupon.expires_at <= (now or _now()):
        raise CouponRefused(gettext("The coupon %(code)s has expired.", code=coupon.code))
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        raise CouponRefused(gettext("The coupon %(code)s has been used as often as it may be.", code=coupon.code))
    return coupon


def uses_by(coupon: Coupon, payer_email: str) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(CouponRedemption)
        .where(
            CouponRedemption.tenant_id == coupon.tenant_id,
            CouponRedemption.coupon_id == coupon.id,
            CouponRedemption.payer_email == payer_email.lower(),
            CouponRedemption.status == "reserved",
        )
    )


def check_payer(coupon: Coupon, payer_email: str | None) -> None:
    """Refuse a payer who has used the coupon as often as one payer may (the e-mail is needed
    then: without it, uses cannot be counted per payer)."""
    if coupon.max_per_payer is None:
        return
    if not payer_email:
        raise CouponRefused(
            gettext(
                "The coupon %(code)s can be used %(max_per_payer)s time(s) per payer: give the payer's "
                "e-mail (receipt_email) to use it.",
                code=coupon.code,
                max_per_payer=coupon.max_per_payer,
            ),
            param="receipt_email",
        )
    if uses_by(coupon, payer_email) >= coupon.max_per_payer:
        raise CouponRefused(
            gettext("You have already used the coupon %(code)s as often as one payer may.", code=coupon.code)
        )


def reserve(coupon: Coupon, payment_intent_id: str, payer_email: str | None, taken: int) -> CouponRedemption:
    """Hold one use of `coupon` (locked by `find_for_order(lock=True)` in this transaction) for a
    payment; the caller commits it together with the order and its PaymentIntent."""
    check_payer(coupon, payer_email)
    redemption = CouponRedemption(
        tenant_id=coupon.tenant_id,
        merchant_id=coupon.merchant_id,
        coupon_id=coupon.id,
        payment_intent_id=payment_intent_id,
        payer_email=payer_email.lower() if payer_email else None,
        discount=taken,
        status="reserved",
    )
    db.session.add(redemption)
    coupon.times_redeemed = coupon.times_redeemed + 1
    return redemption


# Give back the use a canceled payment held: one statement, in the caller's transaction.
_RELEASE = sa.text(
    """
    WITH released AS (
        UPDATE coupon_redemptions SET status = 'released', released_at = now()
        WHERE tenant_id = :tenant_id AND payment_intent_id = :intent_id AND status = 'reserved'
        RETURNING tenant_id, coupon_id
    )
    UPDATE coupons SET times_redeemed = coupons.times_redeemed - 1, updated_at = now()
    FROM released WHERE coupons.tenant_id = released.tenant_id AND coupons.id = released.coupon_id
    """
).bindparams(sa.bindparam("tenant_id", type_=sa.Uuid))


def release_for(tenant_id: uuid.UUID, payment_intent_id: str) -> None:
    """The payment was canceled: its coupon use (if any) is given back. Never commits."""
    db.session.connection().execute(_RELEASE, {"tenant_id": tenant_id, "intent_id": payment_intent_id})


def percent_input(coupon: Coupon) -> str:
    """The percentage as a merchant types it (1250 -> '12.5')."""
    return percent_text(coupon.percent_off_bp) if coupon.percent_off_bp is not None else ""
