"""Daily settlement: business days by the tenant's cut-off and time zone, T+N per merchant, pending
to available net of refunds and fees, idempotent re-runs, runs resumed after a kill, the schedule."""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

import ledger
from billing import schedules
from billing.fees import FeeRule
from clearing import jobs, settlement
from clearing.models import ClearingRun, Settlement
from core.db import db
from payments import intents, refunds
from payments.models import BalanceTransaction
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope, tenant_context
from tenants.models import Tenant

ADMIN = Actor(kind="user", email="admin@acme.example.com")


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(tenant, "Tea", "owner@tea.example.com")
    make.channel_account(tenant.id)
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            schedule = schedules.create_schedule(tenant.id, "Standard", ADMIN)
            schedules.add_version(tenant.id, schedule.id, [FeeRule("card", "USD", Decimal("2"))], ["card"], ADMIN)
            db.session.commit()
        yield tenant, coffee, tea
        db.session.remove()


def _set_zone(tenant_id, zone):
    with platform_scope(db.session):
        db.session.execute(sa.update(Tenant).where(Tenant.id == tenant_id).values(time_zone=zone))
        db.session.commit()


def _pay(tenant_id, merchant_id, amount, at: datetime | None = None):
    """A captured payment; `at` back-dates its balance transaction (when it was captured)."""
    ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
    with tenant_context(db.session, tenant_id):
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True)
        if at is not None:
            _backdate(pi.id, at)
        return pi.id


def _backdate(source, at):
    db.session.execute(sa.update(BalanceTransaction).where(BalanceTransaction.source == source).values(created_at=at))
    db.session.commit()


def _refund(tenant_id, merchant_id, pi_id, amount, at):
    ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
    with tenant_context(db.session, tenant_id):
        refund = refunds.create(ctx, payment_intent=pi_id, amount=amount)
        _backdate(refund.id, at)
        return refund.id


def _run(tenant_id, now):
    with tenant_context(db.session, tenant_id):
        run = ClearingRun(tenant_id=tenant_id, kind="settlement")
        db.session.add(run)
        db.session.commit()
        outcome = settlement.settle(tenant_id, run, now)
        return run, outcome


def _balances(tenant_id, merchant_id):
    with tenant_context(db.session, tenant_id):
        ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
        balance = refunds.balance(ctx)
        return balance["pending"][0]["amount"], balance["available"][0]["amount"]


def _settlements(tenant_id):
    with tenant_context(db.session, tenant_id):
        rows = db.session.execute(sa.select(Settlement).order_by(Settlement.business_day, Settlement.net)).scalars()
        return [
            (s.business_day.isoformat(), s.charges_count, s.charges_amount, s.refunds_amount, s.fees, s.net)
            for s in rows
        ]


def _ledger_ok():
    with platform_scope(db.session):
        return ledger.check(db.session)


def test_a_day_is_settled_net_of_refunds_and_fees_at_t_plus_1(acme):
    tenant, coffee, _ = acme
    monday = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    first = _pay(tenant.id, coffee, 10_000, at=monday)
    _pay(tenant.id, coffee, 5_000, at=monday + timedelta(hours=5))
    _refund(tenant.id, coffee, first, 2_000, at=monday + timedelta(hours=6))
    _pay(tenant.id, coffee, 7_000, at=monday + timedelta(days=1))  # Tuesday's
    # 98.00 + 49.00 - 20.00 + 68.60 net of 2 % fees, all pending.
    assert _balances(tenant.id, coffee) == (19_560, 0)

    # Monday closes at Tuesday 00:00 UTC; T+1 makes its money available on Wednesday 00:00.
    _, outcome = _run(tenant.id, datetime(2026, 11, 3, 23, 59, tzinfo=UTC))
    assert outcome["settlements"] == 0 and _settlements(tenant.id) == []

    run, outcome = _run(tenant.id, datetime(2026, 11, 4, 0, 0, tzinfo=UTC))
    # 100.00 + 50.00 captured, 20.00 refunded, fees 2.00 + 1.00: net 127.00
    assert _settlements(tenant.id) == [("2026-11-02", 2, 15_000, -2_000, 300, 12_700)]
    assert outcome == {
        "settlements": 1,
        "transactions": 3,
        "merchants": 1,
        "net": [{"currency": "USD", "livemode": False, "amount": 12_700}],
    }
    assert (run.total, run.processed) == (1, 1)
    # Tuesday's 70.00 less 1.40 is still pending.
    assert _balances(tenant.id, coffee) == (6_860, 12_700)
    with tenant_context(db.session, tenant.id):
        statuses = db.session.execute(
            sa.select(BalanceTransaction.status, sa.func.count()).group_by(BalanceTransaction.status)
        ).all()
    assert sorted(statuses) == [("available", 3), ("pending", 1)]
    assert _ledger_ok() == []


