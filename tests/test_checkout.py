"""The hosted checkout of a PaymentIntent: what a payer sees on the tenant's host, and paying it."""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from pages import body, signed_in, table, text

import ledger
from core.db import db
from payments import intents
from payments.models import PaymentAttempt
from tenants.isolation import platform_scope, tenant_context

OWNER = "owner@corner.example.com"


@pytest.fixture
def shop(app, make):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    channel = make.channel_account(tenant.id, costs={"card": {"percent": "2.9", "fixed": 30}})
    return {"tenant": tenant, "merchant": merchant, "channel": channel}


def new_intent(app, shop, amount=1234, currency="usd", **fields) -> tuple[str, str]:
    """A PaymentIntent of the shop's merchant awaiting a payment method: (id, client secret)."""
    tenant = shop["tenant"]
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, shop["merchant"], livemode=False)
        pi = intents.create(ctx, amount=amount, currency=currency, **fields)
        found = pi.id, pi.client_secret
        db.session.remove()
    return found


def checkout_url(intent_id: str, secret: str) -> str:
    return f"/checkout/{intent_id}?client_secret={secret}"


def pay(client, intent_id: str, secret: str, method: str, form_page: str | None = None):
    """Post the checkout's form (with the CSRF token of the checkout page, or of `form_page`)."""
    return client.submit(
        f"/checkout/{intent_id}",
        {"client_secret": secret, "payment_method": method},
        form_page=form_page or checkout_url(intent_id, secret),
    )


def intent_row(owner_engine, intent_id: str):
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT status, amount_received, last_payment_error FROM payment_intents WHERE id = :i"),
            {"i": intent_id},
        ).one()


def charges(owner_engine, intent_id: str) -> list[str]:
    """The statuses of the intent's charge attempts (each one a call to the channel)."""
    with owner_engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT status FROM payment_attempts WHERE payment_intent_id = :i AND kind = 'charge' "
                    "ORDER BY created_at"
                ),
                {"i": intent_id},
            ).scalars()
        )


def captured_entries(owner_engine, intent_id: str) -> int:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'payment.captured' AND reference = :i"),
            {"i": intent_id},
        ).scalar_one()


def ledger_ok(app) -> list:
    with app.app_context(), platform_scope(db.session):
        problems = ledger.check(db.session)
        db.session.remove()
    return problems


# --- the page ------------------------------------------------------------------------------


def test_the_page_shows_the_merchant_the_order_and_the_amount_from_minor_units(app, shop, site):
    intent_id, secret = new_intent(app, shop, amount=123456789, description="Flat white and a croissant")
    response = site(shop["tenant"].host).get(checkout_url(intent_id, secret))
    assert response.status_code == 200
    html = body(response)
    assert "Corner Cafe" in html and "Acme Payments" in html
    lines = text(re.search(r'<table class="co-lines" id="co-lines">(.*?)</table>', html, re.S).group(1))
    assert "Flat white and a croissant 1 1,234,567.89 USD" in lines
    assert "Total 1,234,567.89 USD" in lines
    assert "Pay 1,234,567.89 USD" in text(html)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_without_a_description_the_line_names_the_merchant_and_zero_decimal_currencies_stay_whole(
    app, make, shop, site
):
    make.channel_account(shop["tenant"].id, name="Yen sandbox", currency="JPY")
    intent_id, secret = new_intent(app, shop, amount=1000, currency="jpy")
    html = body(site(shop["tenant"].host).get(checkout_url(intent_id, secret)))
    lines = text(re.search(r'id="co-lines">(.*?)</table>', html, re.S).group(1))
    assert "Corner Cafe 1 1,000 JPY" in lines and "10.00" not in lines


def test_the_sandbox_offers_its_test_cards_and_no_card_number_field(app, shop, site):
    intent_id, secret = new_intent(app, shop)
    html = body(site(shop["tenant"].host).get(checkout_url(intent_id, secret)))
    methods = re.findall(r'name="payment_method" value="([^"]+)"', html)
    assert "pm_card_visa" in methods
    assert "pm_card_chargeDeclined" in methods and "pm_card_chargeDeclinedInsufficientFunds" in methods
    assert 'data-method="card"' in html
    # Nothing a card number could be typed into, and nothing of the channel's secrets.
    assert not re.search(r'name="(card|number|cardnumber|cvc)', html)
    assert "Test mode" in html


