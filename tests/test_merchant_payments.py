"""Merchants see their payments: filters, pages, a timeline, and a refund button."""

import base64
import re
from datetime import UTC, datetime
from html import unescape

import pytest
import sqlalchemy as sa

from core.db import db
from payments import intents
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.errors import CardError
from payments.models import PaymentAttempt, PaymentIntent
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent, Tenant


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
        "merchant": merchant,
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


def _reference(owner_engine, pi):
    """The channel's reference for the payment's charge, as the channel answered it."""
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.select(PaymentAttempt.response["reference"].astext).where(
                PaymentAttempt.payment_intent_id == pi, PaymentAttempt.kind == "charge"
            )
        ).scalar_one()


def test_detail_shows_routing_and_timeline(app, shop, owner_engine):
    html = unescape(shop["client"].get(f"/merchant/payments/{shop['paid'][0]}").get_data(as_text=True))
    assert "10.00 USD" in html and "succeeded" in html
    assert "payment_intent.created" in html and "payment_intent.succeeded" in html
    assert "charge at Sandbox: succeeded" in html
    assert "Sent: card, 10.00 USD, capture automatic, to Sandbox" in html
    assert f"Answer: reference {_reference(owner_engine, shop['paid'][0])}, status succeeded" in html
    # Picked fields, not the channel's whole answer.
    assert "idempotency_key" not in html and "sandbox.charge" not in html
    assert 'id="routing-summary"' in html and "Sandbox" in html
    declined = unescape(shop["client"].get(f"/merchant/payments/{shop['declined']}").get_data(as_text=True))
    assert "Sent: card, 9.99 USD, capture automatic, to Sandbox" in declined
    assert (
        f"Answer: reference {_reference(owner_engine, shop['declined'])}, decline code generic_decline, "
        "error: channel 'Sandbox' (sandbox) declined the charge: Your card was declined." in declined
    )
    assert 'id="refund-form"' not in declined

    with app.app_context(), tenant_context(db.session, shop["tenant"].id):
        ctx = intents.MerchantContext(shop["tenant"].id, shop["merchant"], False)
        held = intents.create(
            ctx, amount=700, currency="usd", payment_method="pm_card_visa", capture_method="manual", confirm=True
        ).id
        intents.capture(ctx, held)
        db.session.remove()
    captured = unescape(shop["client"].get(f"/merchant/payments/{held}").get_data(as_text=True))
    assert "Sent: card, 7.00 USD, capture manual, to Sandbox" in captured
    assert "capture at Sandbox: succeeded" in captured and "Sent: 7.00 USD, to Sandbox" in captured


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


# --- pages -----------------------------------------------------------------------------------


def _older(html):
    link = re.search(r'href="([^"]+)">Older', html)
    return unescape(link.group(1)) if link else None


def _walk(client, url):
    """Every page from `url` on, following the Older links: the ids of each page."""
    pages = []
    while url:
        assert len(pages) < 10, "the Older links never end"
        html = client.get(url).get_data(as_text=True)
        pages.append(_ids(html))
        url = _older(html)
    return pages


def test_older_links_show_every_payment_exactly_once(app, shop, owner_engine):
    tenant = shop["tenant"]
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, shop["merchant"], False)
        unpaid = [intents.create(ctx, amount=100 + i, currency="usd").id for i in range(50)]
        db.session.remove()
    # One instant for all, so the pages are told apart by the `pi_...` ids alone.
    with owner_engine.begin() as conn:
        conn.execute(
            sa.update(PaymentIntent)
            .where(PaymentIntent.tenant_id == tenant.id)
            .values(created_at=datetime(2026, 3, 1, 12, tzinfo=UTC))
        )
    mine = {*shop["paid"], shop["declined"], *unpaid}

    pages = _walk(shop["client"], "/merchant/payments")
    assert [len(page) for page in pages] == [25, 25, 4]
    seen = [pi for page in pages for pi in page]
    assert len(seen) == len(set(seen)) and set(seen) == mine

    filtered = _walk(shop["client"], "/merchant/payments?status=requires_payment_method")
    assert [len(page) for page in filtered] == [25, 25, 1]
    assert {pi for page in filtered for pi in page} == {*unpaid, shop["declined"]}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbled!",
        base64.urlsafe_b64encode(b"not a date|pi_123").decode(),
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00+00:00").decode(),
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00+00:00|pi_\x00").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_an_unreadable_page_link_shows_the_newest_payments(shop, cursor):
    client = shop["client"]
    newest = _ids(client.get("/merchant/payments").get_data(as_text=True))
    answer = client.get("/merchant/payments", query_string={"after": cursor})
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "That page link could not be read; here are the newest payments." in html
    assert _ids(html) == newest


