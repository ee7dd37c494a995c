"""`return_url`: where the hosted checkout sends the payer back after paying. Set at creation, by
update or at confirmation; only an absolute http(s) address is taken, and a refused one changes
nothing."""

from __future__ import annotations

import pytest

SHOP_PAGE = "https://shop.example.com/thanks?order=42"


def test_a_return_url_is_kept_updated_and_removed(http):
    created = http.post("/v1/payment_intents", data={"amount": "1500", "currency": "usd", "return_url": SHOP_PAGE})
    assert created.status_code == 200 and created.json()["return_url"] == SHOP_PAGE
    intent = created.json()["id"]
    updated = http.post(f"/v1/payment_intents/{intent}", data={"return_url": "http://shop.example.com/back"})
    assert updated.json()["return_url"] == "http://shop.example.com/back"
    confirmed = http.post(
        f"/v1/payment_intents/{intent}/confirm", data={"payment_method": "pm_card_visa", "return_url": SHOP_PAGE}
    )
    assert confirmed.json()["status"] == "succeeded" and confirmed.json()["return_url"] == SHOP_PAGE
    assert http.post(f"/v1/payment_intents/{intent}", data={"return_url": ""}).json()["return_url"] is None


@pytest.mark.parametrize(
    "address",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "/relative/page",
        "https://user:secret@shop.example.com/",
        "https://shop.example.com/a b",
        "https://",
        "https://shop.example.com/" + "x" * 2000,
    ],
)
def test_anything_but_an_absolute_web_address_is_refused_and_nothing_changes(http, address):
    refused = http.post("/v1/payment_intents", data={"amount": "1500", "currency": "usd", "return_url": address})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "return_url" and error["type"] == "invalid_request_error"
    assert http.get("/v1/payment_intents").json()["data"] == []
    intent = http.post("/v1/payment_intents", data={"amount": "1500", "currency": "usd", "return_url": SHOP_PAGE})
    intent_id = intent.json()["id"]
    assert http.post(f"/v1/payment_intents/{intent_id}", data={"return_url": address}).status_code == 400
    assert http.get(f"/v1/payment_intents/{intent_id}").json()["return_url"] == SHOP_PAGE
