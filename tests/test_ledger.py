"""The ledger: balanced entries only, once per business event, safe under concurrency, checkable."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger
from core.db import db
from ledger import AlreadyPosted, InvalidEntry, JournalEntry, JournalLine, LedgerAccount, UnbalancedEntry
from tenants.isolation import platform_scope, tenant_context

LEDGER_TABLES = "journal_lines, journal_entries, ledger_accounts"


@pytest.fixture
def books(make):
    """Two tenants; alpha has two merchants, beta one."""
    alpha = make.tenant("alpha")
    beta = make.tenant("beta")
    shop = make.merchant(alpha, "Alpha Shop", "owner@alpha-shop.example.com")
    cafe = make.merchant(alpha, "Alpha Cafe", "owner@alpha-cafe.example.com")
    bazaar = make.merchant(beta, "Beta Bazaar", "owner@beta-bazaar.example.com")
    return alpha, beta, shop, cafe, bazaar


@contextlib.contextmanager
def as_tenant(app, tenant_id):
    """A separate unit of work (app context, session) acting for one tenant, as a thread or job would."""
    with app.app_context():
        try:
            with tenant_context(db.session, tenant_id):
                yield db.session
        finally:
            db.session.remove()


def capture(tenant_id, merchant_id, reference, amount, fee, currency="EUR", livemode=False):
    """A payment captured: the channel owes us `amount`, the merchant is owed it less our fee."""
    lines = [
        (ledger.account(tenant_id, "channel_receivable", currency, livemode), amount),
        (ledger.account(tenant_id, "merchant_pending", currency, livemode, merchant_id), -(amount - fee)),
    ]
    if fee:
        lines.append((ledger.account(tenant_id, "fee_revenue", currency, livemode), -fee))
    return ledger.post(tenant_id, "payment.captured", reference, lines, livemode, description="card payment")


def platform_problems():
    with platform_scope(db.session):
        problems = ledger.check(db.session)
    db.session.rollback()
    return problems


def entry_count(owner_engine) -> int:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM journal_entries")).scalar()


# --- posting ---------------------------------------------------------------------------------


def test_balanced_posting_moves_the_balances_and_is_kept_after_commit(app, ctx, books):
    alpha, _, shop, _, _ = books
    with tenant_context(db.session, alpha.id):
        entry = capture(alpha.id, shop, "pi_1", 10_000, 290)
        db.session.commit()
        assert [(line.account.purpose, line.amount) for line in entry.lines] == [
            ("channel_receivable", 10_000),
            ("fee_revenue", -290),
            ("merchant_pending", -9_710),
        ]
    db.session.remove()

    with as_tenant(app, alpha.id):
        pending = ledger.account(alpha.id, "merchant_pending", "EUR", False, shop)
        receivable = ledger.account(alpha.id, "channel_receivable", "EUR", False)
        fees = ledger.account(alpha.id, "fee_revenue", "EUR", False)
        assert ledger.balance(pending) == -9_710
        assert ledger.merchant_balance(pending) == 9_710
        assert ledger.natural_balance(receivable) == 10_000
        assert ledger.natural_balance(fees) == 290
        assert ledger.find_entry(alpha.id, "payment.captured", "pi_1").description == "card payment"
        assert platform_problems() == []


def test_account_is_created_once_and_separates_currency_mode_and_merchant(ctx, books):
    alpha, _, shop, cafe, _ = books
    with tenant_context(db.session, alpha.id):
        first = ledger.account(alpha.id, "merchant_available", "EUR", False, shop)
        assert ledger.account(alpha.id, "merchant_available", "EUR", False, shop).id == first.id
        others = {
            ledger.account(alpha.id, "merchant_available", "EUR", True, shop).id,
            ledger.account(alpha.id, "merchant_available", "USD", False, shop).id,
            ledger.account(alpha.id, "merchant_available", "EUR", False, cafe).id,
        }
        assert first.id not in others and len(others) == 3
        # No merchant: NULLS NOT DISTINCT keeps it to one row as well.
        assert (
            ledger.account(alpha.id, "suspense", "EUR", False).id
            == ledger.account(alpha.id, "suspense", "EUR", False).id
        )
        assert first.balance == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("cash", "EUR", False, None), "unknown account purpose 'cash'"),
        (("suspense", "eur", False, None), "upper-case ISO 4217"),
        (("suspense", "EURO", False, None), "upper-case ISO 4217"),
        (("suspense", "EUR", 1, None), "livemode must be True or False"),
        (("merchant_pending", "EUR", False, None), "merchant_id is required"),
    ],
)
def test_account_refuses_bad_requests(ctx, books, arguments, message):
    alpha = books[0]
    with tenant_context(db.session, alpha.id), pytest.raises(InvalidEntry, match=message):
        ledger.account(alpha.id, *arguments)


def _refused_cases(alpha, beta, shop, bazaar):
    """(name, lines builder, error type, message) for entries the ledger must refuse."""

    def acct(tenant, purpose, currency="EUR", livemode=False, merchant=None):
        return ledger.account(tenant, purpose, currency, livemode, merchant)

    return {
        "unbalanced": (
            lambda: [
                (acct(alpha.id, "channel_receivable"), 1_000),
                (acct(alpha.id, "merchant_pending", merchant=shop), -999),
            ],
            UnbalancedEntry,
            "EUR debits exceed by 1",
        ),
        "balanced only across currencies": (
            lambda: [(acct(alpha.id, "channel_receivable", "EUR"), 500), (acct(alpha.id, "suspense", "USD"), -500)],
            UnbalancedEntry,
            "EUR debits exceed by 500, USD credits exceed by 500",
        ),
        "float": (
            lambda: [(acct(alpha.id, "channel_receivable"), 10.5), (acct(alpha.id, "suspense"), -10.5)],
            InvalidEntry,
            "amount 10.5 is a float; amounts are integers in minor units",
        ),
        "decimal": (
            lambda: [(acct(alpha.id, "channel_receivable"), Decimal("10")), (acct(alpha.id, "suspense"), -10)],
            InvalidEntry,
            "is a Decimal",
        ),
        "bool": (
            lambda: [(acct(alpha.id, "channel_receivable"), True), (acct(alpha.id, "suspense"), -1)],
            InvalidEntry,
            "is a bool",
        ),
        "zero": (
            lambda: [
                (acct(alpha.id, "channel_receivable"), 100),
                (acct(alpha.id, "fee_revenue"), 0),
                (acct(alpha.id, "suspense"), -100),
            ],
            InvalidEntry,
            "line 2: amount is zero on fee_revenue",
        ),
        "one line": (lambda: [(acct(alpha.id, "suspense"), 0)], InvalidEntry, "at least two lines, got 1"),
        "mixed livemode": (
            lambda: [(acct(alpha.id, "channel_receivable", livemode=True), 100), (acct(alpha.id, "suspense"), -100)],
            InvalidEntry,
            "line 1: account .* is live mode but the entry is test mode; test and live money never mix",
        ),
        "other tenant's account": (
            lambda: [(acct(alpha.id, "channel_receivable"), 100), (bazaar_account, -100)],
            InvalidEntry,
            f"line 2: account .* belongs to tenant {beta.id}, not {alpha.id}",
        ),
        "currency differs from account": (
            lambda: [(acct(alpha.id, "channel_receivable"), 100, "USD"), (acct(alpha.id, "suspense"), -100)],
            InvalidEntry,
            "line 1: currency 'USD' differs from account .*'s EUR",
        ),
        "forged account": (
            lambda: [
                (acct(alpha.id, "channel_receivable"), 100),
                (
                    LedgerAccount(
                        tenant_id=alpha.id, id=bazaar_account.id, purpose="suspense", currency="EUR", livemode=False
                    ),
                    -100,
                ),
            ],
            InvalidEntry,
            f"line 2: account {bazaar_account.id} does not exist for tenant {alpha.id}",
        ),
    }


bazaar_account: LedgerAccount


@pytest.mark.parametrize(
    "case",
    [
        "unbalanced",
        "balanced only across currencies",
        "float",
        "decimal",
        "bool",
        "zero",
        "one line",
        "mixed livemode",
        "other tenant's account",
        "currency differs from account",
        "forged account",
    ],
)
def test_refused_entries_name_the_problem_and_change_nothing(app, ctx, books, owner_engine, case):
    global bazaar_account
    alpha, beta, shop, _, bazaar = books
    with as_tenant(app, beta.id):
        bazaar_account = ledger.account(beta.id, "merchant_pending", "EUR", False, bazaar)
        db.session.commit()
    with tenant_context(db.session, alpha.id):
        capture(alpha.id, shop, "pi_before", 1_000, 30)
        db.session.commit()
        build, error, message = _refused_cases(alpha, beta, shop, bazaar)[case]
        lines = build()
        before = {a.id: ledger.balance(a) for a, *_ in lines if a.tenant_id == alpha.id and a.id != bazaar_account.id}
        with pytest.raises(error, match=message):
            ledger.post(alpha.id, "manual.adjustment", "adj_1", lines, False)
        # Nothing was written and the caller's transaction is still usable.
        assert {a: ledger.balance(db.session.get(LedgerAccount, (alpha.id, a))) for a in before} == before
        assert ledger.find_entry(alpha.id, "manual.adjustment", "adj_1") is None
        db.session.commit()
    assert entry_count(owner_engine) == 1
    assert platform_problems() == []


def test_posting_for_another_tenant_than_the_context_is_refused(ctx, books):
    alpha, beta, *_ = books
    with tenant_context(db.session, alpha.id), pytest.raises(InvalidEntry, match=f"for tenant {beta.id} while"):
        ledger.account(beta.id, "suspense", "EUR", False)


def test_same_event_posted_twice_raises_already_posted_and_keeps_the_transaction_usable(ctx, books, owner_engine):
    alpha, _, shop, _, _ = books
    with tenant_context(db.session, alpha.id):
        first = capture(alpha.id, shop, "pi_1", 5_000, 100)
        with pytest.raises(AlreadyPosted, match="payment.captured pi_1 is already posted") as refused:
            capture(alpha.id, shop, "pi_1", 7_000, 100)
        assert refused.value.entry_id == first.id
        capture(alpha.id, shop, "pi_2", 1_000, 0)
        db.session.commit()
        assert ledger.merchant_balance(ledger.account(alpha.id, "merchant_pending", "EUR", False, shop)) == 5_900
    assert entry_count(owner_engine) == 2


# --- concurrency -------------------------------------------------------------------------------


def _run_threads(count, work):
    """Run `work(i)` in `count` threads released together; return results and errors by index."""
    barrier = threading.Barrier(count)
    results, errors = {}, {}

    def run(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_the_same_event_posted_by_ten_threads_at_once_is_posted_exactly_once(app, books, owner_engine):
    alpha, _, shop, _, _ = books
    with as_tenant(app, alpha.id):
        ledger.account(alpha.id, "channel_receivable", "EUR", False)
        ledger.account(alpha.id, "merchant_pending", "EUR", False, shop)
        ledger.account(alpha.id, "fee_revenue", "EUR", False)
        db.session.commit()

    def work(_):
        with as_tenant(app, alpha.id) as session:
            try:
                entry = capture(alpha.id, shop, "pi_race", 2_500, 75)
                session.commit()
                return ("posted", entry.id)
            except AlreadyPosted as exc:
                session.rollback()
                return ("repeat", exc.entry_id)

    results, errors = _run_threads(10, work)
    assert errors == {}
    outcomes = sorted(results.values())
    posted = [entry_id for outcome, entry_id in outcomes if outcome == "posted"]
    assert len(posted) == 1
    assert all(entry_id == posted[0] for outcome, entry_id in outcomes if outcome == "repeat")
    assert entry_count(owner_engine) == 1
    with as_tenant(app, alpha.id):
        assert ledger.merchant_balance(ledger.account(alpha.id, "merchant_pending", "EUR", False, shop)) == 2_425
        assert platform_problems() == []


def test_an_account_created_by_ten_threads_at_once_exists_once(app, books, owner_engine):
    alpha, _, shop, _, _ = books

    def work(_):
        with as_tenant(app, alpha.id) as session:
            created = ledger.account(alpha.id, "merchant_reserved", "JPY", True, shop).id
            session.commit()
            return created

    results, errors = _run_threads(10, work)
    assert errors == {}
    assert len(set(results.values())) == 1
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ledger_accounts")).scalar() == 1


def test_postings_in_opposite_orders_on_two_hot_accounts_do_not_deadlock(app, books):
    alpha, _, shop, cafe, _ = books
    threads, rounds = 12, 8
    with as_tenant(app, alpha.id):
        ids = [ledger.account(alpha.id, "merchant_available", "EUR", False, m).id for m in (shop, cafe)]
        db.session.commit()

    def work(i):
        with as_tenant(app, alpha.id) as session:
            for n in range(rounds):
                shop_acct = ledger.account(alpha.id, "merchant_available", "EUR", False, shop)
                cafe_acct = ledger.account(alpha.id, "merchant_available", "EUR", False, cafe)
                amount = i + 1
                # Even threads move money shop -> cafe listing shop first; odd ones cafe -> shop listing cafe first.
                if i % 2 == 0:
                    lines = [(shop_acct, amount), (cafe_acct, -amount)]
                else:
                    lines = [(cafe_acct, amount), (shop_acct, -amount)]
                ledger.post(alpha.id, "transfer", f"tr_{i}_{n}", lines, False)
                session.commit()
        return True

    results, errors = _run_threads(threads, work)
    assert errors == {}
    assert len(results) == threads
    # What the shop sees: even threads took money from it, odd ones gave money to it.
    shop_sees = sum(-(i + 1) * rounds if i % 2 == 0 else (i + 1) * rounds for i in range(threads))
    with as_tenant(app, alpha.id):
        shop_acct, cafe_acct = (db.session.get(LedgerAccount, (alpha.id, i)) for i in ids)
        assert ledger.merchant_balance(shop_acct) == shop_sees
        assert ledger.merchant_balance(cafe_acct) == -shop_sees
        count = db.session.execute(sa.select(sa.func.count()).select_from(JournalEntry)).scalar()
        assert count == threads * rounds
        assert platform_problems() == []


# --- flask ledger check ------------------------------------------------------------------------


def _post_some(app, alpha, beta, shop, bazaar):
    with as_tenant(app, alpha.id):
        capture(alpha.id, shop, "pi_a1", 10_000, 290)
        capture(alpha.id, shop, "pi_a2", 4_000, 116, currency="USD")
        db.session.commit()
    with as_tenant(app, beta.id):
        entry = capture(beta.id, bazaar, "pi_b1", 3_000, 0)
        db.session.commit()
        return entry.id, ledger.account(beta.id, "merchant_pending", "EUR", False, bazaar).id


def test_cli_check_passes_on_good_books(app, books):
    alpha, beta, shop, _, bazaar = books
    _post_some(app, alpha, beta, shop, bazaar)
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ledger: ok (3 entries, 8 accounts)"


def test_cli_check_fails_naming_the_account_whose_cached_balance_was_tampered_with(app, books, owner_engine):
    alpha, beta, shop, _, bazaar = books
    _, account_id = _post_some(app, alpha, beta, shop, bazaar)
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_accounts SET balance = balance - 500 WHERE id = :a"), {"a": account_id})
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert (
        f"balance_mismatch: tenant {beta.id}: account {account_id} (merchant_pending EUR of merchant {bazaar})"
        f" caches balance -3500 but its lines sum to -3000"
    ) in result.output
    assert "ledger: 1 problem(s) (3 entries, 8 accounts)" in result.output


def test_cli_check_fails_naming_the_entry_whose_line_was_tampered_with(app, books, owner_engine):
    alpha, beta, shop, _, bazaar = books
    entry_id, account_id = _post_some(app, alpha, beta, shop, bazaar)
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE journal_lines SET amount = amount + 1 WHERE entry_id = :e AND account_id = :a"),
            {"e": entry_id, "a": account_id},
        )
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert f"unbalanced_entry: tenant {beta.id}: entry {entry_id} does not balance in EUR: debits exceed by 1" in (
        result.output
    )
    # The account's cached balance no longer matches the tampered line either.
    assert f"account {account_id}" in result.output


# --- isolation ---------------------------------------------------------------------------------


def test_each_tenant_sees_only_its_own_books(app, books, owner_engine):
    alpha, beta, shop, _, bazaar = books
    _post_some(app, alpha, beta, shop, bazaar)
    with app.app_context():
        with db.engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(alpha.id)})
            for table in ("ledger_accounts", "journal_entries", "journal_lines"):
                seen = set(conn.execute(sa.text(f"SELECT tenant_id FROM {table}")).scalars())
                assert seen == {alpha.id}, table
            with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger_accounts (tenant_id, id, purpose, currency, livemode, balance)"
                        " VALUES (:b, :i, 'suspense', 'EUR', false, 0)"
                    ),
                    {"b": beta.id, "i": uuid.uuid4()},
                )
        db.session.remove()

    # Beta's books go wrong; alpha's own check does not see them, the platform's does.
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_accounts SET balance = 1 WHERE tenant_id = :b"), {"b": beta.id})
    with as_tenant(app, alpha.id) as session:
        assert ledger.check(session) == []
        assert {a.tenant_id for a in session.execute(sa.select(LedgerAccount)).scalars()} == {alpha.id}
        problems = platform_problems()
    assert problems and {p.tenant_id for p in problems} == {beta.id}


# --- property: random business operations keep the books balanced --------------------------------

MERCHANTS = 2
CURRENCIES = ("EUR", "JPY")
amounts = st.integers(min_value=1, max_value=10**9)
keys = st.tuples(st.integers(0, MERCHANTS - 1), st.sampled_from(CURRENCIES), st.booleans())
# Moves of existing money are a share of what is there, in percent; above 100 asks for too much.
shares = st.integers(min_value=1, max_value=110)
captures = st.tuples(st.just("capture"), keys, amounts, st.integers(0, 500))
topups = st.tuples(st.just("topup"), keys, amounts)
picks = st.integers(0, 40)


def next_operation(model: BusinessModel) -> st.SearchStrategy:
    """Any operation that the model's state gives a point to; new money can always come in."""
    choices = [captures, topups]
    if any(remaining for _, remaining in model.payments):
        choices.append(st.tuples(st.just("refund"), picks, shares))
    if model.holding("merchant_pending", 0):
        choices.append(st.tuples(st.just("release"), picks, shares))
    if model.holding("merchant_available", 0):
        choices.append(st.tuples(st.just("transfer"), picks, st.integers(1, MERCHANTS - 1), shares))
        choices.append(st.tuples(st.just("payout"), picks, shares))
    return st.one_of(choices)


