"""Properties of the payment core under random sequences of operations (Hypothesis).

Each example is a random sequence of operations on one merchant, through the real use cases and the
sandbox channel: create + confirm (automatic or manual capture, random amounts, good and declining cards,
the sandbox's timeout amount 4001 and unavailable amount 5003), confirm again, capture (partial, sometimes
more than capturable), cancel, refund (random amount, sometimes more than is left), and resolving unknown
outcomes with an RQ worker. Every operation's outcome is checked against what its preconditions say (a
charge also depends on the channel's health: after five timeouts or unavailable answers in a row the account
is out of routing for 30 seconds, and a payment or confirmation is refused with `payment_method_unavailable`),
and after every step:

- `ledger.check()` (platform scope) finds no problem;
- the merchant's pending balance equals the sum over its intents of amount_received minus succeeded refunds;
- no intent has amount_refunded > amount_received (nor amount_received > amount), and amount_refunded is the
  sum of its refunds that are not failed;
- every succeeded intent has exactly one `payment.captured` entry (any other intent none), every succeeded
  refund exactly one `refund.succeeded` entry.

Isolation between examples: tests/conftest.py empties the tables once per test function, and Hypothesis
runs all the examples inside that one function, so every example provisions a tenant of its own (with a
sandbox channel account), the merchant it operates on, and a bystander merchant of the same tenant with one
payment of its own whose balance must never move (the channel's receivable account is the tenant's, shared
by both). The ledger check covers every tenant, so it must also hold whatever earlier examples left.
The test takes only the session-scoped `app` fixture, so Hypothesis' function-scoped-fixture health check
stays on.

The second test mixes those payment operations with the wallet movements of payments/balance_operations.py,
by either of the two merchants: top-ups (USD or EUR), transfers to the other merchant and payout requests
(a percentage of what the model says is available, sometimes more than that: refused with
`insufficient_funds` and nothing written), and payout cancellations (a pending payout is released, any other
is refused). It keeps a model of each merchant's available and reserved balance per currency and, after every
step, checks the ledger (as above), the Balance API's available balance and the reserved account against the
model, the pending balances as above, and that the journal lines of every tenant sum to zero per currency.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from hypothesis import event, given, settings
from hypothesis import strategies as st
from rq import SimpleWorker

import ledger
from core.db import db
from ledger.models import JournalEntry, JournalLine, LedgerAccount
from payments import balance_operations, channel_health, intents, refunds
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channels.sandbox import SLOW_AMOUNT, SPECIAL_MODULUS, TIMEOUT_AMOUNT, UNAVAILABLE_AMOUNT
from payments.errors import CardError, ChannelError, InvalidRequest
from payments.models import BalanceTransaction, ChannelAccount, PaymentIntent, Payout, Refund, Transfer
from portal import jobs, theming
from tenants import provisioning
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

GOOD_CARDS = ("pm_card_visa", "pm_card_mastercard")
DECLINING_CARDS = ("pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds")
SPECIAL = {TIMEOUT_AMOUNT, UNAVAILABLE_AMOUNT, SLOW_AMOUNT}
BYSTANDER_AMOUNT = 1_000


# --- operations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pay:
    amount: int
    capture_method: str
    card: str


@dataclass(frozen=True)
class Confirm:
    index: int
    aimed: bool  # pick among the intents the operation suits (else among all: mostly refused)
    card: str


@dataclass(frozen=True)
class Capture:
    index: int
    aimed: bool  # pick among the intents the operation suits (else among all: mostly refused)
    percent: int | None  # of what is capturable; over 100 asks for too much; None captures it all


@dataclass(frozen=True)
class Cancel:
    index: int
    aimed: bool  # pick among the intents the operation suits (else among all: mostly refused)


@dataclass(frozen=True)
class RefundOp:
    index: int
    aimed: bool  # pick among the intents the operation suits (else among all: mostly refused)
    percent: int | None  # of what is left to refund; over 100 asks for too much; None refunds the rest


@dataclass(frozen=True)
class ResolveUnknown:
    pass


# The sandbox's special amounts (timeout 4001, unavailable 5003) only when drawn on purpose, about one payment
# in eight; never the slow one, which sleeps 3 s.
plain_amounts = st.integers(1, 250_000).map(lambda a: a + 1_000 if a % SPECIAL_MODULUS in SPECIAL else a)
amounts = st.one_of(*[plain_amounts] * 7, st.sampled_from([TIMEOUT_AMOUNT, UNAVAILABLE_AMOUNT]))
cards = st.sampled_from(GOOD_CARDS * 3 + DECLINING_CARDS)  # three payments in four go through
index = st.integers(0, 30)
percent = st.one_of(st.none(), st.integers(1, 130))


def _pay() -> st.SearchStrategy[Pay]:
    return st.builds(Pay, amounts, st.sampled_from(["automatic", "manual"]), cards)


pay = _pay()
# st.one_of picks its branches evenly, so repeating one weighs it; but it drops a strategy object that is
# already there (and flattens nested one_of), so a repeated branch must be a strategy of its own.
operation = st.one_of(
    pay,
    _pay(),
    _pay(),
    st.builds(Confirm, index, st.booleans(), cards),
    st.builds(Capture, index, st.booleans(), percent),
    st.builds(Capture, index, st.booleans(), percent),
    st.builds(Cancel, index, st.booleans()),
    st.builds(RefundOp, index, st.booleans(), percent),
    st.builds(RefundOp, index, st.booleans(), percent),
    st.builds(RefundOp, index, st.booleans(), percent),
    st.just(ResolveUnknown()),
)
# Every sequence starts with a payment, so that the operations after it have something to act on.
sequences = st.tuples(pay, st.lists(operation, max_size=14)).map(lambda t: [t[0], *t[1]])


# --- running them ---------------------------------------------------------------------------------


def _fresh_shop(app) -> tuple[intents.MerchantContext, intents.MerchantContext]:
    """A new tenant with a sandbox card channel, the merchant under test, and a bystander that was paid once."""
    suffix = uuid.uuid4().hex[:10]
    with app.app_context():
        colors = {name: theme.colors for name, theme in theming.themes().items()}
        with platform_scope(db.session):
            spec = provisioning.TenantSpec(
                name=f"Props {suffix}", slug=f"props-{suffix}", admin_email=f"a@{suffix}.example.com"
            )
            tenant_id = provisioning.provision_tenant(spec, Actor.system(), colors)[0].id
        merchant = provisioning.create_merchant(tenant_id, "Shop", f"shop@{suffix}.example.com", Actor.system())[0].id
        bystander = provisioning.create_merchant(tenant_id, "Other", f"other@{suffix}.example.com", Actor.system())[
            0
        ].id
        with tenant_context(db.session, tenant_id):
            create_channel_account(
                tenant_id,
                ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"]),
                {"card"},
                Actor.system(),
            )
            other = intents.MerchantContext(tenant_id, bystander, livemode=False)
            paid = intents.create(
                other, amount=BYSTANDER_AMOUNT, currency="usd", payment_method="pm_card_visa", confirm=True
            )
            assert paid.status == "succeeded"
        db.session.remove()
    return intents.MerchantContext(tenant_id, merchant, livemode=False), other


def _intents(shop: intents.MerchantContext) -> list[PaymentIntent]:
    return (
        db.session.execute(
            sa.select(PaymentIntent)
            .where(PaymentIntent.tenant_id == shop.tenant_id, PaymentIntent.merchant_id == shop.merchant_id)
            .order_by(PaymentIntent.created_at, PaymentIntent.id)
        )
        .scalars()
        .all()
    )


SUITS = {
    "Confirm": ("requires_payment_method", "requires_confirmation"),
    "Capture": ("requires_capture",),
    "Cancel": ("requires_payment_method", "requires_confirmation", "requires_capture"),
    "RefundOp": ("succeeded",),
}


def _pick(shop, op) -> PaymentIntent | None:
    rows = _intents(shop)
    if op.aimed:
        rows = [pi for pi in rows if pi.status in SUITS[type(op).__name__]] or rows
    return rows[op.index % len(rows)] if rows else None


def _part(total: int, pct: int | None) -> int | None:
    return None if pct is None else max(1, total * pct // 100)


def _expected_after_pay(op: Pay) -> str:
    special = op.amount % SPECIAL_MODULUS
    if special == TIMEOUT_AMOUNT:
        return "processing"
    if special == UNAVAILABLE_AMOUNT or op.card in DECLINING_CARDS:
        return "requires_payment_method"
    return "requires_capture" if op.capture_method == "manual" else "succeeded"


def _out_of_routing(shop: intents.MerchantContext) -> bool:
    """Whether the tenant's sandbox account is out of routing now: the sandbox's timeout and unavailable
    amounts count as calls without an answer, and after `channel_health.THRESHOLD` of them in a row the
    account is left out for `COOL_DOWN` (30) seconds, far longer than one example runs."""
    account_ids = db.session.execute(
        sa.select(ChannelAccount.id).where(ChannelAccount.tenant_id == shop.tenant_id)
    ).scalars()
    health = channel_health.states(list(account_ids))
    return bool(health) and all(not state.healthy() for state in health.values())


def _apply(shop: intents.MerchantContext, op) -> str:
    """Run one operation and check its outcome against its preconditions (read just before); returns a label
    of what happened, for `--hypothesis-show-statistics`."""
    if isinstance(op, Pay):
        expected = _expected_after_pay(op)
        unroutable = _out_of_routing(shop)
        made_before = len(_intents(shop))
        db.session.rollback()
        try:
            pi = intents.create(
                shop,
                amount=op.amount,
                currency="usd",
                payment_method=op.card,
                capture_method=op.capture_method,
                confirm=True,
            )
            status = pi.status
        except InvalidRequest as exc:
            # No channel can take it now: refused as the API refuses it, and no intent is created.
            assert unroutable, f"{op}: {exc}"
            assert (exc.code, exc.param) == ("payment_method_unavailable", "amount"), exc.to_dict()
            assert len(_intents(shop)) == made_before, op
            return "refused: the channel is out of routing"
        except (CardError, ChannelError) as exc:
            status = exc.payment_intent["status"]
            assert expected == "requires_payment_method", f"{op}: {exc}"
        assert not unroutable, f"{op}: routed to a channel that is out of routing"
        assert status == expected, op
        return f"-> {status}"
    elif isinstance(op, Confirm):
        pi = _pick(shop, op)
        if pi is None:
            return "nothing to act on"
        allowed = pi.status in ("requires_payment_method", "requires_confirmation")
        special = pi.amount % SPECIAL_MODULUS
        unroutable = _out_of_routing(shop)
        db.session.rollback()
        try:
            status = intents.confirm_intent(shop, pi.id, payment_method=op.card).status
        except InvalidRequest as exc:
            if allowed and unroutable:
                assert (exc.code, exc.param) == ("payment_method_unavailable", "payment_method"), exc.to_dict()
                return "refused: the channel is out of routing"
            assert not allowed, f"{op}: {exc}"
            return "refused"
        except (CardError, ChannelError) as exc:
            assert allowed and (op.card in DECLINING_CARDS or special == UNAVAILABLE_AMOUNT), f"{op}: {exc}"
            assert not unroutable, f"{op}: routed to a channel that is out of routing"
            return "declined or unavailable"
        assert allowed and not unroutable, op
        assert status in ("succeeded", "requires_capture", "processing"), (op, status)
        return f"-> {status}"
    elif isinstance(op, Capture):
        pi = _pick(shop, op)
        if pi is None:
            return "nothing to act on"
        amount = _part(pi.amount_capturable, op.percent)
        allowed = pi.status == "requires_capture" and (amount is None or amount <= pi.amount_capturable)
        expected_received = pi.amount_capturable if amount is None else amount
        db.session.rollback()
        try:
            pi = intents.capture(shop, pi.id, amount_to_capture=amount)
        except InvalidRequest:
            assert not allowed, op
            return "refused"
        assert allowed, op
        assert pi.status == "succeeded" and pi.amount_received == expected_received, op
        return "captured all" if amount is None or amount == pi.amount else "captured part"
    elif isinstance(op, Cancel):
        pi = _pick(shop, op)
        if pi is None:
            return "nothing to act on"
        allowed = pi.status in ("requires_payment_method", "requires_confirmation", "requires_capture")
        db.session.rollback()
        try:
            pi = intents.cancel(shop, pi.id)
        except InvalidRequest:
            assert not allowed, op
            return "refused"
        assert allowed and pi.status == "canceled", op
        return "canceled"
    elif isinstance(op, RefundOp):
        pi = _pick(shop, op)
        if pi is None:
            return "nothing to act on"
        left = pi.amount_received - pi.amount_refunded
        amount = _part(left, op.percent)
        allowed = pi.status == "succeeded" and left > 0 and (amount is None or amount <= left)
        db.session.rollback()
        try:
            refund = refunds.create(shop, payment_intent=pi.id, amount=amount)
        except InvalidRequest:
            assert not allowed, op
            return "refused"
        assert allowed, op
        assert refund.status == "succeeded" and refund.amount == (left if amount is None else amount), op
        return "refunded the rest" if refund.amount == left else "refunded part"
    else:
        raise AssertionError(f"unknown operation {op!r}")


def _resolve_unknown(app, shop: intents.MerchantContext) -> str:
    """Work the `channels` queue in this process (the sandbox's charges live in this process's memory): the
    sandbox always knows the outcome of a card charge it timed out on, so nothing is left processing."""
    with app.app_context():
        queue = jobs.queue("channels")
        before = queue.finished_job_registry.count
        worker = SimpleWorker([queue], connection=jobs.redis_connection(), job_class=jobs.AppJob)
        worker.work(burst=True, with_scheduler=False)
        assert queue.failed_job_registry.count == 0
        resolved = queue.finished_job_registry.count - before
        with tenant_context(db.session, shop.tenant_id):
            assert [pi.id for pi in _intents(shop) if pi.status == "processing"] == []
        db.session.remove()
    return f"resolved {min(resolved, 2)}{'+' if resolved > 2 else ''} job(s)"


def _check_invariants(shop: intents.MerchantContext) -> None:
    with platform_scope(db.session):
        assert ledger.check(db.session) == []
    db.session.rollback()
    rows = _intents(shop)
    all_refunds = (
        db.session.execute(
            sa.select(Refund).where(Refund.tenant_id == shop.tenant_id, Refund.merchant_id == shop.merchant_id)
        )
        .scalars()
        .all()
    )
    entries = db.session.execute(
        sa.select(JournalEntry.kind, JournalEntry.reference).where(JournalEntry.tenant_id == shop.tenant_id)
    ).all()
    captured = [reference for kind, reference in entries if kind == "payment.captured"]
    refunded = [reference for kind, reference in entries if kind == "refund.succeeded"]
    expected_pending = 0
    for pi in rows:
        mine = [r for r in all_refunds if r.payment_intent_id == pi.id]
        succeeded_refunds = sum(r.amount for r in mine if r.status == "succeeded")
        in_flight_or_done = sum(r.amount for r in mine if r.status != "failed")
        assert 0 <= pi.amount_refunded <= pi.amount_received <= pi.amount, pi.id
        assert pi.amount_refunded == in_flight_or_done, pi.id
        assert captured.count(pi.id) == (1 if pi.status == "succeeded" else 0), (pi.id, pi.status)
        if pi.status == "requires_capture":
            assert pi.amount_capturable == pi.amount and pi.amount_received == 0, pi.id
        elif pi.status != "succeeded":
            assert pi.amount_received == 0 and pi.amount_refunded == 0 and not mine, (pi.id, pi.status)
        expected_pending += pi.amount_received - succeeded_refunds
    for refund in all_refunds:
        assert refunded.count(refund.id) == (1 if refund.status == "succeeded" else 0), refund.id
    assert _pending(shop) == expected_pending
    db.session.rollback()


def _pending(shop: intents.MerchantContext) -> int:
    """The merchant's pending USD balance (Balance API); payments here are in USD only, so any other
    currency's pending balance (listed once a top-up or transfer made the currency known) is zero."""
    lines = refunds.balance(shop)["pending"]
    assert all(line["amount"] == 0 for line in lines if line["currency"] != "usd"), lines
    return sum(line["amount"] for line in lines if line["currency"] == "usd")


