"""The published OpenAPI document describes exactly what the API implements."""

from __future__ import annotations

import re

import httpx

from portal.api.openapi import openapi_path


def _document(api_server) -> dict:
    with httpx.Client(base_url=api_server) as anonymous:  # published without a key
        response = anonymous.get("/v1/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


def test_every_v1_route_is_in_the_document_and_nothing_else(app, api_server, shop):
    document = _document(api_server)
    assert document["openapi"].startswith("3.0") and document["servers"] == [{"url": api_server}]
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule == "/v1" or rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    for path, item in document["paths"].items():
        for operation in item.values():
            variables = set(re.findall(r"{(\w+)}", path))
            assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == variables, path


def test_every_reference_resolves(api_server, shop):
    document = _document(api_server)
    text = str(document)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in document["components"]["schemas"], name
    for wanted in ("payment_intent", "refund", "balance", "event", "list", "error"):
        assert wanted in document["components"]["schemas"]


def test_the_object_schemas_match_real_answers(http, api_server):
    schemas = _document(api_server)["components"]["schemas"]

    def matches(name: str, obj: dict) -> None:
        assert set(obj) == set(schemas[name]["properties"]), name
        assert set(schemas[name]["required"]) <= set(obj), name

    pi = http.post(
        "/v1/payment_intents",
        data={"amount": "2000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
    ).json()
    matches("payment_intent", pi)
    matches("refund", http.post("/v1/refunds", data={"payment_intent": pi["id"], "amount": "100"}).json())
    matches("balance", http.get("/v1/balance").json())
    events = http.get("/v1/events").json()
    matches("list", events)
    matches("event", events["data"][0])
    declined = http.post(
        "/v1/payment_intents",
        data={"amount": "2000", "currency": "usd", "payment_method": "pm_card_chargeDeclined", "confirm": "true"},
    ).json()
    assert set(declined) == {"error"}
    assert set(declined["error"]) <= set(schemas["error"]["properties"]["error"]["properties"])
    matches("payment_intent", declined["error"]["payment_intent"])

    created = http.post("/v1/webhook_endpoints", data={"url": "http://127.0.0.1:9/h", "enabled_events[]": "*"}).json()
    matches("webhook_endpoint", created)
    assert "secret" in created and "secret" not in schemas["webhook_endpoint"]["required"]
    # Retrieved, it is the same object without the secret: the one optional property.
    retrieved = http.get(f"/v1/webhook_endpoints/{created['id']}").json()
    assert set(retrieved) == set(created) - {"secret"} == set(schemas["webhook_endpoint"]["required"])
    matches("list", http.get("/v1/webhook_endpoints").json())
    matches("deleted_webhook_endpoint", http.delete(f"/v1/webhook_endpoints/{created['id']}").json())


def test_documented_parameters_are_the_accepted_ones(http, api_server):
    """Each POST operation's documented body is what the API takes: a name outside it is refused."""
    document = _document(api_server)
    body = document["paths"]["/v1/payment_intents"]["post"]["requestBody"]["content"]
    form = body["application/x-www-form-urlencoded"]
    # amount and currency: required unless line_items are given (the API computes them then).
    assert "required" not in form["schema"]
    assert "line_items" in form["schema"]["properties"]["amount"]["description"]
    assert form["schema"]["properties"]["line_items"]["items"]["required"] == ["charge_item"]
    assert form["encoding"]["metadata"] == {"style": "deepObject", "explode": True}
    assert body["application/json"]["schema"] == form["schema"]
    for name in form["schema"]["properties"]:
        response = http.post("/v1/payment_intents", data={name: "x"})
        assert response.json()["error"].get("code") != "parameter_unknown", name
    response = http.post("/v1/payment_intents", data={"amount": "1", "currency": "usd", "undocumented": "x"})
    assert response.json()["error"]["code"] == "parameter_unknown"
    listed = document["paths"]["/v1/events"]["get"]["parameters"]
    assert {p["name"] for p in listed} == {
        "limit",
        "starting_after",
        "ending_before",
        "created",
        "expand",
        "type",
        "types",
    }
