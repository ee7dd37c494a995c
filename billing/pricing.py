"""The price of an order: its lines, a coupon's discount, the total. Pure: no database, no request.

Rounding rule (the only one for orders)
---------------------------------------
A line's amount is `unit_amount × quantity`, exact (integers). The subtotal is the sum of the
lines. A percentage coupon (in basis points: 12.5 % is 1250) takes `subtotal × bp / 10 000`,
computed exactly and ROUNDED ONCE, HALF-UP, to the minor unit (`billing.fees.round_half_up`, the
rule fees use too): never per line, never through `float`. A fixed coupon takes its amount. The
discount is never more than the subtotal, so the total (`subtotal − discount`) is never negative.

What the payer is shown is the item lines and one discount line (a negative amount); they add
up to the total exactly, and the total is what the PaymentIntent charges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from billing.fees import percent_of, round_half_up
from core.i18n import gettext
from core.money import format_amount

BASIS_POINTS = 10_000  # 100 %
MAX_QUANTITY = 10_000


class PricingError(ValueError):
    """An order that cannot be priced (a bad line, lines in two currencies)."""


class CouponNotApplicable(ValueError):
    """A coupon that does not apply to this order (its minimum, its currency); the message says why."""


@dataclass(frozen=True)
class Line:
    """What is bought: `quantity` of something at `unit_amount` minor units each."""

    description: str
    unit_amount: int
    quantity: int = 1
    charge_item_id: str | None = None
    unit: str = ""
    tax_inclusive: bool = True


@dataclass(frozen=True)
class Discount:
    """A coupon's terms, as the pricing needs them: `percent_off_bp` or `amount_off` (not both)."""

    code: str
    percent_off_bp: int | None = None
    amount_off: int | None = None
    currency: str | None = None  # the currency of `amount_off` and `min_amount`; None: any currency
    min_amount: int | None = None

    def describe(self) -> str:
        if self.percent_off_bp is not None:
            return f"{percent_text(self.percent_off_bp)}% off"
        return f"{format_amount(self.amount_off, self.currency or '')} off"


@dataclass(frozen=True)
class QuotedLine:
    kind: str  # "item" | "discount"
    description: str
    quantity: int
    unit_amount: int
    amount: int  # a discount line's amount is negative
    charge_item_id: str | None = None
    unit: str = ""
    tax_inclusive: bool = True


@dataclass(frozen=True)
class Quote:
    currency: str
    lines: tuple[QuotedLine, ...]  # the item lines, then the discount line when there is a discount
    subtotal: int
    discount: int
    total: int
    coupon: str | None = None

    @property
    def items(self) -> tuple[QuotedLine, ...]:
        return tuple(line for line in self.lines if line.kind == "item")


def percent_text(basis_points: int) -> str:
    """1250 -> '12.5'; 1000 -> '10'."""
    return format((Decimal(basis_points) / 100).normalize(), "f")


def _check_line(line: Line, index: int) -> None:
    for name in ("unit_amount", "quantity"):
        value = getattr(line, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PricingError(
                gettext(
                    "line %(line)s: %(name)s must be a whole number, not %(value)s",
                    line=index + 1,
                    name=name,
                    value=repr(value),
                )
            )
    if line.unit_amount < 0:
        raise PricingError(gettext("line %(line)s: the unit amount cannot be negative", line=index + 1))
    if not 1 <= line.quantity <= MAX_QUANTITY:
        raise PricingError(
            gettext(
                "line %(line)s: the quantity must be between 1 and %(limit)s",
                line=index + 1,
                limit=MAX_QUANTITY,
            )
        )


def discount_of(subtotal: int, discount: Discount) -> int:
    """What `discount` takes off `subtotal`, by the module's rule: never more than the subtotal."""
    if discount.percent_off_bp is not None:
        exact = percent_of(subtotal, Decimal(discount.percent_off_bp) / 100)
        taken = round_half_up(exact)
    else:
        taken = discount.amount_off or 0
    return min(taken, subtotal)


def quote(lines: Iterable[Line], currency: str, discount: Discount | None = None) -> Quote:
    """Price `lines` (all in `currency`) and apply `discount`. Raises `PricingError` for a line that
    cannot be priced and `CouponNotApplicable` (naming why) when the coupon does not apply."""
    lines = list(lines)
    if not lines:
        raise PricingError(gettext("an order needs at least one line"))
    for index, line in enumerate(lines):
        _check_line(line, index)
    quoted = [
        QuotedLine(
            "item",
            line.description,
            line.quantity,
            line.unit_amount,
            line.unit_amount * line.quantity,
            line.charge_item_id,
            line.unit,
            line.tax_inclusive,
        )
        for line in lines
    ]
    subtotal = sum(line.amount for line in quoted)
    taken = 0
    if discount is not None:
        if discount.currency is not None and discount.currency != currency:
            raise CouponNotApplicable(
                gettext(
                    "The coupon %(code)s applies to %(currency)s orders only.",
                    code=discount.code,
                    currency=discount.currency,
                )
            )
        if discount.min_amount is not None and subtotal < discount.min_amount:
            raise CouponNotApplicable(
                gettext(
                    "The coupon %(code)s applies to orders of at least %(minimum)s; this order is %(subtotal)s.",
                    code=discount.code,
                    minimum=format_amount(discount.min_amount, currency),
                    subtotal=format_amount(subtotal, currency),
                )
            )
        taken = discount_of(subtotal, discount)
        quoted.append(QuotedLine("discount", f"Coupon {discount.code} ({discount.describe()})", 1, -taken, -taken))
    return Quote(
        currency=currency,
        lines=tuple(quoted),
        subtotal=subtotal,
        discount=taken,
        total=subtotal - taken,
        coupon=discount.code if discount is not None else None,
    )
