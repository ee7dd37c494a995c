"""Routing: which of the tenant's channel accounts takes a payment, and why.

Pure: the caller loads the channel accounts (with today's usage and health) into
`ChannelCandidate`s and the rules into the `RouteRequest`; `route` decides without I/O. The rules
apply in the SPEC's order, and the first rule a candidate fails is its reason:

1. excluded channels are never used; a forced channel is the only one considered (when it is
   itself unusable, nothing is chosen: a forced channel never falls back to another);
2. the channel is active and healthy, and serves the product and the currency;
3. its limits admit the amount: minimum, maximum, what is left of the daily cap;
4. the payment carries every element the product and the channel require (the missing ones are
   reported so the payer can be asked);
5. the cheapest for this amount wins; ties by priority (lower first), then by id.

Every candidate gets a `Verdict` (kept or dropped, a reason code, a sentence, its cost), and the
kept ones are ranked: when the chosen channel certainly did not take the money, the caller tries
the next one (`RouteDecision.next_after`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from billing.fees import percent_plus_fixed
from core.money import format_amount
from payments.products import ELEMENTS, PRODUCTS, product

STATUSES = ("active", "paused")


class Reason(StrEnum):
    CHOSEN = "chosen"
    MORE_EXPENSIVE = "more_expensive"
    LOWER_PRIORITY = "lower_priority"
    TIE_BREAK = "tie_break"
    FORCED = "forced"
    EXCLUDED = "excluded"
    PAUSED = "paused"
    UNHEALTHY = "unhealthy"
    PRODUCT = "product"
    CURRENCY = "currency"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    DAILY_CAP = "daily_cap"
    MISSING_ELEMENTS = "missing_elements"


KEPT_REASONS = frozenset({Reason.CHOSEN, Reason.MORE_EXPENSIVE, Reason.LOWER_PRIORITY, Reason.TIE_BREAK})


class InvalidCandidate(ValueError):
    """A channel account's routing data is unusable; the message names the account and the field."""


def _amount(value: Any, what: str, *, minimum: int = 0) -> int:
    # bool is an int in Python; a True amount is always a bug upstream.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer in minor units, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum:,}, got {value:,}")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isalpha():
        raise ValueError(f"currency must be an ISO 4217 code such as 'EUR', got {value!r}")
    return value.upper()


def _ids(values: Iterable[Any]) -> frozenset[str]:
    if isinstance(values, str):
        raise ValueError(f"expected a collection of channel ids, got the string {values!r}")
    return frozenset(str(v) for v in values)


