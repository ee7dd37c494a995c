"""Merchants see their payments: filters, pages, a timeline, and a refund button."""

import re

import pytest
import sqlalchemy as sa

from core.db import db
from payments import intents
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.errors import CardError
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent


@pytest.fixture
def shop(app, make, site):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    other = make.merchant(tenant, "Bikes", "owner@bikes.example.com")
    make.user(tenant, "staff@coffee.example.com", "staff", merchant_id=merchant)
    with app.app_context(), tenant_context(db.session, tenant.id):
        create_channel_account(
            tenant.id,
            ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"]),
            {"card"},
            Actor.system(),
        )
        ctx = intents.MerchantContext(tenant.id, merchant, False)
        paid = [
            intents.create(
                ctx,
                amount=1000 * (i + 1),
                currency="usd",
                payment_method="pm_card_visa",
                confirm=True,
                description=f"order {i}",
            ).id
            for i in range(3)
        ]
        with pytest.raises(CardError) as declined:
            intents.create(ctx, amount=999, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True)
        theirs = intents.create(
            intents.MerchantContext(tenant.id, other, False),
            amount=500,
            currency="usd",
            payment_method="pm_card_visa",
            confirm=True,
        ).id
        db.session.remove()
    client = site("acme.localhost")
    client.login("owner@coffee.example.com")
    return {
        "tenant": tenant,
        "client": client,
        "paid": paid,
        "declined": declined.value.payment_intent["id"],
        "theirs": theirs,
    }


def _ids(html):
    return re.findall(r"<code>(pi_[A-Za-z0-9]+)</code></a>", html)


def test_list_filters_and_search(shop):
    client = shop["client"]
    everything = _ids(client.get("/merchant/payments").get_data(as_text=True))
    assert set(everything) == {*shop["paid"], shop["declined"]}
    assert shop["theirs"] not in everything
    assert _ids(client.get("/merchant/payments?status=requires_payment_method").get_data(as_text=True)) == [
        shop["declined"]
    ]
    assert _ids(client.get(f"/merchant/payments?q={shop['paid'][1]}").get_data(as_text=True)) == [shop["paid"][1]]
    ranged = _ids(client.get("/merchant/payments?currency=USD&min=15&max=25").get_data(as_text=True))
    assert ranged == [shop["paid"][1]]
    bad = client.get("/merchant/payments?min=1.234&currency=USD").get_data(as_text=True)
    assert "USD amounts have at most 2 decimals." in bad
    assert _ids(client.get("/merchant/payments?mode=live").get_data(as_text=True)) == []


def test_detail_shows_routing_and_timeline(shop):
    html = shop["client"].get(f"/merchant/payments/{shop['paid'][0]}").get_data(as_text=True)
    assert "10.00 USD" in html and "succeeded" in html
    assert "payment_intent.created" in html and "payment_intent.succeeded" in html
    assert "charge at Sandbox: succeeded" in html
    assert 'id="routing-summary"' in html and "Sandbox" in html
    declined = shop["client"].get(f"/merchant/payments/{shop['declined']}").get_data(as_text=True)
    assert "generic_decline" in declined and 'id="refund-form"' not in declined


def test_refund_from_the_dashboard_is_audited(shop, owner_engine):
    client = shop["client"]
    pi = shop["paid"][2]
    done = client.submit(
        f"/merchant/payments/{pi}/refund",
        {"amount": "10.00", "reason": "requested_by_customer"},
        form_page=f"/merchant/payments/{pi}",
        follow_redirects=True,
    )
    html = done.get_data(as_text=True)
    assert "Refund of 10.00 USD: succeeded." in html
    too_much = client.submit(
        f"/merchant/payments/{pi}/refund",
        {"amount": "25.00"},
        form_page=f"/merchant/payments/{pi}",
        follow_redirects=True,
    )
    assert "greater than unrefunded amount" in too_much.get_data(as_text=True)
    with owner_engine.connect() as conn:
        event = conn.execute(sa.select(AuditEvent).where(AuditEvent.action == "payment.refunded")).one()
    assert event.actor_email == "owner@coffee.example.com" and event.changes["amount"] == {"after": 1000}


def test_other_merchants_payments_are_not_found_and_staff_cannot_refund(shop, site):
    client = shop["client"]
    assert client.get(f"/merchant/payments/{shop['theirs']}").status_code == 404
    staff = site("acme.localhost")
    staff.login("staff@coffee.example.com")
    assert staff.get(f"/merchant/payments/{shop['paid'][0]}").status_code == 200
    token_page = f"/merchant/payments/{shop['paid'][0]}"
    assert staff.submit(f"{token_page}/refund", {"amount": "1.00"}, form_page=token_page).status_code == 403