def test_the_methods_offered_follow_what_the_channels_can_take_for_the_amount(app, make, site, owner_engine):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    make.channel_account(tenant.id, daily_cap=3000)
    shop = {"tenant": tenant, "merchant": merchant}
    first, first_secret = new_intent(app, shop, amount=2000)
    big, big_secret = new_intent(app, shop, amount=2000)
    small, small_secret = new_intent(app, shop, amount=500)
    client = site(tenant.host)
    assert pay(client, first, first_secret, "pm_card_visa").status_code == 302
    # The channel has 1000 left of its daily cap: no card for 20.00, a card for 5.00.
    html = body(client.get(checkout_url(big, big_secret)))
    assert "No payment method can take this payment right now" in html
    assert 'id="co-form"' not in html
    html = body(client.get(checkout_url(small, small_secret)))
    assert 'data-method="card"' in html and 'id="co-form"' in html
    # And a payment the page does not offer is refused if posted anyway: nothing is charged.
    response = pay(client, big, big_secret, "pm_card_visa", form_page="/login")
    assert response.status_code == 422
    assert "No payment method can take this payment right now" in body(response)
    assert intent_row(owner_engine, big).status == "requires_payment_method"
    assert charges(owner_engine, big) == []


# --- who may open it -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing", "wrong", "another intent's", "almost"])
def test_a_wrong_or_missing_secret_is_a_404_naming_nothing(app, shop, site, which):
    intent_id, secret = new_intent(app, shop, description="Flat white")
    _, other_secret = new_intent(app, shop)
    given = {"missing": "", "wrong": "pi_x_secret_y", "another intent's": other_secret, "almost": secret[:-1]}[which]
    client = site(shop["tenant"].host)
    for path in (checkout_url(intent_id, given), f"/checkout/{intent_id}/status?client_secret={given}"):
        response = client.get(path)
        assert response.status_code == 404
        html = body(response)
        assert "Corner Cafe" not in html and "Flat white" not in html and "12.34" not in html
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/checkout/pi_nothing?client_secret=pi_nothing_secret_x").status_code == 404


def test_a_wrong_secret_cannot_pay(app, shop, site, owner_engine):
    intent_id, _ = new_intent(app, shop)
    client = site(shop["tenant"].host)
    response = client.submit(
        f"/checkout/{intent_id}", {"client_secret": "pi_x_secret_y", "payment_method": "pm_card_visa"}, "/login"
    )
    assert response.status_code == 404
    assert charges(owner_engine, intent_id) == []


def test_another_tenants_host_and_the_platform_host_answer_404(app, make, shop, site):
    make.tenant("beta", name="Beta Payments")
    intent_id, secret = new_intent(app, shop)
    for host in ("beta.localhost", "localhost"):
        response = site(host).get(checkout_url(intent_id, secret))
        assert response.status_code == 404, host
        assert "Corner Cafe" not in body(response)
    assert site(shop["tenant"].host).get(checkout_url(intent_id, secret)).status_code == 200


def test_paying_needs_the_forms_csrf_token(app, shop, site, owner_engine):
    intent_id, secret = new_intent(app, shop)
    client = site(shop["tenant"].host)
    response = client.post(f"/checkout/{intent_id}", data={"client_secret": secret, "payment_method": "pm_card_visa"})
    assert response.status_code == 400
    assert charges(owner_engine, intent_id) == []


# --- paying --------------------------------------------------------------------------------


def test_paying_with_the_sandbox_succeeds_posts_to_the_ledger_and_shows_in_the_merchants_list(
    app, shop, site, owner_engine
):
    intent_id, secret = new_intent(app, shop, amount=2500, description="Two flat whites")
    client = site(shop["tenant"].host)
    response = pay(client, intent_id, secret, "pm_card_visa")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == f"/checkout/{intent_id}"
    assert intent_row(owner_engine, intent_id)[:2] == ("succeeded", 2500)
    assert captured_entries(owner_engine, intent_id) == 1 and ledger_ok(app) == []

    result = client.get(response.headers["Location"])
    page = text(body(result))
    assert "Payment successful" in page
    assert "Amount 25.00 USD" in page and "Paid to Corner Cafe" in page and f"Reference {intent_id}" in page
    assert 'id="co-form"' not in body(result)
    assert result.headers["Cache-Control"] == "no-store"

    merchant = signed_in(site, shop["tenant"], OWNER)
    listed = text(table(body(merchant.get("/merchant/payments")), "payment-list"))
    assert intent_id in listed or "Two flat whites" in listed
    assert "25.00" in listed


def test_a_decline_is_explained_and_the_payer_can_try_again(app, shop, site, owner_engine):
    intent_id, secret = new_intent(app, shop)
    client = site(shop["tenant"].host)
    response = pay(client, intent_id, secret, "pm_card_chargeDeclinedInsufficientFunds")
    assert response.status_code == 302
    html = body(client.get(response.headers["Location"]))
    assert "Your card has insufficient funds. Try another card." in text(html)
    assert 'id="co-form"' in html
    assert intent_row(owner_engine, intent_id).status == "requires_payment_method"
    assert captured_entries(owner_engine, intent_id) == 0

    response = pay(client, intent_id, secret, "pm_card_visa")
    assert response.status_code == 302
    assert "Payment successful" in text(body(client.get(response.headers["Location"])))
    assert charges(owner_engine, intent_id) == ["declined", "succeeded"]
    assert captured_entries(owner_engine, intent_id) == 1 and ledger_ok(app) == []