def _names(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise ValueError(f"expected a collection of names, got the string {values!r}")
    return frozenset(values)


def _money(n: int, currency: str) -> str:
    """An amount in minor units as people read it: 320, 'eur' -> '3.20 EUR'."""
    return format_amount(n, currency)


@dataclass(frozen=True)
class ChannelCost:
    """What a channel account charges us per payment of one product: `percent` of the amount plus `fixed`."""

    percent: Decimal = Decimal(0)
    fixed: int = 0

    def __post_init__(self):
        if isinstance(self.percent, int) and not isinstance(self.percent, bool):
            object.__setattr__(self, "percent", Decimal(self.percent))
        if not isinstance(self.percent, Decimal) or not self.percent.is_finite() or self.percent < 0:
            raise ValueError(f"cost percent must be a non-negative Decimal like Decimal('2.9'), not {self.percent!r}")
        _amount(self.fixed, "fixed cost")

    def for_amount(self, amount: int) -> int:
        """The cost in minor units.

        Rounding rule (`billing.fees`, shared with fees at capture): percent of the amount plus the
        fixed part is computed exactly, then rounded ONCE, half-up, to the minor unit (1.5 → 2,
        2.5 → 3, 2.4999 → 2). Never round the parts separately, never go through float.
        """
        return percent_plus_fixed(amount, self.percent, self.fixed)

    def describe(self, currency: str) -> str:
        percent = format(self.percent.normalize(), "f")
        return f"{percent}% + {_money(self.fixed, currency)}"


@dataclass(frozen=True, kw_only=True)
class ChannelCandidate:
    """One channel account of the tenant, as routing sees it right now."""

    id: str
    name: str
    type: str
    status: str
    products: frozenset[str]
    currencies: frozenset[str]
    costs: Mapping[str, ChannelCost] = field(hash=False)
    min_amount: int | None = 0  # None: no minimum
    max_amount: int | None = None
    daily_cap: int | None = None
    used_today: int = 0
    priority: int = 100
    required_elements: frozenset[str] = frozenset()
    healthy: bool = True
    health_note: str = ""  # why it is unhealthy, when it is

    def __post_init__(self):
        try:
            self._validate()
        except ValueError as exc:
            raise InvalidCandidate(f"channel {self.name!r} ({self.id}): {exc}") from None

    def _validate(self) -> None:
        set_ = object.__setattr__
        set_(self, "id", str(self.id))
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        set_(self, "products", _names(self.products))
        unknown = sorted(self.products - PRODUCTS.keys())
        if unknown:
            raise ValueError(f"unknown products {', '.join(unknown)}; known: {', '.join(PRODUCTS)}")
        set_(self, "currencies", frozenset(_currency(c) for c in _names(self.currencies)))
        set_(self, "required_elements", _names(self.required_elements))
        costs = MappingProxyType(dict(self.costs))
        set_(self, "costs", costs)
        without_cost = sorted(self.products - costs.keys())
        if without_cost:
            # A product with no cost would route as free and win every comparison.
            raise ValueError(f"no cost configured for {', '.join(without_cost)}")
        for code, cost in costs.items():
            if not isinstance(cost, ChannelCost):
                raise ValueError(f"cost for {code} must be a ChannelCost, got {cost!r}")
        if self.min_amount is None:
            set_(self, "min_amount", 0)
        _amount(self.min_amount, "min_amount")
        if self.max_amount is not None and _amount(self.max_amount, "max_amount") < self.min_amount:
            raise ValueError(f"max_amount {self.max_amount:,} is below min_amount {self.min_amount:,}")
        if self.daily_cap is not None:
            _amount(self.daily_cap, "daily_cap")
        _amount(self.used_today, "used_today")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")
        if not isinstance(self.healthy, bool):
            raise ValueError(f"healthy must be True or False, got {self.healthy!r}")

    @property
    def remaining_today(self) -> int | None:
        """What is left of the daily cap (may be negative when usage overshot it); None without a cap."""
        return None if self.daily_cap is None else self.daily_cap - self.used_today

    def cost_for(self, product_code: str, amount: int) -> int | None:
        cost = self.costs.get(product_code) if product_code in self.products else None
        return None if cost is None else cost.for_amount(amount)

    def screen(self, product_code: str, amount: int, currency: str) -> tuple[Reason, str] | None:
        """The first of status, health, product, currency and limits that rules this channel out, or None.

        Forced/excluded channels and payer elements are the router's business, not the channel's.
        """
        if self.status != "active":
            return Reason.PAUSED, "the channel is paused"
        if not self.healthy:
            return Reason.UNHEALTHY, f"the channel is failing: {self.health_note or 'recent calls got no answer'}"
        if product_code not in self.products:
            return Reason.PRODUCT, f"does not offer {product(product_code).label}"
        if currency.upper() not in self.currencies:
            return Reason.CURRENCY, f"does not take {currency.upper()} (takes {', '.join(sorted(self.currencies))})"
        if amount < self.min_amount:
            return (
                Reason.BELOW_MIN,
                f"amount {_money(amount, currency)} below the per-payment minimum {_money(self.min_amount, currency)}",
            )
        if self.max_amount is not None and amount > self.max_amount:
            return (
                Reason.ABOVE_MAX,
                f"amount {_money(amount, currency)} above the per-payment maximum {_money(self.max_amount, currency)}",
            )
        remaining = self.remaining_today
        if remaining is not None and amount > remaining:
            return (
                Reason.DAILY_CAP,
                f"amount {_money(amount, currency)} above what is left of the daily cap today: "
                f"{_money(max(remaining, 0), currency)} of {_money(self.daily_cap, currency)}",
            )
        return None


@dataclass(frozen=True, kw_only=True)
class RouteRequest:
    """One payment to route. Forcing and exclusion come from the tenant's rules and from the request."""

    merchant_id: str
    product: str
    amount: int
    currency: str
    payer_elements: frozenset[str] = frozenset()
    forced_channel_id: str | None = None
    excluded_channel_ids: frozenset[str] = frozenset()
    rule_forced_channel_id: str | None = None
    rule_excluded_channel_ids: frozenset[str] = frozenset()

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "merchant_id", str(self.merchant_id))
        product(self.product)
        _amount(self.amount, "amount", minimum=1)
        set_(self, "currency", _currency(self.currency))
        set_(self, "payer_elements", _names(self.payer_elements))
        for name in ("forced_channel_id", "rule_forced_channel_id"):
            value = getattr(self, name)
            set_(self, name, None if value is None else str(value))
        set_(self, "excluded_channel_ids", _ids(self.excluded_channel_ids))
        set_(self, "rule_excluded_channel_ids", _ids(self.rule_excluded_channel_ids))


