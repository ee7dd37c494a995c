"""The sandbox channel through the adapter contract, the registry, and secrets that never print.

The sandbox keeps its state in Redis, as the app does: every adapter here uses the test Redis database
(emptied before each test), and other processes (a `python` subprocess, an RQ worker) see it too.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis import Redis

from core.db import db
from payments import intents
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channels import ADAPTERS, adapter_for, channel_types
from payments.channels.base import (
    CancelRequest,
    Capabilities,
    CaptureMethod,
    CaptureRequest,
    ChannelAdapter,
    ChannelConfig,
    ChannelConfigError,
    ChannelDeclined,
    ChannelInvalidRequest,
    ChannelNotSupported,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    ChargeStatus,
    ContractRequest,
    InvalidNotification,
    PayoutRequest,
    PayoutStatus,
    QueryResult,
    RefundRequest,
    RefundStatus,
    Secret,
    sign_payload,
)
from payments.channels.sandbox import (
    DECLINING_METHODS,
    EVENT_TYPES,
    NATIVE_STATUS,
    SIGNATURE_HEADER,
    SUCCEEDING_METHODS,
    SandboxAdapter,
    SandboxStore,
    to_charge_status,
)
from payments.channels.sandbox_store import RETENTION_SECONDS
from payments.models import PaymentAttempt
from tenants.audit import Actor
from tenants.isolation import tenant_context

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc0de"
WEBHOOK_SECRET = "whsec_8f7Lq2mZpX4vB9nR1tK6yW3s"
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now=NOON):
        self.now = now

    def __call__(self):
        return self.now


class Sleeps(list):
    """Records what the sandbox asked to sleep for, instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture(scope="module")
def redis(app):
    connection = Redis.from_url(app.config["REDIS_URL"])
    yield connection
    connection.close()


_store: SandboxStore | None = None  # the `store` of the running test


@pytest.fixture(autouse=True)
def store(redis, monkeypatch) -> SandboxStore:
    """The store of every adapter `sandbox()` builds: the test Redis database, as the app uses it."""
    shared = SandboxStore(redis)
    monkeypatch.setitem(globals(), "_store", shared)
    return shared


def sandbox(*, settings=None, credentials=None, clock=None, sleep=None, name="Sandbox EU", livemode=False):
    """A sandbox account of its own (fresh id), on a fixed clock, recording its sleeps."""
    if credentials is None:
        credentials = {"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET}
    config = ChannelConfig(
        id=str(uuid.uuid4()), name=name, credentials=credentials, settings=settings or {}, livemode=livemode
    )
    return SandboxAdapter(
        config,
        store=_store,
        sleep=Sleeps() if sleep is None else sleep,
        clock=Clock() if clock is None else clock,
    )


def charge_request(amount=2_000, method="pm_card_visa", key=None, **kwargs):
    return ChargeRequest(
        amount=amount,
        currency="EUR",
        idempotency_key=key or str(uuid.uuid4()),
        payment_method=method,
        **kwargs,
    )


def refund_request(reference, amount=None, key=None):
    return RefundRequest(reference=reference, amount=amount, idempotency_key=key or str(uuid.uuid4()))


# --- the outcome table ----------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(SUCCEEDING_METHODS))
def test_good_test_cards_succeed(method):
    adapter = sandbox()
    result = adapter.charge(charge_request(2_000, method))
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference.startswith("sbx_ch_") and result.amount == 2_000 and result.currency == "EUR"
    state = adapter.query(result.reference)
    assert isinstance(state, QueryResult)
    assert state.status is ChargeStatus.SUCCEEDED and state.amount_captured == 2_000


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error"),
    ],
)
def test_declining_test_cards_are_declined_with_their_code(method, code):
    adapter = sandbox()
    request = charge_request(2_000, method)
    with pytest.raises(ChannelDeclined) as declined:
        adapter.charge(request)
    error = declined.value
    assert error.decline_code == code and not error.fail_over
    assert "'Sandbox EU' (sandbox) declined the charge" in str(error)
    state = adapter.query(error.reference)
    assert state.status is ChargeStatus.FAILED and state.failure_code == code and state.amount_captured == 0
    # The same key answers with the same decline, never a second attempt.
    with pytest.raises(ChannelDeclined) as again:
        adapter.charge(request)
    assert again.value.reference == error.reference and again.value.decline_code == code


def test_every_declining_method_in_the_table_is_tested():
    assert len(DECLINING_METHODS) == 6


def test_an_unknown_payment_method_or_none_is_an_invalid_request():
    adapter = sandbox()
    with pytest.raises(ChannelInvalidRequest) as unknown:
        adapter.charge(charge_request(method="pm_card_doesNotExist"))
    assert unknown.value.code == "resource_missing"
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.charge(charge_request(method=None))
    assert missing.value.code == "missing_elements" and "Card" in str(missing.value)


