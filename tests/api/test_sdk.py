"""The merchant API through Stripe's official Python SDK, changed only in its base URL."""

from __future__ import annotations

import httpx
import pytest
import stripe

from core.db import db
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import tenant_context


def _visa(client, amount=2000, **extra):
    return client.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True, **extra}
    )


def test_create_and_confirm_with_a_test_card_succeeds(stripe_client):
    pi = _visa(stripe_client, description="Order 6735")
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == ("succeeded", 2000, 2000, "usd")
    assert pi.id.startswith("pi_") and pi.livemode is False and pi.payment_method_types == ["card"]
    assert pi.description == "Order 6735" and pi.latest_charge

    # Created first, confirmed later: the same outcome.
    later = stripe_client.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    assert later.status == "requires_payment_method"
    confirmed = stripe_client.v1.payment_intents.confirm(later.id, {"payment_method": "pm_card_mastercard"})
    assert confirmed.status == "succeeded" and confirmed.amount_received == 1500
    assert stripe_client.v1.payment_intents.retrieve(later.id).status == "succeeded"


def test_manual_capture_partial_refund_and_the_balance(stripe_client):
    pi = _visa(stripe_client, amount=5000, capture_method="manual")
    assert (pi.status, pi.amount_capturable) == ("requires_capture", 5000)
    assert stripe_client.v1.balance.retrieve().pending == []

    pi = stripe_client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 4000})
    assert (pi.status, pi.amount_received, pi.amount_capturable) == ("succeeded", 4000, 0)

    refund = stripe_client.v1.refunds.create(
        {"payment_intent": pi.id, "amount": 1500, "reason": "requested_by_customer"}
    )
    assert isinstance(refund, stripe.Refund)
    assert (refund.status, refund.amount, refund.payment_intent) == ("succeeded", 1500, pi.id)
    assert stripe_client.v1.refunds.retrieve(refund.id).amount == 1500
    assert stripe_client.v1.payment_intents.retrieve(pi.id).amount_refunded == 1500
    listed = stripe_client.v1.refunds.list({"payment_intent": pi.id})
    assert [r.id for r in listed.data] == [refund.id]

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        stripe_client.v1.refunds.create({"payment_intent": pi.id, "amount": 3000})
    assert too_much.value.code == "amount_too_large" and too_much.value.param == "amount"

    balance = stripe_client.v1.balance.retrieve()
    assert isinstance(balance, stripe.Balance) and balance.livemode is False
    # What was captured minus what was refunded is pending for the merchant.
    assert [(b.amount, b.currency) for b in balance.pending] == [(4000 - 1500, "usd")]


def test_cancel_releases_an_authorisation(stripe_client):
    pi = _visa(stripe_client, amount=3000, capture_method="manual")
    canceled = stripe_client.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason, canceled.amount_capturable) == ("canceled", "abandoned", 0)
    assert canceled.canceled_at is not None
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.payment_intents.capture(pi.id)
    assert again.value.code == "payment_intent_unexpected_state"


def test_lists_page_newest_first_over_25_intents(stripe_client):
    created = [stripe_client.v1.payment_intents.create({"amount": 100 + i, "currency": "usd"}).id for i in range(25)]
    newest_first = created[::-1]

    first = stripe_client.v1.payment_intents.list({"limit": 10})
    assert first.object == "list" and first.url == "/v1/payment_intents" and first.has_more is True
    assert [pi.id for pi in first.data] == newest_first[:10]
    second = stripe_client.v1.payment_intents.list({"limit": 10, "starting_after": first.data[-1].id})
    assert [pi.id for pi in second.data] == newest_first[10:20] and second.has_more is True
    third = stripe_client.v1.payment_intents.list({"limit": 10, "starting_after": second.data[-1].id})
    assert [pi.id for pi in third.data] == newest_first[20:] and third.has_more is False
    # Back towards newer objects: the page before the second one is the first one.
    back = stripe_client.v1.payment_intents.list({"limit": 10, "ending_before": second.data[0].id})
    assert [pi.id for pi in back.data] == newest_first[:10] and back.has_more is False

    assert [pi.id for pi in first.auto_paging_iter()] == newest_first
    assert [pi.id for pi in stripe_client.v1.payment_intents.list({"limit": 7}).auto_paging_iter()] == newest_first

    recent = stripe_client.v1.payment_intents.list({"limit": 100, "created": {"gte": first.data[-1].created}})
    assert {pi.id for pi in recent.data} >= set(newest_first[:10])
    assert stripe_client.v1.payment_intents.list({"created": {"lt": first.data[-1].created - 3600}}).data == []

    with pytest.raises(stripe.InvalidRequestError) as too_many:
        stripe_client.v1.payment_intents.list({"limit": 101})
    assert too_many.value.param == "limit"