@settings(max_examples=25, deadline=None, database=None)
@given(steps=sequences)
def test_random_operations_keep_the_books_and_the_intents_consistent(app, steps):
    shop, bystander = _fresh_shop(app)
    for op in steps:
        if isinstance(op, ResolveUnknown):
            outcome = _resolve_unknown(app, shop)
        else:
            with app.app_context(), tenant_context(db.session, shop.tenant_id):
                try:
                    outcome = _apply(shop, op)
                finally:
                    db.session.remove()
        event(f"{type(op).__name__}: {outcome}")
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            try:
                _check_invariants(shop)
                assert _pending(bystander) == BYSTANDER_AMOUNT
            finally:
                db.session.remove()


# --- wallet movements mixed with payments -------------------------------------------------------------


@dataclass(frozen=True)
class TopUp:
    who: int  # 0: the merchant under test, 1: the other merchant of the tenant
    amount: int
    currency: str


@dataclass(frozen=True)
class Send:
    who: int
    percent: int  # of the sender's available balance in the model; over 100 asks for more than there is
    currency: str


@dataclass(frozen=True)
class PayOut:
    who: int
    percent: int  # of the available balance in the model; over 100 asks for more than there is
    currency: str


@dataclass(frozen=True)
class CancelPayout:
    who: int
    index: int
    aimed: bool  # pick among the merchant's pending payouts (else among all: a canceled one is refused)


