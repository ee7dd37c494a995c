"""Fee arithmetic (`billing.fees`): the rounding rule, minimum and maximum, tiers, the breakdown."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.fees import FeeRule, FeeRuleError, percent_fee, rule_for, validate_rules

PRODUCTS = ["card", "alipay_qr"]


def card(**fields) -> FeeRule:
    return FeeRule(**{"product": "card", "currency": "USD", **fields})


def test_percent_plus_fixed_is_rounded_once_half_up():
    # 2.9 % of 10.00 = 0.29, plus 0.30
    assert card(percent=Decimal("2.9"), fixed=30).fee(1000).total == 59
    # 2.5 % of 0.10 = 0.25 → 0; 15 % of 0.10 = 1.5 → 2 (half-up, not to even); 25 % of 0.10 = 2.5 → 3
    assert card(percent=Decimal("2.5")).fee(10).total == 0
    assert card(percent=Decimal("15")).fee(10).total == 2
    assert card(percent=Decimal("25")).fee(10).total == 3
    # The parts are not rounded separately: 0.4 + 0.4 would round to 0 + 0, the sum 0.8 rounds to 1.
    assert card(percent=Decimal("4")).fee(10).total == 0  # 0.4 → 0
    assert card(percent=Decimal("8")).fee(10).total == 1  # 0.8 → 1


def test_minimum_maximum_and_the_cap_at_the_amount_are_named_in_the_breakdown():
    rule = card(percent=Decimal("3.5"), fixed=20, minimum=50, maximum=500)
    small = rule.fee(100)  # 3.5 + 20 = 23.5 → held to 50
    assert small.total == 50
    assert [(p.description, p.amount) for p in small.parts] == [
        ("3.5% of 1.00 USD", 4),
        ("fixed 0.20 USD", 20),
        ("minimum fee 0.50 USD", 26),
    ]
    large = rule.fee(100_000)  # 3,500 + 20 → held to 500
    assert large.total == 500 and large.parts[-1].description == "maximum fee 5.00 USD"
    tiny = card(fixed=30).fee(20)  # a 0.30 fee on a 0.20 payment takes 0.20
    assert tiny.total == 20 and tiny.parts[-1].description == "capped at the payment amount"
    details = rule.fee(1000).details("USD")
    assert details == [
        {
            "amount": 35,
            "application": None,
            "currency": "usd",
            "description": "3.5% of 10.00 USD",
            "type": "application_fee",
        },
        {
            "amount": 20,
            "application": None,
            "currency": "usd",
            "description": "fixed 0.20 USD",
            "type": "application_fee",
        },
    ]


def test_zero_decimal_currencies_use_their_own_minor_unit():
    rule = FeeRule("card", "JPY", percent=Decimal("3.6"), fixed=10)
    fee = rule.fee(1234)  # 44.424 + 10 → 54
    assert fee.total == 54 and fee.parts[0].description == "3.6% of 1,234 JPY"


def _expected(rule: FeeRule, amount: int) -> int:
    """The rule restated with exact fractions: clamp, then round half-up once, then cap."""
    exact = Fraction(amount) * Fraction(rule.percent) / 100 + rule.fixed
    if rule.minimum is not None:
        exact = max(exact, Fraction(rule.minimum))
    if rule.maximum is not None:
        exact = min(exact, Fraction(rule.maximum))
    floor = exact.numerator // exact.denominator
    rounded = floor + 1 if exact - floor >= Fraction(1, 2) else floor
    return min(rounded, amount)


rules = st.builds(
    lambda percent, fixed, minimum, spread: card(
        percent=percent,
        fixed=fixed,
        minimum=minimum,
        maximum=None if minimum is None or spread is None else minimum + spread,
    ),
    st.decimals(min_value=0, max_value=Decimal("99.9999"), places=4),
    st.integers(0, 10_000),
    st.none() | st.integers(0, 5_000),
    st.none() | st.integers(0, 50_000),
)


@given(rules, st.integers(0, 10**12))
def test_the_fee_follows_the_documented_rule_and_its_parts_add_up(rule, amount):
    fee = rule.fee(amount)
    assert fee.total == _expected(rule, amount)
    assert 0 <= fee.total <= amount
    assert sum(part.amount for part in fee.parts) == fee.total


@given(st.decimals(min_value=0, max_value=Decimal("99.9999"), places=4), st.integers(0, 10**12))
def test_a_platform_percentage_is_rounded_the_same_way(percent, amount):
    assert percent_fee(amount, percent) == _expected(card(percent=percent), amount)


def test_the_tier_is_the_highest_volume_threshold_reached():
    tiers = [
        card(percent=Decimal("3"), volume_from=0),
        card(percent=Decimal("2"), volume_from=1_000_000),
        card(percent=Decimal("1"), volume_from=5_000_000),
        FeeRule("card", "EUR", percent=Decimal("9")),
    ]
    assert rule_for(tiers, "card", "USD", 0).percent == 3
    assert rule_for(tiers, "card", "USD", 999_999).percent == 3
    assert rule_for(tiers, "card", "USD", 1_000_000).percent == 2
    assert rule_for(tiers, "card", "USD", 7_000_000).percent == 1
    assert rule_for(tiers, "card", "GBP", 0) is None
    assert rule_for(tiers, "alipay_qr", "USD", 0) is None


@pytest.mark.parametrize(
    "bad, field, message",
    [
        (card(product="cheque"), "product", "unknown product"),
        (card(currency="XYZ"), "currency", "ISO 4217"),
        (card(percent=Decimal("100")), "percent", "below 100"),
        (card(percent=Decimal("-1")), "percent", "at least 0"),
        (card(percent=Decimal("1.00001")), "percent", "4 decimal places"),
        (card(fixed=-1), "fixed", "negative"),
        (card(minimum=100, maximum=50), "minimum", "above the maximum"),
        (card(volume_from=-5), "volume_from", "negative"),
    ],
)
def test_a_bad_rule_is_named_by_its_row_and_field(bad, field, message):
    with pytest.raises(FeeRuleError, match=message) as refused:
        validate_rules([card(), bad], PRODUCTS)
    assert (refused.value.index, refused.value.field) == (1, field)


def test_two_rules_for_the_same_tier_are_refused_and_currencies_are_normalised():
    with pytest.raises(FeeRuleError, match="two rules for card in USD") as refused:
        validate_rules([card(), card(currency="usd", percent=Decimal("1"))], PRODUCTS)
    assert refused.value.index == 1
    checked = validate_rules([card(currency="usd", volume_from=100), card()], PRODUCTS)
    assert [(r.currency, r.volume_from) for r in checked] == [("USD", 0), ("USD", 100)]