def test_events_show_what_happened(stripe_client):
    pi = _visa(stripe_client)
    succeeded = stripe_client.v1.events.list({"type": "payment_intent.succeeded"})
    assert [e.type for e in succeeded.data] == ["payment_intent.succeeded"]
    event = succeeded.data[0]
    assert isinstance(event, stripe.Event) and event.id.startswith("evt_") and event.livemode is False
    assert event.data.object.id == pi.id and event.data.object.status == "succeeded"
    assert stripe_client.v1.events.retrieve(event.id).type == "payment_intent.succeeded"

    everything = stripe_client.v1.events.list({"type": "payment_intent.*"})
    assert [e.type for e in everything.data] == ["payment_intent.succeeded", "payment_intent.created"]
    assert stripe_client.v1.events.list({"type": "refund.created"}).data == []


def test_a_declined_card_is_a_card_error_with_its_decline_code(stripe_client):
    with pytest.raises(stripe.CardError) as declined:
        _visa(stripe_client, payment_method="pm_card_chargeDeclinedInsufficientFunds")
    error = declined.value
    assert error.http_status == 402 and error.code == "card_declined" and error.param == "payment_method"
    assert error.error.decline_code == "insufficient_funds"
    intent = error.error.payment_intent
    assert intent.status == "requires_payment_method" and intent.last_payment_error.code == "card_declined"
    # The payer tries another card on the same PaymentIntent.
    assert stripe_client.v1.payment_intents.confirm(intent.id, {"payment_method": "pm_card_visa"}).status == "succeeded"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"amount": -5, "currency": "usd"}, "amount", "amount_too_small"),
        ({"amount": "12.50", "currency": "usd"}, "amount", "parameter_invalid_integer"),
        ({"amount": 100, "currency": "xyz"}, "currency", "parameter_invalid"),
        ({"amount": 100}, "currency", "parameter_missing"),
        ({"amount": 100, "currency": "usd", "shoe_size": 42}, "shoe_size", "parameter_unknown"),
        ({"amount": 100, "currency": "usd", "automatic_payment_methods": {"on": True}}, None, "parameter_unknown"),
        ({"amount": 100, "currency": "usd", "capture_method": "later"}, "capture_method", None),
        ({"amount": 100, "currency": "usd", "confirm": "yes"}, "confirm", None),
        ({"amount": 100, "currency": "usd", "expand": ["latest_charge"]}, "expand", None),
    ],
)
def test_bad_parameters_are_invalid_request_errors_naming_the_parameter(stripe_client, params, param, code):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.payment_intents.create(params)
    error = refused.value
    assert error.http_status == 400 and error.error.type == "invalid_request_error"
    assert error.param == (param or "automatic_payment_methods[on]") and error.code == code
    if code == "parameter_unknown":
        assert f"Received unknown parameter: {error.param}" in error.user_message