def test_no_payment_method_chosen_keeps_the_form_with_the_error_next_to_it(app, shop, site, owner_engine):
    intent_id, secret = new_intent(app, shop)
    client = site(shop["tenant"].host)
    response = pay(client, intent_id, secret, "")
    assert response.status_code == 422
    html = body(response)
    assert 'id="payment_method-error"' in html and "Choose how to pay." in html
    response = pay(client, intent_id, secret, "pm_card_nonsense")
    assert response.status_code == 422
    html = body(response)
    assert "This payment method cannot be used for this payment." in html
    assert "Corner Cafe" in html
    assert intent_row(owner_engine, intent_id).status == "requires_payment_method"
    assert captured_entries(owner_engine, intent_id) == 0


def test_a_second_submission_after_paying_charges_nothing_more(app, shop, site, owner_engine):
    intent_id, secret = new_intent(app, shop)
    client = site(shop["tenant"].host)
    assert pay(client, intent_id, secret, "pm_card_visa").status_code == 302
    # The same form posted again (the page it came from is no longer a form).
    response = pay(client, intent_id, secret, "pm_card_visa", form_page="/login")
    assert response.status_code == 302
    assert "Payment successful" in text(body(client.get(response.headers["Location"])))
    assert charges(owner_engine, intent_id) == ["succeeded"]
    assert captured_entries(owner_engine, intent_id) == 1


def test_a_double_click_charges_once(app, make, site, owner_engine):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    # A slow channel: the second click arrives while the first is still at the channel.
    make.channel_account(tenant.id, settings={"latency_ms": 400})
    intent_id, secret = new_intent(app, {"tenant": tenant, "merchant": merchant})
    client = site(tenant.host)
    token = client.csrf_token(checkout_url(intent_id, secret))
    barrier = threading.Barrier(2)
    answers = []

    def click():
        barrier.wait(timeout=10)
        response = client.post(
            f"/checkout/{intent_id}",
            data={"csrf_token": token, "client_secret": secret, "payment_method": "pm_card_visa"},
        )
        answers.append(response.status_code)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [302, 302]
    assert charges(owner_engine, intent_id) == ["succeeded"]
    assert captured_entries(owner_engine, intent_id) == 1 and ledger_ok(app) == []
    assert "Payment successful" in text(body(client.get(checkout_url(intent_id, secret))))


def test_a_channel_timeout_shows_the_confirming_page_until_the_outcome_is_known(
    app, shop, site, owner_engine, run_jobs
):
    intent_id, secret = new_intent(app, shop, amount=4001)  # the sandbox times out, having charged
    client = site(shop["tenant"].host)
    response = pay(client, intent_id, secret, "pm_card_visa")
    assert response.status_code == 302
    html = body(client.get(response.headers["Location"]))
    assert "We are confirming your payment" in html and 'id="co-form"' not in html
    status_url = f"/checkout/{intent_id}/status?client_secret={secret}"
    assert client.get(status_url).get_json() == {"status": "processing"}
    # Paying again while it is processing charges nothing more.
    assert pay(client, intent_id, secret, "pm_card_visa", form_page="/login").status_code == 302
    assert charges(owner_engine, intent_id) == ["unknown"]

    assert run_jobs() == 1  # the channel is asked what became of the charge
    assert client.get(status_url).get_json() == {"status": "succeeded"}
    assert "Payment successful" in text(body(client.get(checkout_url(intent_id, secret))))
    assert captured_entries(owner_engine, intent_id) == 1 and ledger_ok(app) == []


def test_a_canceled_intent_shows_the_result_instead_of_a_form(app, shop, site):
    intent_id, secret = new_intent(app, shop)
    with app.app_context(), tenant_context(db.session, shop["tenant"].id):
        intents.cancel(intents.MerchantContext(shop["tenant"].id, shop["merchant"], False), intent_id)
        db.session.remove()
    html = body(site(shop["tenant"].host).get(checkout_url(intent_id, secret)))
    assert "Payment canceled" in html and 'id="co-form"' not in html


# --- a Stripe channel ----------------------------------------------------------------------


