"""PaymentIntents from charge items through the API: `line_items[i][charge_item]`,
`line_items[i][quantity]` and `coupon`; the amount is computed by the platform."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import stripe

from billing import catalog, coupons
from billing.catalog import ChargeItemInput
from billing.coupons import CouponInput
from core.db import db
from payments import orders
from payments.order_models import Order
from tenants.audit import Actor
from tenants.isolation import tenant_context


@pytest.fixture
def items(app, shop):
    """Two USD items of the shop, one EUR item, a card-only item, and the coupon TENOFF (10 %)."""
    with app.app_context(), tenant_context(db.session, shop.tenant_id):

        def item(name, price, currency="USD", types=()):
            spec = ChargeItemInput(name, price, currency, payment_method_types=list(types))
            return str(catalog.create_item(shop.tenant_id, shop.merchant, spec, {"card"}, Actor.system()).id)

        made = {
            "mug": item("Mug", "12.50"),
            "beans": item("Beans 250 g", "7.99"),
            "euro": item("Croissant", "1.20", "EUR"),
            "card_only": item("Gift card", "25.00", types=["card"]),
        }
        coupons.create_coupon(
            shop.tenant_id, shop.merchant, CouponInput("TENOFF", "percent", percent_off="10"), Actor.system()
        )
        db.session.remove()
    return made


def _error(response, status=400):
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_the_amount_is_computed_from_the_items_and_the_coupon(app, http, shop, items):
    response = http.post(
        "/v1/payment_intents",
        data={
            "line_items[0][charge_item]": items["mug"],
            "line_items[0][quantity]": "2",
            "line_items[1][charge_item]": items["beans"],
            "coupon": "tenoff",
            "receipt_email": "payer@example.com",
        },
    )
    assert response.status_code == 200, response.text
    pi = response.json()
    # 2 × 12.50 + 7.99 = 32.99; 10 % = 3.299 -> 3.30; total 29.69
    assert (pi["amount"], pi["currency"], pi["status"]) == (2969, "usd", "requires_payment_method")
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        lines = [(line.description, line.quantity, line.amount) for line in orders.lines_of(shop.tenant_id, pi["id"])]
        assert lines == [("Mug", 2, 2500), ("Beans 250 g", 1, 799), ("Coupon TENOFF (10% off)", 1, -330)]


def test_a_matching_amount_is_accepted_and_confirm_charges_it(http, items):
    response = http.post(
        "/v1/payment_intents",
        json={
            "line_items": [{"charge_item": items["mug"], "quantity": 3}],
            "amount": 3750,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        },
    )
    assert response.status_code == 200, response.text
    assert (response.json()["amount_received"], response.json()["status"]) == (3750, "succeeded")


@pytest.mark.parametrize(
    ("data", "param", "code", "message"),
    [
        ({"amount": "100"}, "amount", "amount_mismatch", "does not match the line items' total (1250"),
        ({"currency": "eur"}, "currency", None, "does not match the line items' currency (usd)"),
        ({"line_items[0][quantity]": "0"}, "line_items[0][quantity]", "parameter_invalid_integer", "at least 1"),
        ({"line_items[0][charge_item]": "nope"}, "line_items[0][charge_item]", "resource_missing", "No such"),
        ({"coupon": "WINTER"}, "coupon", "coupon_invalid", "not valid"),
        ({"line_items[1][charge_item]": "EURO"}, "line_items[1][charge_item]", None, "one currency"),
        ({"line_items[0][price]": "x"}, "line_items[0][price]", "parameter_unknown", "unknown parameter"),
    ],
)
def test_clear_errors(http, items, data, param, code, message):
    body = {"line_items[0][charge_item]": items["mug"], **data}
    if body.get("line_items[1][charge_item]") == "EURO":
        body["line_items[1][charge_item]"] = items["euro"]
    error = _error(http.post("/v1/payment_intents", data=body))
    assert error["param"] == param
    if code:
        assert error.get("code") == code
    assert message in error["message"]


def test_without_line_items_amount_and_currency_are_required(http):
    error = _error(http.post("/v1/payment_intents", data={"currency": "usd"}))
    assert (error["code"], error["param"]) == ("parameter_missing", "amount")
    error = _error(http.post("/v1/payment_intents", data={"amount": "100", "coupon": "TENOFF"}))
    assert error["param"] == "coupon"


def test_an_items_payment_method_types_are_kept(http, items):
    pi = http.post("/v1/payment_intents", data={"line_items[0][charge_item]": items["card_only"]}).json()
    assert pi["payment_method_types"] == ["card"]


def test_another_merchants_charge_item_is_no_such_item(app, http, other_shop, items, sdk):
    other = sdk(other_shop.secret)
    with pytest.raises(stripe.InvalidRequestError, match="No such charge item"):
        other.v1.payment_intents.create(params={"line_items": [{"charge_item": items["mug"]}]})
    with app.app_context(), tenant_context(db.session, other_shop.tenant_id):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0


def test_the_stripe_sdk_sends_line_items(stripe_client, items):
    pi = stripe_client.v1.payment_intents.create(
        params={"line_items": [{"charge_item": items["beans"], "quantity": 4}], "coupon": "TENOFF"}
    )
    # 4 × 7.99 = 31.96; 10 % = 3.196 -> 3.20; 28.76
    assert pi.amount == 2876