def test_unknown_ids_are_404_resource_missing(stripe_client):
    for call, kind in (
        (lambda: stripe_client.v1.payment_intents.retrieve("pi_doesnotexist"), "payment_intent"),
        (lambda: stripe_client.v1.payment_intents.capture("pi_doesnotexist"), "payment_intent"),
        (lambda: stripe_client.v1.refunds.retrieve("re_doesnotexist"), "refund"),
        (lambda: stripe_client.v1.refunds.create({"payment_intent": "pi_doesnotexist"}), "payment_intent"),
        (lambda: stripe_client.v1.events.retrieve("evt_doesnotexist"), "event"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            call()
        assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
        assert f"No such {kind}" in missing.value.user_message


def test_without_a_valid_key_nothing_is_answered(app, sdk, shop, api_server):
    with pytest.raises(stripe.AuthenticationError) as wrong:
        sdk("sk_test_" + "x" * 36 + "abcd").v1.payment_intents.list()
    assert wrong.value.http_status == 401
    assert wrong.value.user_message == "Invalid API Key provided: sk_test_****abcd"

    with httpx.Client(base_url=api_server) as anonymous:
        response = anonymous.get("/v1/payment_intents")
        assert response.status_code == 401 and response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "You did not provide an API key" in response.json()["error"]["message"]
        # A publishable-looking or garbage key is refused and shown masked, never in full.
        response = anonymous.get("/v1/balance", headers={"Authorization": "Bearer pk_test_short"})
        assert response.status_code == 401 and "pk_test_short" not in response.text
        # HTTP Basic with the key as the user name, as curl -u sk_test_...: sends it.
        assert anonymous.get("/v1/balance", auth=(shop.secret, "")).status_code == 200

    with app.app_context():
        key = api_keys.authenticate(shop.tenant_id, shop.secret)
        api_keys.revoke_key(key, Actor.system())
    with pytest.raises(stripe.AuthenticationError):
        sdk(shop.secret).v1.balance.retrieve()


def test_metadata_round_trip(stripe_client):
    pi = stripe_client.v1.payment_intents.create(
        {"amount": 900, "currency": "usd", "metadata": {"order_id": "6735", "channel": "web"}}
    )
    assert pi.metadata.to_dict() == {"order_id": "6735", "channel": "web"}
    # Given keys are set, a key set to "" is removed, others stay.
    pi = stripe_client.v1.payment_intents.update(pi.id, {"metadata": {"channel": "", "customer": "c_42"}})
    assert pi.metadata.to_dict() == {"order_id": "6735", "customer": "c_42"}
    assert stripe_client.v1.payment_intents.retrieve(pi.id).metadata.to_dict() == pi.metadata.to_dict()
    pi = stripe_client.v1.payment_intents.update(pi.id, {"metadata": "", "description": "Gift"})
    assert pi.metadata.to_dict() == {} and pi.description == "Gift"
    # After the payment, metadata and description still change; what was charged does not.
    paid = _visa(stripe_client, metadata={"order_id": "1"})
    paid = stripe_client.v1.payment_intents.update(paid.id, {"metadata": {"shipped": "yes"}})
    assert paid.status == "succeeded" and paid.metadata.to_dict() == {"order_id": "1", "shipped": "yes"}
    with pytest.raises(stripe.InvalidRequestError) as frozen:
        stripe_client.v1.payment_intents.update(paid.id, {"amount": 1})
    assert frozen.value.code == "payment_intent_unexpected_state" and frozen.value.param == "amount"
    refund = stripe_client.v1.refunds.create({"payment_intent": paid.id, "metadata": {"ticket": "T-9"}})
    assert refund.metadata.to_dict() == {"ticket": "T-9"} and refund.amount == 2000


def test_test_payment_methods_are_refused_in_live_mode(app, sdk, shop, issue_key):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        create_channel_account(
            shop.tenant_id,
            ChannelAccountInput(name="Live cards", type="sandbox", mode="live", currency="USD", products=["card"]),
            {"card"},
            Actor.system(),
        )
        db.session.remove()
    live = sdk(issue_key(shop, "live"))
    pi = live.v1.payment_intents.create({"amount": 2000, "currency": "usd"})
    assert pi.livemode is True and pi.status == "requires_payment_method"
    for call in (
        lambda: live.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"}),
        lambda: live.v1.payment_intents.update(pi.id, {"payment_method": "pm_card_chargeDeclined"}),
        lambda: live.v1.payment_intents.create(
            {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        ),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            call()
        assert refused.value.http_status == 400 and refused.value.param == "payment_method"
        assert "Test payment methods cannot be used in live mode" in refused.value.user_message
    # Nothing was charged, nothing was created.
    assert live.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"
    assert [p.id for p in live.v1.payment_intents.list().data] == [pi.id]