@pytest.mark.parametrize("amount", [4_001, 104_001, 2_504_001])
def test_a_timeout_leaves_the_outcome_unknown_until_queried(amount):
    adapter = sandbox()
    request = charge_request(amount)
    with pytest.raises(ChannelTimeout) as timeout:
        adapter.charge(request)
    assert not timeout.value.fail_over and timeout.value.idempotency_key == request.idempotency_key
    state = adapter.query(idempotency_key=request.idempotency_key)
    assert state.status is ChargeStatus.SUCCEEDED and state.amount == amount
    assert adapter.query(state.reference).status is ChargeStatus.SUCCEEDED
    # A retry with the same key finds the charge the channel already made.
    retry = adapter.charge(request)
    assert retry.reference == state.reference
    assert len(adapter.fetch_statement(NOON.date()).lines) == 1


def test_a_timeout_on_a_declining_card_is_resolved_as_failed():
    adapter = sandbox()
    request = charge_request(4_001, "pm_card_chargeDeclinedInsufficientFunds")
    with pytest.raises(ChannelTimeout):
        adapter.charge(request)
    state = adapter.query(idempotency_key=request.idempotency_key)
    assert state.status is ChargeStatus.FAILED and state.failure_code == "insufficient_funds"


@pytest.mark.parametrize("amount", [5_003, 305_003])
def test_unavailable_means_nothing_was_charged_and_the_router_may_fail_over(amount):
    adapter = sandbox()
    request = charge_request(amount)
    with pytest.raises(ChannelUnavailable) as unavailable:
        adapter.charge(request)
    assert unavailable.value.fail_over
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.query(idempotency_key=request.idempotency_key)
    assert missing.value.code == "resource_missing"
    assert adapter.fetch_statement(NOON.date()).lines == ()


def test_a_slow_amount_waits_the_configured_latency_then_succeeds():
    sleeps = Sleeps()
    adapter = sandbox(settings={"slow_ms": 1_500}, sleep=sleeps)
    assert adapter.charge(charge_request(7_001)).status is ChargeStatus.SUCCEEDED
    assert sleeps == [1.5]
    adapter.charge(charge_request(7_000))
    assert sleeps == [1.5], "only the special amount is slow"


def test_latency_ms_is_added_to_every_call():
    sleeps = Sleeps()
    adapter = sandbox(settings={"latency_ms": 120, "slow_ms": 2_000}, sleep=sleeps)
    result = adapter.charge(charge_request(7_001))
    adapter.query(result.reference)
    assert sleeps == [0.12, 2.0, 0.12]


def test_manual_capture_authorises_then_captures_part_and_cannot_capture_twice():
    adapter = sandbox()
    authorised = adapter.charge(charge_request(5_000, capture_method=CaptureMethod.MANUAL))
    assert authorised.status is ChargeStatus.REQUIRES_CAPTURE
    assert adapter.query(authorised.reference).amount_captured == 0
    with pytest.raises(ChannelInvalidRequest) as too_much:
        adapter.capture(CaptureRequest(reference=authorised.reference, amount=5_001, idempotency_key="cap-0"))
    assert too_much.value.code == "amount_too_large"
    captured = adapter.capture(CaptureRequest(reference=authorised.reference, amount=4_000, idempotency_key="cap-1"))
    assert captured.status is ChargeStatus.SUCCEEDED
    assert adapter.query(authorised.reference).amount_captured == 4_000
    same = adapter.capture(CaptureRequest(reference=authorised.reference, amount=4_000, idempotency_key="cap-1"))
    assert same == captured
    with pytest.raises(ChannelInvalidRequest) as twice:
        adapter.capture(CaptureRequest(reference=authorised.reference, idempotency_key="cap-2"))
    assert twice.value.code == "charge_not_capturable"


def test_an_authorisation_can_be_cancelled_but_a_captured_charge_cannot():
    adapter = sandbox()
    authorised = adapter.charge(charge_request(capture_method="manual"))
    canceled = adapter.cancel(CancelRequest(reference=authorised.reference, idempotency_key="c1"))
    assert canceled.status is ChargeStatus.CANCELED
    assert adapter.query(authorised.reference).status is ChargeStatus.CANCELED
    done = adapter.charge(charge_request())
    with pytest.raises(ChannelInvalidRequest) as refused:
        adapter.cancel(CancelRequest(reference=done.reference, idempotency_key="c2"))
    assert refused.value.code == "charge_not_cancelable"


def test_qr_payments_wait_for_the_payer_and_are_learned_from_the_notification():
    adapter = sandbox()
    pending = adapter.charge(ChargeRequest(amount=8_800, currency="CNY", idempotency_key="qr-1", product="alipay_qr"))
    assert pending.status is ChargeStatus.PROCESSING
    assert pending.next_action["type"] == "display_qr" and pending.reference in pending.next_action["qr_url"]
    headers, body = adapter.simulate_payer(pending.reference)
    event = adapter.parse_notification(headers, body)
    assert (event.type, event.reference, event.status, event.amount, event.currency) == (
        "charge.succeeded",
        pending.reference,
        ChargeStatus.SUCCEEDED,
        8_800,
        "CNY",
    )
    assert adapter.query(pending.reference).status is ChargeStatus.SUCCEEDED
    with pytest.raises(ChannelInvalidRequest):
        adapter.simulate_payer(pending.reference)