# --- days in the tenant's time zone ----------------------------------------------------------


def test_date_filters_are_the_tenants_calendar_days(shop, owner_engine):
    tenant = shop["tenant"]
    late, early = shop["paid"][0], shop["paid"][1]
    with owner_engine.begin() as conn:
        conn.execute(sa.update(Tenant).where(Tenant.id == tenant.id).values(time_zone="Asia/Shanghai"))
        # 23:30 on 9 March and 00:30 on 10 March in Shanghai (UTC+8); both on 9 March in UTC.
        for pi, at in (
            (early, datetime(2020, 3, 9, 15, 30, tzinfo=UTC)),
            (late, datetime(2020, 3, 9, 16, 30, tzinfo=UTC)),
        ):
            conn.execute(
                sa.update(PaymentIntent)
                .where(PaymentIntent.tenant_id == tenant.id, PaymentIntent.id == pi)
                .values(created_at=at)
            )
    client = shop["client"]
    assert _ids(client.get("/merchant/payments?from=2020-03-10&to=2020-03-10").get_data(as_text=True)) == [late]
    assert _ids(client.get("/merchant/payments?from=2020-03-09&to=2020-03-09").get_data(as_text=True)) == [early]
    assert _ids(client.get("/merchant/payments?to=2020-03-09").get_data(as_text=True)) == [early]
    html = client.get("/merchant/payments?from=2020-03-09&to=2020-03-10").get_data(as_text=True)
    assert _ids(html) == [late, early]
    assert "Created (Asia/Shanghai)" in html
    assert "2020-03-10 00:30" in html and "2020-03-09 23:30" in html
    detail = client.get(f"/merchant/payments/{late}").get_data(as_text=True)
    assert "Times in Asia/Shanghai." in detail


# --- what the filter form says ---------------------------------------------------------------


def _field_error(html, field):
    found = re.search(rf'<p id="{field}-error" class="error">(.*?)</p>', html)
    return unescape(found.group(1)) if found else None


def _typed(html, field):
    found = re.search(rf'<input id="{field}" name="{field}"[^>]* value="([^"]*)"', html)
    return unescape(found.group(1)) if found else None


def test_bad_filters_are_named_next_to_their_field_and_kept_as_typed(shop):
    client = shop["client"]
    everything = set(_ids(client.get("/merchant/payments").get_data(as_text=True)))
    answer = client.get("/merchant/payments?from=2026-13-45&to=yesterday&currency=usd&min=abc&max=12.505&q=+pi_x+")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert _field_error(html, "from") == "'2026-13-45' is not a date: use YYYY-MM-DD, for example 2026-03-31."
    assert _field_error(html, "to") == "'yesterday' is not a date: use YYYY-MM-DD, for example 2026-03-31."
    assert _field_error(html, "min") == "'abc' is not an amount."
    assert _field_error(html, "max") == "USD amounts have at most 2 decimals."
    assert 'aria-invalid="true" aria-describedby="min-error"' in html
    assert {field: _typed(html, field) for field in ("from", "to", "currency", "min", "max", "q")} == {
        "from": "2026-13-45",
        "to": "yesterday",
        "currency": "usd",
        "min": "abc",
        "max": "12.505",
        "q": " pi_x ",
    }
    assert "Some filters could not be used" in html

    no_currency = client.get("/merchant/payments?min=12.50").get_data(as_text=True)
    assert _field_error(no_currency, "min") == "Choose a currency to filter by amount."
    assert set(_ids(no_currency)) == everything
    assert "Needed to filter by amount." in no_currency

    unknown = client.get("/merchant/payments?currency=XYZ&min=1").get_data(as_text=True)
    assert _field_error(unknown, "currency").startswith("'XYZ' is not an ISO 4217 currency code")
    assert _field_error(unknown, "min") is None

    status = client.get("/merchant/payments?status=paid").get_data(as_text=True)
    assert _field_error(status, "status") == "'paid' is not a payment status."

    upside_down = client.get("/merchant/payments?from=2026-03-10&to=2026-03-09").get_data(as_text=True)
    assert _field_error(upside_down, "to") == "“To” is before “From”."

    fine = client.get("/merchant/payments?currency=USD&min=10&max=10.00&status=succeeded").get_data(as_text=True)
    assert _ids(fine) == [shop["paid"][0]] and "Some filters could not be used" not in fine
    assert _typed(fine, "max") == "10.00"
    assert '<option value="succeeded" selected>' in fine
