"""Money as integers in the currency's minor unit, with its ISO 4217 code. No floats.

People type and read major units ("12.50 EUR"); the platform stores and computes minor
units (1250). Conversion is exact (Decimal); an amount with more decimals than the currency
has is refused, never rounded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from babel.numbers import get_currency_precision, list_currencies

from core.i18n import gettext

CURRENCIES = frozenset(list_currencies())


class MoneyError(ValueError):
    """An amount or currency a person typed cannot be taken as money; the message says why."""


def normalise_currency(code: str) -> str:
    currency = (code or "").strip().upper()
    if currency not in CURRENCIES:
        raise MoneyError(
            gettext("%(code)s is not an ISO 4217 currency code (for example USD, EUR, CNY).", code=repr(code))
        )
    return currency


def exponent(currency: str) -> int:
    return get_currency_precision(normalise_currency(currency))


def to_minor(text: str | int | Decimal, currency: str) -> int:
    """'12.50' EUR -> 1250; '12.505' EUR is refused; '1000' JPY -> 1000."""
    places = exponent(currency)
    try:
        value = Decimal(str(text).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise MoneyError(gettext("%(text)s is not an amount.", text=repr(text))) from exc
    if not value.is_finite():
        raise MoneyError(gettext("%(text)s is not an amount.", text=repr(text)))
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            gettext("%(currency)s amounts have at most %(places)s decimals.", currency=currency, places=places)
        )
    return int(scaled)


def to_major(amount: int, currency: str) -> Decimal:
    """1250 EUR -> Decimal('12.50')."""
    places = exponent(currency)
    return Decimal(amount).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def format_amount(amount: int | None, currency: str) -> str:
    """1250, 'eur' -> '12.50 EUR' (for tables and messages)."""
    if amount is None:
        return "—"
    return f"{to_major(amount, currency):,} {currency.upper()}"