def test_a_payer_who_walks_away_fails_the_payment():
    adapter = sandbox()
    pending = adapter.charge(
        ChargeRequest(
            amount=100,
            currency="EUR",
            idempotency_key="bt",
            product="bank_transfer",
            elements={"payer_name": "Ada Lovelace"},
        )
    )
    assert pending.next_action["type"] == "bank_transfer_instructions"
    event = adapter.parse_notification(*adapter.simulate_payer(pending.reference, pays=False))
    assert event.status is ChargeStatus.FAILED and event.failure_code == "payer_abandoned"


def test_face_pay_needs_its_terminal_and_face_code():
    adapter = sandbox()
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.charge(
            ChargeRequest(
                amount=100, currency="CNY", idempotency_key="f1", product="face_pay", elements={"face_code": "fc_1"}
            )
        )
    assert missing.value.code == "missing_elements" and "Terminal" in str(missing.value)
    paid = adapter.charge(
        ChargeRequest(
            amount=100,
            currency="CNY",
            idempotency_key="f2",
            product="face_pay",
            elements={"face_code": "fc_1", "terminal_id": "T-9"},
        )
    )
    assert paid.status is ChargeStatus.SUCCEEDED


def test_manual_capture_of_a_product_that_has_none_is_not_supported_and_names_the_channel():
    adapter = sandbox(name="Sandbox CN")
    with pytest.raises(
        ChannelNotSupported, match=r"manual capture of Alipay QR is not supported by channel 'Sandbox CN'"
    ):
        adapter.charge(
            ChargeRequest(amount=1, currency="CNY", idempotency_key="k", product="alipay_qr", capture_method="manual")
        )


def test_a_signed_contract_can_be_charged_without_the_card():
    adapter = sandbox()
    contract = adapter.sign_contract(ContractRequest(payer_reference="member-7", idempotency_key="ct-1"))
    assert contract.status == "active" and contract.reference.startswith("sbx_ct_")
    assert adapter.charge(charge_request(method=contract.reference)).status is ChargeStatus.SUCCEEDED
    other_account = sandbox()
    with pytest.raises(ChannelInvalidRequest):
        other_account.charge(charge_request(method=contract.reference))


# --- idempotency ------------------------------------------------------------------------------


def test_fifty_threads_with_the_same_key_make_one_charge():
    inside, release = threading.Event(), threading.Event()

    def network(seconds):
        # The first call to reach the channel is held there while the other 49 arrive with the same key.
        if not inside.is_set():
            inside.set()
            release.wait(timeout=30)

    adapter = sandbox(settings={"latency_ms": 5}, sleep=network)
    request = charge_request(3_000, key="order-42")
    results, errors = [], []

    def pay(start=None):
        if start is not None:
            start.wait()
        try:
            results.append(adapter.charge(request))
        except Exception as exc:  # collected so that the assertion shows it
            errors.append(exc)

    first = threading.Thread(target=pay)
    first.start()
    assert inside.wait(timeout=30)
    start = threading.Barrier(50)
    others = [threading.Thread(target=pay, args=(start,)) for _ in range(49)]
    for thread in others:
        thread.start()
    start.wait()
    release.set()
    for thread in [first, *others]:
        thread.join()

    assert errors == []
    assert len(results) == 50 and len({r.reference for r in results}) == 1
    assert [line.amount for line in adapter.fetch_statement(NOON.date()).lines] == [3_000]


def test_other_keys_make_other_charges_and_a_reused_key_with_other_parameters_is_refused():
    adapter = sandbox()
    first = adapter.charge(charge_request(1_000, key="k1"))
    assert adapter.charge(charge_request(1_000, key="k2")).reference != first.reference
    with pytest.raises(ChannelInvalidRequest) as reused:
        adapter.charge(charge_request(1_001, key="k1"))
    assert reused.value.code == "idempotency_key_reused"


def test_idempotency_keys_belong_to_one_channel_account():
    a, b = sandbox(), sandbox()
    assert a.charge(charge_request(key="same")).reference != b.charge(charge_request(key="same")).reference
    with pytest.raises(ChannelInvalidRequest):
        b.query(a.charge(charge_request(key="same")).reference)


def test_unavailable_does_not_burn_the_key():
    adapter = sandbox()
    with pytest.raises(ChannelUnavailable):
        adapter.charge(charge_request(5_003, key="retry-me"))
    # The same key with a charge the channel takes: nothing was recorded under it the first time.
    assert adapter.charge(charge_request(5_003 + 1, key="retry-me")).status is ChargeStatus.SUCCEEDED


# --- one channel for every process ------------------------------------------------------------