@dataclass
class Wallets:
    """What each merchant should have, per (merchant index, currency)."""

    available: Counter = field(default_factory=Counter)
    reserved: Counter = field(default_factory=Counter)


who = st.integers(0, 1)
wallet_currency = st.sampled_from(["usd", "usd", "eur"])
share = st.integers(1, 150)
topup_amounts = st.integers(1, 200_000)


def _wallet_operations() -> list[st.SearchStrategy]:
    """One strategy per kind of movement, new objects on each call (so that st.one_of keeps repeats)."""
    return [
        st.builds(TopUp, who, topup_amounts, wallet_currency),
        st.builds(Send, who, share, wallet_currency),
        st.builds(Send, who, share, wallet_currency),
        st.builds(PayOut, who, share, wallet_currency),
        st.builds(PayOut, who, share, wallet_currency),
        st.builds(CancelPayout, who, index, st.booleans()),
        st.builds(CancelPayout, who, index, st.booleans()),
    ]


# About half the steps are payment operations, half wallet movements. Every sequence starts with a top-up of
# each merchant and a payment, so that most movements after them have money to move (and the ones asking
# for more than there is are refused).
mixed_step = st.one_of(operation, *_wallet_operations(), *_wallet_operations())
mixed_sequences = st.tuples(
    st.builds(TopUp, st.just(0), topup_amounts, wallet_currency),
    st.builds(TopUp, st.just(1), topup_amounts, wallet_currency),
    pay,
    st.lists(mixed_step, min_size=4, max_size=16),
).map(lambda t: [*t[:3], *t[3]])


