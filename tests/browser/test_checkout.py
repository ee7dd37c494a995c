"""A payer pays a PaymentIntent on the hosted checkout, on a phone-sized screen, in Chromium: with the
sandbox's test cards, and with a card typed into Stripe.js as localstripe serves it (the card goes to
the channel, only its id to the platform)."""

from __future__ import annotations

import sqlalchemy as sa
from playwright.sync_api import expect
from test_channels_stripe import localstripe  # noqa: F401  (the fixture: localstripe as a subprocess)

from core.db import db
from payments import intents
from tenants.isolation import tenant_context
from tests.browser.conftest import fits_the_screen


def _intent(app, tenant_id, merchant_id, amount: int, description: str | None) -> tuple[str, str]:
    with app.app_context(), tenant_context(db.session, tenant_id):
        pi = intents.create(
            intents.MerchantContext(tenant_id, merchant_id, livemode=False),
            amount=amount,
            currency="usd",
            description=description,
        )
        found = pi.id, pi.client_secret
        db.session.remove()
    return found


def _status(owner_engine, intent_id: str) -> tuple[str, int]:
    with owner_engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text("SELECT status, amount_received FROM payment_intents WHERE id = :i"), {"i": intent_id}
            ).one()
        )


def test_a_payer_pays_with_a_sandbox_test_card_on_a_phone(app, make, live_server, phone, artifacts, owner_engine):
    tenant = make.tenant("acme", name="Acme Pay")
    merchant = make.merchant(tenant, "Corner Cafe", "owner@corner.example.com")
    make.channel_account(tenant.id)
    intent_id, secret = _intent(app, tenant.id, merchant, 1850, "Two flat whites")

    phone.goto(live_server.url(tenant.host, f"/checkout/{intent_id}?client_secret={secret}"))
    expect(phone.locator("#co-merchant")).to_have_text("Corner Cafe")
    expect(phone.locator("#co-total")).to_have_text("18.50 USD")
    expect(phone.locator("#co-lines")).to_contain_text("Two flat whites")
    expect(phone.locator("#co-methods")).to_contain_text("Card")
    assert fits_the_screen(phone)
    phone.screenshot(path=str(artifacts / "checkout-sandbox-phone.png"), full_page=True)

    # A decline first: the payer reads why and tries another card.
    phone.get_by_label("Test card — declined (insufficient funds)").check()
    phone.get_by_role("button", name="Pay 18.50 USD").click()
    expect(phone.locator("#co-decline")).to_have_text("Your card has insufficient funds. Try another card.")
    phone.screenshot(path=str(artifacts / "checkout-sandbox-declined-phone.png"), full_page=True)

    phone.get_by_label("Visa test card — succeeds").check()
    phone.get_by_role("button", name="Pay 18.50 USD").click()
    expect(phone.locator("#co-result-title")).to_have_text("Payment successful")
    expect(phone.locator("#co-paid-amount")).to_have_text("18.50 USD")
    expect(phone.locator("#co-reference")).to_have_text(intent_id)
    assert fits_the_screen(phone)
    phone.screenshot(path=str(artifacts / "checkout-sandbox-paid-phone.png"), full_page=True)
    assert _status(owner_engine, intent_id) == ("succeeded", 1850)


def test_a_payer_waits_on_the_confirming_page_until_the_channel_answers(
    app, make, live_server, phone, artifacts, owner_engine, run_jobs
):
    tenant = make.tenant("acme", name="Acme Pay")
    merchant = make.merchant(tenant, "Corner Cafe", "owner@corner.example.com")
    make.channel_account(tenant.id)
    intent_id, secret = _intent(app, tenant.id, merchant, 4001, "A slow coffee")  # the sandbox times out

    phone.goto(live_server.url(tenant.host, f"/checkout/{intent_id}?client_secret={secret}"))
    phone.get_by_label("Visa test card — succeeds").check()
    phone.get_by_role("button", name="Pay 40.01 USD").click()
    expect(phone.get_by_role("heading", name="We are confirming your payment")).to_be_visible()
    phone.screenshot(path=str(artifacts / "checkout-confirming-phone.png"), full_page=True)
    assert run_jobs() == 1  # the channel is asked what became of the charge
    # The page asks for the status by itself and shows the outcome.
    expect(phone.locator("#co-result-title")).to_have_text("Payment successful", timeout=20_000)
    assert _status(owner_engine, intent_id) == ("succeeded", 4001)


def test_a_payer_pays_by_card_through_stripe_js_on_a_phone(
    app,
    make,
    live_server,
    phone,
    artifacts,
    owner_engine,
    localstripe,  # noqa: F811
):
    tenant = make.tenant("acme", name="Acme Pay")
    merchant = make.merchant(tenant, "Corner Cafe", "owner@corner.example.com")
    make.channel_account(
        tenant.id,
        name="Stripe",
        type="stripe",
        base_url=localstripe.url,
        credentials={"secret_key": "sk_test_checkoutBrowser0123456789"},
        settings={"publishable_key": "pk_test_checkoutBrowser0123456789", "test_instruments": "localstripe"},
    )
    # No description: localstripe refuses one (see "What localstripe lacks" in payments/channels/stripe.py).
    intent_id, secret = _intent(app, tenant.id, merchant, 2400, None)
    seen = []
    phone.on("request", lambda request: seen.append((request.url, request.post_data or "")))

    phone.goto(live_server.url(tenant.host, f"/checkout/{intent_id}?client_secret={secret}"))
    card = phone.locator("#card-element")
    card.get_by_placeholder("number").fill("4242424242424242")
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("34")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("75001")
    assert fits_the_screen(phone)
    phone.screenshot(path=str(artifacts / "checkout-stripe-phone.png"), full_page=True)
    phone.get_by_role("button", name="Pay 24.00 USD").click()
    expect(phone.locator("#co-result-title")).to_have_text("Payment successful")
    phone.screenshot(path=str(artifacts / "checkout-stripe-paid-phone.png"), full_page=True)

    assert _status(owner_engine, intent_id) == ("succeeded", 2400)
    # The card number went to the channel (localstripe), never to the platform.
    to_platform = [data for url, data in seen if url.startswith(live_server.url(tenant.host, "/"))]
    to_channel = [data for url, data in seen if url.startswith(localstripe.url)]
    assert any("4242424242424242" in data for data in to_channel)
    assert to_platform and not any("4242" in data for data in to_platform)
    posted = next(data for data in to_platform if "payment_method=" in data)
    assert "payment_method=card_" in posted or "payment_method=pm_" in posted
