"""The API's HTTP conventions, request by request: encodings, headers, error objects, hosts."""

from __future__ import annotations

import re

import pytest

from core.db import db
from payments import intents
from tenants import provisioning
from tenants.audit import Actor
from tenants.isolation import platform_scope
from tenants.models import Tenant

REQUEST_ID = re.compile(r"^req_[A-Za-z0-9]{14}$")


def _is_stripe_error(response, status: int, type_: str = "invalid_request_error") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert REQUEST_ID.match(response.headers["Request-Id"])
    error = response.json()["error"]
    assert error["type"] == type_ and error["message"]
    return error


def test_success_answers_are_json_with_a_request_id(http):
    response = http.get("/v1/balance")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert REQUEST_ID.match(response.headers["Request-Id"])
    assert response.json() == {"object": "balance", "livemode": False, "available": [], "pending": []}
    assert http.get("/v1/balance").headers["Request-Id"] != response.headers["Request-Id"]


@pytest.mark.parametrize(
    "body",
    [
        # Stripe's form encoding, with both ways of writing an array, and booleans as words.
        "amount=2000&currency=usd&payment_method_types[]=card&metadata[order_id]=6735&confirm=true"
        "&payment_method=pm_card_visa",
        "amount=2000&currency=usd&payment_method_types[0]=card&metadata[order_id]=6735&confirm=true"
        "&payment_method=pm_card_visa",
    ],
)
def test_form_bodies_with_nested_keys(http, body):
    response = http.post(
        "/v1/payment_intents", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    pi = response.json()
    assert (pi["status"], pi["metadata"], pi["payment_method_types"]) == ("succeeded", {"order_id": "6735"}, ["card"])


def test_json_bodies(http):
    response = http.post(
        "/v1/payment_intents",
        json={"amount": 1200, "currency": "usd", "metadata": {"order_id": 7}, "confirm": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"order_id": "7"} and response.json()["status"] == "requires_payment_method"
    error = _is_stripe_error(
        http.post("/v1/payment_intents", json={"amount": 1200, "currency": "usd", "confirm": 1}), 400
    )
    assert error["param"] == "confirm"


@pytest.mark.parametrize(
    ("content", "content_type", "needle"),
    [
        ('{"amount": 100,', "application/json", "Invalid JSON body"),
        ("[1, 2]", "application/json", "must be an object"),
        ("amount=1&amount[x]=2", "application/x-www-form-urlencoded", "conflicts"),
        ("metadata[]x=1", "application/x-www-form-urlencoded", "Invalid parameter name"),
        ("<xml/>", "application/xml", "Unsupported Content-Type"),
    ],
)
def test_a_malformed_body_is_a_400_error_object(http, content, content_type, needle):
    response = http.post("/v1/payment_intents", content=content, headers={"Content-Type": content_type})
    assert needle in _is_stripe_error(response, 400)["message"]


def test_unknown_urls_and_methods_are_stripe_404s(http):
    error = _is_stripe_error(http.get("/v1/charges"), 404)
    assert error["message"] == "Unrecognized request URL (GET: /v1/charges)."
    error = _is_stripe_error(http.delete("/v1/payment_intents"), 404)
    assert error["message"] == "Unrecognized request URL (DELETE: /v1/payment_intents)."
    _is_stripe_error(http.put("/v1/balance"), 404)
    _is_stripe_error(http.get("/v1"), 404)
    # Stripe's error object even without a key: the URL does not exist either way.
    _is_stripe_error(http.get("/v1/charges", headers={"Authorization": ""}), 404)


def test_the_api_exists_only_on_tenant_hosts(app, shop):
    client = app.test_client()
    for host in ("localhost", "nobody.localhost"):
        for path in ("/v1/balance", "/v1/openapi.json", "/v1/nothing"):
            response = client.get(path, base_url=f"http://{host}", headers={"Authorization": f"Bearer {shop.secret}"})
            assert response.status_code == 404, (host, path)
            assert response.is_json and response.json["error"]["type"] == "invalid_request_error"
            assert "Acme" not in response.get_data(as_text=True)
    assert client.get("/v1/balance", base_url=f"http://{shop.host}", auth=(shop.secret, "")).status_code == 200


def test_a_crash_is_a_500_api_error_without_details(http, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(intents, "create", broken)
    response = http.post("/v1/payment_intents", data={"amount": "100", "currency": "usd"})
    error = _is_stripe_error(response, 500, "api_error")
    assert "hunter2" not in response.text and set(error) == {"type", "message"}


def test_live_and_test_mode_do_not_see_each_other(http, shop, issue_key):
    pi = http.post("/v1/payment_intents", data={"amount": "100", "currency": "usd"}).json()
    live = issue_key(shop, "live")
    assert live.startswith("sk_live_")
    response = http.get(f"/v1/payment_intents/{pi['id']}", headers={"Authorization": f"Bearer {live}"})
    assert _is_stripe_error(response, 404)["code"] == "resource_missing"
    listed = http.get("/v1/payment_intents", headers={"Authorization": f"Bearer {live}"}).json()
    assert listed["data"] == [] and listed["has_more"] is False
    assert http.get("/v1/balance", headers={"Authorization": f"Bearer {live}"}).json()["livemode"] is True


def test_a_suspended_tenants_api_refuses_with_an_error_object(app, http, shop):
    with app.app_context(), platform_scope(db.session):
        provisioning.set_tenant_status(db.session.get(Tenant, shop.tenant_id), "suspended", Actor.system())
        db.session.remove()
    response = http.get("/v1/balance")
    assert _is_stripe_error(response, 403)["message"] == "This account cannot use the API at the moment."
    assert "Acme" not in response.text
