"""Fuzzing the merchant API from its own OpenAPI document (schemathesis, in-process over WSGI).

Every operation of `/v1/openapi.json`, as the tenant's host serves it, gets generated requests,
valid and invalid (schemathesis' positive and negative modes), sent with a real test-mode secret
key of a seeded merchant on the tenant's host. Half of the generated ids are replaced by ids of
real objects in their states (a PaymentIntent awaiting payment, one to capture, a paid one, a
canceled one, a refund, payouts, ...), so what acts on objects is reached too. Each answer must:
- not be a 5xx;
- have a documented status code and content type, and match the response schema the document
  declares for it (the success object, or Stripe's error object);
- if it is an error, be Stripe's error object: `{"error": {"type": ..., "message": ...}}`.

The run is bounded and deterministic (derandomized Hypothesis, no example database):
`PAYPLAT_FUZZ_EXAMPLES` examples per operation (default 20, about 600 requests) for CI. A deep
run (`PAYPLAT_FUZZ_EXAMPLES=200`) adds schemathesis' coverage phase: every boundary and
wrong-type value of every parameter. It is one test with a subtest per operation (one merchant
and one set of objects for all; the suite's `clean_state` empties the tables before the next test),
so under pytest-xdist it runs on one worker against that worker's database.
"""

from __future__ import annotations

import itertools
import json
import os
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CI_EXAMPLES = 20
EXAMPLES = int(os.environ.get("PAYPLAT_FUZZ_EXAMPLES", str(CI_EXAMPLES)))
IDEMPOTENCY_KEYS = itertools.count()


@pytest.fixture
def api_schema(request, app, shop):
    """The document as the tenant's host serves it at /v1/openapi.json."""
    # schemathesis' lazy schema renames the test per operation through `node._nodeid`, which
    # pytest 9 no longer has (it is `_id` now): give it the attribute to read.
    request.node._nodeid = request.node.nodeid
    loaded = schemathesis.openapi.from_wsgi("/v1/openapi.json", app, base_url=f"http://{shop.host}")
    # The coverage phase (every boundary and wrong-type value of every parameter, about 4000
    # requests) runs in deep runs only; CI's bounded run is the Hypothesis phase, positive and negative.
    loaded.config.phases.coverage.enabled = EXAMPLES > CI_EXAMPLES
    return loaded


@pytest.fixture
def seeded(app, shop, other_shop) -> dict[str, list[str]]:
    """Objects of the shop in their states, by the URL value or parameter that names them, so that
    half of the generated ids are real ones and the operations on them are reached too."""
    client = app.test_client()
    headers = {"Host": shop.host, "Authorization": f"Bearer {shop.secret}"}

    def post(path: str, **data: str) -> str:
        response = client.post(path, data=data, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json["id"]

    def listed(path: str) -> list[str]:
        return [item["id"] for item in client.get(path, headers=headers).json["data"]]

    card = {"amount": "5000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}
    paid = post("/v1/payment_intents", **card)
    intents = [
        post("/v1/payment_intents", amount="1500", currency="usd"),
        post("/v1/payment_intents", **card, capture_method="manual"),
        paid,
        post("/v1/payment_intents", amount="700", currency="usd", confirm="false"),
    ]
    post(f"/v1/payment_intents/{intents[3]}/cancel")
    post("/v1/topups", amount="100000", currency="usd")
    ids = {
        "intent": intents,
        "payment_intent": intents,
        "refund": [post("/v1/refunds", payment_intent=paid, amount="100")],
        "payout": [post("/v1/payouts", amount="1000", currency="usd") for _ in range(2)],
        "transfer": [post("/v1/transfers", amount="1000", currency="usd", destination=str(other_shop.merchant))],
        "destination": [str(other_shop.merchant)],
        "webhook_endpoint": [
            post("/v1/webhook_endpoints", url="http://127.0.0.1:9/h", **{"enabled_events[]": "*"}) for _ in range(2)
        ],
        "topup": listed("/v1/topups"),
    }
    ids["/v1/events/{id}"] = listed("/v1/events")
    ids["/v1/balance_transactions/{id}"] = listed("/v1/balance_transactions")
    for name in ("starting_after", "ending_before", "source"):
        ids[name] = [*intents, *ids["/v1/balance_transactions/{id}"]]
    return ids


def _real_ids(case, seeded: dict[str, list[str]]) -> None:
    """Replace half of the generated ids by real ones (chosen from the generated value, so the same
    on every run)."""

    def pick(key: str, value) -> object:
        choices = seeded.get(key)
        if not choices or not isinstance(value, str):
            return value
        digest = zlib.crc32(value.encode("utf-8", "surrogatepass"))
        return choices[digest // 2 % len(choices)] if digest % 2 == 0 else value

    for name, value in (case.path_parameters or {}).items():
        key = case.operation.path if name == "id" else name
        case.path_parameters[name] = pick(key, value)
    for container in (case.query, case.body):
        if isinstance(container, dict):
            for name, value in container.items():
                container[name] = pick(name, value)


schema = schemathesis.pytest.from_fixture("api_schema")

STRIPE_ERROR_TYPES = {
    "api_error",
    "card_error",
    "idempotency_error",
    "invalid_request_error",
    "rate_limit_error",
}


def stripe_error_shape(ctx, response, case) -> bool | None:
    """Every error (4xx and 5xx) is Stripe's error object, with a known type and a message."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error.get("type") in STRIPE_ERROR_TYPES, error
    assert isinstance(error.get("message"), str) and error["message"].strip(), error
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    stripe_error_shape,
]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases on every run: CI fails for a reason, not by luck
    database=None,
    deadline=None,
    # One merchant per operation, kept across its examples (the objects they create pile up).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_fuzz(case, app, shop, seeded):
    _real_ids(case, seeded)
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if key:
        # A generated key is reused by later cases with other parameters (a 400 that would hide
        # what they do): make it unique, keeping it on its side of the 255-character limit.
        unique = f"{next(IDEMPOTENCY_KEYS):016d}"
        case.headers["Idempotency-Key"] = unique + (key if len(key) <= 255 - 16 else key[16:])
    case.call_and_validate(
        app=app,
        base_url=f"http://{shop.host}",
        headers={"Authorization": f"Bearer {shop.secret}"},
        checks=CHECKS,
    )
