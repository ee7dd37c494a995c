"""The order arithmetic (`billing.pricing`), against an exact computation with `Fraction`.

What a payer is shown must be what is charged, to the minor unit: the lines add up to the total,
the total is never negative, and a percentage is rounded once, half-up, as documented.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.pricing import CouponNotApplicable, Discount, Line, PricingError, quote

lines_st = st.lists(
    st.builds(
        Line,
        description=st.just("item"),
        unit_amount=st.integers(min_value=0, max_value=10**9),
        quantity=st.integers(min_value=1, max_value=10_000),
    ),
    min_size=1,
    max_size=8,
)
percent_st = st.builds(lambda bp: Discount("PCT", percent_off_bp=bp), st.integers(min_value=1, max_value=10_000))
fixed_st = st.builds(
    lambda amount: Discount("FIX", amount_off=amount, currency="USD"), st.integers(min_value=1, max_value=10**13)
)
discount_st = st.one_of(st.none(), percent_st, fixed_st)


def exact_total(lines: list[Line], discount: Discount | None) -> int:
    """The documented rule, computed independently: exact fractions, one half-up rounding."""
    subtotal = sum(Fraction(line.unit_amount) * line.quantity for line in lines)
    if discount is None:
        taken = Fraction(0)
    elif discount.percent_off_bp is not None:
        exact = subtotal * discount.percent_off_bp / 10_000
        taken = Fraction(math.floor(exact + Fraction(1, 2)))
    else:
        taken = Fraction(discount.amount_off)
    return int(subtotal - min(taken, subtotal))


@settings(max_examples=400, deadline=None, database=None)
@given(lines=lines_st, discount=discount_st)
def test_total_is_exact_never_negative_and_the_lines_add_up(lines, discount):
    q = quote(lines, "USD", discount)
    assert q.total == exact_total(lines, discount)  # not off by a minor unit
    assert q.total >= 0
    assert 0 <= q.discount <= q.subtotal
    assert sum(line.amount for line in q.lines) == q.total
    assert all(isinstance(v, int) for v in (q.total, q.subtotal, q.discount, *(line.amount for line in q.lines)))
    assert [line.amount for line in q.items] == [line.unit_amount * line.quantity for line in lines]
    if discount is not None:
        assert q.lines[-1].kind == "discount" and q.lines[-1].amount == -q.discount


@settings(max_examples=200, deadline=None, database=None)
@given(lines=lines_st, extra=st.integers(min_value=0, max_value=10**6))
def test_a_fixed_coupon_bigger_than_the_subtotal_gives_zero(lines, extra):
    subtotal = sum(line.unit_amount * line.quantity for line in lines)
    q = quote(lines, "USD", Discount("BIG", amount_off=subtotal + extra + 1, currency="USD"))
    assert q.total == 0
    assert q.discount == subtotal
    assert sum(line.amount for line in q.lines) == 0


@settings(max_examples=200, deadline=None, database=None)
@given(lines=lines_st, minimum=st.integers(min_value=0, max_value=10**13), percent=st.integers(1, 10_000))
def test_the_minimum_order_amount_is_respected(lines, minimum, percent):
    subtotal = sum(line.unit_amount * line.quantity for line in lines)
    coupon = Discount("MIN", percent_off_bp=percent, currency="USD", min_amount=minimum)
    if subtotal < minimum:
        with pytest.raises(CouponNotApplicable, match="at least"):
            quote(lines, "USD", coupon)
    else:
        assert quote(lines, "USD", coupon).total == exact_total(lines, coupon)


def test_half_up_once_on_the_subtotal_not_per_line():
    # 3 lines of 0.05 at 10 %: per line 0.005 would round to 0.01 each (0.03 off); once: 0.015 -> 0.02.
    q = quote([Line("a", 5), Line("b", 5), Line("c", 5)], "USD", Discount("TEN", percent_off_bp=1000))
    assert (q.subtotal, q.discount, q.total) == (15, 2, 13)
    # 12.5 % of 1.00 is exactly 0.125 -> 0.13 (half-up); of 0.99 is 0.12375 -> 0.12.
    assert quote([Line("x", 100)], "USD", Discount("P", percent_off_bp=1250)).discount == 13
    assert quote([Line("x", 99)], "USD", Discount("P", percent_off_bp=1250)).discount == 12


def test_a_coupon_of_another_currency_does_not_apply():
    with pytest.raises(CouponNotApplicable, match="EUR orders only"):
        quote([Line("x", 100)], "USD", Discount("EU", amount_off=50, currency="EUR"))


@pytest.mark.parametrize(
    "line",
    [Line("neg", -1), Line("zero qty", 100, 0), Line("float", 1.5), Line("bool", 100, True)],
)
def test_lines_that_cannot_be_priced_are_refused(line):
    with pytest.raises(PricingError):
        quote([line], "USD")
