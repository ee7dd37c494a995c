"""Coupons against the real database: codes, terms, and limits that hold when many payers redeem
at once (threads, each with its own connection), reserved with the PaymentIntent and given back
when it is canceled."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from billing import catalog, coupons
from billing.catalog import ChargeItemInput
from billing.coupons import CouponInput
from billing.models import Coupon, CouponRedemption
from core.db import db
from payments import intents, orders
from payments.errors import InvalidRequest
from payments.intents import MerchantContext
from payments.order_models import Order
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import tenant_context
from tenants.models import AuditEvent

PRODUCTS = {"card", "alipay_qr"}


@pytest.fixture
def shop(app, make):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Corner Shop", "owner@corner.example.com")
    make.channel_account(tenant.id)
    with app.app_context(), tenant_context(db.session, tenant.id):
        item = catalog.create_item(
            tenant.id, merchant, ChargeItemInput("Espresso", "2.50", "usd", unit="cup"), PRODUCTS, Actor.system()
        )
        item_id = item.id
        db.session.remove()
    return tenant, merchant, item_id


def _coupon(tenant, merchant, **fields):
    spec = {"code": "SAVE", "kind": "percent", "percent_off": "10", **fields}
    coupon = coupons.create_coupon(tenant.id, merchant, CouponInput(**spec), Actor.system())
    return coupon


def _order(tenant, merchant, item_id, quantity=4, **kwargs):
    lines, currency, _ = orders.lines_from_items(
        tenant.id, merchant, [orders.ItemRequest(str(item_id), quantity, "line_items[0]")]
    )
    return orders.create_order(MerchantContext(tenant.id, merchant, False), lines, currency, **kwargs)


def test_an_order_with_a_coupon_charges_the_total_and_keeps_its_lines(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, percent_off="12.5")
        pi = _order(tenant, merchant, item_id, quantity=3, coupon_code="save", payer_email="Ann@Example.com")
        # 3 × 2.50 = 7.50; 12.5 % = 0.9375 -> 0.94 (half-up once); 7.50 - 0.94 = 6.56
        assert pi.amount == 656
        lines = orders.lines_of(tenant.id, pi.id)
        assert [(line.kind, line.quantity, line.unit_amount, line.amount) for line in lines] == [
            ("item", 3, 250, 750),
            ("discount", 1, -94, -94),
        ]
        assert sum(line.amount for line in lines) == pi.amount
        order = orders.order_of(tenant.id, pi.id)
        assert (order.subtotal, order.discount, order.total, order.coupon_code) == (750, 94, 656, "SAVE")
        redemption = db.session.execute(sa.select(CouponRedemption)).scalar_one()
        assert (redemption.payer_email, redemption.status, redemption.discount) == ("ann@example.com", "reserved", 94)

        # A new price applies to the next order; this one keeps what the payer was shown.
        item = catalog.get_item(tenant.id, merchant, item_id)
        catalog.update_item(item, ChargeItemInput("Espresso", "3.00", "USD", unit="cup"), PRODUCTS, Actor.system())
        assert [line.unit_amount for line in orders.lines_of(tenant.id, pi.id)] == [250, -94]
        assert intents.get(MerchantContext(tenant.id, merchant, False), pi.id).amount == 656
        assert _order(tenant, merchant, item_id, quantity=1).amount == 300


def test_codes_are_unique_per_merchant_whatever_their_case(app, shop, make):
    tenant, merchant, _ = shop
    other = make.merchant(tenant, "Other Shop", "owner@other.example.com")
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="Summer")
        with pytest.raises(InvalidInput, match="already have a coupon") as refused:
            _coupon(tenant, merchant, code="SUMMER")
        assert refused.value.field == "code"
        db.session.rollback()
        _coupon(tenant, other, code="SUMMER")  # another merchant's codes are its own
        assert coupons.find_for_order(tenant.id, merchant, "summer").code == "Summer"
        with pytest.raises(coupons.CouponRefused, match="not valid"):
            coupons.find_for_order(tenant.id, merchant, "winter")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"percent_off": "0"}, "percent_off", "more than 0"),
        ({"percent_off": "100.5"}, "percent_off", "at most 100"),
        ({"percent_off": "12.345"}, "percent_off", "two decimals"),
        ({"kind": "fixed", "amount_off": "5"}, "currency", "needs its currency"),
        ({"kind": "fixed", "amount_off": "5.001", "currency": "USD"}, "amount_off", "at most 2 decimals"),
        ({"min_amount": "10"}, "currency", "needs its currency"),
        ({"code": "two words"}, "code", "no spaces"),
        ({"max_per_payer": 0}, "max_per_payer", "at least 1"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at", "past"),
    ],
)
def test_bad_terms_are_refused_naming_the_field(app, shop, fields, field, message):
    tenant, merchant, _ = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        with pytest.raises(InvalidInput, match=message) as refused:
            _coupon(tenant, merchant, **fields)
        assert refused.value.field == field
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Coupon)) == 0


def test_expired_inactive_minimum_and_currency(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        coupon = _coupon(tenant, merchant, code="SOON", expires_at=datetime.now(UTC) + timedelta(hours=1))
        coupon.expires_at = datetime.now(UTC) - timedelta(seconds=1)  # as if the hour had passed
        db.session.commit()
        with pytest.raises(InvalidRequest, match="has expired") as refused:
            _order(tenant, merchant, item_id, coupon_code="SOON")
        assert refused.value.param == "coupon"
        off = _coupon(tenant, merchant, code="OFF")
        coupons.set_active(off, False, Actor.system())
        with pytest.raises(InvalidRequest, match="not valid"):
            _order(tenant, merchant, item_id, coupon_code="OFF")
        _coupon(tenant, merchant, code="BIG", kind="fixed", amount_off="1", currency="USD", min_amount="20.00")
        with pytest.raises(InvalidRequest, match="at least 20.00 USD; this order is 10.00 USD"):
            _order(tenant, merchant, item_id, coupon_code="BIG")
        _coupon(tenant, merchant, code="EURO", kind="fixed", amount_off="1", currency="EUR")
        with pytest.raises(InvalidRequest, match="EUR orders only"):
            _order(tenant, merchant, item_id, coupon_code="EURO")
        assert pytest.approx(0) == db.session.scalar(sa.select(sa.func.count()).select_from(Order))
        assert _order(tenant, merchant, item_id, quantity=8, coupon_code="big").amount == 1900


def test_a_coupon_covering_everything_creates_no_payment(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="FREE", kind="fixed", amount_off="50", currency="USD")
        with pytest.raises(InvalidRequest, match="nothing to pay") as refused:
            _order(tenant, merchant, item_id, coupon_code="FREE")
        assert refused.value.param == "coupon"
        assert db.session.scalar(sa.select(Coupon.times_redeemed)) == 0


def test_a_canceled_payment_gives_its_coupon_use_back(app, shop):
    tenant, merchant, item_id = shop
    ctx = MerchantContext(tenant.id, merchant, False)
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="ONCE", max_redemptions=1)
        first = _order(tenant, merchant, item_id, coupon_code="ONCE")
        with pytest.raises(InvalidRequest, match="used as often as it may be"):
            _order(tenant, merchant, item_id, coupon_code="ONCE")
        intents.cancel(ctx, first.id)
        assert db.session.scalar(sa.select(Coupon.times_redeemed)) == 0
        assert db.session.scalar(sa.select(CouponRedemption.status)) == "released"
        second = _order(tenant, merchant, item_id, coupon_code="ONCE")
        assert second.amount == 900
        usage = orders.coupon_usage(tenant.id, [db.session.scalar(sa.select(Coupon.id))])
        assert [(u.held, u.paid, u.released) for u in usage.values()] == [(1, 0, 1)]


def test_a_declined_payment_keeps_its_coupon_for_the_next_try(app, shop):
    """A decline is not final: the payer may try another card on the same PaymentIntent."""
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="ONCE", max_redemptions=1)
        with pytest.raises(Exception, match="declined"):
            _order(tenant, merchant, item_id, coupon_code="ONCE", payment_method="pm_card_chargeDeclined", confirm=True)
        assert db.session.scalar(sa.select(Coupon.times_redeemed)) == 1
        pi_id = db.session.scalar(sa.select(Order.payment_intent_id))
        paid = intents.confirm_intent(MerchantContext(tenant.id, merchant, False), pi_id, "pm_card_visa")
        assert (paid.status, paid.amount_received) == ("succeeded", 900)
        usage = orders.coupon_usage(tenant.id, [db.session.scalar(sa.select(Coupon.id))])
        assert [(u.held, u.paid) for u in usage.values()] == [(1, 1)]


def _race(app, tenant, merchant, item_id, emails, code):
    """Every payer redeems `code` at the same moment, each in its own thread and connection."""
    barrier = threading.Barrier(len(emails))
    results: list[str] = []
    lock = threading.Lock()

    def redeem(email):
        with app.app_context(), tenant_context(db.session, tenant.id):
            try:
                barrier.wait(timeout=30)
                pi = _order(tenant, merchant, item_id, coupon_code=code, payer_email=email)
                outcome = pi.id
            except InvalidRequest as exc:
                outcome = f"refused: {exc.message}"
            finally:
                db.session.remove()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=redeem, args=(email,)) for email in emails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_the_limit_per_code_holds_when_many_payers_redeem_at_once(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="FIRST5", max_redemptions=5)
        db.session.remove()
    results = _race(app, tenant, merchant, item_id, [f"payer{i}@example.com" for i in range(12)], "FIRST5")
    paid = [r for r in results if r.startswith("pi_")]
    assert len(paid) == 5, results
    assert all("used as often as it may be" in r for r in results if not r.startswith("pi_"))
    with app.app_context(), tenant_context(db.session, tenant.id):
        assert db.session.scalar(sa.select(Coupon.times_redeemed)) == 5
        assert db.session.scalar(sa.select(sa.func.count()).select_from(CouponRedemption)) == 5
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 5


def test_the_limit_per_payer_holds_when_one_payer_redeems_many_times_at_once(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="WELCOME", max_per_payer=2)
        db.session.remove()
    emails = ["greedy@example.com", "GREEDY@example.com"] * 4 + ["other@example.com"]
    results = _race(app, tenant, merchant, item_id, emails, "WELCOME")
    assert len([r for r in results if r.startswith("pi_")]) == 3, results  # 2 for greedy, 1 for other
    with app.app_context(), tenant_context(db.session, tenant.id):
        per_payer = dict(
            db.session.execute(
                sa.select(CouponRedemption.payer_email, sa.func.count()).group_by(CouponRedemption.payer_email)
            ).all()
        )
        assert per_payer == {"greedy@example.com": 2, "other@example.com": 1}


def test_a_limit_per_payer_needs_the_payers_email(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        _coupon(tenant, merchant, code="WELCOME", max_per_payer=1)
        with pytest.raises(InvalidRequest, match="give the payer's e-mail") as refused:
            _order(tenant, merchant, item_id, coupon_code="WELCOME")
        assert refused.value.param == "receipt_email"


def test_every_change_is_audited(app, shop):
    tenant, merchant, item_id = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        coupon = _coupon(tenant, merchant)
        coupons.update_coupon(coupon, CouponInput("SAVE", "percent", percent_off="15"), Actor.system())
        coupons.set_active(coupon, False, Actor.system())
        actions = db.session.execute(
            sa.select(AuditEvent.action, AuditEvent.changes).where(AuditEvent.object_type == "coupon")
        ).all()
        assert [a for a, _ in actions] == ["coupon.created", "coupon.updated", "coupon.deactivated"]
        assert actions[1][1] == {"percent_off_bp": {"before": 1000, "after": 1500}}
