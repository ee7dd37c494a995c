"""Routing and the product catalogue: pure, so no database is touched here."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.products import ELEMENTS, PRODUCTS, UnknownProduct, offered_products, product
from payments.routing import (
    KEPT_REASONS,
    ChannelCandidate,
    ChannelCost,
    InvalidCandidate,
    Reason,
    RouteRequest,
    route,
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def channel(id, name=None, *, percent="2.9", fixed=30, products=("card",), currencies=("EUR",), **kwargs):
    return ChannelCandidate(
        id=id,
        name=name or f"Channel {id}",
        type="sandbox",
        status=kwargs.pop("status", "active"),
        products=frozenset(products),
        currencies=frozenset(currencies),
        costs={p: ChannelCost(Decimal(percent), fixed) for p in products},
        **kwargs,
    )


def card(amount=10_000, currency="EUR", elements=("payment_method",), **kwargs):
    return RouteRequest(
        merchant_id="m1", product="card", amount=amount, currency=currency, payer_elements=frozenset(elements), **kwargs
    )


def reasons(decision):
    return {v.channel_id: v.reason for v in decision.verdicts}


# --- the rules, one by one ------------------------------------------------------------------


def test_the_cheapest_eligible_channel_wins_and_every_candidate_is_explained():
    stripe = channel("a", "Stripe EU", percent="2.9", fixed=30)
    adyen = channel("b", "Adyen", percent="3", fixed=25)
    paused = channel("c", "Old acquirer", percent="0.5", fixed=0, status="paused")

    decision = route(card(10_000), [stripe, adyen, paused])

    assert decision.chosen == stripe
    assert [v.channel_id for v in decision.verdicts] == ["a", "b", "c"]
    assert reasons(decision) == {"a": Reason.CHOSEN, "b": Reason.MORE_EXPENSIVE, "c": Reason.PAUSED}
    assert {v.channel_id: v.cost for v in decision.verdicts} == {"a": 320, "b": 325, "c": 50}
    assert (
        decision.verdict_for("a").sentence
        == "Stripe EU: chosen — cheapest for this amount; cost 3.20 EUR (2.9% + 0.30 EUR)"
    )
    assert decision.verdict_for("c").sentence == "Old acquirer: dropped — the channel is paused"
    assert "routed to Stripe EU" in decision.summary


def test_a_more_expensive_channel_is_kept_as_failover_with_its_cost():
    stripe = channel("a", "Stripe EU", percent="2.9", fixed=30)
    adyen = channel("b", "Adyen", percent="3.5", fixed=20)
    decision = route(card(10_000), [adyen, stripe])
    assert decision.chosen == stripe
    assert decision.failover == (adyen,)
    verdict = decision.verdict_for("b")
    assert verdict.kept and verdict.reason is Reason.MORE_EXPENSIVE and verdict.cost == 370
    assert verdict.sentence == "Adyen: kept — more expensive: cost 3.70 EUR against 3.20 EUR for Stripe EU; failover #1"


def test_the_per_payment_maximum_is_explained_in_a_sentence():
    stripe = channel("a", "Stripe EU", max_amount=20_000)
    decision = route(card(50_000), [stripe])
    assert decision.chosen is None
    verdict = decision.verdict_for("a")
    assert not verdict.kept and verdict.reason is Reason.ABOVE_MAX
    assert verdict.sentence == "Stripe EU: dropped — amount 500.00 EUR above the per-payment maximum 200.00 EUR"


def test_limits_minimum_maximum_and_what_is_left_of_the_daily_cap():
    low = channel("min", min_amount=1_000)
    high = channel("max", max_amount=499)
    capped = channel("cap", daily_cap=10_000, used_today=9_600)
    exact = channel("exact", daily_cap=10_000, used_today=9_500, percent="9")
    decision = route(card(500), [low, high, capped, exact])
    assert reasons(decision) == {
        "min": Reason.BELOW_MIN,
        "max": Reason.ABOVE_MAX,
        "cap": Reason.DAILY_CAP,
        "exact": Reason.CHOSEN,
    }
    assert "4.00 EUR of 100.00 EUR" in decision.verdict_for("cap").sentence
    # Usage past the cap leaves nothing, and the sentence does not show a negative remainder.
    over = channel("over", daily_cap=1_000, used_today=1_200)
    assert "left of the daily cap today: 0.00 EUR of 10.00 EUR" in route(card(1), [over]).verdict_for("over").sentence
    # The bounds themselves are admitted.
    assert route(card(1_000), [low]).chosen == low
    assert route(card(499), [high]).chosen == high


def test_paused_and_unhealthy_channels_are_never_used():
    decision = route(
        card(), [channel("p", status="paused", percent="0"), channel("u", healthy=False, percent="0"), channel("ok")]
    )
    assert reasons(decision) == {"p": Reason.PAUSED, "u": Reason.UNHEALTHY, "ok": Reason.CHOSEN}
    assert decision.failover == ()


def test_product_and_currency_must_be_served():
    qr_only = channel("qr", products=("alipay_qr",), percent="0")
    usd_only = channel("usd", currencies=("USD",), percent="0")
    eur = channel("eur")
    decision = route(card(currency="eur"), [qr_only, usd_only, eur])
    assert reasons(decision) == {"qr": Reason.PRODUCT, "usd": Reason.CURRENCY, "eur": Reason.CHOSEN}
    assert decision.verdict_for("qr").cost is None
    assert "does not take EUR (takes USD)" in decision.verdict_for("usd").sentence


def test_excluded_channels_are_never_used_whether_by_the_request_or_by_a_rule():
    a, b, c = channel("a", percent="1"), channel("b", percent="2"), channel("c", percent="3")
    decision = route(card(excluded_channel_ids={"a"}, rule_excluded_channel_ids={"b"}), [a, b, c])
    assert decision.chosen == c
    assert reasons(decision) == {"a": Reason.EXCLUDED, "b": Reason.EXCLUDED, "c": Reason.CHOSEN}
    assert decision.verdict_for("a").sentence.endswith("excluded by the request")
    assert decision.verdict_for("b").sentence.endswith("excluded by a routing rule")


def test_when_the_only_candidate_is_excluded_nothing_is_chosen_and_the_reason_is_given():
    decision = route(card(rule_excluded_channel_ids={"a"}), [channel("a", "Stripe EU")])
    assert decision.chosen is None and decision.ranked == () and decision.failover == ()
    assert decision.verdict_for("a").reason is Reason.EXCLUDED
    assert "no channel" in decision.summary and "1 excluded" in decision.summary


def test_a_forced_channel_is_used_even_when_another_is_cheaper_and_there_is_no_failover():
    cheap, forced = channel("cheap", percent="0.1"), channel("forced", "Bank of Rules", percent="4")
    decision = route(card(rule_forced_channel_id="forced"), [cheap, forced])
    assert decision.chosen == forced
    assert reasons(decision) == {"cheap": Reason.FORCED, "forced": Reason.CHOSEN}
    assert decision.verdict_for("cheap").sentence == (
        "Channel cheap: dropped — Bank of Rules is forced for this payment by a routing rule"
    )
    assert decision.verdict_for("forced").sentence.startswith("Bank of Rules: chosen — forced by a routing rule")
    assert decision.failover == ()


def test_a_forced_channel_that_cannot_take_the_payment_is_not_replaced_by_another():
    other = channel("other")
    forced = channel("forced", "Stripe EU", max_amount=20_000)
    decision = route(card(50_000, forced_channel_id="forced"), [other, forced])
    assert decision.chosen is None and decision.ranked == ()
    assert reasons(decision) == {"other": Reason.FORCED, "forced": Reason.ABOVE_MAX}
    assert "forced channel Stripe EU cannot take it" in decision.summary
    assert "other channels are not tried" in decision.summary


def test_a_forced_channel_that_is_also_excluded_is_not_used():
    decision = route(card(rule_forced_channel_id="a", excluded_channel_ids={"a"}), [channel("a"), channel("b")])
    assert decision.chosen is None
    assert reasons(decision) == {"a": Reason.EXCLUDED, "b": Reason.FORCED}


def test_a_forced_channel_the_tenant_does_not_have_chooses_nothing():
    decision = route(card(forced_channel_id="ghost"), [channel("a")])
    assert decision.chosen is None
    assert decision.verdict_for("a").reason is Reason.FORCED
    assert "forced channel ghost is not one of the tenant's channel accounts" in decision.summary


def test_the_request_and_a_rule_forcing_different_channels_choose_nothing():
    decision = route(card(forced_channel_id="a", rule_forced_channel_id="b"), [channel("a"), channel("b")])
    assert decision.chosen is None
    assert set(reasons(decision).values()) == {Reason.FORCED}
    assert "the request forces channel a but a routing rule forces channel b" in decision.summary


def test_the_same_channel_forced_by_request_and_rule_is_used():
    decision = route(card(forced_channel_id="b", rule_forced_channel_id="b"), [channel("a"), channel("b")])
    assert decision.chosen.id == "b"


def test_missing_elements_are_reported_so_the_payer_can_be_asked():
    strict = channel("strict", "3DS acquirer", percent="1", required_elements={"billing_address", "email"})
    decision = route(card(elements=("payment_method", "email")), [strict])
    assert decision.chosen is None
    verdict = decision.verdict_for("strict")
    assert verdict.reason is Reason.MISSING_ELEMENTS and verdict.missing_elements == {"billing_address"}
    assert decision.ask_payer_for == {"billing_address"}
    assert "until the payer gives: Billing address" in decision.summary


def test_the_products_own_elements_count_too():
    decision = route(card(elements=()), [channel("a")])
    assert decision.ask_payer_for == {"payment_method"}
    face = RouteRequest(merchant_id="m", product="face_pay", amount=100, currency="CNY", payer_elements={"face_code"})
    terminal = channel("t", products=("face_pay",), currencies=("CNY",))
    assert route(face, [terminal]).ask_payer_for == {"terminal_id"}


def test_a_channel_needing_nothing_more_is_chosen_over_a_cheaper_one_that_needs_more():
    cheap_strict = channel("strict", percent="1", required_elements={"billing_address"})
    dearer = channel("plain", percent="3")
    decision = route(card(), [cheap_strict, dearer])
    assert decision.chosen == dearer
    assert decision.verdict_for("strict").missing_elements == {"billing_address"}
    assert decision.ask_payer_for == frozenset()


def test_the_ask_names_what_the_best_waiting_channel_needs():
    cheap = channel("cheap", percent="1", required_elements={"phone"})
    dear = channel("dear", percent="3", required_elements={"billing_address", "email"})
    assert route(card(), [dear, cheap]).ask_payer_for == {"phone"}


def test_ties_go_to_priority_then_to_the_lowest_id_whatever_the_input_order():
    a = channel("a", percent="2", priority=5)
    b = channel("b", percent="2", priority=1)
    c = channel("c", percent="2", priority=1)
    for order in ([a, b, c], [c, b, a], [b, a, c]):
        decision = route(card(), order)
        assert decision.chosen == b
        assert decision.ranked == (b, c, a)
        assert reasons(decision) == {"a": Reason.LOWER_PRIORITY, "b": Reason.CHOSEN, "c": Reason.TIE_BREAK}
    assert "priority 1 wins" in route(card(), [a, b]).verdict_for("b").sentence
    assert "lowest id wins" in route(card(), [c, b]).verdict_for("b").sentence


def test_cost_beats_priority():
    cheap_low_priority = channel("z", percent="1", priority=99)
    dear_top_priority = channel("a", percent="2", priority=0)
    decision = route(card(), [dear_top_priority, cheap_low_priority])
    assert decision.chosen == cheap_low_priority
    assert decision.verdict_for("a").reason is Reason.MORE_EXPENSIVE


def test_cost_depends_on_the_amount_so_the_winner_can_change():
    percent_heavy = channel("pct", percent="3", fixed=0)
    fixed_heavy = channel("fix", percent="1", fixed=200)
    assert route(card(5_000), [percent_heavy, fixed_heavy]).chosen == percent_heavy  # 150 vs 250
    assert route(card(20_000), [percent_heavy, fixed_heavy]).chosen == fixed_heavy  # 600 vs 400


def test_failover_order_and_the_next_candidate_after_a_failure():
    a, b, c = channel("a", percent="1"), channel("b", percent="2"), channel("c", percent="3")
    dropped = channel("d", percent="0", status="paused")
    decision = route(card(), [c, dropped, a, b])
    assert decision.ranked == (a, b, c)
    assert decision.failover == (b, c)
    assert decision.next_after("a") == b
    assert decision.next_after("b") == c
    assert decision.next_after("c") is None
    assert decision.verdict_for("c").sentence.endswith("failover #2")


def test_the_first_failing_rule_is_the_reason():
    everything_wrong = channel(
        "x", status="paused", healthy=False, products=("alipay_qr",), currencies=("USD",), max_amount=1
    )
    assert route(card(excluded_channel_ids={"x"}), [everything_wrong]).verdict_for("x").reason is Reason.EXCLUDED
    assert route(card(), [everything_wrong]).verdict_for("x").reason is Reason.PAUSED
    unhealthy_wrong_product = channel("y", healthy=False, products=("alipay_qr",))
    assert route(card(), [unhealthy_wrong_product]).verdict_for("y").reason is Reason.UNHEALTHY
    wrong_currency_too_big = channel("z", currencies=("USD",), max_amount=1)
    assert route(card(), [wrong_currency_too_big]).verdict_for("z").reason is Reason.CURRENCY
    too_big_missing = channel("w", max_amount=1, required_elements={"phone"})
    assert route(card(), [too_big_missing]).verdict_for("w").reason is Reason.ABOVE_MAX


def test_no_candidates_at_all():
    decision = route(card(), [])
    assert decision.chosen is None and decision.verdicts == ()
    assert "no channel accounts" in decision.summary


def test_the_decision_is_recorded_as_plain_json():
    decision = route(card(), [channel("a"), channel("b", percent="3"), channel("c", status="paused")])
    record = json.loads(json.dumps(decision.to_record()))
    assert record["chosen"] == "a" and record["failover"] == ["b"]
    assert [v["reason"] for v in record["verdicts"]] == ["chosen", "more_expensive", "paused"]
    assert decision.explain().splitlines()[0] == decision.summary
    assert len(decision.explain().splitlines()) == 4


def test_uuid_ids_are_compared_as_text():
    ident = uuid.uuid4()
    candidate = channel(ident)
    assert route(card(forced_channel_id=ident), [candidate]).chosen == candidate
    assert route(card(excluded_channel_ids={ident}), [candidate]).chosen is None


# --- money: cost and its one rounding -------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "percent", "fixed", "expected"),
    [
        (50, "1", 0, 1),  # 0.5 → 1
        (150, "1", 0, 2),  # 1.5 → 2
        (250, "1", 0, 3),  # 2.5 → 3 (banker's rounding would give 2)
        (249, "1", 0, 2),  # 2.49 → 2
        (251, "1", 0, 3),  # 2.51 → 3
        (1, "50", 0, 1),  # 0.5 → 1
        (1, "49.99", 0, 0),  # 0.4999 → 0
        (350, "1", 30, 34),  # 3.5 + 30 → 34
        (10_000, "2.9", 30, 320),
        (12_345, "2.75", 25, 364),  # 339.4875 + 25 = 364.4875 → 364
        (1_000, "0", 0, 0),
        (99_999_999_999_999, "1.5", 0, 1_500_000_000_000),  # 1,499,999,999,999.985 → 1,500,000,000,000
    ],
)
def test_cost_is_rounded_once_half_up_to_the_minor_unit(amount, percent, fixed, expected):
    assert ChannelCost(Decimal(percent), fixed).for_amount(amount) == expected


@PROPERTY_SETTINGS
@given(
    amount=st.integers(min_value=1, max_value=10**12),
    percent=st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False),
    fixed=st.integers(min_value=0, max_value=10_000),
)
def test_cost_matches_exact_arithmetic_rounded_half_up(amount, percent, fixed):
    exact = Fraction(amount) * Fraction(percent) / 100 + fixed
    expected = int(exact + Fraction(1, 2))  # floor(x + ½) is half-up for x ≥ 0
    assert ChannelCost(percent, fixed).for_amount(amount) == expected


def test_floats_never_enter_the_money_path():
    with pytest.raises(ValueError, match="Decimal"):
        ChannelCost(2.9, 30)
    with pytest.raises(ValueError, match="integer in minor units"):
        card(amount=100.0)
    with pytest.raises(ValueError, match="integer in minor units"):
        ChannelCost(Decimal("1"), 0.5)
    with pytest.raises(InvalidCandidate, match="max_amount"):
        channel("a", max_amount=1e6)


def test_bad_candidates_are_refused_with_the_channel_named():
    with pytest.raises(InvalidCandidate, match=r"'Stripe EU' \(a\): no cost configured for card"):
        ChannelCandidate(
            id="a",
            name="Stripe EU",
            type="stripe",
            status="active",
            products={"card"},
            currencies={"EUR"},
            costs={},
        )
    with pytest.raises(InvalidCandidate, match="status must be one of active, paused"):
        channel("a", status="deleted")
    with pytest.raises(InvalidCandidate, match="unknown products bitcoin"):
        channel("a", products=("bitcoin",))
    with pytest.raises(InvalidCandidate, match="below min_amount"):
        channel("a", min_amount=100, max_amount=10)
    with pytest.raises(InvalidCandidate, match="currency"):
        channel("a", currencies=("EURO",))


def test_bad_requests_are_refused():
    with pytest.raises(UnknownProduct, match="known products: card"):
        RouteRequest(merchant_id="m", product="cheque", amount=1, currency="EUR")
    with pytest.raises(ValueError, match="at least 1"):
        card(amount=0)
    with pytest.raises(ValueError, match="ISO 4217"):
        card(currency="euro")
    with pytest.raises(ValueError, match="listed twice"):
        route(card(), [channel("a"), channel("a")])


# --- properties -------------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e", "f"]
CURRENCIES = ["EUR", "USD"]
# A few products and currencies, so that random channels often can take the random payment.
SOME_PRODUCTS = ["card", "alipay_qr", "face_pay"]
PERCENTS = [Decimal("0"), Decimal("1"), Decimal("1.5"), Decimal("2.9")]
EXTRA_ELEMENTS = ["billing_address", "email", "phone", "openid"]


maybe_id = st.none() | st.none() | st.none() | st.sampled_from([*IDS, "ghost"])
requests = st.builds(
    RouteRequest,
    merchant_id=st.just("m"),
    product=st.sampled_from(SOME_PRODUCTS),
    amount=st.integers(min_value=1, max_value=20_000),
    currency=st.sampled_from(CURRENCIES),
    payer_elements=st.just(frozenset(ELEMENTS)) | st.sets(st.sampled_from(sorted(ELEMENTS))),
    forced_channel_id=maybe_id,
    excluded_channel_ids=st.sets(st.sampled_from(IDS), max_size=1),
    rule_forced_channel_id=maybe_id,
    rule_excluded_channel_ids=st.sets(st.sampled_from(IDS), max_size=1),
)


@st.composite
def candidate_for(draw, request):
    """A random channel; about half are built to fit the payment, so that choices are often made."""
    fits = draw(st.booleans())
    products = draw(st.sets(st.sampled_from(SOME_PRODUCTS), min_size=1)) | ({request.product} if fits else set())
    currencies = draw(st.sets(st.sampled_from(CURRENCIES), min_size=1)) | ({request.currency} if fits else set())
    min_amount = draw(st.integers(min_value=0, max_value=request.amount if fits else 5_000))
    lowest_max = max(min_amount, request.amount) if fits else min_amount
    used_today = draw(st.integers(min_value=0, max_value=100_000))
    lowest_cap = used_today + request.amount if fits else 0
    return ChannelCandidate(
        id=draw(st.sampled_from(IDS)),
        name=draw(st.sampled_from(["Stripe EU", "Adyen", "Alipay", "Bank"])),
        type="sandbox",
        status="active" if fits else draw(st.sampled_from(["active", "paused"])),
        products=products,
        currencies=currencies,
        costs={
            # Few distinct prices, so that ties on cost (and then on priority) happen.
            p: ChannelCost(draw(st.sampled_from(PERCENTS)), draw(st.sampled_from([0, 10, 30])))
            for p in sorted(products)
        },
        min_amount=min_amount,
        max_amount=draw(st.none() | st.integers(min_value=lowest_max, max_value=lowest_max + 150_000)),
        daily_cap=draw(st.none() | st.integers(min_value=lowest_cap, max_value=lowest_cap + 200_000)),
        used_today=used_today,
        priority=draw(st.integers(min_value=0, max_value=2)),
        required_elements=draw(st.sets(st.sampled_from(EXTRA_ELEMENTS), max_size=1)),
        healthy=True if fits else draw(st.booleans()),
    )


@st.composite
def scenarios(draw):
    request = draw(requests)
    cands = draw(st.lists(candidate_for(request), unique_by=lambda c: c.id, min_size=1, max_size=6))
    return request, cands


def eligible_by_hand(request, c):
    """An independent statement of the rules, for the property tests to check the router against."""
    forced = {request.forced_channel_id, request.rule_forced_channel_id} - {None}
    remaining = None if c.daily_cap is None else c.daily_cap - c.used_today
    return (
        c.id not in request.excluded_channel_ids | request.rule_excluded_channel_ids
        and (not forced or forced == {c.id})
        and c.status == "active"
        and c.healthy
        and request.product in c.products
        and request.currency in c.currencies
        and c.min_amount <= request.amount
        and (c.max_amount is None or request.amount <= c.max_amount)
        and (remaining is None or request.amount <= remaining)
        and (product(request.product).required_elements | c.required_elements) <= request.payer_elements
    )


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_the_chosen_channel_always_satisfies_every_rule(scenario):
    request, cands = scenario
    decision = route(request, cands)
    chosen = decision.chosen
    if chosen is None:
        return
    assert chosen.status == "active" and chosen.healthy
    assert request.product in chosen.products and request.currency in chosen.currencies
    assert chosen.min_amount <= request.amount
    assert chosen.max_amount is None or request.amount <= chosen.max_amount
    assert chosen.daily_cap is None or request.amount <= chosen.daily_cap - chosen.used_today
    assert (product(request.product).required_elements | chosen.required_elements) <= request.payer_elements
    assert chosen.id not in request.excluded_channel_ids | request.rule_excluded_channel_ids
    for forced in (request.forced_channel_id, request.rule_forced_channel_id):
        assert forced is None or chosen.id == forced


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_no_kept_candidate_is_cheaper_and_the_ranking_is_the_rules(scenario):
    request, cands = scenario
    decision = route(request, cands)
    assert [v.channel_id for v in decision.verdicts] == [c.id for c in cands]
    kept_ids = {v.channel_id for v in decision.verdicts if v.kept}
    assert kept_ids == {c.id for c in decision.ranked}
    assert all((v.reason in KEPT_REASONS) == v.kept for v in decision.verdicts)
    assert {c.id for c in cands if eligible_by_hand(request, c)} == kept_ids

    if decision.chosen is None:
        assert decision.ranked == ()
        return
    assert decision.ranked[0] == decision.chosen
    best = decision.chosen.cost_for(request.product, request.amount)
    assert all(v.cost >= best for v in decision.verdicts if v.kept)
    keys = [(c.cost_for(request.product, request.amount), c.priority, c.id) for c in decision.ranked]
    assert keys == sorted(keys)
    assert decision.verdict_for(decision.chosen.id).reason is Reason.CHOSEN


@PROPERTY_SETTINGS
@given(scenario=scenarios(), data=st.data())
def test_the_decision_does_not_depend_on_the_order_of_the_candidates(scenario, data):
    request, cands = scenario
    shuffled = data.draw(st.permutations(cands))
    first, second = route(request, cands), route(request, shuffled)
    assert first.chosen == second.chosen
    assert first.ranked == second.ranked
    assert {v.channel_id: v.reason for v in first.verdicts} == {v.channel_id: v.reason for v in second.verdicts}


# --- products offered -------------------------------------------------------------------------


def test_the_catalogue_describes_each_product():
    assert list(PRODUCTS) == ["card", "alipay_qr", "wechat_pay", "face_pay", "bank_transfer", "wallet_balance"]
    assert product("card").required_elements == {"payment_method"}
    assert "terminal_id" in product("face_pay").required_elements
    assert "payer_name" in product("bank_transfer").required_elements
    assert product("card").manual_capture and not product("alipay_qr").manual_capture
    assert all(p.label and p.required_elements <= ELEMENTS.keys() for p in PRODUCTS.values())


def test_offered_methods_shrink_when_the_only_channels_maximum_is_below_the_amount():
    only = channel("a", products=("card", "alipay_qr"), max_amount=20_000)
    assert [p.code for p in offered_products(20_000, "EUR", [only])] == ["card", "alipay_qr"]
    assert offered_products(20_001, "EUR", [only]) == []


def test_offered_methods_follow_what_some_usable_channel_can_take():
    cards = channel("cards", products=("card",), max_amount=20_000)
    qr = channel("qr", products=("alipay_qr", "wechat_pay"), currencies=("CNY", "EUR"))
    paused_wallet = channel("w", products=("wallet_balance",), status="paused")
    assert [p.code for p in offered_products(50_000, "EUR", [cards, qr, paused_wallet])] == ["alipay_qr", "wechat_pay"]
    assert [p.code for p in offered_products(100, "eur", [cards, qr, paused_wallet])] == [
        "card",
        "alipay_qr",
        "wechat_pay",
    ]
    assert [p.code for p in offered_products(100, "USD", [cards, qr])] == []
    assert [p.code for p in offered_products(100, "EUR", [cards, qr], excluded_channel_ids={"qr"})] == ["card"]
    assert [p.code for p in offered_products(100, "EUR", [cards, qr], forced_channel_id="qr")] == [
        "alipay_qr",
        "wechat_pay",
    ]


def test_a_product_is_still_offered_when_only_the_payers_elements_are_missing():
    strict = channel("s", required_elements={"billing_address"})
    assert [p.code for p in offered_products(100, "EUR", [strict])] == ["card"]