def test_a_stripe_channel_takes_the_card_in_stripe_js_with_the_publishable_key_only(app, make, site):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    make.channel_account(
        tenant.id,
        name="Stripe",
        type="stripe",
        base_url="http://127.0.0.1:9",
        credentials={"secret_key": "sk_test_checkoutSecret0123456789", "webhook_secret": "whsec_checkout0123"},
        settings={"publishable_key": "pk_test_checkoutPublic0123456789"},
    )
    intent_id, secret = new_intent(app, {"tenant": tenant, "merchant": merchant})
    html = body(site(tenant.host).get(checkout_url(intent_id, secret)))
    assert '<script src="http://127.0.0.1:9/js.stripe.com/v3/"></script>' in html
    assert 'data-publishable-key="pk_test_checkoutPublic0123456789"' in html
    assert 'id="card-element"' in html and 'name="payment_method" value=""' in html
    assert "sk_test_" not in html and "whsec_" not in html
    assert "pm_card_visa" not in html  # no test-card picker: the channel's own form takes the card


def test_a_stripe_channel_without_a_publishable_key_offers_no_card(app, make, site):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    make.channel_account(
        tenant.id, name="Stripe", type="stripe", base_url="http://127.0.0.1:9", credentials={"secret_key": "sk_test_x1"}
    )
    intent_id, secret = new_intent(app, {"tenant": tenant, "merchant": merchant})
    html = body(site(tenant.host).get(checkout_url(intent_id, secret)))
    assert "No payment method can take this payment right now" in html
    assert "js.stripe.com" not in html


@pytest.mark.parametrize(
    ("key", "mode", "problem"),
    [
        ("sk_test_notPublic012345", "test", "looks like pk_test_"),
        ("pk_live_livePublic012345", "test", "needs a pk_test_"),
    ],
)
def test_a_publishable_key_is_checked(app, make, key, mode, problem):
    from payments.channel_accounts import ChannelAccountInput, create_channel_account
    from tenants.audit import Actor
    from tenants.errors import InvalidInput

    tenant = make.tenant("acme")
    with app.app_context(), tenant_context(db.session, tenant.id):
        with pytest.raises(InvalidInput, match=problem):
            create_channel_account(
                tenant.id,
                ChannelAccountInput(
                    name="Stripe",
                    type="stripe",
                    mode=mode,
                    currency="USD",
                    products=["card"],
                    credentials={"secret_key": "sk_test_x1"},
                    settings={"publishable_key": key},
                ),
                {"card"},
                Actor.system(),
            )
        db.session.remove()


def test_the_payment_attempt_carries_the_amount_of_the_intent_not_of_the_browser(app, shop, site, owner_engine):
    intent_id, secret = new_intent(app, shop, amount=1234)
    client = site(shop["tenant"].host)
    response = client.submit(
        f"/checkout/{intent_id}",
        {"client_secret": secret, "payment_method": "pm_card_visa", "amount": "1", "currency": "jpy"},
        form_page=checkout_url(intent_id, secret),
    )
    assert response.status_code == 302
    with app.app_context(), tenant_context(db.session, shop["tenant"].id):
        attempt = db.session.execute(sa.select(PaymentAttempt)).scalar_one()
        assert (attempt.amount, attempt.request["currency"]) == (1234, "USD")
        db.session.remove()
    assert intent_row(owner_engine, intent_id)[:2] == ("succeeded", 1234)


def test_the_page_wears_the_tenants_theme_and_brand(app, make, site):
    tenant = make.tenant("night", theme="midnight", name="Night Pay")
    merchant = make.merchant(tenant, "Owl Books", "owner@owl.example.com")
    make.channel_account(tenant.id)
    intent_id, secret = new_intent(app, {"tenant": tenant, "merchant": merchant})
    html = body(site(tenant.host).get(checkout_url(intent_id, secret)))
    assert "/_theme/midnight/theme.css" in html and "/_theme/default/checkout.css" in html
    assert "Night Pay" in html and "Owl Books" in html
    assert re.search(r"--primary: #[0-9a-fA-F]{6}", html)
    # Payers get no portal navigation and no sign-in.
    assert 'class="sidebar"' not in html and "Sign out" not in html


def test_the_receipt_leads_back_to_the_merchant_when_it_gave_a_return_url(app, site, shop):
    back = "https://corner.example.com/thanks?order=7"
    intent_id, secret = new_intent(app, shop, return_url=back)
    client = site(shop["tenant"].host)
    paid = pay(client, intent_id, secret, "pm_card_visa")
    page = body(client.get(paid.headers["Location"]))
    assert re.search(r'<a [^>]*id="co-return"[^>]*href="https://corner.example.com/thanks\?order=7"', page)
    assert "Back to Corner Cafe" in text(page)
    plain_id, plain_secret = new_intent(app, shop)
    paid = pay(client, plain_id, plain_secret, "pm_card_visa")
    assert 'id="co-return"' not in body(client.get(paid.headers["Location"]))
