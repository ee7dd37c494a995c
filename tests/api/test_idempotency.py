"""`Idempotency-Key`: one request runs per key, also under concurrency; the first answer is replayed."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import stripe

from payments import balance_operations, intents
from payments.channels.sandbox import STORE, SandboxAdapter
from portal.api import idempotency
from portal.api.operations import OPERATIONS, recovery_for

BODY = {"amount": "2500", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}


def _count(owner_engine, table: str) -> int:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _sandbox_charges(app, shop) -> int:
    """The charges the shop's sandbox account has made (its state is in the app's Redis)."""
    with app.app_context():
        return len(STORE.charge_references(str(shop.channel)))


def test_fifty_concurrent_requests_with_one_key_charge_once(app, api_server, shop, owner_engine):
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
    assert _sandbox_charges(app, shop) == 1

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
    assert _count(owner_engine, "payment_intents") == 1 and _sandbox_charges(app, shop) == 1


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


# --- a process that dies while its request runs ----------------------------------------------------


class ProcessDied(Exception):
    """Stands for the process's end: what it committed stays, nothing after it runs."""


def _keys(owner_engine) -> list:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT status, locked_at, object_id FROM idempotency_keys")).all()


def _lease_runs_out(owner_engine) -> None:
    """Time passes for the database: the claims' leases are over."""
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE idempotency_keys SET locked_at = locked_at - :age WHERE locked_at IS NOT NULL"),
            {"age": timedelta(seconds=idempotency.LEASE_SECONDS + 1)},
        )


@pytest.fixture
def dead(monkeypatch):
    """`dead()`: from now on the request's process dies without cleaning up (its key stays claimed);
    `dead.revive()`: the retries run in a process that works."""

    class Switch:
        def __call__(self):
            monkeypatch.setattr(idempotency, "_release", lambda *args: None)

        def revive(self):
            monkeypatch.setattr(idempotency, "_release", real_release)

    real_release = idempotency._release
    return Switch()


@pytest.fixture
def charges(monkeypatch):
    """Every charge the sandbox channel is asked for (its idempotency keys); `charges.die_after = True`
    makes the process die right after the channel took the money."""
    real = SandboxAdapter.charge

    class Spy(list):
        die_after = False

    spy = Spy()

    def charge(self, request):
        spy.append(request.idempotency_key)
        result = real(self, request)
        if spy.die_after:
            spy.die_after = False
            raise ProcessDied("the process died before it heard the channel's answer")
        return result

    monkeypatch.setattr(SandboxAdapter, "charge", charge)
    return spy


def _in_use(response: httpx.Response) -> bool:
    error = response.json()["error"]
    return response.status_code == 409 and error["code"] == "idempotency_key_in_use"


def test_a_retry_after_the_process_died_mid_payment_answers_with_that_payment(http, owner_engine, dead, charges):
    headers = {"Idempotency-Key": "died-mid-payment"}
    dead()
    charges.die_after = True
    assert http.post("/v1/payment_intents", data=BODY, headers=headers).status_code == 500
    [key] = _keys(owner_engine)
    # The intent and its recovery point were committed together, before the channel was called.
    assert key.status == "in_progress" and key.locked_at is not None and key.object_id.startswith("pi_")
    assert len(charges) == 1

    dead.revive()
    # While the lease runs the request may still be going: the key is in use.
    assert _in_use(http.post("/v1/payment_intents", data=BODY, headers=headers))

    _lease_runs_out(owner_engine)
    retried = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert retried.status_code == 200 and retried.json()["id"] == key.object_id
    assert retried.json() == http.get(f"/v1/payment_intents/{key.object_id}").json()
    assert _count(owner_engine, "payment_intents") == 1 and _count(owner_engine, "payment_attempts") == 1
    assert len(charges) == 1  # the retry charged nothing

    replay = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == retried.json()
    assert len(charges) == 1


def test_a_retry_after_the_process_died_before_committing_anything_runs_the_request(
    http, monkeypatch, owner_engine, dead, charges
):
    real = intents.create

    def dies(*args, **kwargs):
        raise ProcessDied("the process died before it wrote anything")

    headers = {"Idempotency-Key": "died-early"}
    dead()
    monkeypatch.setattr(intents, "create", dies)
    assert http.post("/v1/payment_intents", data=BODY, headers=headers).status_code == 500
    [key] = _keys(owner_engine)
    assert key.status == "in_progress" and key.object_id is None

    dead.revive()
    monkeypatch.setattr(intents, "create", real)
    assert _in_use(http.post("/v1/payment_intents", data=BODY, headers=headers))
    assert _count(owner_engine, "payment_intents") == 0 and charges == []

    _lease_runs_out(owner_engine)
    retried = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "succeeded"
    assert "Idempotent-Replayed" not in retried.headers
    assert _count(owner_engine, "payment_intents") == 1 and len(charges) == 1
    replay = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == retried.json()
    assert _count(owner_engine, "payment_intents") == 1 and len(charges) == 1


