"""Payer elements through the merchant API (SPEC "Routing" rule 3): a channel account that requires
an element (an e-mail, a billing address, a terminal, ...) takes a payment only when the merchant
sent it, with Stripe's parameters (`receipt_email`, `payment_method_data[billing_details]`) or the
platform's `payer` object; without it the payment goes elsewhere, or is refused with a 400 that
names what to send, before any channel is called."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape

import httpx
import pytest
import sqlalchemy as sa
import stripe

from core.db import db
from payments.models import PaymentAttempt, PaymentIntent
from tenants import api_keys
from tenants.audit import Actor

CHEAP = {"card": {"percent": "1", "fixed": 0}}
DEAR = {"card": {"percent": "2.9", "fixed": 30}}
VISA = {"amount": "2000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}


@dataclass
class Merchant:
    http: httpx.Client
    secret: str
    channels: dict[str, uuid.UUID]


@pytest.fixture
def merchant(app, make, acme, api_server) -> Iterator:
    """`merchant(name=fields, ...)` -> a merchant of acme with an API key, the tenant having these
    USD sandbox channel accounts (cards unless the fields say otherwise)."""
    clients: list[httpx.Client] = []

    def build(**channels: dict) -> Merchant:
        ids = {name: make.channel_account(acme.id, name, **fields) for name, fields in channels.items()}
        merchant_id = make.merchant(acme, "Coffee", "owner@coffee.example.com")
        with app.app_context():
            _, secret = api_keys.create_key(acme.id, merchant_id, "test", "backend", Actor.system())
            db.session.remove()
        client = httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        clients.append(client)
        return Merchant(client, secret, ids)

    yield build
    for client in clients:
        client.close()


def _intent(owner_engine, intent_id: str) -> PaymentIntent:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(PaymentIntent).where(PaymentIntent.id == intent_id)).one()


def _attempts(owner_engine, intent_id: str) -> list:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(PaymentAttempt).where(PaymentAttempt.payment_intent_id == intent_id)).all()


def _verdict(intent, channel_id: uuid.UUID) -> dict:
    return next(v for v in intent.routing["verdicts"] if v["channel_id"] == str(channel_id))


def _error(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_channel_that_requires_an_email_takes_only_payments_that_carry_one(merchant, sdk, owner_engine):
    shop = merchant(Cheap={"costs": CHEAP, "required_elements": ["email"]}, Dear={"costs": DEAR})

    without = shop.http.post("/v1/payment_intents", data=VISA).json()
    assert without["status"] == "succeeded" and without["receipt_email"] is None
    intent = _intent(owner_engine, without["id"])
    assert intent.channel_account_id == shop.channels["Dear"]
    cheap = _verdict(intent, shop.channels["Cheap"])
    assert (cheap["kept"], cheap["reason"], cheap["missing_elements"]) == (False, "missing_elements", ["email"])
    assert "the payer has not given: E-mail" in cheap["sentence"]

    # Stripe's SDK, unchanged: receipt_email is Stripe's own parameter and field.
    client = sdk(shop.secret)
    paid = client.v1.payment_intents.create(
        {
            "amount": 2000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "receipt_email": "jenny.rosen@example.com",
        }
    )
    assert (paid.status, paid.receipt_email) == ("succeeded", "jenny.rosen@example.com")
    assert _intent(owner_engine, paid.id).channel_account_id == shop.channels["Cheap"]
    assert client.v1.payment_intents.retrieve(paid.id).receipt_email == "jenny.rosen@example.com"
    # The channel got the element it requires (the attempt records which, not the address itself).
    [attempt] = _attempts(owner_engine, paid.id)
    assert attempt.request["elements"] == ["email"] and "jenny" not in str(attempt.request)

    # The billing details' e-mail is an e-mail too.
    billed = shop.http.post(
        "/v1/payment_intents", data={**VISA, "payment_method_data[billing_details][email]": "jenny@example.com"}
    ).json()
    assert billed["status"] == "succeeded" and billed["receipt_email"] is None
    assert _intent(owner_engine, billed["id"]).channel_account_id == shop.channels["Cheap"]


def test_a_billing_address_comes_from_the_billing_details_never_from_shipping(merchant, owner_engine):
    shop = merchant(Strict={"costs": CHEAP, "required_elements": ["billing_address"]}, Dear={"costs": DEAR})
    address = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "us"}

    shipped = shop.http.post(
        "/v1/payment_intents",
        json={**VISA, "confirm": True, "shipping": {"name": "Jenny Rosen", "address": address}},
    ).json()
    assert shipped["status"] == "succeeded"
    assert shipped["shipping"]["address"] == {**address, "country": "US", "line2": None, "state": None}
    assert _intent(owner_engine, shipped["id"]).channel_account_id == shop.channels["Dear"]

    # A country alone is not an address to check a card against.
    partial = shop.http.post(
        "/v1/payment_intents", data={**VISA, "payment_method_data[billing_details][address][country]": "US"}
    ).json()
    assert _intent(owner_engine, partial["id"]).channel_account_id == shop.channels["Dear"]

    billed = shop.http.post(
        "/v1/payment_intents",
        data={
            **VISA,
            "payment_method_data[type]": "card",
            **{f"payment_method_data[billing_details][address][{key}]": value for key, value in address.items()},
        },
    ).json()
    assert billed["status"] == "succeeded"
    intent = _intent(owner_engine, billed["id"])
    assert intent.channel_account_id == shop.channels["Strict"]
    assert _verdict(intent, shop.channels["Strict"])["reason"] == "chosen"


def test_without_an_element_the_only_channel_requires_the_payment_is_refused_and_nothing_charged(
    merchant, owner_engine
):
    shop = merchant(Phone={"costs": CHEAP, "required_elements": ["phone"]})

    error = _error(shop.http.post("/v1/payment_intents", data=VISA))
    param = "payment_method_data[billing_details][phone]"
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "parameter_missing", param)
    assert "Phone" in error["message"] and param in error["message"] and "Nothing was charged" in error["message"]
    intent_id = error["payment_intent"]["id"]
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert _attempts(owner_engine, intent_id) == []
    intent = _intent(owner_engine, intent_id)
    assert intent.status == "requires_payment_method" and intent.last_payment_error["param"] == param
    assert shop.http.get("/v1/balance").json()["pending"] == []

    # The merchant adds the element, as the error says, and confirms again.
    updated = shop.http.post(f"/v1/payment_intents/{intent_id}", data={param: "+1 415 555 0100"})
    assert updated.status_code == 200, updated.text
    confirmed = shop.http.post(f"/v1/payment_intents/{intent_id}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded" and confirmed.json()["amount_received"] == 2000
    assert _intent(owner_engine, intent_id).channel_account_id == shop.channels["Phone"]

    # Once paid, what decided the route is fixed; the receipt e-mail may still change, as at Stripe.
    late = _error(shop.http.post(f"/v1/payment_intents/{intent_id}", data={param: "+1 415 555 0199"}))
    assert (late["code"], late["param"]) == ("payment_intent_unexpected_state", "payment_method_data")
    receipt = shop.http.post(f"/v1/payment_intents/{intent_id}", data={"receipt_email": "jenny@example.com"})
    assert receipt.json()["receipt_email"] == "jenny@example.com"
    assert (
        shop.http.post(f"/v1/payment_intents/{intent_id}", data={"receipt_email": ""}).json()["receipt_email"] is None
    )


def test_platform_elements_go_in_the_payer_object(merchant, owner_engine):
    shop = merchant(Kiosk={"products": ["face_pay"], "costs": {"face_pay": {"percent": "1", "fixed": 0}}})
    face = {"amount": "5000", "currency": "usd", "payment_method": "face_pay", "confirm": "true"}

    # The product's own elements are asked for like a channel's, before anything reaches the channel.
    error = _error(shop.http.post("/v1/payment_intents", data={**face, "payer[terminal_id]": "T-0042"}))
    assert (error["code"], error["param"]) == ("parameter_missing", "payer[face_code]")
    assert "Face scan: send payer[face_code]" in error["message"]
    intent_id = error["payment_intent"]["id"]
    assert _attempts(owner_engine, intent_id) == []

    # Sent with the confirmation, merged with what was sent before.
    confirmed = shop.http.post(f"/v1/payment_intents/{intent_id}/confirm", data={"payer[face_code]": "fc_9f2c"})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    # The payer object is not part of Stripe's PaymentIntent; it is stored on the intent only.
    assert "payer" not in confirmed.json()
    assert _intent(owner_engine, intent_id).payer_details == {
        "payer": {"terminal_id": "T-0042", "face_code": "fc_9f2c"}
    }
    [attempt] = _attempts(owner_engine, intent_id)
    assert attempt.request["elements"] == ["face_code", "terminal_id"]


@pytest.mark.parametrize(
    ("data", "param", "code"),
    [
        ({"payer[shoe_size]": "42"}, "payer[shoe_size]", "parameter_unknown"),
        ({"payment_method_data[billing_details][address][planet]": "Mars"}, None, "parameter_unknown"),
        ({"receipt_email": "jenny"}, "receipt_email", "email_invalid"),
        ({"payment_method_data[billing_details][email]": "a b@c.d"}, None, "email_invalid"),
        ({"payment_method_data[billing_details][address][country]": "USA"}, None, None),
    ],
)
def test_payer_details_are_validated_like_stripe_parameters(merchant, data, param, code):
    shop = merchant(Sandbox={"costs": DEAR})
    error = _error(shop.http.post("/v1/payment_intents", data={**VISA, **data}))
    assert error["param"] == (param or next(iter(data)))
    assert error.get("code") == code and error["message"]
    assert shop.http.get("/v1/payment_intents").json()["data"] == []


def test_the_sdk_sees_a_missing_element_as_an_invalid_request(merchant, sdk):
    shop = merchant(Strict={"costs": CHEAP, "required_elements": ["billing_address"]})
    client = sdk(shop.secret)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(
            {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        )
    assert refused.value.code == "parameter_missing"
    assert refused.value.param == "payment_method_data[billing_details][address]"
    assert "at least [line1] and [country]" in refused.value.user_message

    intent = client.v1.payment_intents.create({"amount": 2000, "currency": "usd"})
    paid = client.v1.payment_intents.confirm(
        intent.id,
        {
            "payment_method": "pm_card_visa",
            "payment_method_data": {
                "type": "card",
                "billing_details": {"name": "Jenny Rosen", "address": {"line1": "1 Main St", "country": "US"}},
            },
        },
    )
    assert paid.status == "succeeded"


def test_the_payment_page_shows_the_payer_elements_masked(merchant, site):
    shop = merchant(Sandbox={"costs": DEAR})
    pi = shop.http.post(
        "/v1/payment_intents",
        data={
            **VISA,
            "receipt_email": "jenny.rosen@example.com",
            "payment_method_data[billing_details][name]": "Jenny Rosen",
            "payment_method_data[billing_details][phone]": "+1 415 555 0100",
            "payment_method_data[billing_details][address][line1]": "1 Main St",
            "payment_method_data[billing_details][address][city]": "Springfield",
            "payment_method_data[billing_details][address][country]": "US",
            "payer[terminal_id]": "T-0042",
            "payer[bank_account]": "DE89370400440532013000",
        },
    ).json()
    client = site("acme.localhost")
    client.login("owner@coffee.example.com")
    html = unescape(client.get(f"/merchant/payments/{pi['id']}").get_data(as_text=True))
    assert 'id="payer"' in html
    for shown in ("j•••@example.com", "J••• R•••", "•••0100", "•••, Springfield, US", "T-0042", "•••3000"):
        assert shown in html, shown
    for hidden in ("jenny.rosen", "Jenny", "555", "1 Main St", "DE8937"):
        assert hidden not in html, hidden


def test_payer_details_add_no_statement_to_a_payment(app, merchant):
    """A payment created and confirmed in one request is the platform's hot path
    (docs/PERFORMANCE.md): the details travel in the statements it already runs."""
    shop = merchant(Sandbox={"costs": DEAR})
    details = {
        "receipt_email": "jenny@example.com",
        "payment_method_data[billing_details][name]": "Jenny Rosen",
        "payer[terminal_id]": "T-0042",
    }
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    shop.http.post("/v1/payment_intents", data=VISA)  # per-process caches warm
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert shop.http.post("/v1/payment_intents", data=VISA).json()["status"] == "succeeded"
        plain = len(statements)
        statements.clear()
        assert shop.http.post("/v1/payment_intents", data={**VISA, **details}).json()["status"] == "succeeded"
        with_details = len(statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert with_details == plain, (plain, with_details)
