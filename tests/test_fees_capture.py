"""Fees charged on captured payments: the merchant's schedule (versions, tiers, assignment), the
channel's cost and the platform's fee, as balance transactions and as one ledger entry."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

import ledger
from billing import schedules
from billing.fees import FeeRule
from core.db import db
from payments import balance_transactions, intents, refunds
from payments.models import BalanceTransaction
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope, tenant_context
from tenants.models import AuditEvent

PRODUCTS = ["card", "alipay_qr", "wechat_pay", "face_pay", "bank_transfer"]
ADMIN = Actor(kind="user", email="admin@acme.example.com")


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(tenant, "Tea", "owner@tea.example.com")
    make.channel_account(tenant.id, costs={"card": {"percent": "2.9", "fixed": 30}})
    with app.app_context():
        yield tenant, coffee, tea
        db.session.remove()


def _schedule(tenant_id, name, *rules, effective_from=None, default=False):
    with tenant_context(db.session, tenant_id):
        schedule = schedules.create_schedule(tenant_id, name, ADMIN, is_default=default)
        schedules.add_version(tenant_id, schedule.id, list(rules), PRODUCTS, ADMIN, effective_from=effective_from)
        db.session.commit()
        return schedule.id


def _pay(tenant_id, merchant_id, amount, **fields):
    ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
    with tenant_context(db.session, tenant_id):
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True, **fields)
        return pi.id


def _txn(tenant_id, source):
    with tenant_context(db.session, tenant_id):
        txn = db.session.execute(
            sa.select(BalanceTransaction).where(
                BalanceTransaction.source == source, BalanceTransaction.type == "charge"
            )
        ).scalar_one()
        return balance_transactions.to_object(txn)


def _entry_lines(tenant_id, pi_id):
    with tenant_context(db.session, tenant_id):
        entry = ledger.find_entry(tenant_id, "payment.captured", pi_id)
        return {line.account.purpose: line.amount for line in entry.lines}


def _ledger_ok():
    with platform_scope(db.session):
        return ledger.check(db.session)


def card(percent, fixed=0, **fields):
    return FeeRule("card", "USD", Decimal(percent), fixed, **fields)


def test_a_capture_pays_the_merchant_fee_the_channel_cost_and_the_platform_fee(acme):
    tenant, coffee, _ = acme
    _schedule(tenant.id, "Standard", card("3.5", 20, minimum=50))
    with platform_scope(db.session):
        schedules.set_platform_fee(tenant.id, "0.5", Actor.system())
        db.session.commit()

    pi_id = _pay(tenant.id, coffee, 1000)
    txn = _txn(tenant.id, pi_id)
    assert (txn["amount"], txn["fee"], txn["net"]) == (1000, 55, 945)
    assert [(d["description"], d["amount"]) for d in txn["fee_details"]] == [
        ("3.5% of 10.00 USD", 35),
        ("fixed 0.20 USD", 20),
    ]
    # The channel keeps 0.59 of 10.00; the merchant is owed 9.45; the platform takes 0.05 of the
    # 0.55 fee and the tenant the other 0.50 (its revenue after the channel's cost: 0.50 - 0.59).
    assert _entry_lines(tenant.id, pi_id) == {
        "channel_receivable": 941,
        "channel_fees": 59,
        "merchant_pending": -945,
        "platform_revenue": -5,
        "tenant_revenue": -50,
    }
    with tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, coffee, livemode=False)
        assert refunds.balance(ctx)["pending"] == [{"amount": 945, "currency": "usd"}]
    assert _ledger_ok() == []

    small = _txn(tenant.id, _pay(tenant.id, coffee, 100))  # 3.5 + 20 = 23.5 → minimum 50
    assert (small["fee"], small["net"]) == (50, 50)
    assert small["fee_details"][-1]["description"] == "minimum fee 0.50 USD"


def test_without_a_schedule_there_is_no_fee_and_refunds_keep_the_fee(acme):
    tenant, coffee, _ = acme
    pi_id = _pay(tenant.id, coffee, 2000)
    txn = _txn(tenant.id, pi_id)
    assert (txn["fee"], txn["net"], txn["fee_details"]) == (0, 2000, [])
    assert "tenant_revenue" not in _entry_lines(tenant.id, pi_id)

    _schedule(tenant.id, "Standard", card("2"))
    pi_id = _pay(tenant.id, coffee, 2000)
    assert _txn(tenant.id, pi_id)["fee"] == 40
    with tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, coffee, livemode=False)
        refund = refunds.create(ctx, payment_intent=pi_id)
        txn = db.session.execute(
            sa.select(BalanceTransaction).where(BalanceTransaction.source == refund.id)
        ).scalar_one()
        assert (txn.amount, txn.fee, txn.net) == (-2000, 0, -2000)
        # 20.00 captured without a fee, 19.60 net of the second, both 20.00 given back.
        assert refunds.balance(ctx)["pending"] == [{"amount": 1960, "currency": "usd"}]
    assert _ledger_ok() == []


def test_volume_tiers_follow_the_merchants_month_per_merchant(acme):
    tenant, coffee, tea = acme
    _schedule(tenant.id, "Tiered", card("3"), card("2", volume_from=10_000))
    fees = [_txn(tenant.id, _pay(tenant.id, coffee, amount))["fee"] for amount in (8_000, 5_000, 5_000)]
    # 80.00 and 50.00 are charged at 3 % (the month's volume before each is 0, then 80.00);
    # the third payment comes after 130.00 this month, so at 2 %.
    assert fees == [240, 150, 100]
    # Tea's month is its own.
    assert _txn(tenant.id, _pay(tenant.id, tea, 5_000))["fee"] == 150
    with tenant_context(db.session, tenant.id):
        rows = db.session.execute(sa.text("SELECT amount, count FROM merchant_monthly_volumes ORDER BY amount")).all()
    assert [tuple(r) for r in rows] == [(5_000, 1), (18_000, 3)]


def test_a_new_version_applies_from_its_date_and_never_changes_charged_fees(acme):
    tenant, coffee, _ = acme
    schedule_id = _schedule(tenant.id, "Standard", card("3"))
    first = _pay(tenant.id, coffee, 1000)
    with tenant_context(db.session, tenant.id):
        later = datetime.now(UTC) + timedelta(hours=1)
        schedules.add_version(tenant.id, schedule_id, [card("1")], PRODUCTS, ADMIN, effective_from=later)
        db.session.commit()
    assert _txn(tenant.id, _pay(tenant.id, coffee, 1000))["fee"] == 30  # the new version is not in force yet
    with tenant_context(db.session, tenant.id):
        schedules.add_version(tenant.id, schedule_id, [card("2")], PRODUCTS, ADMIN)
        db.session.commit()
        numbers = [v.number for v in schedules.versions(tenant.id, schedule_id)]
        assert numbers == [3, 2, 1]
    assert _txn(tenant.id, _pay(tenant.id, coffee, 1000))["fee"] == 20
    assert _txn(tenant.id, first)["fee"] == 30

    with tenant_context(db.session, tenant.id), pytest.raises(InvalidInput, match="cannot start in the past"):
        schedules.add_version(
            tenant.id, schedule_id, [card("9")], PRODUCTS, ADMIN, effective_from=datetime.now(UTC) - timedelta(days=1)
        )
    db.session.rollback()


def test_an_assigned_schedule_overrides_the_default_and_is_audited(acme):
    tenant, coffee, tea = acme
    _schedule(tenant.id, "Standard", card("3"))
    vip = _schedule(tenant.id, "VIP", card("1"))
    with tenant_context(db.session, tenant.id):
        schedules.assign(tenant.id, tea, vip, ADMIN)
        db.session.commit()
    assert _txn(tenant.id, _pay(tenant.id, coffee, 1000))["fee"] == 30
    assert _txn(tenant.id, _pay(tenant.id, tea, 1000))["fee"] == 10
    with tenant_context(db.session, tenant.id):
        schedules.assign(tenant.id, tea, None, ADMIN)
        db.session.commit()
        events = db.session.execute(
            sa.select(AuditEvent.changes).where(AuditEvent.action == "merchant.fee_schedule_assigned")
        ).scalars()
        assert [e["fee_schedule"] for e in events] == [
            {"before": "tenant default", "after": "VIP"},
            {"before": "VIP", "after": "tenant default"},
        ]
    assert _txn(tenant.id, _pay(tenant.id, tea, 1000))["fee"] == 30


def test_manual_capture_is_charged_on_the_captured_amount(acme):
    tenant, coffee, _ = acme
    _schedule(tenant.id, "Standard", card("2"))
    ctx = intents.MerchantContext(tenant.id, coffee, livemode=False)
    with tenant_context(db.session, tenant.id):
        pi = intents.create(
            ctx, amount=5000, currency="usd", payment_method="pm_card_visa", capture_method="manual", confirm=True
        )
        pi_id = pi.id
        intents.capture(ctx, pi_id, amount_to_capture=4000)
    txn = _txn(tenant.id, pi_id)
    assert (txn["amount"], txn["fee"], txn["net"]) == (4000, 80, 3920)
    assert _ledger_ok() == []


def test_another_tenants_schedule_and_platform_fee_do_not_apply(acme, make, app):
    tenant, coffee, _ = acme
    other = make.tenant("globex")
    _schedule(other.id, "Globex", card("9"))
    with platform_scope(db.session):
        schedules.set_platform_fee(other.id, "1", Actor.system())
        db.session.commit()
    pi_id = _pay(tenant.id, coffee, 1000)
    assert _txn(tenant.id, pi_id)["fee"] == 0
    assert "platform_revenue" not in _entry_lines(tenant.id, pi_id)


def test_a_platform_fee_is_a_percentage_below_100(acme):
    tenant, _, _ = acme
    with platform_scope(db.session):
        for bad in ("abc", "100", "-1"):
            with pytest.raises(InvalidInput) as refused:
                schedules.set_platform_fee(tenant.id, bad, Actor.system())
            assert refused.value.field == "percent"
        assert schedules.platform_fees(tenant.id) == []
        schedules.set_platform_fee(tenant.id, "0.75", Actor.system())
        db.session.commit()
        assert schedules.platform_fee_in_force(tenant.id).percent == Decimal("0.75")


def test_the_merchant_sees_the_fee_its_breakdown_and_the_net_on_the_payment(acme, site):
    tenant, coffee, _ = acme
    _schedule(tenant.id, "Standard", card("2.9", 30))
    pi_id = _pay(tenant.id, coffee, 1000)
    client = site("acme.localhost")
    client.login("owner@coffee.example.com")
    html = client.get(f"/merchant/payments/{pi_id}").get_data(as_text=True)
    fee = html[html.index('id="fee"') : html.index('id="net"')]
    assert "0.59 USD" in fee and "2.9% of 10.00 USD: 0.29 USD" in fee and "fixed 0.30 USD: 0.30 USD" in fee
    assert 'id="net">9.41 USD' in html


def test_tenant_revenue_per_day_is_fees_less_channel_cost_less_platform_fee(acme):
    from clearing import revenue

    tenant, coffee, tea = acme
    _schedule(tenant.id, "Standard", card("3.5", 20))
    with platform_scope(db.session):
        schedules.set_platform_fee(tenant.id, "0.5", Actor.system())
        db.session.commit()
    _pay(tenant.id, coffee, 1000)  # fee 55, channel 59, platform 5
    _pay(tenant.id, tea, 2000)  # fee 90, channel 88, platform 10
    today = datetime.now(UTC).date()
    with tenant_context(db.session, tenant.id):
        days = revenue.daily(tenant.id, today - timedelta(days=2), today, livemode=False)
        assert list(days) == ["USD"]
        assert [d.revenue for d in days["USD"]] == [0, 0, (55 + 90) - (59 + 88) - (5 + 10)]
        last = days["USD"][-1]
        assert (last.merchant_fees, last.channel_costs, last.platform_fee) == (145, 147, 15)
        assert revenue.daily(tenant.id, today, today, livemode=True) == {}