def test_a_crash_after_the_payment_was_committed_answers_the_retry_with_that_payment(http, owner_engine, charges):
    headers = {"Idempotency-Key": "crash-after-charge"}
    charges.die_after = True
    assert http.post("/v1/payment_intents", data=BODY, headers=headers).status_code == 500
    # The key is kept, its lease released: the retry answers at once, and pays nothing again.
    [key] = _keys(owner_engine)
    assert (key.status, key.locked_at) == ("in_progress", None) and key.object_id.startswith("pi_")
    retried = http.post("/v1/payment_intents", data=BODY, headers=headers)
    assert retried.status_code == 200 and retried.json()["id"] == key.object_id
    assert _count(owner_engine, "payment_intents") == 1 and len(charges) == 1


def test_a_retry_after_the_process_died_answers_with_the_object_the_request_acted_on(
    http, monkeypatch, owner_engine, dead
):
    http.post("/v1/topups", data={"amount": "3000", "currency": "usd"})
    payout = http.post("/v1/payouts", data={"amount": "2000", "currency": "usd"}).json()
    real = balance_operations.cancel_payout

    def cancel_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise ProcessDied("the process died after the cancellation was committed")

    headers = {"Idempotency-Key": "cancel-1"}
    dead()
    monkeypatch.setattr(balance_operations, "cancel_payout", cancel_then_die)
    assert http.post(f"/v1/payouts/{payout['id']}/cancel", headers=headers).status_code == 500
    assert [k.object_id for k in _keys(owner_engine) if k.status == "in_progress"] == [payout["id"]]

    dead.revive()
    monkeypatch.setattr(balance_operations, "cancel_payout", real)
    _lease_runs_out(owner_engine)
    retried = http.post(f"/v1/payouts/{payout['id']}/cancel", headers=headers)
    # The payout as it is now; canceling it again would have been refused (payout_not_cancelable).
    assert retried.status_code == 200 and (retried.json()["id"], retried.json()["status"]) == (payout["id"], "canceled")
    balance = http.get("/v1/balance").json()
    assert [(b["amount"], b["currency"]) for b in balance["available"]] == [(3000, "usd")]


def test_a_request_whose_lease_ran_out_cannot_commit_once_a_retry_took_its_key(
    api_server, http, shop, monkeypatch, owner_engine
):
    """Should a request outlive its lease, the retry that takes the key over runs it, and the slow
    request is refused at its first write: nothing is done twice."""
    paused, resume = threading.Event(), threading.Event()
    real = balance_operations.clean_amount
    calls = itertools.count()

    def first_call_pauses(*args, **kwargs):
        if next(calls) == 0:
            paused.set()
            assert resume.wait(timeout=30)
        return real(*args, **kwargs)

    monkeypatch.setattr(balance_operations, "clean_amount", first_call_pauses)
    headers = {"Authorization": f"Bearer {shop.secret}", "Idempotency-Key": "slow-1"}
    body = {"amount": "700", "currency": "usd"}
    slow: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: slow.append(httpx.post(f"{api_server}/v1/topups", data=body, headers=headers, timeout=60))
    )
    thread.start()
    try:
        assert paused.wait(timeout=30)
        _lease_runs_out(owner_engine)
        retried = http.post("/v1/topups", data=body, headers=headers)
    finally:
        resume.set()
        thread.join(timeout=60)
    assert retried.status_code == 200 and retried.json()["amount"] == 700
    assert len(slow) == 1 and _in_use(slow[0])
    assert _count(owner_engine, "topups") == 1
    balance = http.get("/v1/balance").json()
    assert [(b["amount"], b["currency"]) for b in balance["available"]] == [(700, "usd")]
    replay = http.post("/v1/topups", data=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == retried.json()


def test_every_post_names_the_object_a_retry_would_answer_with():
    for operation in OPERATIONS:
        if operation.method == "POST":
            assert recovery_for(operation, {}) is not None, operation.endpoint