@dataclass(frozen=True)
class Verdict:
    channel_id: str
    channel_name: str
    kept: bool
    reason: Reason
    sentence: str
    cost: int | None
    missing_elements: frozenset[str] = frozenset()

    def to_record(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "channel_name": self.channel_name,
            "kept": self.kept,
            "reason": str(self.reason),
            "sentence": self.sentence,
            "cost": self.cost,
            "missing_elements": sorted(self.missing_elements),
        }


@dataclass(frozen=True)
class RouteDecision:
    request: RouteRequest
    chosen: ChannelCandidate | None
    verdicts: tuple[Verdict, ...]
    ranked: tuple[ChannelCandidate, ...]
    summary: str
    ask_payer_for: frozenset[str] = frozenset()

    @property
    def failover(self) -> tuple[ChannelCandidate, ...]:
        """The candidates to try, in order, after the chosen one failed before money moved."""
        return self.ranked[1:]

    def next_after(self, channel_id: str) -> ChannelCandidate | None:
        """The candidate to try when `channel_id` certainly did not take the money; None when none is left."""
        ids = [c.id for c in self.ranked]
        position = ids.index(str(channel_id))
        return self.ranked[position + 1] if position + 1 < len(ids) else None

    def verdict_for(self, channel_id: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.channel_id == str(channel_id):
                return verdict
        raise KeyError(f"channel {channel_id} was not a candidate")

    def explain(self) -> str:
        return "\n".join([self.summary, *(v.sentence for v in self.verdicts)])

    def to_record(self) -> dict[str, Any]:
        """The decision as plain JSON-ready data, for recording next to the payment attempt."""
        r = self.request
        return {
            "merchant_id": r.merchant_id,
            "product": r.product,
            "amount": r.amount,
            "currency": r.currency,
            "chosen": None if self.chosen is None else self.chosen.id,
            "failover": [c.id for c in self.failover],
            "summary": self.summary,
            "ask_payer_for": sorted(self.ask_payer_for),
            "verdicts": [v.to_record() for v in self.verdicts],
        }


def _forcing(request: RouteRequest) -> tuple[str | None, str, str | None]:
    """(forced id, who forced it, conflict sentence). Two different forced channels cannot both be obeyed."""
    by_request, by_rule = request.forced_channel_id, request.rule_forced_channel_id
    if by_request and by_rule and by_request != by_rule:
        return None, "", f"the request forces channel {by_request} but a routing rule forces channel {by_rule}"
    if by_rule:
        return by_rule, "a routing rule" if by_request is None else "a routing rule and the request", None
    if by_request:
        return by_request, "the request", None
    return None, "", None


def _excluded_by(request: RouteRequest, channel_id: str) -> str | None:
    sources = (("the request", request.excluded_channel_ids), ("a routing rule", request.rule_excluded_channel_ids))
    return " and ".join(label for label, ids in sources if channel_id in ids) or None


def _labels(elements: Iterable[str]) -> str:
    return ", ".join(ELEMENTS.get(e, e) for e in sorted(elements))


def route(request: RouteRequest, candidates: Iterable[ChannelCandidate]) -> RouteDecision:
    """Choose the channel account for `request` and explain the verdict on every candidate."""
    candidates = tuple(candidates)
    seen: set[str] = set()
    for c in candidates:
        if c.id in seen:
            raise ValueError(f"channel {c.id} is listed twice among the candidates")
        seen.add(c.id)

    needed = product(request.product).required_elements
    forced, forced_by, conflict = _forcing(request)
    by_id = {c.id: c for c in candidates}
    costs = {c.id: c.cost_for(request.product, request.amount) for c in candidates}

    dropped: dict[str, tuple[Reason, str, frozenset[str]]] = {}
    eligible: list[ChannelCandidate] = []
    for c in candidates:
        excluded_by = _excluded_by(request, c.id)
        missing = frozenset((needed | c.required_elements) - request.payer_elements)
        if excluded_by:
            dropped[c.id] = (Reason.EXCLUDED, f"excluded by {excluded_by}", frozenset())
        elif conflict:
            dropped[c.id] = (Reason.FORCED, conflict, frozenset())
        elif forced is not None and c.id != forced:
            forced_name = by_id[forced].name if forced in by_id else f"channel {forced}"
            dropped[c.id] = (Reason.FORCED, f"{forced_name} is forced for this payment by {forced_by}", frozenset())
        elif (problem := c.screen(request.product, request.amount, request.currency)) is not None:
            dropped[c.id] = (*problem, frozenset())
        elif missing:
            dropped[c.id] = (Reason.MISSING_ELEMENTS, f"the payer has not given: {_labels(missing)}", missing)
        else:
            eligible.append(c)

    def rank(c: ChannelCandidate) -> tuple[int, int, str]:
        return costs[c.id], c.priority, c.id

    ranked = tuple(sorted(eligible, key=rank))
    chosen = ranked[0] if ranked else None

    kept: dict[str, tuple[Reason, str]] = {}
    if chosen is not None:
        sentence = _chosen_sentence(chosen, ranked, costs, request, forced_by if forced else None)
        kept[chosen.id] = (Reason.CHOSEN, sentence)
        for position, c in enumerate(ranked[1:], start=2):
            kept[c.id] = _runner_up(c, chosen, costs, position, request.currency)

    verdicts = []
    for c in candidates:
        if c.id in kept:
            reason, detail = kept[c.id]
            verdicts.append(Verdict(c.id, c.name, True, reason, f"{c.name}: {detail}", costs[c.id]))
        else:
            reason, detail, missing = dropped[c.id]
            sentence = f"{c.name}: dropped — {detail}"
            verdicts.append(Verdict(c.id, c.name, False, reason, sentence, costs[c.id], missing))

    ask = _ask_payer_for(chosen, candidates, dropped, rank)
    summary = _summary(request, chosen, candidates, dropped, forced, conflict, ask, len(ranked))
    return RouteDecision(request, chosen, tuple(verdicts), ranked, summary, ask)


def _chosen_sentence(chosen, ranked, costs, request, forced_by: str | None) -> str:
    money = request.currency
    cost = f"cost {_money(costs[chosen.id], money)} ({chosen.costs[request.product].describe(money)})"
    if forced_by is not None:
        return f"chosen — forced by {forced_by}; {cost}"
    if len(ranked) == 1:
        return f"chosen — the only eligible channel; {cost}"
    runner_up = ranked[1]
    if costs[runner_up.id] > costs[chosen.id]:
        return f"chosen — cheapest for this amount; {cost}"
    if runner_up.priority > chosen.priority:
        return f"chosen — {cost}, tied on cost; priority {chosen.priority} wins"
    return f"chosen — {cost}, tied on cost and priority {chosen.priority}; the lowest id wins"


def _runner_up(c, chosen, costs, position: int, currency: str) -> tuple[Reason, str]:
    then = f"failover #{position - 1}"
    if costs[c.id] > costs[chosen.id]:
        return (
            Reason.MORE_EXPENSIVE,
            f"kept — more expensive: cost {_money(costs[c.id], currency)} against {_money(costs[chosen.id], currency)} "
            f"for {chosen.name}; {then}",
        )
    if c.priority > chosen.priority:
        return (
            Reason.LOWER_PRIORITY,
            f"kept — same cost {_money(costs[c.id], currency)} as {chosen.name}, but priority {c.priority} "
            f"comes after {chosen.priority}; {then}",
        )
    return (
        Reason.TIE_BREAK,
        f"kept — same cost {_money(costs[c.id], currency)} and priority {c.priority} as {chosen.name}; "
        f"ties go to the lower id; {then}",
    )


def _ask_payer_for(chosen, candidates, dropped, rank) -> frozenset[str]:
    """When nothing was chosen, what the payer should give so that the best waiting channel can take it."""
    if chosen is not None:
        return frozenset()
    waiting = [c for c in candidates if dropped[c.id][0] is Reason.MISSING_ELEMENTS]
    if not waiting:
        return frozenset()
    return dropped[min(waiting, key=rank).id][2]


def _summary(request, chosen, candidates, dropped, forced, conflict, ask, kept_count) -> str:
    what = f"{product(request.product).label} payment of {_money(request.amount, request.currency)}"
    if chosen is not None:
        fallbacks = kept_count - 1
        tail = f"{fallbacks} failover candidate{'s' if fallbacks != 1 else ''}"
        cost = _money(chosen.cost_for(request.product, request.amount), request.currency)
        return f"{what}: routed to {chosen.name} (cost {cost}); {tail}."
    if not candidates:
        return f"{what}: no channel — the tenant has no channel accounts."
    if conflict:
        return f"{what}: no channel — {conflict}."
    if forced is not None:
        names = {c.id: c for c in candidates}
        if forced not in names:
            return (
                f"{what}: no channel — the forced channel {forced} is not one of the tenant's channel accounts; "
                "other channels are not tried."
            )
        reason, detail, _ = dropped[forced]
        if reason is not Reason.MISSING_ELEMENTS:
            return (
                f"{what}: no channel — the forced channel {names[forced].name} cannot take it ({detail}); "
                "other channels are not tried."
            )
    if ask:
        return f"{what}: no channel until the payer gives: {_labels(ask)}."
    counts: dict[Reason, int] = {}
    for reason, _, _ in dropped.values():
        counts[reason] = counts.get(reason, 0) + 1
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"{what}: no channel — every channel account was dropped ({reasons})."