def share_of(available: int, percent: int) -> int:
    return available * percent // 100 if percent <= 100 else available + 1


class BusinessModel:
    """What a payment core would do, expressed as ledger postings, with its own business rules."""

    def __init__(self, tenant_id, merchants):
        self.tenant_id = tenant_id
        self.merchants = merchants
        self.expected = defaultdict(int)  # (purpose, merchant index, currency, livemode) -> merchant's view
        self.payments = []  # [key, remaining]
        self.counter = 0

    def acct(self, purpose, key=None, currency=None, livemode=None):
        if key is not None:
            m, currency, livemode = key
            return ledger.account(self.tenant_id, purpose, currency, livemode, self.merchants[m])
        return ledger.account(self.tenant_id, purpose, currency, livemode)

    def holding(self, purpose, index):
        """The index-th (merchant, currency, livemode) with money on `purpose`, or None."""
        held = sorted(key[1:] for key, value in self.expected.items() if key[0] == purpose and value > 0)
        return held[index % len(held)] if held else None

    def post(self, kind, livemode, lines):
        self.counter += 1
        ledger.post(self.tenant_id, kind, f"ref_{self.counter}", lines, livemode)

    def apply(self, op) -> bool:
        """Post the operation, or refuse it as the business would; True if something was posted."""
        name = op[0]
        if name == "capture":
            _, key, amount, bps = op
            _, currency, livemode = key
            fee = amount * bps // 10_000
            lines = [(self.acct("channel_receivable", currency=currency, livemode=livemode), amount)]
            lines.append((self.acct("merchant_pending", key), -(amount - fee)))
            if fee:
                lines.append((self.acct("fee_revenue", currency=currency, livemode=livemode), -fee))
            self.post("payment.captured", livemode, lines)
            self.expected[("merchant_pending", *key)] += amount - fee
            self.payments.append([key, amount - fee])
            return True
        if name == "refund":
            _, index, percent = op
            if not self.payments:
                return False
            payment = self.payments[index % len(self.payments)]
            key, remaining = payment
            amount = share_of(remaining, percent)
            # Refunds are bounded by what is left of the payment and come out of the pending balance.
            if amount == 0 or amount > remaining or self.expected[("merchant_pending", *key)] < amount:
                return False
            _, currency, livemode = key
            receivable = self.acct("channel_receivable", currency=currency, livemode=livemode)
            self.post(
                "payment.refunded", livemode, [(self.acct("merchant_pending", key), amount), (receivable, -amount)]
            )
            payment[1] -= amount
            self.expected[("merchant_pending", *key)] -= amount
            return True
        if name == "release":
            _, index, percent = op
            key = self.holding("merchant_pending", index)
            pending = self.expected[("merchant_pending", *key)] if key else 0
            amount = share_of(pending, percent)
            if amount == 0 or amount > pending:
                return False
            lines = [(self.acct("merchant_pending", key), amount), (self.acct("merchant_available", key), -amount)]
            self.post("balance.released", key[2], lines)
            self.expected[("merchant_pending", *key)] -= amount
            self.expected[("merchant_available", *key)] += amount
            return True
        if name == "topup":
            _, key, amount = op
            _, currency, livemode = key
            receivable = self.acct("channel_receivable", currency=currency, livemode=livemode)
            self.post("topup.succeeded", livemode, [(receivable, amount), (self.acct("wallet", key), -amount)])
            self.expected[("wallet", *key)] += amount
            return True
        if name == "transfer":
            _, index, offset, percent = op
            key = self.holding("merchant_available", index)
            available = self.expected[("merchant_available", *key)] if key else 0
            amount = share_of(available, percent)
            if amount == 0 or amount > available:
                return False  # insufficient funds: the business refuses, the ledger is never asked
            to_key = ((key[0] + offset) % MERCHANTS, key[1], key[2])
            lines = [(self.acct("merchant_available", key), amount), (self.acct("merchant_available", to_key), -amount)]
            self.post("transfer.created", key[2], lines)
            self.expected[("merchant_available", *key)] -= amount
            self.expected[("merchant_available", *to_key)] += amount
            return True
        if name == "payout":
            _, index, percent = op
            key = self.holding("merchant_available", index)
            available = self.expected[("merchant_available", *key)] if key else 0
            amount = share_of(available, percent)
            if amount == 0 or amount > available:
                return False
            _, currency, livemode = key
            reserved = self.acct("merchant_reserved", key)
            self.post("payout.created", livemode, [(self.acct("merchant_available", key), amount), (reserved, -amount)])
            db.session.commit()
            in_transit = self.acct("payouts_in_transit", currency=currency, livemode=livemode)
            self.post("payout.sent", livemode, [(reserved, amount), (in_transit, -amount)])
            self.expected[("merchant_available", *key)] -= amount
            return True
        raise AssertionError(name)

    def assert_books(self):
        with platform_scope(db.session):
            assert ledger.check(db.session) == []
            unbalanced = db.session.execute(
                sa.text("SELECT entry_id FROM journal_lines GROUP BY entry_id, currency HAVING sum(amount) <> 0")
            ).all()
            assert unbalanced == []
            totals = db.session.execute(
                sa.text("SELECT currency, livemode, sum(balance) FROM ledger_accounts GROUP BY currency, livemode")
            ).all()
            assert all(total == 0 for _, _, total in totals), totals
        db.session.rollback()
        with tenant_context(db.session, self.tenant_id):
            for (purpose, m, currency, livemode), value in self.expected.items():
                acct = self.acct(purpose, (m, currency, livemode))
                assert ledger.merchant_balance(acct) == value, (purpose, m, currency, livemode)
            db.session.commit()


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_business_operations_keep_every_entry_and_the_books_balanced(app, ctx, books, owner_engine, data):
    alpha, _, shop, cafe, _ = books
    # One set of tenants for the whole test; the ledger starts empty for each example.
    db.session.remove()
    with owner_engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {LEDGER_TABLES}")
    model = BusinessModel(alpha.id, [shop, cafe])
    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        op = data.draw(next_operation(model), label="operation")
        with tenant_context(db.session, alpha.id):
            model.apply(op)
            db.session.commit()
        model.assert_books()
    with tenant_context(db.session, alpha.id):
        posted = db.session.execute(sa.select(sa.func.count()).select_from(JournalLine)).scalar()
        assert (posted == 0) == (model.counter == 0)
        db.session.commit()
