"""What the fuzzing of the merchant API (test_fuzz.py) found, one input at a time: values the
database cannot store or hold, odd encodings, Stripe's metadata limits, and requests without a
valid key. Each is a 400 (or 401) in Stripe's error format, and nothing is created."""

from __future__ import annotations

import re

import httpx
import pytest

from portal.api.operations import OPERATIONS

ERROR_TYPES = {"invalid_request_error", "card_error", "api_error", "idempotency_error", "rate_limit_error"}


def _refused(response: httpx.Response, status: int = 400, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def _no_payment_intents(http: httpx.Client) -> None:
    assert http.get("/v1/payment_intents").json()["data"] == []


# --- integers beyond PostgreSQL's BIGINT ---------------------------------------------------------


@pytest.mark.parametrize("amount", [2**63, -(2**63) - 1, 10**40])
def test_a_json_integer_beyond_64_bits_is_a_400(http, amount):
    response = http.post("/v1/payment_intents", json={"amount": amount, "currency": "usd"})
    assert "between" in _refused(response, param="amount")["message"]
    _no_payment_intents(http)


def test_a_form_integer_of_twenty_digits_is_a_400(http):
    response = http.post("/v1/payment_intents", data={"amount": "9" * 20, "currency": "usd"})
    _refused(response, param="amount")
    response = http.get("/v1/payment_intents", params={"created[gte]": str(2**63)})
    _refused(response, param="created[gte]")
    _no_payment_intents(http)


def test_a_huge_quantity_of_a_line_item_is_a_400(http):
    response = http.post(
        "/v1/payment_intents", json={"line_items": [{"charge_item": "ci_x", "quantity": 2**64}], "currency": "usd"}
    )
    _refused(response, param="line_items[0][quantity]")


@pytest.mark.parametrize("amount", ["0", "-1", "-9223372036854775808"])
def test_zero_and_negative_amounts_are_a_400(http, amount):
    _refused(http.post("/v1/payment_intents", data={"amount": amount, "currency": "usd"}), param="amount")
    _refused(http.post("/v1/topups", data={"amount": amount, "currency": "usd"}), param="amount")
    _refused(http.post("/v1/payouts", data={"amount": amount, "currency": "usd"}), param="amount")
    _no_payment_intents(http)


# --- text PostgreSQL cannot store ----------------------------------------------------------------


def test_a_nul_character_in_a_string_parameter_is_a_400(http):
    response = http.post("/v1/payment_intents", data={"amount": "100", "currency": "usd", "description": "a\x00b"})
    assert "NUL" in _refused(response, param="description")["message"]
    response = http.post("/v1/payment_intents", json={"amount": 100, "currency": "usd", "description": "a\u0000b"})
    _refused(response, param="description")
    _refused(http.get("/v1/events", params={"type": "\x00"}), param="type")
    _no_payment_intents(http)


@pytest.mark.parametrize("metadata", [{"order\x00": "1"}, {"order": "1\x00"}])
def test_a_nul_character_in_metadata_is_a_400(http, metadata):
    response = http.post("/v1/payment_intents", json={"amount": 100, "currency": "usd", "metadata": metadata})
    _refused(response, param="metadata")
    _no_payment_intents(http)


def test_a_nul_character_in_an_id_of_the_url_is_a_400(http):
    _refused(http.get("/v1/payment_intents/pi_%00"), param="intent")
    _refused(http.post("/v1/payment_intents/pi_%00/cancel"), param="intent")
    _refused(http.delete("/v1/webhook_endpoints/we_%00x"), param="webhook_endpoint")


def test_a_lone_surrogate_in_a_json_string_is_a_400(http):
    body = '{"amount": 100, "currency": "usd", "description": "\\ud800"}'
    response = http.post("/v1/payment_intents", content=body, headers={"Content-Type": "application/json"})
    assert "Unicode" in _refused(response, param="description")["message"]
    _no_payment_intents(http)


def test_unicode_text_is_stored_as_given(http):
    text = "Café ☕ 咖啡 \U0001f600 עברית"
    response = http.post(
        "/v1/payment_intents",
        data={"amount": "100", "currency": "usd", "description": text, f"metadata[{text[:10]}]": text},
    )
    assert response.status_code == 200, response.text
    fetched = http.get(f"/v1/payment_intents/{response.json()['id']}").json()
    assert fetched["description"] == text and fetched["metadata"] == {text[:10]: text}


def test_a_nul_character_in_the_idempotency_key_is_a_400(app, shop):
    client = app.test_client()
    response = client.post(
        "/v1/payment_intents",
        data={"amount": "100", "currency": "usd"},
        headers={"Host": shop.host, "Authorization": f"Bearer {shop.secret}", "Idempotency-Key": "k\x00y"},
    )
    assert response.status_code == 400 and response.json["error"]["type"] == "invalid_request_error"
    assert "NUL" in response.json["error"]["message"]


# --- nesting -------------------------------------------------------------------------------------


def test_json_nested_too_deeply_is_a_400(http):
    body = '{"metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = http.post("/v1/payment_intents", content=body, headers={"Content-Type": "application/json"})
    assert "nested too deeply" in _refused(response)["message"]


def test_deeply_nested_form_keys_are_a_400(http):
    key = "metadata" + "[a]" * 20_000
    response = http.post(
        "/v1/payment_intents",
        content=f"amount=100&currency=usd&{key}=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(response)
    key = "shipping" + "[address]" * 5_000
    response = http.post(
        "/v1/payment_intents",
        content=f"amount=100&currency=usd&{key}=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(response)
    _no_payment_intents(http)


# --- lists in OpenAPI's form style ---------------------------------------------------------------


def test_a_list_may_repeat_its_name_as_openapi_form_style_does(http):
    response = http.post(
        "/v1/payment_intents",
        content="amount=100&currency=usd&payment_method_types=card",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["payment_method_types"] == ["card"]
    response = http.post(
        "/v1/webhook_endpoints",
        content="url=http://127.0.0.1:9/h&enabled_events=payment_intent.succeeded&enabled_events=refund.created",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["enabled_events"] == ["payment_intent.succeeded", "refund.created"]
    # A name repeated for a parameter that is not a list: its last value, as before.
    response = http.post(
        "/v1/payment_intents",
        content="amount=100&amount=250&currency=usd",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and response.json()["amount"] == 250


# --- Stripe's metadata limits: 50 keys, keys of 40 characters, values of 500 ------------------------


def test_metadata_at_stripes_limits_is_taken(http):
    metadata = {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(50)}
    response = http.post("/v1/payment_intents", json={"amount": 100, "currency": "usd", "metadata": metadata})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({f"k{i}": "v" for i in range(51)}, "at most 50 keys"),
        ({"k" * 41: "v"}, "at most 40 characters"),
        ({"k": "v" * 501}, "at most 500 characters"),
    ],
)
def test_metadata_beyond_stripes_limits_is_a_400(http, metadata, needle):
    for path, extra in [
        ("/v1/payment_intents", {"amount": 100, "currency": "usd"}),
        ("/v1/topups", {"amount": 100, "currency": "usd"}),
        ("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/h", "enabled_events": ["*"]}),
    ]:
        response = http.post(path, json={**extra, "metadata": metadata})
        assert needle in _refused(response)["message"], path
    _no_payment_intents(http)


def test_metadata_merged_beyond_50_keys_is_a_400(http):
    pi = http.post(
        "/v1/payment_intents", json={"amount": 100, "currency": "usd", "metadata": {f"a{i}": "v" for i in range(30)}}
    ).json()
    response = http.post(f"/v1/payment_intents/{pi['id']}", json={"metadata": {f"b{i}": "v" for i in range(21)}})
    assert "at most 50 keys" in _refused(response)["message"]
    assert len(http.get(f"/v1/payment_intents/{pi['id']}").json()["metadata"]) == 30


# --- no key, a wrong key: Stripe's 401 on every operation that needs one ---------------------------


def _url(operation) -> str:
    return re.sub(r"<[^>]+>", "x_1", operation.path)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer sk_test_" + "0" * 99,
        "Bearer sk_test_wrong",
        "Bearer pk_test_abcdefghijklmnopqrstuvwx",
        "Bearer dk_test_abcdefghijklmnopqrstuvwx",
        "Basic Og==",  # ':' with no key
        "Basic !!!not-base64",
        "Token sk_test_abc",
    ],
)
def test_no_key_or_a_wrong_key_is_a_stripe_401_on_every_operation(api_server, shop, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=api_server, headers=headers, timeout=30) as client:
        for operation in OPERATIONS:
            response = client.request(operation.method, _url(operation))
            if not operation.authenticated:
                assert response.status_code == 200
                continue
            error = _refused(response, status=401)
            assert error["type"] in ERROR_TYPES
            assert "sk_test_0000" not in error["message"]  # a key is never echoed beyond its masked form
