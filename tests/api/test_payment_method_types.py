"""Which payment methods a PaymentIntent offers (`payment_method_types`) follows the amount, the currency and
the tenant's active channel accounts (SPEC.md "The payment flow", step 2), seen through the merchant API.

The tenant admin sets up two sandbox channel accounts in the console, as a tenant would:

- "Cards": card, USD, per payment 1.00 to 100.00;
- "QR": Alipay QR, USD, per payment 50.00 to 5,000.00.

So 20.00 can only be paid by card, 500.00 only by Alipay QR, 60.00 by either, and 0.50 or 6,000.00 (or any
amount in EUR) by nothing. The merchant's backend talks to the running app over HTTP with its secret key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from core.db import db
from tenants import api_keys
from tenants.audit import Actor

CARDS = {
    "name": "Cards",
    "type": "sandbox",
    "mode": "test",
    "status": "active",
    "currency": "USD",
    "min_amount": "1.00",
    "max_amount": "100.00",
    "daily_cap": "",
    "priority": "10",
    "required_elements": "",
    "serve_card": "y",
    "percent_card": "2.9",
    "fixed_card": "0.30",
}
QR = {
    "name": "QR",
    "type": "sandbox",
    "mode": "test",
    "status": "active",
    "currency": "USD",
    "min_amount": "50.00",
    "max_amount": "5000.00",
    "daily_cap": "",
    "priority": "10",
    "required_elements": "",
    "serve_alipay_qr": "y",
    "percent_alipay_qr": "0.6",
    "fixed_alipay_qr": "0",
}


@dataclass
class Tenant:
    api: httpx.Client  # the merchant's backend, on the running app with its test secret key
    console: object  # the tenant admin, signed in to the console
    channels: dict[str, uuid.UUID]  # by name

    def intent(self, **params) -> httpx.Response:
        return self.api.post("/v1/payment_intents", data={"currency": "usd", **params})

    def offered(self, amount: int) -> list[str]:
        response = self.intent(amount=str(amount))
        assert response.status_code == 200, response.text
        return response.json()["payment_method_types"]

    def intent_ids(self) -> list[str]:
        listed = self.api.get("/v1/payment_intents", params={"limit": 100})
        assert listed.status_code == 200, listed.text
        return [pi["id"] for pi in listed.json()["data"]]

    def set_status(self, name: str, status: str) -> None:
        """The admin edits the channel account in the console (nothing restarts)."""
        form = {**(CARDS if name == "Cards" else QR), "status": status}
        saved = self.console.submit(f"/console/channels/{self.channels[name]}", form, follow_redirects=True)
        assert saved.status_code == 200 and "The next payment uses the new settings" in saved.get_data(as_text=True)


@pytest.fixture
def tenant(app, make, acme, site, api_server) -> Iterator[Tenant]:
    merchant = make.merchant(acme, "Coffee", "owner@coffee.example.com")
    with app.app_context():
        _, secret = api_keys.create_key(acme.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    console = site(acme.host)
    console.login(acme.admin_email)
    channels = {}
    for form in (CARDS, QR):
        added = console.submit("/console/channels/new", form)
        assert added.status_code == 302, added.get_data(as_text=True)
        channels[form["name"]] = uuid.UUID(added.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    with httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as api:
        yield Tenant(api, console, channels)


def _refused(response: httpx.Response, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "payment_method_unavailable",
        param,
    )
    return error["message"]


def test_the_offered_methods_follow_the_amount_and_each_channels_limits(tenant):
    assert tenant.offered(2_000) == ["card"]
    assert tenant.offered(6_000) == ["card", "alipay_qr"]
    assert tenant.offered(50_000) == ["alipay_qr"]
    # The limits are inclusive, to the minor unit.
    assert tenant.offered(100) == ["card"]
    assert tenant.offered(4_999) == ["card"]
    assert tenant.offered(5_000) == ["card", "alipay_qr"]
    assert tenant.offered(10_000) == ["card", "alipay_qr"]
    assert tenant.offered(10_001) == ["alipay_qr"]
    assert tenant.offered(500_000) == ["alipay_qr"]
    # What the intent offers is kept: retrieving and listing show the same.
    created = tenant.intent(amount="6000").json()
    retrieved = tenant.api.get(f"/v1/payment_intents/{created['id']}").json()
    assert retrieved["payment_method_types"] == ["card", "alipay_qr"]
    listed = tenant.api.get("/v1/payment_intents", params={"limit": 1}).json()["data"]
    assert [(pi["id"], pi["payment_method_types"]) for pi in listed] == [(created["id"], ["card", "alipay_qr"])]


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(50, "usd"), (99, "usd"), (500_001, "usd"), (2_000, "eur")],
    ids=["below-every-minimum", "one-below-the-card-minimum", "above-every-maximum", "no-eur-channel"],
)
def test_an_amount_no_channel_serves_is_refused_naming_the_amount(tenant, amount, currency):
    message = _refused(tenant.intent(amount=str(amount), currency=currency), "amount")
    assert "no active channel serves this amount and currency" in message
    assert tenant.intent_ids() == []  # nothing was created


def test_asking_for_a_method_no_channel_can_serve_for_the_amount_is_refused(tenant):
    # Alipay QR exists, but not for 20.00; nobody serves face pay at all.
    _refused(tenant.intent(amount="2000", **{"payment_method_types[]": ["alipay_qr"]}), "payment_method_types")
    _refused(tenant.intent(amount="6000", **{"payment_method_types[]": ["face_pay"]}), "payment_method_types")
    _refused(tenant.intent(amount="2000", **{"payment_method_types[]": ["card", "alipay_qr"]}), "payment_method_types")
    assert tenant.intent_ids() == []
    # Asking for what can be served gives exactly that.
    only_card = tenant.intent(amount="6000", **{"payment_method_types[]": ["card"]})
    assert only_card.status_code == 200 and only_card.json()["payment_method_types"] == ["card"]
    both = tenant.intent(amount="6000", **{"payment_method_types[]": ["alipay_qr", "card"]})
    assert both.status_code == 200 and both.json()["payment_method_types"] == ["alipay_qr", "card"]
    assert tenant.intent_ids() == [both.json()["id"], only_card.json()["id"]]


def test_pausing_a_channel_in_the_console_takes_its_method_off_the_next_intent(tenant):
    assert tenant.offered(6_000) == ["card", "alipay_qr"]

    tenant.set_status("QR", "paused")
    assert tenant.offered(6_000) == ["card"]
    _refused(tenant.intent(amount="50000"), "amount")
    _refused(tenant.intent(amount="6000", **{"payment_method_types[]": ["alipay_qr"]}), "payment_method_types")

    tenant.set_status("Cards", "paused")
    _refused(tenant.intent(amount="6000"), "amount")

    tenant.set_status("QR", "active")
    assert tenant.offered(6_000) == ["alipay_qr"]
    assert tenant.offered(50_000) == ["alipay_qr"]
    tenant.set_status("Cards", "active")
    assert tenant.offered(6_000) == ["card", "alipay_qr"]


def test_confirming_by_card_after_the_amount_left_the_card_limits_charges_nothing(tenant):
    """Whatever the update does to the offered methods, a card payment above the card channel's maximum is
    refused at confirmation and nothing is charged."""
    created = tenant.intent(amount="2000").json()
    updated = tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "50000"})
    assert updated.status_code == 200 and updated.json()["amount"] == 50_000

    confirm = tenant.api.post(f"/v1/payment_intents/{created['id']}/confirm", data={"payment_method": "pm_card_visa"})
    _refused(confirm, "payment_method")
    after = tenant.api.get(f"/v1/payment_intents/{created['id']}").json()
    assert (after["status"], after["amount_received"], after["latest_charge"]) == ("requires_payment_method", 0, None)
    balance = tenant.api.get("/v1/balance").json()
    assert sum(b["amount"] for b in balance["pending"] + balance["available"]) == 0


def test_updating_the_amount_recomputes_the_offered_methods(tenant):
    created = tenant.intent(amount="2000").json()
    assert created["payment_method_types"] == ["card"]

    updated = tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "50000"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["payment_method_types"] == ["alipay_qr"]
    again = tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "6000"})
    assert again.json()["payment_method_types"] == ["card", "alipay_qr"]
    assert tenant.api.get(f"/v1/payment_intents/{created['id']}").json()["payment_method_types"] == [
        "card",
        "alipay_qr",
    ]


def test_updating_to_an_amount_no_channel_serves_is_refused_and_changes_nothing(tenant):
    created = tenant.intent(amount="2000").json()

    _refused(tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "50"}), "amount")
    _refused(tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "600000"}), "amount")
    _refused(tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"currency": "eur"}), "amount")
    after = tenant.api.get(f"/v1/payment_intents/{created['id']}").json()
    assert (after["amount"], after["currency"], after["payment_method_types"]) == (2_000, "usd", ["card"])
    assert after["status"] == "requires_payment_method"
    # Nothing else was written either: no payment_intent.updated event.
    updates = tenant.api.get("/v1/events", params={"type": "payment_intent.updated"}).json()["data"]
    assert updates == []


def test_types_the_merchant_chose_stay_chosen_when_the_amount_changes(tenant):
    created = tenant.intent(amount="6000", **{"payment_method_types[]": "card"}).json()
    assert created["payment_method_types"] == ["card"]

    # Both channels take 70.00, but the merchant asked for cards only.
    updated = tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "7000"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["payment_method_types"] == ["card"]
    # Only the QR channel takes 500.00: the chosen card cannot, so the update is refused.
    _refused(tenant.api.post(f"/v1/payment_intents/{created['id']}", data={"amount": "50000"}), "payment_method_types")
    assert tenant.api.get(f"/v1/payment_intents/{created['id']}").json()["amount"] == 7_000
    # Choosing again in the same update is what changes the choice.
    moved = tenant.api.post(
        f"/v1/payment_intents/{created['id']}", data={"amount": "50000", "payment_method_types[]": "alipay_qr"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["payment_method_types"] == ["alipay_qr"]
