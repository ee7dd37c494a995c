"""A merchant reads its fees through the API with Stripe's SDK: BalanceTransactions carry the fee,
its breakdown and the net, and the balance is the net."""

from decimal import Decimal

from billing import schedules
from billing.fees import FeeRule
from core.db import db
from tenants.audit import Actor
from tenants.isolation import tenant_context


def test_the_sdk_reads_fee_fee_details_and_net(app, shop, stripe_client):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        schedule = schedules.create_schedule(shop.tenant_id, "Standard", Actor.system())
        rule = FeeRule("card", "USD", Decimal("3.4"), 25, minimum=50)
        schedules.add_version(shop.tenant_id, schedule.id, [rule], ["card"], Actor.system())
        db.session.commit()
        db.session.remove()
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 2500, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    assert intent.status == "succeeded"
    (txn,) = stripe_client.v1.balance_transactions.list({"source": intent.id}).data
    # 3.4 % of 25.00 = 0.85, plus 0.25
    assert (txn.amount, txn.fee, txn.net) == (2500, 110, 2390)
    assert [(d.description, d.amount, d.currency) for d in txn.fee_details] == [
        ("3.4% of 25.00 USD", 85, "usd"),
        ("fixed 0.25 USD", 25, "usd"),
    ]
    assert stripe_client.v1.balance_transactions.retrieve(txn.id).fee == 110
    balance = stripe_client.v1.balance.retrieve()
    assert [(b.amount, b.currency) for b in balance.pending] == [(2390, "usd")]