# Another process (a worker, a second web process) with its own adapter of the same account on the same Redis.
OTHER_PROCESS = """
import json, sys
from redis import Redis
from payments.channels.base import ChannelConfig, ChargeRequest
from payments.channels.sandbox import SandboxAdapter, SandboxStore

url, name, account, action, key = sys.argv[1:6]
redis = Redis.from_url(url, client_name=name)
adapter = SandboxAdapter(ChannelConfig(id=account, name="Sandbox EU"), store=SandboxStore(redis))
if action == "query":
    result = adapter.query(idempotency_key=key)
else:
    request = ChargeRequest(amount=3000, currency="EUR", idempotency_key=key, payment_method="pm_card_visa")
    result = adapter.charge(request)
print(json.dumps({"reference": result.reference, "status": str(result.status), "amount": result.amount}))
"""


def other_process(app, name: str, account: str, action: str, key: str) -> subprocess.Popen:
    command = [sys.executable, "-c", OTHER_PROCESS, app.config["REDIS_URL"], name, account, action, key]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answer_of(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return json.loads(out)


def wait_for(predicate, timeout: float, what: str):
    """Until `predicate()` is true, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # between two looks at the condition, never to synchronise by itself


def test_another_process_finds_the_charge_whose_answer_was_lost_here(app):
    adapter = sandbox()
    request = charge_request(4_001, key="order-lost-answer")
    with pytest.raises(ChannelTimeout):
        adapter.charge(request)
    seen = answer_of(other_process(app, "worker", adapter.config.id, "query", request.idempotency_key))
    here = adapter.query(idempotency_key=request.idempotency_key)
    assert seen == {"reference": here.reference, "status": "succeeded", "amount": 4_001}


def test_processes_charging_with_one_key_make_one_charge(app, redis, store):
    inside, release = threading.Event(), threading.Event()

    def network(seconds):
        # This process's call holds the key inside the channel until the other processes are waiting for it.
        inside.set()
        release.wait(timeout=60)

    adapter = sandbox(settings={"latency_ms": 1}, sleep=network)
    results = []
    first = threading.Thread(target=lambda: results.append(adapter.charge(charge_request(3_000, key="order-77"))))
    first.start()
    others = []
    try:
        assert inside.wait(timeout=30)
        names = [f"payer-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        others = [other_process(app, name, adapter.config.id, "charge", "order-77") for name in names]

        def all_waiting():
            # A process whose last command is the claim script has asked for the key and found it taken.
            clients = {c.get("name"): c.get("cmd") for c in redis.client_list()}
            return all(clients.get(name) == "evalsha" for name in names)

        wait_for(all_waiting, 60, "the other processes to ask for the key")
    finally:
        release.set()
        first.join(timeout=30)
        answers = [answer_of(process) for process in others]
    reference = results[0].reference
    assert answers == [{"reference": reference, "status": "succeeded", "amount": 3_000}] * 3
    assert store.charge_references(adapter.config.id) == [reference]
    assert [line.amount for line in adapter.fetch_statement(NOON.date()).lines] == [3_000]


def test_what_the_sandbox_keeps_expires_after_a_week(redis):
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_000, key="order-ttl"))
    adapter.refund(refund_request(charge.reference, 100))
    keys = list(redis.scan_iter(match=f"sandbox:{{{adapter.config.id}}}:*"))
    assert len(keys) >= 5  # answers, the charge, its key, the account's charges, the statement
    assert all(0 < redis.ttl(key) <= RETENTION_SECONDS for key in keys)


def test_a_charge_the_channel_lost_is_gone_from_queries_and_the_statement(store):
    adapter = sandbox()
    kept, lost = adapter.charge(charge_request(1_000, key="kept")), adapter.charge(charge_request(2_000, key="lost"))
    assert store.forget_charge(adapter.config.id, "lost") and not store.forget_charge(adapter.config.id, "lost")
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.query(idempotency_key="lost")
    assert missing.value.code == "resource_missing"
    with pytest.raises(ChannelInvalidRequest):
        adapter.query(lost.reference)
    assert store.charge_references(adapter.config.id) == [kept.reference]
    assert [line.our_reference for line in adapter.fetch_statement(NOON.date()).lines] == ["kept"]


def test_a_sandbox_whose_redis_is_out_of_reach_is_a_channel_out_of_reach():
    unreachable = Redis.from_url("redis://127.0.0.1:1/0")  # port 1: the connection is refused
    adapter = SandboxAdapter(ChannelConfig(id=str(uuid.uuid4()), name="Sandbox EU"), store=SandboxStore(unreachable))
    with pytest.raises(ChannelUnavailable, match="'Sandbox EU' \\(sandbox\\) could not be reached") as charge:
        adapter.charge(charge_request())
    assert charge.value.fail_over  # nothing was charged: the router tries the next account
    with pytest.raises(ChannelUnavailable):
        adapter.query(idempotency_key="order-1")
    with pytest.raises(ChannelUnavailable):
        adapter.fetch_statement(NOON.date())
    unreachable.close()


def test_a_worker_process_resolves_the_timeout_the_web_process_left(app, make, owner_url, tmp_path):
    """The flow of `make run`: the web process's charge times out (the channel took it), the RQ worker, another
    process, asks the channel by the idempotency key and the payment succeeds."""
    tenant = make.tenant("twoprocesses")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    shop = intents.MerchantContext(tenant.id, merchant, livemode=False)
    with app.app_context(), tenant_context(db.session, tenant.id):
        create_channel_account(
            tenant.id,
            ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"]),
            {"card"},
            Actor.system(),
        )
        pi = intents.create(shop, amount=4_001, currency="usd", payment_method="pm_card_visa", confirm=True)
        assert pi.status == "processing"
        db.session.remove()
    env = {
        **os.environ,
        "FLASK_APP": "wsgi.py",
        "DATABASE_URL": owner_url,
        "PAYPLAT_APP_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": app.config["REDIS_URL"],
        "PAYPLAT_SECRET_KEY": app.config["SECRET_KEY"],
        "PAYPLAT_ENCRYPTION_KEYS": ",".join(app.config["ENCRYPTION_KEYS"]),
        "PAYPLAT_INSTANCE_DIR": str(tmp_path / "instance"),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "flask", "worker", "--queue", "channels", "--burst", "--without-scheduler"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    with app.app_context(), tenant_context(db.session, tenant.id):
        pi = intents.get(shop, pi.id)
        assert (pi.status, pi.amount_received) == ("succeeded", 4_001)
        attempts = db.session.execute(
            sa.select(PaymentAttempt.status).where(PaymentAttempt.payment_intent_id == pi.id)
        ).scalars()
        assert list(attempts) == ["succeeded"]
        db.session.remove()


# --- refunds and payouts ----------------------------------------------------------------------


def test_refunds_work_up_to_the_charged_amount():
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_000))
    part = adapter.refund(refund_request(charge.reference, 300))
    assert part.status is RefundStatus.SUCCEEDED and part.amount == 300 and part.charge_reference == charge.reference
    with pytest.raises(ChannelInvalidRequest) as too_much:
        adapter.refund(refund_request(charge.reference, 701))
    assert too_much.value.code == "amount_too_large" and "700 left" in str(too_much.value)
    rest = adapter.refund(refund_request(charge.reference))
    assert rest.amount == 700
    assert adapter.query(charge.reference).amount_refunded == 1_000
    with pytest.raises(ChannelInvalidRequest) as nothing_left:
        adapter.refund(refund_request(charge.reference, 1))
    assert nothing_left.value.code == "charge_already_refunded"


def test_a_refund_retried_with_its_key_is_not_paid_twice():
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_000))
    first = adapter.refund(refund_request(charge.reference, 400, key="r1"))
    again = adapter.refund(refund_request(charge.reference, 400, key="r1"))
    assert again == first
    assert adapter.query(charge.reference).amount_refunded == 400


def test_concurrent_refunds_never_exceed_the_charge():
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_000))
    start = threading.Barrier(20)
    outcomes = []

    def refund():
        start.wait()
        try:
            outcomes.append(adapter.refund(refund_request(charge.reference, 100)).amount)
        except ChannelInvalidRequest as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=refund) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(100) == 10
    assert adapter.query(charge.reference).amount_refunded == 1_000


def test_only_a_succeeded_charge_is_refunded():
    adapter = sandbox()
    authorised = adapter.charge(charge_request(capture_method="manual"))
    with pytest.raises(ChannelInvalidRequest) as refused:
        adapter.refund(refund_request(authorised.reference))
    assert refused.value.code == "charge_not_refundable"
    with pytest.raises(ChannelInvalidRequest) as unknown:
        adapter.refund(refund_request("sbx_ch_nope"))
    assert unknown.value.code == "resource_missing"


def test_a_payout_returns_a_reference_once_per_key():
    adapter = sandbox()
    request = PayoutRequest(
        amount=50_000, currency="EUR", destination="ba_sandbox_DE89370400440532", idempotency_key="p1"
    )
    payout = adapter.payout(request)
    assert payout.status is PayoutStatus.PAID and payout.reference.startswith("sbx_po_")
    assert payout.arrival_date == NOON.date() and payout.raw["destination_last4"] == "0532"
    assert adapter.payout(request) == payout


def payout_request(amount=50_000, key=None):
    return PayoutRequest(
        amount=amount,
        currency="EUR",
        destination="ba_sandbox_DE89370400440532",
        idempotency_key=key or str(uuid.uuid4()),
    )


# The amount table is the charge's: 4001 and 5003 are ordinary payouts, so no payout times out by its amount.
@pytest.mark.parametrize("amount", [50_000, 4_001, 5_003])
def test_a_payout_is_queried_by_its_key_and_its_reference(amount, redis):
    adapter = sandbox()
    request = payout_request(amount)
    payout = adapter.payout(request)
    by_key = adapter.query_payout(idempotency_key=request.idempotency_key)
    assert by_key == adapter.query_payout(payout.reference) == payout
    assert (by_key.status, by_key.amount, by_key.currency) == (PayoutStatus.PAID, amount, "EUR")
    keys = list(redis.scan_iter(match=f"sandbox:{{{adapter.config.id}}}:payout*"))
    assert len(keys) == 2 and all(0 < redis.ttl(k) <= RETENTION_SECONDS for k in keys)


def test_a_payout_query_for_a_key_never_paid_out_says_the_channel_never_received_it():
    adapter, other = sandbox(), sandbox()
    paid = adapter.payout(payout_request(key="payout-7"))
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.query_payout(idempotency_key="never-sent")
    assert missing.value.code == "resource_missing" and "the channel never received it" in str(missing.value)
    # Keys and references belong to one channel account.
    with pytest.raises(ChannelInvalidRequest) as elsewhere:
        other.query_payout(idempotency_key="payout-7")
    assert elsewhere.value.code == "resource_missing"
    with pytest.raises(ChannelInvalidRequest) as unknown:
        other.query_payout(paid.reference)
    assert unknown.value.code == "resource_missing" and paid.reference in str(unknown.value)
    for neither_or_both in ({}, {"reference": paid.reference, "idempotency_key": "payout-7"}):
        with pytest.raises(ValueError, match="exactly one of reference or idempotency_key"):
            adapter.query_payout(**neither_or_both)


def test_a_key_reused_for_another_payout_is_refused_and_the_first_payout_is_still_found():
    adapter = sandbox()
    request = payout_request(key="payout-8")
    adapter.payout(request)
    with pytest.raises(ChannelInvalidRequest) as reused:
        adapter.payout(payout_request(amount=1, key="payout-8"))
    assert reused.value.code == "idempotency_key_reused"
    assert adapter.query_payout(idempotency_key="payout-8").amount == request.amount


def test_a_payout_query_on_a_sandbox_whose_redis_is_out_of_reach_is_unavailable():
    unreachable = Redis.from_url("redis://127.0.0.1:1/0")
    adapter = SandboxAdapter(ChannelConfig(id=str(uuid.uuid4()), name="Sandbox EU"), store=SandboxStore(unreachable))
    with pytest.raises(ChannelUnavailable, match="'Sandbox EU' \\(sandbox\\) could not be reached"):
        adapter.query_payout(idempotency_key="payout-1")
    unreachable.close()


# --- statement --------------------------------------------------------------------------------


def test_the_statement_lists_the_days_charges_and_refunds():
    clock = Clock(NOON)
    adapter = sandbox(clock=clock)
    first = adapter.charge(charge_request(1_000, key="order-1"))
    with pytest.raises(ChannelDeclined):
        adapter.charge(charge_request(2_000, "pm_card_chargeDeclined", key="order-2"))
    authorised = adapter.charge(charge_request(3_000, key="order-3", capture_method="manual"))
    clock.now = NOON + timedelta(hours=1)
    adapter.refund(refund_request(first.reference, 250, key="refund-1"))
    adapter.capture(CaptureRequest(reference=authorised.reference, idempotency_key="cap"))
    clock.now = NOON + timedelta(days=1)
    adapter.refund(refund_request(first.reference, 100, key="refund-2"))

    day = adapter.fetch_statement(NOON.date())
    assert day.day == NOON.date()
    assert [(line.kind, line.amount, line.our_reference) for line in day.lines] == [
        ("charge", 1_000, "order-1"),
        ("charge", 3_000, "order-3"),
        ("refund", -250, "refund-1"),
    ]
    assert day.lines[2].charge_reference == first.reference and day.lines[2].net == -250
    next_day = adapter.fetch_statement(NOON.date() + timedelta(days=1))
    assert [(line.kind, line.amount) for line in next_day.lines] == [("refund", -100)]
    assert adapter.fetch_statement(date(2025, 1, 1)).lines == ()


def test_a_statement_shows_only_its_own_accounts_movements():
    mine, theirs = sandbox(), sandbox()
    mine.charge(charge_request(1_000))
    theirs.charge(charge_request(9_999))
    assert [line.amount for line in mine.fetch_statement(NOON.date()).lines] == [1_000]


# --- notifications ----------------------------------------------------------------------------


def test_a_notification_is_verified_and_parsed():
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_234))
    headers, body = adapter.notification_for(charge.reference)
    event = adapter.parse_notification(headers, body)
    assert event.event_id.startswith("sbx_evt_") and event.type == "charge.succeeded"
    assert (event.reference, event.status, event.amount, event.currency) == (
        charge.reference,
        ChargeStatus.SUCCEEDED,
        1_234,
        "EUR",
    )
    assert event.occurred_at == NOON
    # Header names are case-insensitive on the wire.
    lowered = {k.lower(): v for k, v in headers.items()}
    assert adapter.parse_notification(lowered, body).event_id == event.event_id


def test_a_tampered_body_is_rejected():
    adapter = sandbox()
    charge = adapter.charge(charge_request(1_000))
    headers, body = adapter.notification_for(charge.reference)
    tampered = body.replace(b'"amount":1000', b'"amount":9000')
    assert tampered != body
    with pytest.raises(InvalidNotification, match="does not match"):
        adapter.parse_notification(headers, tampered)


def test_a_notification_signed_with_another_secret_is_rejected():
    sender = sandbox(credentials={"webhook_secret": "whsec_someone_else_entirely"})
    charge = sender.charge(charge_request())
    headers, body = sender.notification_for(charge.reference)
    receiver = sandbox()
    with pytest.raises(InvalidNotification, match="does not match"):
        receiver.parse_notification(headers, body)


def test_missing_malformed_and_stale_signatures_are_rejected():
    clock = Clock()
    adapter = sandbox(clock=clock)
    headers, body = adapter.notification_for(adapter.charge(charge_request()).reference)
    with pytest.raises(InvalidNotification, match="missing"):
        adapter.parse_notification({}, body)
    with pytest.raises(InvalidNotification, match="malformed"):
        adapter.parse_notification({SIGNATURE_HEADER: "v1=abc"}, body)
    clock.now = NOON + timedelta(seconds=301)
    with pytest.raises(InvalidNotification, match="301 seconds old"):
        adapter.parse_notification(headers, body)
    clock.now = NOON + timedelta(seconds=300)
    assert adapter.parse_notification(headers, body).status is ChargeStatus.SUCCEEDED


def test_a_correctly_signed_body_that_is_not_an_event_is_rejected():
    adapter = sandbox()
    timestamp = int(NOON.timestamp())
    secret = Secret(WEBHOOK_SECRET)
    for body in (b"not json", b"[]", json.dumps({"id": "evt", "type": "x", "created": timestamp}).encode()):
        with pytest.raises(InvalidNotification, match="not a sandbox event"):
            adapter.parse_notification({SIGNATURE_HEADER: sign_payload(secret, body, timestamp)}, body)
    unknown_status = json.dumps(
        {
            "id": "evt_1",
            "type": "charge.weird",
            "created": timestamp,
            "data": {"object": {"id": "sbx_ch_1", "status": "teleported", "amount": 1, "currency": "eur"}},
        }
    ).encode()
    with pytest.raises(InvalidNotification, match="unknown sandbox status 'teleported'"):
        adapter.parse_notification({SIGNATURE_HEADER: sign_payload(secret, unknown_status, timestamp)}, unknown_status)


def test_notifications_need_the_webhook_secret():
    adapter = sandbox(credentials={})
    with pytest.raises(ChannelConfigError, match="no webhook_secret: set it in Console → Channels → Sandbox EU"):
        adapter.parse_notification({}, b"{}")


def test_the_status_tables_are_exhaustive():
    assert set(NATIVE_STATUS) == set(EVENT_TYPES)
    assert set(NATIVE_STATUS.values()) == set(ChargeStatus)
    for native, ours in NATIVE_STATUS.items():
        assert to_charge_status(native) is ours
    with pytest.raises(ValueError):
        to_charge_status("refunded")


# --- credentials and configuration --------------------------------------------------------------


def test_a_live_sandbox_or_a_non_test_key_is_a_configuration_error_that_says_how_to_fix_it():
    with pytest.raises(ChannelConfigError, match="takes test payments only"):
        sandbox(livemode=True).charge(charge_request())
    live_key = "sk_live_51HxYzAbCdEfGhIjKlMnOp9876"
    adapter = sandbox(credentials={"secret_key": live_key})
    with pytest.raises(ChannelConfigError) as bad:
        adapter.check_credentials()
    message = str(bad.value)
    assert "Console → Channels → Sandbox EU" in message and "sk_live_…9876" in message
    assert live_key not in message
    sandbox(credentials={}).check_credentials()  # the sandbox needs no key at all


def test_bad_settings_are_refused_when_the_adapter_is_built():
    with pytest.raises(ChannelConfigError, match="latency_ms must be a whole number"):
        sandbox(settings={"latency_ms": 0.5})


def test_requests_refuse_float_amounts_and_bad_currencies():
    with pytest.raises(ValueError, match="positive integer"):
        charge_request(10.5)
    with pytest.raises(ValueError, match="ISO 4217"):
        ChargeRequest(amount=1, currency="euro", idempotency_key="k")
    with pytest.raises(ValueError, match="idempotency_key"):
        ChargeRequest(amount=1, currency="EUR", idempotency_key="")


# --- secrets ----------------------------------------------------------------------------------


def test_a_secret_never_shows_its_value(caplog):
    secret = Secret(SECRET_KEY)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", "%s" % (secret,), str([secret])]  # noqa: UP031
    for text in shown:
        assert SECRET_KEY not in text and "4eC39Hq" not in text
    assert str(secret) == "sk_test_…c0de"
    assert repr(secret) == "Secret('sk_test_…c0de')"
    assert secret.reveal() == SECRET_KEY

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("payments.test").info("key %s / %r", secret, secret)
        logging.getLogger("payments.test").info(f"key {secret}")
        logging.getLogger("payments.test").info("config %s", ChannelConfig(id="x", name="n", credentials={"k": secret}))
    assert caplog.text and SECRET_KEY not in caplog.text and "sk_test_…c0de" in caplog.text


def test_short_secrets_hide_everything_but_their_kind():
    assert str(Secret("whsec_short123")) == "whsec_…"
    assert str(Secret("hunter2")) == "…"
    assert str(Secret("")) == "(empty)"
    assert str(Secret("0123456789abcdefWXYZ")) == "…WXYZ"


def test_a_secret_is_not_pickled_but_compares_and_copies():
    secret = Secret(SECRET_KEY)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(secret)
    assert copy.deepcopy(secret) is secret
    assert secret == Secret(SECRET_KEY) and secret != Secret("sk_test_other")


def test_configs_adapters_and_errors_do_not_print_credentials():
    adapter = sandbox(credentials={"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET})
    assert isinstance(adapter.config.credentials["secret_key"], Secret)
    for text in (repr(adapter.config), str(adapter.config), repr(adapter)):
        assert SECRET_KEY not in text and WEBHOOK_SECRET not in text
    headers, body = adapter.notification_for(adapter.charge(charge_request()).reference)
    assert WEBHOOK_SECRET.encode() not in body and all(WEBHOOK_SECRET not in v for v in headers.values())


# --- registry and contract --------------------------------------------------------------------


def test_the_registry_builds_a_fresh_adapter_per_account():
    config = ChannelConfig(id="1", name="Sandbox", credentials={})
    first, second = adapter_for("sandbox", config), adapter_for("sandbox", config)
    assert isinstance(first, SandboxAdapter) and first is not second
    assert channel_types() == sorted(ADAPTERS) and "sandbox" in ADAPTERS
    caps = first.capabilities
    assert caps.manual_capture and caps.refunds and caps.payouts and caps.statements and caps.notifications
    assert caps.result_delivery == "notify and poll"


def test_an_unknown_channel_type_says_which_exist():
    with pytest.raises(ChannelConfigError, match=r"unknown type 'paypal'; known types: sandbox"):
        adapter_for("paypal", ChannelConfig(id="1", name="PayPal", credentials={}))


class QueryOnly(ChannelAdapter):
    """A channel that can only charge and be queried: everything else must say so."""

    type_name = "query_only"
    label = "Query only"
    capabilities = Capabilities(products=frozenset({"card"}))

    def check_credentials(self):
        pass

    def charge(self, request):
        raise ChannelUnavailable("down", channel=self.channel)

    def query(self, reference=None, *, idempotency_key=None):
        raise ChannelUnavailable("down", channel=self.channel)


@pytest.mark.parametrize(
    ("call", "operation"),
    [
        (lambda a: a.capture(CaptureRequest(reference="r", idempotency_key="k")), "manual capture"),
        (lambda a: a.cancel(CancelRequest(reference="r", idempotency_key="k")), "cancelling a charge"),
        (lambda a: a.refund(RefundRequest(reference="r", idempotency_key="k")), "refunds"),
        (
            lambda a: a.payout(PayoutRequest(amount=1, currency="EUR", destination="ba", idempotency_key="k")),
            "payouts",
        ),
        (lambda a: a.query_payout(idempotency_key="k"), "payouts"),
        (lambda a: a.query_payout("po_1"), "payouts"),
        (lambda a: a.sign_contract(ContractRequest(payer_reference="p", idempotency_key="k")), "contract signing"),
        (lambda a: a.fetch_statement(date(2025, 1, 1)), "statement download"),
        (lambda a: a.parse_notification({}, b""), "notifications"),
    ],
)
def test_an_operation_a_channel_lacks_raises_not_supported_naming_the_channel(call, operation):
    adapter = QueryOnly(ChannelConfig(id="q", name="Acme Bank", credentials={}))
    with pytest.raises(ChannelNotSupported) as refused:
        call(adapter)
    assert str(refused.value) == f"{operation} is not supported by channel 'Acme Bank' (query_only)"
    assert refused.value.operation == operation


def test_a_product_a_channel_does_not_offer_is_not_supported():
    adapter = QueryOnly(ChannelConfig(id="q", name="Acme Bank", credentials={}))
    with pytest.raises(ChannelNotSupported, match="the product Alipay QR is not supported by channel 'Acme Bank'"):
        adapter.check_charge_request(ChargeRequest(amount=1, currency="CNY", idempotency_key="k", product="alipay_qr"))


def test_declaring_a_capability_without_its_operation_is_caught_when_the_class_is_defined():
    with pytest.raises(TypeError, match="declares refunds but does not implement refund"):

        class Boasting(QueryOnly):
            capabilities = Capabilities(products=frozenset({"card"}), refunds=True)


def test_a_channel_that_pays_out_must_also_answer_payout_queries():
    with pytest.raises(TypeError, match=r"declares payouts but does not implement query_payout\(\)"):

        class PaysOutBlindly(QueryOnly):
            capabilities = Capabilities(products=frozenset({"card"}), payouts=True)

            def payout(self, request):
                raise ChannelUnavailable("down", channel=self.channel)
