"""Fee arithmetic: one rule of a fee schedule, and the fee it charges on one amount.

Rounding rule (the only one: channel costs, here and in routing, and platform fees use it too)
----------------------------------------------------------------------------------
A fee is computed exactly in `Decimal` — `amount × percent / 100 + fixed` — then held to the
rule's minimum and maximum (both in minor units), then ROUNDED ONCE, HALF-UP, to the minor unit
(1.5 → 2, 2.5 → 3, 2.4999 → 2). Parts are never rounded separately and nothing goes through
`float`. A fee never exceeds the amount it is charged on (a 0.30 fixed fee on a 0.20 payment
takes 0.20), so a payment never leaves the merchant owing money.

The breakdown shown to merchants (`FeeBreakdown.parts`) is the percentage part rounded the same
way, the fixed part, and, when the minimum, the maximum or the cap at the amount moved the fee,
one adjusting part; the parts always add up to the fee exactly.

This module is pure: no database, no request. `billing.schedules` stores and finds the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from core.i18n import gettext
from core.money import MoneyError, format_amount, normalise_currency

# Wide enough that no realistic amount times a percentage loses a digit before the one rounding.
_EXACT = Context(prec=60)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
MAX_PERCENT = Decimal(100)


class FeeRuleError(ValueError):
    """A rule that cannot be charged; `field` names what is wrong, `index` which rule (0-based)."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.field = field
        self.index = index


def round_half_up(exact: Decimal) -> int:
    """`exact` rounded once, half-up, to a whole number of minor units."""
    return int(exact.quantize(_ONE, rounding=ROUND_HALF_UP, context=_EXACT))


def percent_of(amount: int, percent: Decimal) -> Decimal:
    """`amount × percent / 100`, exactly."""
    return _EXACT.divide(_EXACT.multiply(Decimal(amount), percent), _HUNDRED)


def percent_plus_fixed(amount: int, percent: Decimal, fixed: int) -> int:
    """`amount × percent / 100 + fixed`, rounded once, half-up (a channel's cost; no minimum or cap)."""
    return round_half_up(_EXACT.add(percent_of(amount, percent), fixed))


def percent_fee(amount: int, percent: Decimal) -> int:
    """A pure percentage fee (the platform's), rounded once half-up, never above `amount`."""
    return min(round_half_up(percent_of(amount, percent)), amount)


def clean_percent(value: Any, field: str = "percent") -> Decimal:
    """A percentage from a form or a stored rule: 0 ≤ p < 100, at most 4 decimal places."""
    try:
        percent = Decimal(str(value).strip() or "0")
    except InvalidOperation:
        raise FeeRuleError(
            gettext("%(value)s is not a percentage; write it like 2.9", value=repr(value)), field
        ) from None
    if not percent.is_finite() or percent < 0 or percent >= MAX_PERCENT:
        raise FeeRuleError(gettext("a percentage must be at least 0 and below 100"), field)
    if percent.as_tuple().exponent < -4:
        raise FeeRuleError(gettext("a percentage has at most 4 decimal places (0.0001 %)"), field)
    return percent


@dataclass(frozen=True)
class FeePart:
    description: str
    amount: int

    def to_dict(self, currency: str) -> dict[str, Any]:
        """Stripe's `fee_details` item."""
        return {
            "amount": self.amount,
            "application": None,
            "currency": currency.lower(),
            "description": self.description,
            "type": "application_fee",
        }


@dataclass(frozen=True)
class FeeBreakdown:
    total: int
    parts: tuple[FeePart, ...]

    def details(self, currency: str) -> list[dict[str, Any]]:
        return [part.to_dict(currency) for part in self.parts if part.amount]


NO_FEE = FeeBreakdown(0, ())