def test_settling_again_changes_nothing(acme):
    tenant, coffee, _ = acme
    _pay(tenant.id, coffee, 10_000, at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    now = datetime(2026, 11, 10, tzinfo=UTC)
    _run(tenant.id, now)
    before = (_settlements(tenant.id), _balances(tenant.id, coffee))
    _, outcome = _run(tenant.id, now)
    assert outcome["settlements"] == 0
    assert (_settlements(tenant.id), _balances(tenant.id, coffee)) == before
    with tenant_context(db.session, tenant.id):
        entries = db.session.execute(sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'settlement'"))
        assert entries.scalar_one() == 1


def test_the_cut_off_and_time_zone_decide_the_business_day(acme):
    tenant, coffee, _ = acme
    _set_zone(tenant.id, "Asia/Shanghai")  # UTC+8
    with tenant_context(db.session, tenant.id):
        settlement.update_terms(tenant.id, time(18, 0), 0, ADMIN)
        db.session.commit()
    # Shanghai 17:59 on 2 Nov belongs to 2 Nov; 18:00 belongs to 3 Nov.
    _pay(tenant.id, coffee, 1_000, at=datetime(2026, 11, 2, 9, 59, tzinfo=UTC))
    _pay(tenant.id, coffee, 2_000, at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    # T+0: the 2 Nov business day is released at its cut-off, 18:00 Shanghai = 10:00 UTC.
    _run(tenant.id, datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    assert [s[:3] for s in _settlements(tenant.id)] == [("2026-11-02", 1, 1_000)]
    _run(tenant.id, datetime(2026, 11, 3, 10, 0, tzinfo=UTC))
    assert [s[:3] for s in _settlements(tenant.id)] == [("2026-11-02", 1, 1_000), ("2026-11-03", 1, 2_000)]


def test_each_merchant_has_its_own_t_plus_n(acme):
    tenant, coffee, tea = acme
    with tenant_context(db.session, tenant.id):
        settlement.set_merchant_delay(tenant.id, tea, 3, ADMIN)
        db.session.commit()
    monday = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    _pay(tenant.id, coffee, 1_000, at=monday)
    _pay(tenant.id, tea, 1_000, at=monday)
    _run(tenant.id, datetime(2026, 11, 4, tzinfo=UTC))  # T+1 for Coffee
    assert _balances(tenant.id, coffee) == (0, 980) and _balances(tenant.id, tea) == (980, 0)
    _run(tenant.id, datetime(2026, 11, 6, tzinfo=UTC))  # T+3 for Tea: Monday closes Tuesday, +3 days
    assert _balances(tenant.id, tea) == (0, 980)


def test_a_run_killed_halfway_finishes_with_the_same_result(acme, app):
    tenant, coffee, tea = acme
    for day in range(1, 5):
        _pay(tenant.id, coffee, 1_000 * day, at=datetime(2026, 11, day, 10, 0, tzinfo=UTC))
        _pay(tenant.id, tea, 500 * day, at=datetime(2026, 11, day, 11, 0, tzinfo=UTC))
    now = datetime(2026, 11, 20, tzinfo=UTC)
    with tenant_context(db.session, tenant.id):
        groups = settlement.due_groups(tenant.id, now)
        assert len(groups) == 8
        run = ClearingRun(tenant_id=tenant.id, kind="settlement", status="running")
        db.session.add(run)
        db.session.commit()
        # The worker dies after three merchant-days: three committed, nothing of the rest.
        for group in groups[:3]:
            settlement.settle_group(tenant.id, group, now, run.id)
            run.processed += 1
            db.session.commit()
        assert len(_settlements(tenant.id)) == 3
        outcome = settlement.settle(tenant.id, run, now)
    assert outcome["settlements"] == 8 and outcome["transactions"] == 8
    assert run.processed == 8
    assert _balances(tenant.id, coffee) == (0, 9_800) and _balances(tenant.id, tea) == (0, 4_900)
    assert _ledger_ok() == []


def test_terms_are_checked_and_audited(acme):
    tenant, coffee, _ = acme
    with tenant_context(db.session, tenant.id):
        for bad in ("31", "-1", "x"):
            with pytest.raises(InvalidInput, match="0 to 30"):
                settlement.update_terms(tenant.id, time(0, 0), bad, ADMIN)
            with pytest.raises(InvalidInput, match="0 to 30"):
                settlement.set_merchant_delay(tenant.id, coffee, bad, ADMIN)
        db.session.rollback()
        assert settlement.tenant_terms(tenant.id) == settlement.Terms(time(0, 0), 1)
        settlement.update_terms(tenant.id, time(17, 30), "2", ADMIN)
        settlement.set_merchant_delay(tenant.id, coffee, "5", ADMIN)
        db.session.commit()
        settlement.set_merchant_delay(tenant.id, coffee, "", ADMIN)
        db.session.commit()
        assert settlement.merchant_delay(tenant.id, coffee) is None
        actions = db.session.execute(
            sa.text("SELECT action FROM audit_events WHERE action LIKE '%settlement%' OR action LIKE 'clearing.%'")
        ).scalars()
        assert sorted(actions) == [
            "clearing.terms_updated",
            "merchant.settlement_terms_set",
            "merchant.settlement_terms_set",
        ]


def test_the_sweep_starts_one_run_per_tenant_with_money_due_and_the_worker_settles_it(acme, make, run_jobs):
    tenant, coffee, _ = acme
    quiet = make.tenant("quiet")
    _pay(tenant.id, coffee, 1_000, at=datetime.now(UTC) - timedelta(days=3))
    assert jobs.sweep()["started"] == 1
    assert jobs.sweep()["started"] == 0  # the run is queued: no second one
    db.session.remove()
    assert run_jobs() >= 1
    with tenant_context(db.session, tenant.id):
        (run,) = [r for r in jobs.runs(tenant.id) if r.kind == "settlement"]
        assert (run.status, run.trigger, run.total, run.processed) == ("succeeded", "schedule", 1, 1)
        assert run.outcome["settlements"] == 1
    with tenant_context(db.session, quiet.id):
        assert [r for r in jobs.runs(quiet.id) if r.kind == "settlement"] == []
    assert _balances(tenant.id, coffee) == (0, 980)


def test_a_manual_run_while_one_is_in_progress_is_the_same_run(acme):
    tenant, coffee, _ = acme
    with tenant_context(db.session, tenant.id):
        first = jobs.start_settlement(tenant.id, requested_by="admin@acme.example.com")
        second = jobs.start_settlement(tenant.id, requested_by="admin@acme.example.com")
        assert first.id == second.id and first.status == "queued"


def test_the_statement_lists_every_released_transaction_in_csv_and_pdf(acme):
    import csv
    import io
    from zoneinfo import ZoneInfo

    from clearing import statements

    tenant, coffee, _ = acme
    monday = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    first = _pay(tenant.id, coffee, 10_000, at=monday)
    refund_id = _refund(tenant.id, coffee, first, 2_500, at=monday + timedelta(hours=1))
    _run(tenant.id, datetime(2026, 11, 10, tzinfo=UTC))
    with tenant_context(db.session, tenant.id):
        settled = db.session.execute(sa.select(Settlement)).scalar_one()
        rows = list(csv.DictReader(io.StringIO(statements.to_csv(settled, ZoneInfo("Asia/Shanghai")))))
        pdf = statements.to_pdf(settled, "Coffee", "Acme", ZoneInfo("UTC"))
    assert [(r["type"], r["source"], r["amount"], r["fee"], r["net"]) for r in rows] == [
        ("charge", first, "100.00", "2.00", "98.00"),
        ("refund", refund_id, "-25.00", "0.00", "-25.00"),
        ("total", "", "75.00", "2.00", "73.00"),
    ]
    assert rows[0]["created"] == "2026-11-02T18:00:00+08:00"
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000


def test_a_run_that_fails_on_its_last_try_is_marked_failed_and_a_new_one_can_start(acme):
    tenant, coffee, _ = acme
    _pay(tenant.id, coffee, 1_000, at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    # A time zone PostgreSQL does not know (set behind provisioning's back) makes every run fail.
    _set_zone(tenant.id, "Mars/Olympus")
    with tenant_context(db.session, tenant.id):
        run = ClearingRun(tenant_id=tenant.id, kind="settlement", trigger="manual")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    with tenant_context(db.session, tenant.id), pytest.raises(sa.exc.DataError):
        jobs.run_clearing(str(tenant.id), str(run_id))  # outside RQ: no retry left
    db.session.rollback()
    with tenant_context(db.session, tenant.id):
        failed = db.session.get(ClearingRun, (tenant.id, run_id))
        assert failed.status == "failed" and "Mars/Olympus" in failed.error
        assert jobs.active_run(tenant.id) is None