def _footprint(tenant_id: uuid.UUID) -> dict[str, int]:
    """How many rows of what a wallet movement writes the tenant has (to show a refused one wrote nothing)."""
    return {
        model.__tablename__: db.session.scalar(
            sa.select(sa.func.count()).select_from(model).where(model.tenant_id == tenant_id)
        )
        for model in (JournalEntry, Transfer, Payout, BalanceTransaction)
    }


def _refused_for_funds(exc: InvalidRequest, amount: int, have: int, footprint: dict[str, int], tenant_id) -> str:
    assert amount > have, f"refused {amount} with {have} available: {exc.message}"
    assert (exc.code, exc.param) == ("insufficient_funds", "amount"), exc.to_dict()
    assert _footprint(tenant_id) == footprint
    return "refused: insufficient funds"


def _move(parties: list[intents.MerchantContext], wallets: Wallets, op) -> str:
    """Run one wallet movement through the real use case, check its outcome and update the model."""
    ctx = parties[op.who]
    if isinstance(op, TopUp):
        topup = balance_operations.create_topup(ctx, amount=op.amount, currency=op.currency)
        assert (topup.status, topup.amount, topup.currency.lower()) == ("succeeded", op.amount, op.currency)
        wallets.available[op.who, op.currency] += op.amount
        return "topped up"
    if isinstance(op, Send | PayOut):
        have = wallets.available[op.who, op.currency]
        amount = max(1, have * op.percent // 100)
        before = _footprint(ctx.tenant_id)
        db.session.rollback()
        other = parties[1 - op.who]
        try:
            if isinstance(op, Send):
                made = balance_operations.create_transfer(
                    ctx, amount=amount, currency=op.currency, destination=str(other.merchant_id)
                )
            else:
                made = balance_operations.create_payout(ctx, amount=amount, currency=op.currency)
        except InvalidRequest as exc:
            return _refused_for_funds(exc, amount, have, before, ctx.tenant_id)
        assert amount <= have, f"{op}: moved {amount} with only {have} available"
        assert (made.amount, made.currency.lower()) == (amount, op.currency), op
        wallets.available[op.who, op.currency] -= amount
        if isinstance(op, Send):
            assert made.destination_id == other.merchant_id, op
            wallets.available[1 - op.who, op.currency] += amount
        else:
            assert made.status == "pending", op
            wallets.reserved[op.who, op.currency] += amount
        return ("sent" if isinstance(op, Send) else "paid out") + (" all" if amount == have else " part")
    if isinstance(op, CancelPayout):
        payouts = (
            db.session.execute(
                sa.select(Payout)
                .where(Payout.tenant_id == ctx.tenant_id, Payout.merchant_id == ctx.merchant_id)
                .order_by(Payout.created_at, Payout.id)
            )
            .scalars()
            .all()
        )
        if op.aimed:
            payouts = [p for p in payouts if p.status == "pending"] or payouts
        if not payouts:
            return "no payout to cancel"
        payout = payouts[op.index % len(payouts)]
        payout_id, status, amount, currency = payout.id, payout.status, payout.amount, payout.currency.lower()
        before = _footprint(ctx.tenant_id)
        db.session.rollback()
        try:
            canceled = balance_operations.cancel_payout(ctx, payout_id)
        except InvalidRequest as exc:
            assert status != "pending", f"{op}: refused to cancel a pending payout: {exc.message}"
            assert exc.code == "payout_not_cancelable", exc.to_dict()
            assert _footprint(ctx.tenant_id) == before
            return "refused: not cancelable"
        assert status == "pending" and canceled.status == "canceled", op
        wallets.available[op.who, currency] += amount
        wallets.reserved[op.who, currency] -= amount
        return "canceled a payout"
    raise AssertionError(f"unknown wallet movement {op!r}")


def _check_wallets(parties: list[intents.MerchantContext], wallets: Wallets) -> None:
    """Every merchant's available (Balance API) and reserved balance per currency is the model's, and every
    tenant's journal lines sum to zero per currency."""
    for number, ctx in enumerate(parties):
        available = {line["currency"]: line["amount"] for line in refunds.balance(ctx)["available"]}
        reserved = {
            account.currency.lower(): ledger.merchant_balance(account)
            for account in db.session.execute(
                sa.select(LedgerAccount).where(
                    LedgerAccount.tenant_id == ctx.tenant_id,
                    LedgerAccount.merchant_id == ctx.merchant_id,
                    LedgerAccount.purpose == "merchant_reserved",
                    LedgerAccount.livemode.is_(False),
                )
            ).scalars()
        }
        for currency in ("usd", "eur"):
            assert available.get(currency, 0) == wallets.available[number, currency], (number, currency, available)
            assert reserved.get(currency, 0) == wallets.reserved[number, currency], (number, currency, reserved)
    db.session.rollback()
    with platform_scope(db.session):
        totals = db.session.execute(
            sa.select(JournalLine.currency, sa.func.sum(JournalLine.amount)).group_by(JournalLine.currency)
        ).all()
    assert totals and all(total == 0 for _, total in totals), totals
    db.session.rollback()


@settings(max_examples=25, deadline=None, database=None)
@given(steps=mixed_sequences)
def test_random_payments_and_wallet_movements_keep_every_balance_as_modelled(app, steps):
    shop, other = _fresh_shop(app)
    parties = [shop, other]
    wallets = Wallets()
    for op in steps:
        if isinstance(op, ResolveUnknown):
            outcome = _resolve_unknown(app, shop)
        else:
            with app.app_context(), tenant_context(db.session, shop.tenant_id):
                try:
                    outcome = _move(parties, wallets, op) if op.__class__ in WALLET_MOVES else _apply(shop, op)
                finally:
                    db.session.remove()
        event(f"{type(op).__name__}: {outcome}")
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            try:
                _check_invariants(shop)  # the ledger check, the payments and the shop's pending balance
                assert _pending(other) == BYSTANDER_AMOUNT  # payments of the shop never touch the other merchant
                _check_wallets(parties, wallets)
            finally:
                db.session.remove()


WALLET_MOVES = (TopUp, Send, PayOut, CancelPayout)
