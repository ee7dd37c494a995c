"""A key reaches only its own merchant's objects, in its own tenant: other ids are 404, unchanged."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import stripe


def _state(owner_engine, intent_id: str):
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT status, amount, amount_received, amount_refunded, amount_capturable, metadata, description"
                " FROM payment_intents WHERE id = :id"
            ),
            {"id": intent_id},
        ).one()


ATTEMPTS = {
    "retrieve": lambda c, pi: c.v1.payment_intents.retrieve(pi),
    "update": lambda c, pi: c.v1.payment_intents.update(pi, {"metadata": {"stolen": "yes"}, "description": "x"}),
    "confirm": lambda c, pi: c.v1.payment_intents.confirm(pi, {"payment_method": "pm_card_visa"}),
    "capture": lambda c, pi: c.v1.payment_intents.capture(pi),
    "cancel": lambda c, pi: c.v1.payment_intents.cancel(pi),
    "refund": lambda c, pi: c.v1.refunds.create({"payment_intent": pi, "amount": 100}),
}


@pytest.mark.parametrize("action", sorted(ATTEMPTS))
def test_another_merchant_of_the_tenant_cannot_touch_a_payment(sdk, stripe_client, other_shop, owner_engine, action):
    held = stripe_client.v1.payment_intents.create(
        {
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    paid = stripe_client.v1.payment_intents.create(
        {"amount": 5000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    unconfirmed = stripe_client.v1.payment_intents.create(
        {"amount": 5000, "currency": "usd", "payment_method": "pm_card_visa"}
    )
    target = {"refund": paid.id, "update": unconfirmed.id, "confirm": unconfirmed.id}.get(action, held.id)
    before = _state(owner_engine, target)
    intruder = sdk(other_shop.secret)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        ATTEMPTS[action](intruder, target)
    assert refused.value.http_status == 404 and refused.value.code == "resource_missing"
    assert _state(owner_engine, target) == before
    # Nor does it appear in the intruder's lists, events or balance.
    assert intruder.v1.payment_intents.list().data == []
    assert intruder.v1.refunds.list({"payment_intent": paid.id}).data == []
    assert intruder.v1.events.list().data == []
    assert intruder.v1.balance.retrieve().pending == []
    # Control: the owner can do it.
    ATTEMPTS[action](stripe_client, target)


def test_ids_of_other_objects_are_404_for_another_merchant(sdk, stripe_client, other_shop):
    paid = stripe_client.v1.payment_intents.create(
        {"amount": 5000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    refund = stripe_client.v1.refunds.create({"payment_intent": paid.id, "amount": 100})
    event = stripe_client.v1.events.list({"limit": 1}).data[0]
    intruder = sdk(other_shop.secret)
    for call in (
        lambda: intruder.v1.refunds.retrieve(refund.id),
        lambda: intruder.v1.events.retrieve(event.id),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            call()
        assert refused.value.http_status == 404
    # A cursor of another merchant's list names nothing either.
    with pytest.raises(stripe.InvalidRequestError) as cursor:
        intruder.v1.payment_intents.list({"starting_after": paid.id})
    assert cursor.value.param == "starting_after"


def test_another_tenant_is_out_of_reach(app, stripe_client, shop, new_shop, owner_engine):
    """Tenant B on its own host (Flask test client): A's ids are 404 with B's key; keys do not cross hosts."""
    mine = stripe_client.v1.payment_intents.create(
        {
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    beta = new_shop("beta")
    client = app.test_client()

    def call(method: str, path: str, host: str, secret: str, data=None):
        headers = {"Authorization": f"Bearer {secret}"}
        response = client.open(path, method=method, base_url=f"http://{host}", headers=headers, data=data)
        assert response.is_json and "Request-Id" in response.headers
        return response

    theirs = call("POST", "/v1/payment_intents", beta.host, beta.secret, {"amount": "700", "currency": "usd"}).json
    before = _state(owner_engine, mine.id)
    for method, path, data in (
        ("GET", f"/v1/payment_intents/{mine.id}", None),
        ("POST", f"/v1/payment_intents/{mine.id}", {"description": "x"}),
        ("POST", f"/v1/payment_intents/{mine.id}/confirm", None),
        ("POST", f"/v1/payment_intents/{mine.id}/capture", None),
        ("POST", f"/v1/payment_intents/{mine.id}/cancel", None),
        ("POST", "/v1/refunds", {"payment_intent": mine.id}),
    ):
        response = call(method, path, beta.host, beta.secret, data)
        assert response.status_code == 404 and response.json["error"]["code"] == "resource_missing", path
    assert _state(owner_engine, mine.id) == before
    assert [pi["id"] for pi in call("GET", "/v1/payment_intents", beta.host, beta.secret).json["data"]] == [
        theirs["id"]
    ]
    # A key works only on its own tenant's host.
    assert call("GET", "/v1/balance", beta.host, shop.secret).status_code == 401
    assert call("GET", "/v1/balance", shop.host, beta.secret).status_code == 401
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.payment_intents.retrieve(theirs["id"])
    # Control: B reads its own PaymentIntent on its host.
    assert call("GET", f"/v1/payment_intents/{theirs['id']}", beta.host, beta.secret).status_code == 200
