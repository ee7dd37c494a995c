"""`Idempotency-Key`: one request runs per key, also under concurrency; the first answer is replayed."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import stripe

from payments import intents
from payments.channels.sandbox import STORE

BODY = {"amount": "2500", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}


def _count(owner_engine, table: str) -> int:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _sandbox_charges(shop) -> int:
    with STORE.lock:
        return sum(1 for account, _ in STORE.charges if account == str(shop.channel))


def test_fifty_concurrent_requests_with_one_key_charge_once(api_server, shop, owner_engine):
    workers = 50
    barrier = threading.Barrier(workers)
    answers: list[httpx.Response] = []
    failures: list[BaseException] = []
    headers = {"Authorization": f"Bearer {shop.secret}", "Idempotency-Key": "order-6735"}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=0)

    with httpx.Client(base_url=api_server, headers=headers, timeout=60, limits=limits) as client:

        def post():
            try:
                barrier.wait(timeout=30)
                answers.append(client.post("/v1/payment_intents", data=BODY))
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        threads = [threading.Thread(target=post) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    assert not failures and len(answers) == workers

    succeeded = [a for a in answers if a.status_code == 200]
    in_use = [a for a in answers if a.status_code == 409]
    assert len(succeeded) + len(in_use) == workers, sorted({a.status_code for a in answers})
    assert {a.json()["id"] for a in succeeded} and len({a.json()["id"] for a in succeeded}) == 1
    assert all(a.json()["status"] == "succeeded" for a in succeeded)
    # Exactly one answer ran the request; the other 200s are the stored answer, replayed.
    assert [a.headers.get("Idempotent-Replayed") for a in succeeded].count(None) == 1
    for answer in in_use:
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("idempotency_error", "idempotency_key_in_use")
    assert _count(owner_engine, "payment_intents") == 1
    assert _count(owner_engine, "payment_attempts") == 1
    assert _sandbox_charges(shop) == 1

    # After the rush, the key answers with the same PaymentIntent (where a retried 409 lands).
    with httpx.Client(base_url=api_server, headers=headers) as client:
        again = client.post("/v1/payment_intents", data=BODY)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == succeeded[0].json()
        # The same key with other parameters is refused, and runs nothing.
        other = client.post("/v1/payment_intents", data={**BODY, "amount": "2600"})
        assert other.status_code == 400
        error = other.json()["error"]
        assert error["type"] == "idempotency_error"
        assert error["message"].startswith(
            "Keys for idempotent requests can only be used with the same parameters they were first used with"
        )
    assert _count(owner_engine, "payment_intents") == 1 and _sandbox_charges(shop) == 1


def test_the_sdk_sees_a_reused_key_as_an_idempotency_error(stripe_client):
    first = stripe_client.v1.payment_intents.create({"amount": 700, "currency": "usd"}, {"idempotency_key": "same-key"})
    replay = stripe_client.v1.payment_intents.create(
        {"amount": 700, "currency": "usd"}, {"idempotency_key": "same-key"}
    )
    assert replay.id == first.id
    with pytest.raises(stripe.IdempotencyError) as reused:
        stripe_client.v1.payment_intents.create({"amount": 701, "currency": "usd"}, {"idempotency_key": "same-key"})
    assert reused.value.http_status == 400


def test_form_and_json_with_the_same_parameters_are_the_same_request(http):
    headers = {"Idempotency-Key": "enc-1"}
    form = http.post("/v1/payment_intents", data={"amount": "800", "currency": "usd"}, headers=headers)
    as_json = http.post("/v1/payment_intents", json={"amount": 800, "currency": "usd"}, headers=headers)
    assert as_json.json()["id"] == form.json()["id"] and as_json.headers["Idempotent-Replayed"] == "true"


def test_an_error_answer_is_stored_and_replayed(http, owner_engine):
    declined = {**BODY, "payment_method": "pm_card_chargeDeclined"}
    headers = {"Idempotency-Key": "declined-1"}
    first = http.post("/v1/payment_intents", data=declined, headers=headers)
    assert first.status_code == 402 and first.json()["error"]["decline_code"] == "generic_decline"
    again = http.post("/v1/payment_intents", data=declined, headers=headers)
    assert again.status_code == 402 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(owner_engine, "payment_attempts") == 1


def test_a_request_refused_before_it_ran_stores_nothing(http):
    headers = {"Idempotency-Key": "typo-1"}
    refused = http.post("/v1/payment_intents", data={**BODY, "amuont": "1"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "parameter_unknown"
    fixed = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers


def test_a_crash_frees_the_key_for_a_retry(http, monkeypatch, owner_engine):
    real = intents.create

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    headers = {"Idempotency-Key": "crash-1"}
    monkeypatch.setattr(intents, "create", broken)
    assert http.post("/v1/payment_intents", data=BODY, headers=headers).status_code == 500
    assert _count(owner_engine, "idempotency_keys") == 0
    monkeypatch.setattr(intents, "create", real)
    retried = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "succeeded"


def test_keys_expire_after_24_hours(http, owner_engine):
    headers = {"Idempotency-Key": "old-1"}
    first = http.post("/v1/payment_intents", data={"amount": "100", "currency": "usd"}, headers=headers).json()
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE idempotency_keys SET created_at = created_at - :age"),
            {"age": timedelta(hours=24, minutes=1)},
        )
    # An expired key is a new key: other parameters are fine, and the request runs.
    fresh = http.post("/v1/payment_intents", data={"amount": "200", "currency": "usd"}, headers=headers)
    assert fresh.status_code == 200 and fresh.json()["id"] != first["id"] and fresh.json()["amount"] == 200
    replay = http.post("/v1/payment_intents", data={"amount": "200", "currency": "usd"}, headers=headers)
    assert replay.json()["id"] == fresh.json()["id"]


def test_keys_belong_to_one_merchant(http, api_server, other_shop):
    headers = {"Idempotency-Key": "shared-1"}
    mine = http.post("/v1/payment_intents", data={"amount": "100", "currency": "usd"}, headers=headers)
    theirs = http.post(
        "/v1/payment_intents",
        data={"amount": "100", "currency": "usd"},
        headers={**headers, "Authorization": f"Bearer {other_shop.secret}"},
    )
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]


def test_a_key_too_long_is_refused(http):
    response = http.post("/v1/payment_intents", data=BODY, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400 and response.json()["error"]["type"] == "idempotency_error"
