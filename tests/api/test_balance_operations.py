"""Top-ups, transfers, payouts and balance transactions through the merchant API (Stripe's SDK
where it has the resource), with the ledger checked after each test."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import stripe

import ledger
from core.db import db
from tenants.isolation import platform_scope


@pytest.fixture(autouse=True)
def books_balance(app):
    yield
    with app.app_context(), platform_scope(db.session):
        problems = ledger.check(db.session)
        db.session.remove()
    assert not problems, [str(p) for p in problems]


def _available(client: stripe.StripeClient, currency: str = "usd") -> int:
    return sum(b.amount for b in client.v1.balance.retrieve().available if b.currency == currency)


def _pending(client: stripe.StripeClient, currency: str = "usd") -> int:
    return sum(b.amount for b in client.v1.balance.retrieve().pending if b.currency == currency)


def test_a_topup_makes_money_available(stripe_client):
    topup = stripe_client.v1.topups.create({"amount": 5000, "currency": "usd", "description": "wallet"})
    assert isinstance(topup, stripe.Topup)
    assert (topup.status, topup.amount, topup.currency, topup.livemode) == ("succeeded", 5000, "usd", False)
    assert topup.id.startswith("tu_") and topup.description == "wallet"
    assert stripe_client.v1.topups.retrieve(topup.id).amount == 5000
    assert [t.id for t in stripe_client.v1.topups.list().data] == [topup.id]
    assert _available(stripe_client) == 5000


def test_a_live_topup_is_refused(sdk, shop, issue_key):
    live = sdk(issue_key(shop, "live"))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        live.v1.topups.create({"amount": 5000, "currency": "usd"})
    assert refused.value.http_status == 400 and refused.value.code == "livemode_unsupported"
    assert "bank-transfer channel" in refused.value.user_message


def test_a_transfer_moves_money_between_merchants_of_the_tenant(stripe_client, sdk, shop, other_shop):
    other = sdk(other_shop.secret)
    stripe_client.v1.topups.create({"amount": 5000, "currency": "usd"})
    transfer = stripe_client.v1.transfers.create(
        {"amount": 1200, "currency": "usd", "destination": str(other_shop.merchant), "metadata": {"order": "7"}}
    )
    assert isinstance(transfer, stripe.Transfer) and transfer.id.startswith("tr_")
    assert (transfer.amount, transfer.destination, transfer.metadata["order"]) == (1200, str(other_shop.merchant), "7")
    assert stripe_client.v1.transfers.retrieve(transfer.id).amount == 1200
    assert _available(stripe_client) == 3800 and _available(other) == 1200

    back = other.v1.transfers.create({"amount": 200, "currency": "usd", "destination": str(shop.merchant)})
    assert back.amount == 200
    assert _available(stripe_client) == 4000 and _available(other) == 1000
    # Each side sees its own transfer objects, and a balance transaction for both.
    with pytest.raises(stripe.InvalidRequestError) as missing:
        other.v1.transfers.retrieve(transfer.id)
    assert missing.value.http_status == 404
    received = other.v1.balance_transactions.list({"source": transfer.id}).data
    assert [(t.type, t.amount, t.net) for t in received] == [("transfer", 1200, 1200)]
    sent = stripe_client.v1.balance_transactions.list({"source": transfer.id}).data
    assert [(t.type, t.amount, t.net) for t in sent] == [("transfer", -1200, -1200)]


def test_a_transfer_beyond_the_available_balance_is_refused(stripe_client, other_shop):
    stripe_client.v1.topups.create({"amount": 1000, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.transfers.create({"amount": 1001, "currency": "usd", "destination": str(other_shop.merchant)})
    assert refused.value.http_status == 400 and refused.value.code == "insufficient_funds"
    assert _available(stripe_client) == 1000
    assert stripe_client.v1.transfers.list().data == []


def test_concurrent_transfers_never_spend_more_than_is_available(api_server, shop, other_shop, stripe_client):
    stripe_client.v1.topups.create({"amount": 10000, "currency": "usd"})

    def transfer(_: int) -> int:
        with httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {shop.secret}"}, timeout=60) as c:
            response = c.post(
                "/v1/transfers", data={"amount": "1500", "currency": "usd", "destination": str(other_shop.merchant)}
            )
        if response.status_code == 200:
            return response.json()["amount"]
        assert response.status_code == 400 and response.json()["error"]["code"] == "insufficient_funds"
        return 0

    with ThreadPoolExecutor(max_workers=10) as pool:
        moved = list(pool.map(transfer, range(10)))
    assert sum(moved) <= 10000
    assert sum(moved) == 6 * 1500  # every transfer that fit went through
    assert _available(stripe_client) == 10000 - sum(moved)


def test_a_payout_holds_the_amount_and_cancel_releases_it(stripe_client, http):
    stripe_client.v1.topups.create({"amount": 3000, "currency": "usd"})
    payout = stripe_client.v1.payouts.create({"amount": 2000, "currency": "usd", "description": "weekly"})
    assert isinstance(payout, stripe.Payout) and payout.id.startswith("po_")
    assert (payout.status, payout.amount) == ("pending", 2000)
    assert _available(stripe_client) == 1000
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.payouts.create({"amount": 1001, "currency": "usd"})
    assert refused.value.code == "insufficient_funds"

    canceled = stripe_client.v1.payouts.cancel(payout.id)
    assert canceled.status == "canceled"
    assert _available(stripe_client) == 3000
    assert stripe_client.v1.payouts.retrieve(payout.id).status == "canceled"
    again = http.post(f"/v1/payouts/{payout.id}/cancel")
    assert again.status_code == 400 and again.json()["error"]["code"] == "payout_not_cancelable"
    assert [p.id for p in stripe_client.v1.payouts.list().data] == [payout.id]


def test_balance_transactions_list_every_movement(stripe_client, other_shop, http):
    pi = stripe_client.v1.payment_intents.create(
        {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    refund = stripe_client.v1.refunds.create({"payment_intent": pi.id, "amount": 500})
    topup = stripe_client.v1.topups.create({"amount": 4000, "currency": "usd"})
    transfer = stripe_client.v1.transfers.create(
        {"amount": 1000, "currency": "usd", "destination": str(other_shop.merchant)}
    )
    payout = stripe_client.v1.payouts.create({"amount": 700, "currency": "usd"})

    listed = stripe_client.v1.balance_transactions.list({"limit": 100}).data
    assert all(isinstance(t, stripe.BalanceTransaction) for t in listed)
    rows = {(t.type, t.source): (t.amount, t.fee, t.net, t.status) for t in listed}
    assert rows == {
        ("charge", pi.id): (2000, 0, 2000, "pending"),
        ("refund", refund.id): (-500, 0, -500, "pending"),
        ("topup", topup.id): (4000, 0, 4000, "available"),
        ("transfer", transfer.id): (-1000, 0, -1000, "available"),
        ("payout", payout.id): (-700, 0, -700, "available"),
    }
    # The rows add up to the balance.
    assert sum(t.net for t in listed if t.status == "pending") == _pending(stripe_client) == 1500
    assert sum(t.net for t in listed if t.status == "available") == _available(stripe_client) == 2300

    only = stripe_client.v1.balance_transactions.list({"type": "topup"}).data
    assert [t.source for t in only] == [topup.id]
    one = stripe_client.v1.balance_transactions.retrieve(only[0].id)
    assert (one.id, one.fee_details, one.available_on is not None) == (only[0].id, [], True)
    assert http.get("/v1/balance_transactions/txn_nothing").status_code == 404


def test_every_movement_records_its_event(stripe_client, sdk, other_shop):
    topup = stripe_client.v1.topups.create({"amount": 3000, "currency": "usd", "metadata": {"ref": "t1"}})
    transfer = stripe_client.v1.transfers.create(
        {"amount": 500, "currency": "usd", "destination": str(other_shop.merchant)}
    )
    payout = stripe_client.v1.payouts.create({"amount": 1000, "currency": "usd"})
    stripe_client.v1.payouts.cancel(payout.id)

    listed = stripe_client.v1.events.list({"limit": 100}).data
    assert all(isinstance(e, stripe.Event) for e in listed)
    # Oldest first; a test top-up is created and succeeds at once, so its two events share a time.
    oldest_first = [(e.created, e.type, e.data.object.id, e.data.object.object) for e in reversed(listed)]
    assert [event[1:] for event in sorted(oldest_first, key=lambda e: (e[0], e[1] != "topup.created"))] == [
        ("topup.created", topup.id, "topup"),
        ("topup.succeeded", topup.id, "topup"),
        ("transfer.created", transfer.id, "transfer"),
        ("payout.created", payout.id, "payout"),
        ("payout.canceled", payout.id, "payout"),
    ]
    assert [e.type for e in listed[:3]] == ["payout.canceled", "payout.created", "transfer.created"]
    # Each event carries the object as it was then.
    by_type = {e.type: e.data.object for e in listed}
    assert (by_type["topup.succeeded"].status, by_type["topup.succeeded"].metadata.to_dict()) == (
        "succeeded",
        {"ref": "t1"},
    )
    assert (by_type["payout.created"].status, by_type["payout.canceled"].status) == ("pending", "canceled")
    assert by_type["transfer.created"].destination == str(other_shop.merchant)
    payouts = stripe_client.v1.events.list({"type": "payout.*"}).data
    assert [e.type for e in payouts] == ["payout.canceled", "payout.created"]
    assert stripe_client.v1.events.retrieve(payouts[0].id).data.object.id == payout.id
    # The transfer is the sender's object: the receiving merchant sees its balance move, no event.
    assert sdk(other_shop.secret).v1.events.list().data == []


def test_a_failed_movement_records_no_event(stripe_client, other_shop):
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.transfers.create({"amount": 100, "currency": "usd", "destination": str(other_shop.merchant)})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.payouts.create({"amount": 100, "currency": "usd"})
    assert stripe_client.v1.events.list().data == []


def test_another_tenants_merchant_is_no_destination(stripe_client, new_shop):
    stripe_client.v1.topups.create({"amount": 1000, "currency": "usd"})
    foreign = new_shop("globex")
    for destination in (str(foreign.merchant), "not-a-uuid"):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_client.v1.transfers.create({"amount": 100, "currency": "usd", "destination": destination})
        assert refused.value.http_status == 404 and "No such destination" in refused.value.user_message
    assert _available(stripe_client) == 1000 and stripe_client.v1.transfers.list().data == []


def test_the_object_schemas_match_real_answers(http, other_shop):
    schemas = http.get("/v1/openapi.json").json()["components"]["schemas"]

    def matches(name: str, obj: dict) -> None:
        assert set(obj) == set(schemas[name]["properties"]), name
        assert set(schemas[name]["required"]) <= set(obj), name

    matches("topup", http.post("/v1/topups", data={"amount": "900", "currency": "usd"}).json())
    matches(
        "transfer",
        http.post(
            "/v1/transfers", data={"amount": "100", "currency": "usd", "destination": str(other_shop.merchant)}
        ).json(),
    )
    matches("payout", http.post("/v1/payouts", data={"amount": "100", "currency": "usd"}).json())
    matches("balance_transaction", http.get("/v1/balance_transactions").json()["data"][0])
    for event in http.get("/v1/events").json()["data"]:
        matches("event", event)
        kind = event["data"]["object"]["object"]
        assert {"$ref": f"#/components/schemas/{kind}"} in schemas["event"]["properties"]["data"]["properties"][
            "object"
        ]["oneOf"]
        matches(kind, event["data"]["object"])