@dataclass(frozen=True)
class FeeRule:
    """Per product and currency: `percent` of the amount plus `fixed`, held to `minimum`/`maximum`.
    A rule applies from `volume_from`: the merchant's volume in that currency this month, before
    the payment (tiers are rules of the same product and currency with higher `volume_from`)."""

    product: str
    currency: str
    percent: Decimal = Decimal(0)
    fixed: int = 0
    minimum: int | None = None
    maximum: int | None = None
    volume_from: int = 0

    def fee(self, amount: int) -> FeeBreakdown:
        """The fee on `amount` (minor units of this rule's currency), by the module's rounding rule."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValueError(f"amount must be a non-negative int of minor units, not {amount!r}")
        held = _EXACT.add(percent_of(amount, self.percent), self.fixed)
        reason = None
        if self.minimum is not None and held < self.minimum:
            held, reason = Decimal(self.minimum), f"minimum fee {format_amount(self.minimum, self.currency)}"
        if self.maximum is not None and held > self.maximum:
            held, reason = Decimal(self.maximum), f"maximum fee {format_amount(self.maximum, self.currency)}"
        total = round_half_up(held)
        if total > amount:
            total, reason = amount, "capped at the payment amount"
        percent_part = round_half_up(percent_of(amount, self.percent))
        parts = []
        if self.percent:
            parts.append(
                FeePart(f"{_percent_text(self.percent)}% of {format_amount(amount, self.currency)}", percent_part)
            )
        if self.fixed:
            parts.append(FeePart(f"fixed {format_amount(self.fixed, self.currency)}", self.fixed))
        adjustment = total - sum(part.amount for part in parts)
        if adjustment:
            parts.append(FeePart(reason or "rounding", adjustment))
        return FeeBreakdown(total, tuple(parts))

    def describe(self) -> str:
        """The rule in words, in the reader's language (within `english()` for what is stored)."""
        pieces = []
        if self.percent:
            pieces.append(f"{_percent_text(self.percent)}%")
        if self.fixed:
            pieces.append(format_amount(self.fixed, self.currency))
        text = " + ".join(pieces) or gettext("no fee")
        if self.minimum is not None:
            text += gettext(", min %(amount)s", amount=format_amount(self.minimum, self.currency))
        if self.maximum is not None:
            text += gettext(", max %(amount)s", amount=format_amount(self.maximum, self.currency))
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "currency": self.currency,
            "percent": format(self.percent.normalize(), "f"),
            "fixed": self.fixed,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "volume_from": self.volume_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeeRule:
        return cls(
            product=data["product"],
            currency=data["currency"],
            percent=Decimal(str(data.get("percent") or "0")),
            fixed=int(data.get("fixed") or 0),
            minimum=None if data.get("minimum") is None else int(data["minimum"]),
            maximum=None if data.get("maximum") is None else int(data["maximum"]),
            volume_from=int(data.get("volume_from") or 0),
        )


def _percent_text(percent: Decimal) -> str:
    return format(percent.normalize(), "f")


def _minor(value: Any, field: str, *, allow_none: bool) -> int | None:
    if value is None or value == "":
        if allow_none:
            return None
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeeRuleError(gettext("%(field)s must be a whole number of minor units", field=field), field)
    if value < 0:
        raise FeeRuleError(gettext("%(field)s cannot be negative", field=field), field)
    return value


def validate_rules(rules: Iterable[FeeRule], products: Iterable[str]) -> list[FeeRule]:
    """Check a version's rules: known products, valid currencies and numbers, min ≤ max, and one
    rule per (product, currency, volume_from). Raises `FeeRuleError` naming the rule and field."""
    known = set(products)
    seen: set[tuple[str, str, int]] = set()
    checked = []
    for index, rule in enumerate(rules):
        if rule.product not in known:
            raise FeeRuleError(gettext("unknown product %(product)s", product=repr(rule.product)), "product", index)
        try:
            currency = normalise_currency(rule.currency)
        except MoneyError as exc:
            raise FeeRuleError(str(exc), "currency", index) from None
        try:
            percent = clean_percent(rule.percent)
            fixed = _minor(rule.fixed, "fixed", allow_none=False)
            minimum = _minor(rule.minimum, "minimum", allow_none=True)
            maximum = _minor(rule.maximum, "maximum", allow_none=True)
            volume_from = _minor(rule.volume_from, "volume_from", allow_none=False)
        except FeeRuleError as exc:
            raise FeeRuleError(str(exc), exc.field, index) from None
        if minimum is not None and maximum is not None and minimum > maximum:
            raise FeeRuleError(gettext("the minimum fee is above the maximum"), "minimum", index)
        key = (rule.product, currency, volume_from)
        if key in seen:
            raise FeeRuleError(
                gettext(
                    "two rules for %(product)s in %(currency)s from the same monthly volume",
                    product=rule.product,
                    currency=currency,
                ),
                "volume_from",
                index,
            )
        seen.add(key)
        checked.append(FeeRule(rule.product, currency, percent, fixed, minimum, maximum, volume_from))
    return sorted(checked, key=lambda r: (r.product, r.currency, r.volume_from))


def rule_for(rules: Iterable[FeeRule], product: str, currency: str, volume: int) -> FeeRule | None:
    """The tier that applies: the rule for this product and currency with the highest
    `volume_from` not above the merchant's volume this month; None when no rule matches."""
    matching = [r for r in rules if r.product == product and r.currency == currency and r.volume_from <= volume]
    best = max(matching, key=lambda r: r.volume_from, default=None)
    return best
