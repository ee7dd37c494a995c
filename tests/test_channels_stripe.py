"""The Stripe adapter against localstripe, a fake Stripe run as a real server process, and, for what localstripe
lacks (see "What localstripe lacks" in payments/channels/stripe.py), against a local stand-in: an http.server
in a thread that answers as Stripe does, hangs, or drops the connection. The pure mapping tables are tested
on their own; secrets are checked in messages, reprs and logs. Connection reuse is observed at the stand-in by
the client port of each request, with payments made through the platform (adapter_of) where it matters."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe as stripe_sdk

from core.db import db
from payments import intents
from payments.channel_accounts import ChannelAccountInput, get_channel_account, update_channel_account
from payments.channels import adapter_for
from payments.channels.base import (
    CancelRequest,
    CaptureRequest,
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
from payments.channels.stripe import (
    CLIENTS,
    PAYMENT_INTENT_STATUS,
    PAYOUT_STATUS,
    REFUND_STATUS,
    SIGNATURE_HEADER,
    ClientPool,
    Outcome,
    StripeAdapter,
    Transport,
    charge_result,
    derived_key,
    encode_form,
    http_outcome,
    payout_result,
    search_query,
    to_charge_status,
    to_payout_status,
    transport_outcome,
)
from tenants.audit import Actor
from tenants.isolation import tenant_context

SECRET_KEY = "sk_test_51PayPlatSecretKey0123456789wxyz"
WEBHOOK_SECRET = "whsec_PayPlatWebhookSecret98765abcd"
NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
LOCALSTRIPE_WEBHOOK_SECRET = "whsec_localstripe_test_endpoint_secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the stand-in: a local server that speaks Stripe's protocol ---------------------------------

HANG = "hang"  # keep the request unanswered until the test ends: the client's read timeout fires
DROP = "drop"  # read the request, then close the connection without an answer


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]
    client_port: int

    def one(self, name: str, where: str = "form") -> str | None:
        values = getattr(self, where).get(name)
        return values[0] if values else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        stand_in: StandIn = self.server.stand_in
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        seen = Seen(
            self.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            parse_qs(body.decode(), keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            self.client_address[1],
        )
        answer = stand_in.answer(seen, body)
        if answer == HANG:
            stand_in.release.wait(10)
            self.close_connection = True
            return
        if answer == DROP:
            self.close_connection = True
            return
        status, payload, *extra = answer
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_standin")
        for name, value in (extra[0] if extra else {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle


class StandIn:
    """Routes answer in order (the last answer repeats); an answer is (status, body[, headers]), HANG, DROP,
    or a function of the request. Unknown routes answer Stripe's 404."""

    def __init__(self):
        self.routes: dict[tuple[str, str], list] = {}
        self.seen: list[Seen] = []
        self.bodies: list[bytes] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.stand_in = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serving loop to notice.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def on(self, method: str, path: str, *answers) -> StandIn:
        self.routes[(method, path)] = list(answers)
        return self

    def answer(self, seen: Seen, body: bytes):
        with self.arrived:
            self.seen.append(seen)
            self.bodies.append(body)
            self.arrived.notify_all()
            answers = self.routes.get((seen.method, seen.path))
            if not answers:
                return 404, stripe_error("invalid_request_error", "Unrecognized request URL", code="resource_missing")
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(seen) if callable(answer) else answer

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        with self.arrived:
            assert self.arrived.wait_for(predicate, timeout), "the stand-in never received the expected request"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def stripe_error(error_type: str, message: str, **fields) -> dict:
    return {"error": {"type": error_type, "message": message, **fields}}


def payment_intent(pi_id="pi_3StandIn0001", status="succeeded", amount=2_000, **fields) -> dict:
    """A PaymentIntent as real Stripe sends it (API 2024-06-20), latest_charge expanded."""
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": amount if status == "requires_capture" else 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "automatic",
        "client_secret": f"{pi_id}_secret_DoNotShowThis",
        "currency": "eur",
        "created": int(NOW.timestamp()),
        "last_payment_error": None,
        "latest_charge": {
            "id": "ch_3StandIn0001",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if status == "succeeded" else 0,
            "amount_refunded": 0,
            "captured": status == "succeeded",
            "status": "succeeded",
            "payment_method_details": {"card": {"last4": "4242", "brand": "visa"}},
        },
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "payment_method": "pm_1StandInCard",
        "status": status,
        **fields,
    }


@pytest.fixture
def stand_in():
    server = StandIn()
    yield server
    server.stop()


# --- localstripe: the real server process, once per session ---------------------------------------


@dataclass
class LocalStripe:
    url: str
    webhooks: StandIn

    def api(self, method: str, path: str, **kwargs) -> dict:
        with httpx.Client(base_url=self.url, headers={"Authorization": "Bearer sk_test_inspector"}) as client:
            response = client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory):
    """localstripe as a subprocess (never imported here: its import warns) on a free loopback port, with a
    webhook endpoint of ours registered, stopped at the end of the session."""
    workdir = tmp_path_factory.mktemp("localstripe")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    webhooks = StandIn().on("POST", "/stripe/webhook", (200, {"received": True}))
    with open(workdir / "localstripe.log", "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_answering(process, url, workdir / "localstripe.log")
        with httpx.Client(base_url=url) as client:
            client.post(
                "/_config/webhooks/payplat",
                data={"url": f"{webhooks.url}/stripe/webhook", "secret": LOCALSTRIPE_WEBHOOK_SECRET},
            ).raise_for_status()
        yield LocalStripe(url, webhooks)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        webhooks.stop()


def _wait_until_answering(process: subprocess.Popen, url: str, log_path) -> None:
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=url, timeout=1) as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"localstripe exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.get("/v1/balance", headers={"Authorization": "Bearer sk_test_probe"}).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"localstripe did not answer within 20 s:\n{log_path.read_text()}")
            # The pause between polls: returns at once if the process dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)


# --- adapters -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_connections():
    """Each test starts without kept-alive connections (so that reuse is observed within it) and closes the ones
    it opened, which also ends the stand-in's threads that serve them."""
    CLIENTS.clear()
    yield
    CLIENTS.clear()


@pytest.fixture
def make_adapter():
    def make(base_url, *, credentials=None, settings=None, livemode=False, clock=None, name="Stripe EU"):
        if credentials is None:
            credentials = {"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET}
        config = ChannelConfig(
            id=str(uuid.uuid4()),
            name=name,
            credentials=credentials,
            settings={"base_url": base_url, **(settings or {})},
            livemode=livemode,
        )
        return StripeAdapter(config, **({"clock": clock} if clock else {}))

    return make


@pytest.fixture
def stripe(localstripe, make_adapter):
    return make_adapter(localstripe.url)


def charge_request(amount=2_000, method="pm_card_visa", key=None, **kwargs):
    return ChargeRequest(
        amount=amount, currency="EUR", idempotency_key=key or str(uuid.uuid4()), payment_method=method, **kwargs
    )


def key() -> str:
    return str(uuid.uuid4())


# --- flows against localstripe ----------------------------------------------------------------------


def test_credentials_are_checked_against_localstripe(localstripe, make_adapter):
    make_adapter(localstripe.url).check_credentials()
    # localstripe accepts any key that starts with sk_: a publishable key is refused, as Stripe refuses a bad key.
    publishable = "pk_test_51PayPlatPublishable0123456789abcd"
    adapter = make_adapter(localstripe.url, credentials={"secret_key": publishable})
    with pytest.raises(ChannelConfigError) as refused:
        adapter.check_credentials()
    message = str(refused.value)
    assert "the secret key pk_test_…abcd was refused by Stripe: update it in Console → Channels → Stripe EU" in message
    assert publishable not in message


def test_a_card_charge_with_automatic_capture_succeeds(stripe):
    request = charge_request(2_000)
    result = stripe.charge(request)
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference.startswith("pi_") and (result.amount, result.currency) == (2_000, "EUR")
    assert result.raw["metadata"]["payplat_key"] == request.idempotency_key and "client_secret" not in result.raw
    state = stripe.query(result.reference)
    assert isinstance(state, QueryResult)
    assert (state.status, state.amount_captured, state.amount_refunded) == (ChargeStatus.SUCCEEDED, 2_000, 0)


def test_a_manual_capture_charge_is_authorised_then_captured(stripe):
    result = stripe.charge(charge_request(3_000, capture_method="manual"))
    assert result.status is ChargeStatus.REQUIRES_CAPTURE
    before = stripe.query(result.reference)
    assert (before.status, before.amount_captured) == (ChargeStatus.REQUIRES_CAPTURE, 0)
    captured = stripe.capture(CaptureRequest(reference=result.reference, idempotency_key=key(), amount=3_000))
    assert captured.status is ChargeStatus.SUCCEEDED and captured.reference == result.reference
    assert stripe.query(result.reference).amount_captured == 3_000


def test_an_authorisation_is_cancelled(stripe):
    result = stripe.charge(charge_request(1_500, capture_method="manual"))
    # No reason: localstripe refuses cancellation_reason (the stand-in test checks it is sent).
    cancelled = stripe.cancel(CancelRequest(reference=result.reference, idempotency_key=key()))
    assert cancelled.status is ChargeStatus.CANCELED
    assert stripe.query(result.reference).status is ChargeStatus.CANCELED


def test_a_declined_card_raises_declined_and_the_failed_charge_is_found_by_key(stripe):
    # localstripe's card declined when charged (pm_card_chargeDeclined itself is unknown to it: see below).
    request = charge_request(2_500, "pm_card_chargeCustomerFail")
    with pytest.raises(ChannelDeclined) as declined:
        stripe.charge(request)
    assert declined.value.decline_code == "card_declined" and not declined.value.fail_over
    assert "'Stripe EU' (stripe) declined the charge: Your card was declined" in str(declined.value)
    state = stripe.query(idempotency_key=request.idempotency_key)
    assert (state.status, state.failure_code, state.amount_captured) == (ChargeStatus.FAILED, "card_declined", 0)


def test_a_partial_refund_then_the_rest(stripe):
    charge = stripe.charge(charge_request(2_000))
    first = stripe.refund(RefundRequest(reference=charge.reference, idempotency_key=key(), amount=500))
    assert (first.status, first.amount, first.currency) == (RefundStatus.SUCCEEDED, 500, "EUR")
    assert first.reference.startswith("re_") and first.charge_reference == charge.reference
    rest = stripe.refund(RefundRequest(reference=charge.reference, idempotency_key=key(), amount=1_500))
    assert rest.amount == 1_500
    assert stripe.query(charge.reference).amount_refunded == 2_000


def test_a_refund_without_an_amount_refunds_the_whole_charge(stripe):
    charge = stripe.charge(charge_request(1_200))
    refund = stripe.refund(RefundRequest(reference=charge.reference, idempotency_key=key(), reason="wrong size"))
    assert (refund.status, refund.amount) == (RefundStatus.SUCCEEDED, 1_200)
    assert stripe.query(charge.reference).amount_refunded == 1_200


def test_a_charge_is_queried_by_reference_and_by_idempotency_key(stripe):
    request = charge_request(4_200)
    charge = stripe.charge(request)
    by_key = stripe.query(idempotency_key=request.idempotency_key)
    assert by_key.reference == charge.reference and by_key.status is ChargeStatus.SUCCEEDED
    with pytest.raises(ChannelInvalidRequest) as missing:
        stripe.query(idempotency_key="never-sent-" + key())
    assert missing.value.code == "resource_missing" and "Stripe never took it" in str(missing.value)
    with pytest.raises(ChannelInvalidRequest) as unknown:
        stripe.query("pi_doesNotExist")
    assert unknown.value.code == "resource_missing"
    with pytest.raises(ChannelInvalidRequest, match="is not a Stripe PaymentIntent id"):
        stripe.query("../v1/balance")


def payout_request(amount=5_000, currency="EUR", key=None, **kwargs):
    kwargs.setdefault("destination", "ba_1PayPlatMerchantBank")
    return PayoutRequest(amount=amount, currency=currency, idempotency_key=key or str(uuid.uuid4()), **kwargs)


def test_a_payout_is_created_pending_and_carries_our_key(stripe, localstripe):
    request = payout_request(5_000, description="Weekly payout", metadata={"payout": "po_42"})
    result = stripe.payout(request)
    assert result.reference.startswith("po_") and (result.amount, result.currency) == (5_000, "EUR")
    assert result.status is PayoutStatus.PENDING and result.arrival_date >= date.today()
    assert (result.failure_code, result.failure_message) == (None, None)
    assert result.raw["metadata"] == {"payout": "po_42", "payplat_key": request.idempotency_key}
    stored = localstripe.api("GET", f"/v1/payouts/{result.reference}")
    assert (stored["amount"], stored["currency"], stored["method"]) == (5_000, "eur", "standard")
    assert (stored["description"], stored["metadata"]["payplat_key"]) == ("Weekly payout", request.idempotency_key)


def test_a_payout_is_queried_by_reference_and_by_our_key(stripe):
    request = payout_request(6_100)
    made = stripe.payout(request)
    by_reference = stripe.query_payout(made.reference)
    by_key = stripe.query_payout(idempotency_key=request.idempotency_key)
    assert by_reference == by_key
    assert (by_key.reference, by_key.status, by_key.amount, by_key.currency) == (
        made.reference,
        made.status,
        6_100,
        "EUR",
    )
    assert by_key.raw["metadata"]["payplat_key"] == request.idempotency_key
    with pytest.raises(ChannelInvalidRequest) as missing:
        stripe.query_payout(idempotency_key="never-sent-" + key())
    assert missing.value.code == "resource_missing" and "Stripe never received it" in str(missing.value)
    with pytest.raises(ChannelInvalidRequest) as unknown:
        stripe.query_payout("po_doesNotExist")
    assert unknown.value.code == "resource_missing"
    with pytest.raises(ChannelInvalidRequest, match="is not a Stripe payout id"):
        stripe.query_payout("../v1/balance")
    for neither_or_both in ({}, {"reference": made.reference, "idempotency_key": request.idempotency_key}):
        with pytest.raises(ValueError, match="exactly one of reference or idempotency_key"):
            stripe.query_payout(**neither_or_both)


def test_contract_signing_is_not_offered_and_says_what_to_use_instead(stand_in, make_adapter):
    adapter = make_adapter(stand_in.url)
    assert not adapter.capabilities.contracts
    with pytest.raises(ChannelNotSupported) as refused:
        adapter.sign_contract(ContractRequest(payer_reference="cus_1", idempotency_key=key()))
    assert refused.value.operation == "contract signing" and not refused.value.fail_over
    message = str(refused.value)
    assert message.startswith("contract signing is not supported by channel 'Stripe EU' (stripe): Stripe has no")
    assert "SetupIntent" in message and message.endswith("through a channel of a type that signs contracts (sandbox)")
    assert refused.value.message == message and stand_in.seen == []


def test_a_notification_sent_by_localstripe_is_verified_and_parsed(localstripe, make_adapter):
    adapter = make_adapter(
        localstripe.url, credentials={"secret_key": SECRET_KEY, "webhook_secret": LOCALSTRIPE_WEBHOOK_SECRET}
    )
    charge = adapter.charge(charge_request(2_100))

    def delivered():
        for seen, body in zip(localstripe.webhooks.seen, localstripe.webhooks.bodies, strict=True):
            event = json.loads(body)
            if event["type"] == "payment_intent.succeeded" and event["data"]["object"]["id"] == charge.reference:
                return seen, body
        return None

    localstripe.webhooks.wait_for(lambda: delivered() is not None)
    seen, body = delivered()
    event = adapter.parse_notification(seen.headers, body)
    assert (event.type, event.reference, event.status, event.amount, event.currency) == (
        "payment_intent.succeeded",
        charge.reference,
        ChargeStatus.SUCCEEDED,
        2_100,
        "EUR",
    )
    assert event.event_id.startswith("evt_") and "client_secret" not in event.raw["object"]
    with pytest.raises(InvalidNotification, match="does not match"):
        adapter.parse_notification(seen.headers, body.replace(b"2100", b"9100"))


# What localstripe lacks, shown: each of these would pass against Stripe the other way. When one fails,
# localstripe gained the feature: move the flow's test from the stand-in to localstripe.


def test_localstripe_ignores_idempotency_keys(stripe, localstripe):
    request = charge_request(1_000)
    first, second = stripe.charge(request), stripe.charge(request)
    assert first.reference != second.reference  # Stripe would answer the same PaymentIntent twice
    listed = localstripe.api("GET", "/v1/payment_intents", params={"limit": 100})["data"]
    assert [pi["id"] for pi in listed if pi["metadata"].get("payplat_key") == request.idempotency_key] == [
        first.reference,
        second.reference,
    ]


def test_localstripe_refuses_parameters_it_does_not_know_and_pm_card_charge_declined(stripe):
    with pytest.raises(ChannelInvalidRequest, match="Unexpected description"):
        stripe.charge(charge_request(description="Order 42"))
    authorised = stripe.charge(charge_request(capture_method="manual"))
    with pytest.raises(ChannelInvalidRequest, match="Unexpected cancellation_reason"):
        stripe.cancel(CancelRequest(reference=authorised.reference, idempotency_key=key(), reason="abandoned"))
    with pytest.raises(ChannelInvalidRequest) as unknown:
        stripe.charge(charge_request(method="pm_card_chargeDeclined"))
    assert unknown.value.code == "resource_missing"


def test_localstripe_has_no_search_api(localstripe, make_adapter):
    adapter = make_adapter(localstripe.url, settings={"query_scan_limit": 1})
    adapter.charge(charge_request())
    adapter.charge(charge_request())
    with pytest.raises(ChannelInvalidRequest, match=r"refused the query \(HTTP 404\): Not Found"):
        adapter.query(idempotency_key="never-sent-" + key())


def test_localstripe_accepts_a_refund_larger_than_the_charge(stripe):
    charge = stripe.charge(charge_request(1_000))
    refund = stripe.refund(RefundRequest(reference=charge.reference, idempotency_key=key(), amount=5_000))
    assert refund.amount == 5_000  # Stripe: 400 amount_too_large, tested on the stand-in


def test_localstripe_pays_out_only_in_eur_and_ignores_the_destination(stripe):
    with pytest.raises(ChannelInvalidRequest, match=r"refused the payout \(HTTP 400\): Bad request"):
        stripe.payout(payout_request(currency="USD"))  # Stripe pays out in any currency of the balance
    paid_out = stripe.payout(payout_request(destination="ba_1PayPlatMerchantBank"))
    assert paid_out.raw["destination"].startswith("ba_") and paid_out.raw["destination"] != "ba_1PayPlatMerchantBank"


def test_localstripe_cannot_list_by_creation_date_so_statements_run_on_the_stand_in(stripe):
    with pytest.raises(ChannelInvalidRequest, match="Unexpected created"):
        stripe.fetch_statement(date.today())


# --- flows against the stand-in (what localstripe lacks) --------------------------------------------


def test_the_charge_request_as_stripe_receives_it(stand_in, make_adapter):
    stand_in.on("POST", "/v1/payment_intents", (200, payment_intent()))
    adapter = make_adapter(stand_in.url, settings={"return_url": "https://shop.example/back"})
    request = charge_request(
        2_000, key="order-42-attempt-1", description="Order 42", metadata={"order": "42"}, capture_method="manual"
    )
    adapter.charge(request)
    (seen,) = stand_in.requests("POST", "/v1/payment_intents")
    assert seen.form == {
        "amount": ["2000"],
        "currency": ["eur"],
        "payment_method": ["pm_card_visa"],
        "payment_method_types[0]": ["card"],
        "confirm": ["true"],
        "capture_method": ["manual"],
        "description": ["Order 42"],
        "return_url": ["https://shop.example/back"],
        "metadata[order]": ["42"],
        "metadata[payplat_key]": ["order-42-attempt-1"],
        "expand[0]": ["latest_charge"],
    }
    assert seen.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert seen.headers["idempotency-key"] == "order-42-attempt-1"
    assert seen.headers["stripe-version"] == "2024-06-20"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"


def test_the_same_idempotency_key_twice_makes_one_charge(stand_in, make_adapter):
    created: dict[str, dict] = {}

    def create(seen: Seen):
        # Stripe's idempotency layer: the first answer for a key is replayed.
        idempotency_key = seen.headers["idempotency-key"]
        if idempotency_key not in created:
            created[idempotency_key] = payment_intent(f"pi_{len(created) + 1:04d}", amount=int(seen.one("amount")))
        return 200, created[idempotency_key], {"Idempotent-Replayed": "true"}

    stand_in.on("POST", "/v1/payment_intents", create)
    adapter = make_adapter(stand_in.url)
    request = charge_request(2_000)
    first, second = adapter.charge(request), adapter.charge(request)
    assert first.reference == second.reference == "pi_0001" and len(created) == 1
    assert [s.headers["idempotency-key"] for s in stand_in.seen] == [request.idempotency_key] * 2


def test_captures_cancels_and_refunds_send_their_own_derived_keys(stand_in, make_adapter):
    stand_in.on("POST", "/v1/payment_intents/pi_1/capture", (200, payment_intent("pi_1")))
    stand_in.on("POST", "/v1/payment_intents/pi_2/cancel", (200, payment_intent("pi_2", status="canceled")))
    refund = {"id": "re_1", "object": "refund", "amount": 700, "currency": "eur", "payment_intent": "pi_1"}
    stand_in.on("POST", "/v1/refunds", (200, {**refund, "status": "succeeded"}), (200, {**refund, "status": "pending"}))
    adapter = make_adapter(stand_in.url)

    adapter.capture(CaptureRequest(reference="pi_1", idempotency_key="pay-1", amount=1_500))
    adapter.cancel(CancelRequest(reference="pi_2", idempotency_key="pay-2", reason="the shop closed"))
    done = adapter.refund(RefundRequest(reference="pi_1", idempotency_key="pay-1", amount=700, reason="broken"))
    pending = adapter.refund(RefundRequest(reference="pi_1", idempotency_key="pay-1b", reason="fraudulent"))
    adapter.cancel(CancelRequest(reference="pi_2", idempotency_key="pay-3", reason="abandoned"))

    capture, cancel, first_refund, second_refund, second_cancel = stand_in.seen
    assert capture.headers["idempotency-key"] == "pay-1:capture" and capture.one("amount_to_capture") == "1500"
    assert cancel.headers["idempotency-key"] == "pay-2:cancel" and cancel.one("cancellation_reason") is None
    assert first_refund.headers["idempotency-key"] == "pay-1:refund"
    assert first_refund.one("payment_intent") == "pi_1" and first_refund.one("amount") == "700"
    # Our key is what reconciliation matches on; free text is not one of Stripe's reasons, so it goes to metadata.
    assert first_refund.one("metadata[payplat_key]") == "pay-1" and first_refund.one("reason") is None
    assert first_refund.one("metadata[payplat_reason]") == "broken"
    assert second_refund.one("reason") == "fraudulent" and second_refund.one("amount") is None
    assert second_cancel.one("cancellation_reason") == "abandoned"
    assert (done.status, pending.status, done.charge_reference) == (
        RefundStatus.SUCCEEDED,
        RefundStatus.PENDING,
        "pi_1",
    )


def payout(po_id="po_1StandIn0001", status="pending", amount=5_000, **fields) -> dict:
    """A payout as real Stripe sends it (API 2024-06-20)."""
    return {
        "id": po_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": int(datetime(2025, 3, 17, tzinfo=UTC).timestamp()),
        "automatic": False,
        "balance_transaction": "txn_1StandIn0001",
        "created": int(NOW.timestamp()),
        "currency": "eur",
        "description": "Weekly payout",
        "destination": "ba_1PayPlatMerchantBank",
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {},
        "method": "standard",
        "source_type": "card",
        "statement_descriptor": None,
        "status": status,
        "type": "bank_account",
        **fields,
    }


def test_the_payout_request_as_stripe_receives_it_and_each_status_as_ours(stand_in, make_adapter):
    failed = payout(
        status="failed",
        failure_code="account_closed",
        failure_message="The bank account has been closed.",
        destination={"id": "ba_1PayPlatMerchantBank", "object": "bank_account", "last4": "6789"},
    )
    stand_in.on(
        "POST",
        "/v1/payouts",
        (200, payout(status="pending")),
        (200, payout(status="in_transit")),
        (200, payout(status="paid")),
        (200, failed),
        (200, payout(status="canceled")),
    )
    adapter = make_adapter(stand_in.url)
    request = payout_request(5_000, key="po-7", description="Weekly payout", metadata={"payout": "po_7"})
    results = [adapter.payout(request) for _ in range(5)]
    assert [r.status for r in results] == [
        PayoutStatus.PENDING,
        PayoutStatus.PENDING,
        PayoutStatus.PAID,
        PayoutStatus.FAILED,
        PayoutStatus.FAILED,
    ]
    first = results[0]
    assert (first.reference, first.amount, first.currency, first.arrival_date) == (
        "po_1StandIn0001",
        5_000,
        "EUR",
        date(2025, 3, 17),
    )
    assert (results[3].failure_code, results[3].failure_message) == (
        "account_closed",
        "The bank account has been closed.",
    )
    assert results[3].raw["destination"] == "ba_1PayPlatMerchantBank" and "6789" not in repr(results[3].raw)
    sent = stand_in.requests("POST", "/v1/payouts")[0]
    assert sent.form == {
        "amount": ["5000"],
        "currency": ["eur"],
        "destination": ["ba_1PayPlatMerchantBank"],
        "method": ["standard"],
        "description": ["Weekly payout"],
        "metadata[payout]": ["po_7"],
        "metadata[payplat_key]": ["po-7"],
    }
    assert sent.headers["idempotency-key"] == "po-7:payout"
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}" and sent.headers["stripe-version"] == "2024-06-20"


def test_a_payout_stripe_refuses_or_answers_unreadably(stand_in, make_adapter):
    short = stripe_error(
        "invalid_request_error",
        "You have insufficient funds in your Stripe account.",
        code="balance_insufficient",
    )
    stand_in.on("POST", "/v1/payouts", (400, short), (200, payout(status="teleported")), (500, API_ERROR))
    adapter = make_adapter(stand_in.url)
    with pytest.raises(ChannelInvalidRequest) as refused:
        adapter.payout(payout_request())
    assert refused.value.code == "balance_insufficient" and not refused.value.fail_over
    # A payout moves money: an answer we cannot read, or a 500, leaves its outcome unknown.
    for _ in range(2):
        request = payout_request()
        with pytest.raises(ChannelTimeout) as unknown:
            adapter.payout(request)
        # The error names our key, which query_payout takes; Stripe received the derived one.
        assert unknown.value.idempotency_key == request.idempotency_key
        assert "outcome is unknown" in str(unknown.value)
        sent = stand_in.requests("POST", "/v1/payouts")[-1]
        assert sent.headers["idempotency-key"] == derived_key("payout", request.idempotency_key)


class StripePayouts:
    """Stripe's payouts on the stand-in: a POST records the payout, then answers it or drops the connection
    (`lose_answers`); GET /v1/payouts lists them newest first, paged by limit and starting_after as Stripe does,
    and each payout is retrieved by its id."""

    def __init__(self, stand_in: StandIn):
        self.stand_in = stand_in
        self.made: list[dict] = []  # oldest first
        self.lose_answers = False
        stand_in.on("POST", "/v1/payouts", self.create)
        stand_in.on("GET", "/v1/payouts", self.list)

    def add(self, po_id: str, **fields) -> dict:
        made = payout(po_id, **fields)
        self.made.append(made)
        self.stand_in.on("GET", f"/v1/payouts/{po_id}", (200, made))
        return made

    def create(self, seen: Seen):
        metadata = {k[len("metadata[") : -1]: v[0] for k, v in seen.form.items() if k.startswith("metadata[")}
        made = self.add(f"po_{uuid.uuid4().hex[:16]}", amount=int(seen.one("amount")), metadata=metadata)
        return DROP if self.lose_answers else (200, made)

    def list(self, seen: Seen):
        newest_first = self.made[::-1]
        after = seen.one("starting_after", "query")
        start = next(i + 1 for i, p in enumerate(newest_first) if p["id"] == after) if after else 0
        limit = int(seen.one("limit", "query") or 10)
        page = newest_first[start : start + limit]
        return 200, {"object": "list", "has_more": start + limit < len(newest_first), "data": page}


def test_a_payout_whose_answer_was_lost_is_found_by_our_key(stand_in, make_adapter):
    payouts = StripePayouts(stand_in)
    payouts.add("po_older", metadata={"payplat_key": "an-older-payout"})
    payouts.lose_answers = True  # Stripe makes the payout, then the connection closes before its answer
    adapter = make_adapter(stand_in.url)
    request = payout_request(7_300, key="weekly-payout-11")
    with pytest.raises(ChannelTimeout) as lost:
        adapter.payout(request)
    assert lost.value.idempotency_key == "weekly-payout-11" and len(payouts.made) == 2
    found = adapter.query_payout(idempotency_key=lost.value.idempotency_key)
    made = payouts.made[-1]
    assert (found.reference, found.status, found.amount) == (made["id"], PayoutStatus.PENDING, 7_300)
    assert adapter.query_payout(found.reference) == found
    (listed,) = stand_in.requests("GET", "/v1/payouts")
    assert listed.query == {"limit": ["100"]}
    (sent,) = stand_in.requests("POST", "/v1/payouts")
    assert sent.headers["idempotency-key"] == "weekly-payout-11:payout"
    assert sent.one("metadata[payplat_key]") == "weekly-payout-11"


def test_a_payout_query_by_key_pages_through_the_list_up_to_the_scan_limit(stand_in, make_adapter):
    payouts = StripePayouts(stand_in)
    payouts.add("po_oldest", status="paid", metadata={"payplat_key": "k-oldest"})
    for n in range(149):
        payouts.add(f"po_{n:03d}", status="in_transit", metadata={"payplat_key": f"k-{n}"})
    adapter = make_adapter(stand_in.url)
    found = adapter.query_payout(idempotency_key="k-oldest")
    assert (found.reference, found.status) == ("po_oldest", PayoutStatus.PAID)
    first, second = stand_in.requests("GET", "/v1/payouts")
    assert first.query == {"limit": ["100"]}
    assert second.query == {"limit": ["100"], "starting_after": ["po_049"]}
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.query_payout(idempotency_key="never-sent")
    assert missing.value.code == "resource_missing" and "none of the 150 payouts" in str(missing.value)
    # Past the scan limit: Stripe cannot search payouts, so "never received" would be a guess.
    stand_in.seen.clear()
    limited = make_adapter(stand_in.url, settings={"query_scan_limit": 120})
    with pytest.raises(ChannelInvalidRequest) as unknowable:
        limited.query_payout(idempotency_key="k-oldest")
    assert unknowable.value.code == "query_scan_limit_reached" and "newest 120" in str(unknowable.value)
    assert "raise query_scan_limit in Console → Channels → Stripe EU" in str(unknowable.value)
    assert [seen.one("limit", "query") for seen in stand_in.requests("GET", "/v1/payouts")] == ["100", "20"]
    assert limited.query_payout(idempotency_key="k-30").reference == "po_030"


def test_stripe_s_decline_gives_the_decline_code_and_the_payment_intent(stand_in, make_adapter):
    declined = payment_intent(
        "pi_declined",
        status="requires_payment_method",
        last_payment_error={"code": "card_declined", "decline_code": "generic_decline", "message": "Declined."},
    )
    body = stripe_error(
        "card_error",
        "Your card was declined.",
        code="card_declined",
        decline_code="generic_decline",
        charge="ch_declined",
        payment_intent=declined,
    )
    stand_in.on("POST", "/v1/payment_intents", (402, body))
    adapter = make_adapter(stand_in.url)
    with pytest.raises(ChannelDeclined) as error:
        adapter.charge(charge_request(method="pm_card_chargeDeclined"))
    assert (error.value.decline_code, error.value.reference) == ("generic_decline", "pi_declined")
    assert "client_secret" not in str(error.value) and "DoNotShowThis" not in str(error.value)


def test_a_payer_action_is_processing_with_the_redirect(stand_in, make_adapter):
    action = {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": "https://hooks.stripe.com/3ds/x", "return_url": "r"},
    }
    stand_in.on("POST", "/v1/payment_intents", (200, payment_intent(status="requires_action", next_action=action)))
    result = make_adapter(stand_in.url).charge(charge_request())
    assert result.status is ChargeStatus.PROCESSING
    assert dict(result.next_action) == {"type": "redirect_to_url", "url": "https://hooks.stripe.com/3ds/x"}


def test_a_refund_over_what_is_left_is_refused(stand_in, make_adapter):
    body = stripe_error(
        "invalid_request_error",
        "Refund amount (€30.00) is greater than unrefunded amount on charge (€20.00)",
        code="amount_too_large",
        param="amount",
    )
    stand_in.on("POST", "/v1/refunds", (400, body))
    with pytest.raises(ChannelInvalidRequest) as refused:
        make_adapter(stand_in.url).refund(RefundRequest(reference="pi_1", idempotency_key=key(), amount=3_000))
    assert refused.value.code == "amount_too_large" and "greater than unrefunded amount" in str(refused.value)
    assert not refused.value.fail_over


def test_a_query_by_key_pages_through_the_list_newest_first(stand_in, make_adapter):
    older = payment_intent("pi_mine", metadata={"payplat_key": "k-1"})
    stand_in.on(
        "GET",
        "/v1/payment_intents",
        (200, {"object": "list", "has_more": True, "data": [payment_intent("pi_a"), payment_intent("pi_b")]}),
        (200, {"object": "list", "has_more": False, "data": [older]}),
    )
    result = make_adapter(stand_in.url).query(idempotency_key="k-1")
    assert (result.reference, result.amount_captured) == ("pi_mine", 2_000)
    first, second = stand_in.requests("GET", "/v1/payment_intents")
    assert first.query == {"limit": ["100"], "expand[0]": ["data.latest_charge"]}
    assert second.one("starting_after", "query") == "pi_b"


def test_past_the_scan_limit_a_query_by_key_uses_the_search_api(stand_in, make_adapter):
    page = {"object": "list", "has_more": True, "data": [payment_intent("pi_a"), payment_intent("pi_b")]}
    found = payment_intent("pi_old", metadata={"payplat_key": "it's-1"})
    stand_in.on("GET", "/v1/payment_intents", (200, page))
    stand_in.on(
        "GET",
        "/v1/payment_intents/search",
        (200, {"object": "search_result", "has_more": False, "data": [found]}),
        (200, {"object": "search_result", "has_more": False, "data": []}),
    )
    adapter = make_adapter(stand_in.url, settings={"query_scan_limit": 2})
    assert adapter.query(idempotency_key="it's-1").reference == "pi_old"
    (search, *_) = stand_in.requests("GET", "/v1/payment_intents/search")
    assert search.one("query", "query") == "metadata['payplat_key']:'it\\'s-1'"
    assert stand_in.requests("GET", "/v1/payment_intents")[0].one("limit", "query") == "2"
    with pytest.raises(ChannelInvalidRequest, match="nor found by search") as missing:
        adapter.query(idempotency_key="it's-1")
    assert missing.value.code == "resource_missing"


def test_a_statement_pages_through_the_days_balance_transactions(stand_in, make_adapter):
    day = date(2025, 3, 14)
    noon = int(NOW.timestamp())
    charge_txn = {
        "id": "txn_1",
        "type": "charge",
        "amount": 2_000,
        "fee": 88,
        "currency": "eur",
        "created": noon,
        "source": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "metadata": {"payplat_key": "k-1"}},
    }
    refund_txn = {
        "id": "txn_2",
        "type": "refund",
        "amount": -500,
        "fee": 0,
        "currency": "eur",
        "created": noon + 60,
        "source": {"id": "re_1", "object": "refund", "payment_intent": "pi_1", "metadata": {"payplat_key": "r-1"}},
    }
    payout_txn = {"id": "txn_3", "type": "payout", "amount": -1_000, "fee": 0, "currency": "eur", "created": noon + 5}
    stand_in.on(
        "GET",
        "/v1/balance_transactions",
        (200, {"object": "list", "has_more": True, "data": [refund_txn, payout_txn]}),
        (200, {"object": "list", "has_more": False, "data": [charge_txn]}),
    )
    statement = make_adapter(stand_in.url).fetch_statement(day)
    assert [(line.reference, line.kind, line.amount, line.fee, line.net) for line in statement.lines] == [
        ("txn_1", "charge", 2_000, 88, 1_912),
        ("txn_3", "payout", -1_000, 0, -1_000),
        ("txn_2", "refund", -500, 0, -500),
    ]
    assert [(line.charge_reference, line.our_reference) for line in statement.lines] == [
        ("pi_1", "k-1"),
        ("", ""),
        ("pi_1", "r-1"),
    ]
    first, second = stand_in.requests("GET", "/v1/balance_transactions")
    assert first.one("created[gte]", "query") == str(int(datetime(2025, 3, 14, tzinfo=UTC).timestamp()))
    assert first.one("created[lt]", "query") == str(int(datetime(2025, 3, 15, tzinfo=UTC).timestamp()))
    assert first.one("expand[0]", "query") == "data.source" and first.one("starting_after", "query") is None
    assert second.one("starting_after", "query") == "txn_3"


def test_credentials_of_the_wrong_mode_are_a_configuration_error(stand_in, make_adapter):
    stand_in.on("GET", "/v1/balance", (200, {"object": "balance", "livemode": True, "available": []}))
    with pytest.raises(ChannelConfigError, match="is in test mode but its secret key sk_test_…wxyz is a live key"):
        make_adapter(stand_in.url).check_credentials()


def test_adapters_with_one_transport_share_a_kept_alive_connection(stand_in, make_adapter):
    stand_in.on("GET", "/v1/balance", (200, {"object": "balance", "livemode": False}))
    first, second = make_adapter(stand_in.url), make_adapter(stand_in.url)
    for adapter in (first, second, first):
        adapter.check_credentials()
    assert len({seen.client_port for seen in stand_in.seen}) == 1
    # Other timeouts are another transport: its own client, its own connection.
    make_adapter(stand_in.url, settings={"read_timeout_s": 7}).check_credentials()
    assert len({seen.client_port for seen in stand_in.seen}) == 2
    CLIENTS.clear()
    first.check_credentials()  # after the pool let go of its clients, the next call opens anew
    assert len({seen.client_port for seen in stand_in.seen}) == 3


class StripeShop:
    """A tenant's merchant whose only channel is a stripe account at `base_url` (a stand-in): payments go
    through the platform (intents.create with confirm), which builds the account's adapter with adapter_of."""

    def __init__(self, app, make, slug: str, base_url: str, secret_key: str):
        self.app = app
        self.tenant = make.tenant(slug)
        merchant = make.merchant(self.tenant, "Bike Shop", f"owner@{slug}-bikes.example.com", password=None)
        self.ctx = intents.MerchantContext(self.tenant.id, merchant, livemode=False)
        self.account_id = make.channel_account(self.tenant.id, "Stripe EU", **self._fields(base_url, secret_key))

    @staticmethod
    def _fields(base_url: str, secret_key: str) -> dict:
        return {
            "type": "stripe",
            "currency": "EUR",
            "products": ["card"],
            "base_url": base_url,
            "credentials": {"secret_key": secret_key},
        }

    def pay(self, amount: int = 2_000) -> str:
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            pi = intents.create(self.ctx, amount=amount, currency="eur", payment_method="pm_card_visa", confirm=True)
            status = pi.status
            db.session.remove()
        return status

    def edit(self, base_url: str, secret_key: str) -> None:
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            account = get_channel_account(self.tenant.id, self.account_id)
            data = ChannelAccountInput(name="Stripe EU", **self._fields(base_url, secret_key))
            assert update_channel_account(account, data, {"card"}, Actor.system())
            db.session.remove()


def _created(seen: Seen):
    """Stripe's answer to a confirmed PaymentIntent, for the amount and currency asked."""
    metadata = {k[len("metadata[") : -1]: v[0] for k, v in seen.form.items() if k.startswith("metadata[")}
    pi_id = f"pi_{uuid.uuid4().hex[:16]}"
    amount, currency = int(seen.one("amount")), seen.one("currency")
    return 200, payment_intent(pi_id, amount=amount, currency=currency, metadata=metadata)


def test_payments_through_fresh_adapters_of_one_account_reuse_one_connection(app, make, stand_in):
    stand_in.on("POST", "/v1/payment_intents", _created)
    shop = StripeShop(app, make, "velo", stand_in.url, SECRET_KEY)
    assert [shop.pay(), shop.pay()] == ["succeeded", "succeeded"]
    first, second = stand_in.requests("POST", "/v1/payment_intents")
    assert first.client_port == second.client_port  # one kept-alive connection, though each used its own adapter
    assert first.headers["authorization"] == second.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]

    # An edit (another base URL and secret key) applies to the very next payment.
    moved = StandIn().on("POST", "/v1/payment_intents", _created)
    try:
        rotated = "sk_test_51PayPlatRotatedKey0123456789abcd"
        shop.edit(moved.url, rotated)
        assert shop.pay() == "succeeded"
        (after_edit,) = moved.requests("POST", "/v1/payment_intents")
        assert after_edit.headers["authorization"] == f"Bearer {rotated}"
        assert len(stand_in.requests("POST", "/v1/payment_intents")) == 2
    finally:
        CLIENTS.clear()
        moved.stop()


def test_accounts_of_two_tenants_on_one_base_url_each_send_their_own_key(app, make, stand_in):
    def created_with_a_cookie(seen: Seen):
        # A server (or a proxy before it) that sets a cookie: it must never reach another account's request.
        status, body = _created(seen)
        return status, body, {"Set-Cookie": "route=first-caller; Path=/"}

    stand_in.on("POST", "/v1/payment_intents", created_with_a_cookie)
    other_key = "sk_test_51PayPlatOtherTenant0123456789efgh"
    velo = StripeShop(app, make, "velo", stand_in.url, SECRET_KEY)
    tandem = StripeShop(app, make, "tandem", stand_in.url, other_key)
    for shop in (velo, tandem, velo, tandem):
        assert shop.pay() == "succeeded"
    sent = stand_in.requests("POST", "/v1/payment_intents")
    assert [s.headers["authorization"] for s in sent] == [f"Bearer {SECRET_KEY}", f"Bearer {other_key}"] * 2
    assert len({s.client_port for s in sent}) == 1  # one connection carried both tenants' calls, each with its key
    assert not [s for s in sent if "cookie" in s.headers]


def test_threads_share_the_pool_and_each_call_carries_its_own_key(stand_in, make_adapter):
    def intent_of_the_caller(seen: Seen):
        # The answer names the key it was asked with, so that each caller checks it got its own answer.
        caller = seen.headers["authorization"].rsplit("_", 1)[1]
        return 200, payment_intent(f"pi_{caller}")

    stand_in.on("GET", "/v1/payment_intents/pi_1", intent_of_the_caller)
    keys = [f"sk_test_51PayPlatThreadKey{n:02d}0123456789_caller{n}" for n in range(8)]
    adapters = [make_adapter(stand_in.url, credentials={"secret_key": k}) for k in keys]

    def five_queries(n: int) -> list[str]:
        return [adapters[n].query("pi_1").reference for _ in range(5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(five_queries, range(8)))
    assert answers == [[f"pi_caller{n}"] * 5 for n in range(8)]
    sent = [s.headers["authorization"] for s in stand_in.seen]
    assert sorted(sent) == sorted(f"Bearer {k}" for k in keys for _ in range(5))
    assert len(CLIENTS.transports()) == 1


def test_a_forked_process_opens_its_own_connection(stand_in, make_adapter):
    stand_in.on("GET", "/v1/balance", (200, {"object": "balance", "livemode": False}))
    make_adapter(stand_in.url).check_credentials()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads; the child uses none of the stand-in's.
        warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: an RQ work horse or a gunicorn worker, in short
        code = 1
        try:
            os.close(read_end)
            inherited = CLIENTS.transports()
            make_adapter(stand_in.url).check_credentials()
            os.write(write_end, json.dumps({"inherited": len(inherited)}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        said = reader.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert json.loads(said) == {"inherited": 0}
    make_adapter(stand_in.url).check_credentials()
    parent_first, child, parent_again = stand_in.requests("GET", "/v1/balance")
    assert child.client_port != parent_first.client_port  # the child never wrote on the parent's socket
    assert parent_again.client_port == parent_first.client_port  # and the parent's connection is still alive


def test_a_client_retired_while_in_use_closes_when_its_last_call_ends():
    pool = ClientPool(size=1)
    first, second = (Transport(base_url=f"https://{h}.example", connect_timeout_s=1, read_timeout_s=1) for h in "ab")
    with pool.lease(first) as busy:
        with pool.lease(second) as other:
            assert pool.transports() == [second]  # the first was evicted...
            assert not busy.is_closed  # ...but is not closed under the call still using it
        assert not other.is_closed
    assert busy.is_closed
    with pool.lease(first) as again:
        assert again is not busy and pool.transports() == [first]
    assert other.is_closed  # evicted while idle: closed at once
    pool.clear()
    assert again.is_closed and pool.transports() == []


# --- the error table, end to end --------------------------------------------------------------------


def _err(error_type: str, message: str, **fields) -> dict:
    return stripe_error(error_type, message, **fields)


INVALID = _err("invalid_request_error", "No such PaymentMethod: 'pm_x'", code="resource_missing")
REUSED = _err("idempotency_error", "Keys for idempotent requests can only be used with the same parameters")
BAD_KEY = _err("invalid_request_error", "Invalid API Key provided: sk_test_****wxyz")
DECLINED = _err(
    "card_error", "Your card has insufficient funds.", code="card_declined", decline_code="insufficient_funds"
)
FORBIDDEN = _err("invalid_request_error", "The provided key does not have the required permissions")
MISSING = _err("invalid_request_error", "No such payment_intent: 'pi_1'")
IN_PROGRESS = _err("idempotency_error", "There is currently another in-progress request using this key")
RATE_LIMITED = _err("invalid_request_error", "Too many requests hit the API too quickly", code="rate_limit")
API_ERROR = _err("api_error", "Something went wrong on Stripe's end")

# (answer, error from a charge (POST), error from a query (GET), code)
ERROR_TABLE = {
    "400": ((400, INVALID), ChannelInvalidRequest, ChannelInvalidRequest, "resource_missing"),
    "400-idempotency": ((400, REUSED), ChannelInvalidRequest, ChannelInvalidRequest, "idempotency_key_reused"),
    "401": ((401, BAD_KEY), ChannelConfigError, ChannelConfigError, None),
    "402": ((402, DECLINED), ChannelDeclined, ChannelDeclined, "insufficient_funds"),
    "403": ((403, FORBIDDEN), ChannelConfigError, ChannelConfigError, None),
    "404": ((404, MISSING), ChannelInvalidRequest, ChannelInvalidRequest, "resource_missing"),
    "409": ((409, IN_PROGRESS), ChannelTimeout, ChannelUnavailable, None),
    "429": ((429, RATE_LIMITED), ChannelUnavailable, ChannelUnavailable, None),
    "500": ((500, API_ERROR), ChannelTimeout, ChannelUnavailable, None),
    "502": ((502, b"Bad Gateway"), ChannelTimeout, ChannelUnavailable, None),
    "503": ((503, API_ERROR), ChannelTimeout, ChannelUnavailable, None),
    "200-not-json": ((200, b"<html>oops</html>"), ChannelTimeout, ChannelUnavailable, None),
    "dropped": (DROP, ChannelTimeout, ChannelUnavailable, None),
    "read-timeout": (HANG, ChannelTimeout, ChannelUnavailable, None),
}


def _code(error):
    return getattr(error, "code", None) or getattr(error, "decline_code", None)


@pytest.mark.parametrize(("answer", "on_post", "on_get", "code"), ERROR_TABLE.values(), ids=ERROR_TABLE.keys())
def test_the_error_table(stand_in, make_adapter, answer, on_post, on_get, code):
    stand_in.on("POST", "/v1/payment_intents", answer)
    stand_in.on("GET", "/v1/payment_intents/pi_1", answer)
    adapter = make_adapter(stand_in.url, settings={"read_timeout_s": 0.3})
    request = charge_request()
    with pytest.raises(on_post) as posted:
        adapter.charge(request)
    with pytest.raises(on_get) as got:
        adapter.query("pi_1")
    assert type(posted.value) is on_post and type(got.value) is on_get
    if code:
        assert _code(posted.value) == code
    if on_post is ChannelTimeout:
        assert posted.value.idempotency_key == request.idempotency_key and "outcome is unknown" in str(posted.value)
    if on_post is ChannelUnavailable:
        assert posted.value.fail_over and "nothing was done" in str(posted.value)
    for error in (posted.value, got.value):
        assert SECRET_KEY not in str(error) and "'Stripe EU' (stripe)" in str(error)


def test_a_refused_connection_is_unavailable_for_every_call(make_adapter):
    adapter = make_adapter(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ChannelUnavailable, match="ConnectError") as refused:
        adapter.charge(charge_request())
    assert refused.value.fail_over
    with pytest.raises(ChannelUnavailable):
        adapter.refund(RefundRequest(reference="pi_1", idempotency_key=key()))
    with pytest.raises(ChannelUnavailable):
        adapter.query(idempotency_key="k")


def test_the_error_table_as_a_pure_function():
    for moves_money, unknown in ((True, Outcome.UNKNOWN), (False, Outcome.UNAVAILABLE)):
        table = {
            (400, "invalid_request_error"): Outcome.INVALID,
            (400, "idempotency_error"): Outcome.INVALID,
            (404, "invalid_request_error"): Outcome.INVALID,
            (401, "invalid_request_error"): Outcome.CONFIG,
            (403, "invalid_request_error"): Outcome.CONFIG,
            (402, "card_error"): Outcome.DECLINED,
            (402, "invalid_request_error"): Outcome.DECLINED,  # localstripe's declines
            (409, "idempotency_error"): unknown,
            (429, "invalid_request_error"): Outcome.UNAVAILABLE,
            (500, "api_error"): unknown,
            (502, None): unknown,
            (503, None): unknown,
            (418, None): Outcome.INVALID,
        }
        for (status, error_type), outcome in table.items():
            assert http_outcome(status, error_type, moves_money=moves_money) is outcome, (status, moves_money)
        request = httpx.Request("POST", "https://api.stripe.com/v1/payment_intents")
        for exc in (httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")):
            assert transport_outcome(exc, moves_money=moves_money) is Outcome.UNAVAILABLE
        sent = (
            httpx.ReadTimeout("slow", request=request),
            httpx.ReadError("reset", request=request),
            httpx.WriteError("reset", request=request),
            httpx.RemoteProtocolError("closed", request=request),
        )
        for exc in sent:
            assert transport_outcome(exc, moves_money=moves_money) is unknown


# --- pure mapping ---------------------------------------------------------------------------------


def test_the_status_table_is_exhaustive():
    assert set(PAYMENT_INTENT_STATUS) == {
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
        "canceled",
        "succeeded",
    }
    assert set(PAYMENT_INTENT_STATUS.values()) == set(ChargeStatus)
    assert set(REFUND_STATUS.values()) == set(RefundStatus)
    for native, ours in PAYMENT_INTENT_STATUS.items():
        assert to_charge_status(native) is ours
        assert charge_result(payment_intent(status=native)).status is ours
    with pytest.raises(ValueError, match="unknown Stripe PaymentIntent status 'refunded'"):
        to_charge_status("refunded")


def test_the_payout_status_table_is_exhaustive():
    assert set(PAYOUT_STATUS) == {"paid", "pending", "in_transit", "failed", "canceled"}
    assert set(PAYOUT_STATUS.values()) == set(PayoutStatus)
    for native, ours in PAYOUT_STATUS.items():
        assert to_payout_status(native) is ours
        assert payout_result(payout(status=native)).status is ours
    with pytest.raises(ValueError, match="unknown Stripe payout status 'reversed'"):
        to_payout_status("reversed")
    with pytest.raises(ValueError, match="expected a payout, got 'refund'"):
        payout_result({**payout(), "object": "refund"})


def test_a_recorded_payment_intent_maps_to_a_query_result_without_its_client_secret():
    pi = payment_intent(status="succeeded", amount=2_000)
    pi["latest_charge"]["amount_refunded"] = 300
    result = charge_result(pi, QueryResult)
    assert (result.reference, result.amount, result.currency) == ("pi_3StandIn0001", 2_000, "EUR")
    assert (result.amount_captured, result.amount_refunded) == (2_000, 300)
    assert "client_secret" not in result.raw and "DoNotShowThis" not in repr(result)
    assert "4242" not in repr(result.raw)
    failed = charge_result(
        payment_intent(
            status="requires_payment_method",
            last_payment_error={"code": "card_declined", "decline_code": "expired_card"},
        )
    )
    assert (failed.status, failed.failure_code) == (ChargeStatus.FAILED, "expired_card")


def test_stripes_form_encoding():
    assert encode_form(
        {"amount": 100, "confirm": True, "off": False, "skip": None, "metadata": {"a": "1", "b": "x y"}, "t": ["card"]}
    ) == [
        ("amount", "100"),
        ("confirm", "true"),
        ("off", "false"),
        ("metadata[a]", "1"),
        ("metadata[b]", "x y"),
        ("t[0]", "card"),
    ]
    assert encode_form({"created": {"gte": 1, "lt": 2}, "expand": ["data.source"]}) == [
        ("created[gte]", "1"),
        ("created[lt]", "2"),
        ("expand[0]", "data.source"),
    ]


def test_derived_keys_stay_within_stripes_limit():
    assert derived_key("refund", "pay-1") == "pay-1:refund"
    long_key = "k" * 255
    derived = derived_key("capture", long_key)
    assert len(derived) <= 255 and derived.startswith("capture:") and derived != derived_key("refund", long_key)
    assert search_query("a'b\\c") == "metadata['payplat_key']:'a\\'b\\\\c'"


# --- notifications --------------------------------------------------------------------------------


def signed(event: dict, *, secret=WEBHOOK_SECRET, at=NOW) -> tuple[dict[str, str], bytes]:
    body = json.dumps(event).encode()
    return {SIGNATURE_HEADER: sign_payload(Secret(secret), body, int(at.timestamp()))}, body


def event(event_type: str, obj: dict, event_id="evt_1") -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(NOW.timestamp()),
        "data": {"object": obj},
    }


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def notified(make_adapter, clock):
    return make_adapter("https://api.stripe.com", clock=clock)


def test_payment_intent_events_carry_the_mapped_status(notified):
    succeeded = notified.parse_notification(*signed(event("payment_intent.succeeded", payment_intent())))
    assert (succeeded.event_id, succeeded.type, succeeded.reference, succeeded.status) == (
        "evt_1",
        "payment_intent.succeeded",
        "pi_3StandIn0001",
        ChargeStatus.SUCCEEDED,
    )
    assert (succeeded.amount, succeeded.currency, succeeded.occurred_at) == (2_000, "EUR", NOW)
    assert "client_secret" not in succeeded.raw["object"]
    error = {"code": "card_declined", "decline_code": "insufficient_funds"}
    failed_pi = payment_intent(status="requires_payment_method", last_payment_error=error)
    failed = notified.parse_notification(*signed(event("payment_intent.payment_failed", failed_pi)))
    assert (failed.status, failed.failure_code) == (ChargeStatus.FAILED, "insufficient_funds")
    authorised = notified.parse_notification(
        *signed(event("payment_intent.amount_capturable_updated", payment_intent(status="requires_capture")))
    )
    assert authorised.status is ChargeStatus.REQUIRES_CAPTURE


def test_refund_and_other_events_carry_the_charge_reference_without_a_status(notified):
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "currency": "eur"}
    charge |= {"amount": 2_000, "amount_refunded": 500}
    refunded = notified.parse_notification(*signed(event("charge.refunded", charge)))
    assert (refunded.reference, refunded.status, refunded.amount, refunded.currency) == ("pi_1", None, 500, "EUR")
    refund = {"id": "re_1", "object": "refund", "payment_intent": "pi_1", "amount": 500, "currency": "eur"}
    refund |= {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    failed = notified.parse_notification(*signed(event("refund.failed", refund)))
    assert (failed.reference, failed.amount, failed.failure_code) == ("pi_1", 500, "expired_or_canceled_card")
    payout = notified.parse_notification(*signed(event("payout.paid", {"id": "po_1", "object": "payout", "amount": 9})))
    assert (payout.type, payout.reference, payout.status) == ("payout.paid", None, None)


def test_tampered_stale_foreign_and_malformed_notifications_are_rejected(notified, clock):
    headers, body = signed(event("payment_intent.succeeded", payment_intent(amount=1_000)))
    with pytest.raises(InvalidNotification, match="does not match"):
        notified.parse_notification(headers, body.replace(b'"amount": 1000', b'"amount": 9000'))
    with pytest.raises(InvalidNotification, match="does not match"):
        notified.parse_notification(*signed(event("payment_intent.succeeded", payment_intent()), secret="whsec_other"))
    with pytest.raises(InvalidNotification, match="missing"):
        notified.parse_notification({}, body)
    clock.now = NOW + timedelta(seconds=301)
    with pytest.raises(InvalidNotification, match="301 seconds old"):
        notified.parse_notification(headers, body)
    clock.now = NOW + timedelta(seconds=300)
    assert notified.parse_notification({k.lower(): v for k, v in headers.items()}, body).amount == 1_000
    clock.now = NOW
    for bad in (b"not json", b"[]", json.dumps({"id": "evt", "type": "x", "created": 1}).encode()):
        with pytest.raises(InvalidNotification, match="not a Stripe event"):
            signature = sign_payload(Secret(WEBHOOK_SECRET), bad, int(NOW.timestamp()))
            notified.parse_notification({SIGNATURE_HEADER: signature}, bad)
    weird = event("payment_intent.succeeded", payment_intent(status="teleported"))
    with pytest.raises(InvalidNotification, match="unknown Stripe PaymentIntent status 'teleported'"):
        notified.parse_notification(*signed(weird))


def test_our_signatures_agree_with_stripes_own_library(make_adapter):
    now = int(time.time())
    body = json.dumps(event("payment_intent.succeeded", payment_intent())).encode()
    ours = sign_payload(Secret(WEBHOOK_SECRET), body, now)
    assert stripe_sdk.WebhookSignature.verify_header(body.decode(), ours, WEBHOOK_SECRET, tolerance=300)
    # While a secret is rolled, Stripe signs with both: any matching v1 is enough, other schemes are ignored.
    rolled = f"t={now},v1={'0' * 64},{ours.split(',')[1]},v0=6ffbb59b2300aae63f2724"
    assert stripe_sdk.WebhookSignature.verify_header(body.decode(), rolled, WEBHOOK_SECRET, tolerance=300)
    adapter = make_adapter("https://api.stripe.com")
    assert adapter.parse_notification({SIGNATURE_HEADER: rolled}, body).status is ChargeStatus.SUCCEEDED
    tampered = body.replace(b"succeeded", b"canceled")
    with pytest.raises(stripe_sdk.SignatureVerificationError):
        stripe_sdk.WebhookSignature.verify_header(tampered.decode(), ours, WEBHOOK_SECRET, tolerance=300)
    with pytest.raises(InvalidNotification):
        adapter.parse_notification({SIGNATURE_HEADER: ours}, tampered)


def test_notifications_need_the_webhook_secret(make_adapter):
    adapter = make_adapter("https://api.stripe.com", credentials={"secret_key": SECRET_KEY})
    with pytest.raises(ChannelConfigError, match="no webhook_secret: set it in Console → Channels → Stripe EU"):
        adapter.parse_notification({}, b"{}")


# --- secrets, settings, registry ----------------------------------------------------------------------


@pytest.fixture
def loud_logs(monkeypatch):
    """The migrations' logging.config.fileConfig (run once per session) disables the loggers that existed
    before it, ours and httpx's among them, and the app keeps httpx's request lines out of its log
    (`portal.logs`): turn them all back on, so that what they would log is checked too."""
    names = ("payments.channels.stripe", "httpx", "httpcore", "httpcore.connection", "httpcore.http11")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_secrets_never_reach_messages_reprs_or_logs(caplog, loud_logs, localstripe, stand_in, make_adapter):
    echo = stripe_error("invalid_request_error", f"Invalid request from key {SECRET_KEY} and {WEBHOOK_SECRET}")
    stand_in.on("POST", "/v1/payment_intents", (400, echo))
    refused = stripe_error("invalid_request_error", f"Invalid API Key provided: {SECRET_KEY}")
    stand_in.on("GET", "/v1/balance", (401, refused))
    messages = []
    with caplog.at_level(logging.DEBUG):
        real = make_adapter(localstripe.url)
        charge = real.charge(charge_request())
        real.refund(RefundRequest(reference=charge.reference, idempotency_key=key(), amount=100))
        real.query(charge.reference)
        fake = make_adapter(stand_in.url)
        for call in (lambda: fake.charge(charge_request()), fake.check_credentials):
            with pytest.raises((ChannelInvalidRequest, ChannelConfigError)) as error:
                call()
            messages += [str(error.value), repr(error.value)]
        logging.getLogger("payments.test").info("adapters %r %r config %s", real, fake, real.config)
    assert "sk_test_…wxyz" in messages[0] and "whsec_…abcd" in messages[0]
    assert "HTTP Request: POST" in caplog.text and "send_request_headers.started" in caplog.text
    assert "stripe POST /v1/payment_intents -> 200" in caplog.text and "stripe GET /v1/balance -> 401" in caplog.text
    shown = "\n".join([caplog.text, *messages, repr(real), repr(real.config), str(real.config)])
    for secret in (SECRET_KEY, WEBHOOK_SECRET, "51PayPlatSecretKey", "PayPlatWebhookSecret"):
        assert secret not in shown


def test_a_missing_secret_key_is_a_configuration_error_before_any_call(stand_in, make_adapter):
    adapter = make_adapter(stand_in.url, credentials={"webhook_secret": WEBHOOK_SECRET})
    with pytest.raises(ChannelConfigError, match="no secret_key: set it in Console → Channels → Stripe EU"):
        adapter.charge(charge_request())
    assert stand_in.seen == []


@pytest.mark.parametrize(
    ("settings", "livemode", "message"),
    [
        ({"base_url": "ftp://api.stripe.com"}, False, "setting base_url must be an http"),
        ({"base_url": "http://127.0.0.1:1"}, True, "setting base_url must be an https URL in live mode"),
        ({"read_timeout_s": 0}, False, "setting read_timeout_s must be a number of seconds"),
        ({"connect_timeout_s": "3"}, False, "setting connect_timeout_s must be a number of seconds"),
        ({"query_scan_limit": 0}, False, "setting query_scan_limit must be a whole number"),
    ],
)
def test_bad_settings_are_refused_when_the_adapter_is_built(make_adapter, settings, livemode, message):
    base_url = settings.pop("base_url", "https://api.stripe.com")
    with pytest.raises(ChannelConfigError, match=message):
        make_adapter(base_url, settings=settings, livemode=livemode)


def test_timeouts_come_from_settings(make_adapter):
    for settings, timeouts in (({}, (3.0, 20.0)), ({"connect_timeout_s": 1, "read_timeout_s": 45.5}, (1.0, 45.5))):
        adapter = make_adapter("https://api.stripe.com", settings=settings)
        with CLIENTS.lease(adapter.transport) as client:
            assert (client.timeout.connect, client.timeout.read) == timeouts


def test_only_card_charges_with_a_payment_method_are_sent(stand_in, make_adapter):
    adapter = make_adapter(stand_in.url)
    with pytest.raises(ChannelNotSupported, match="the product Alipay QR is not supported by channel 'Stripe EU'"):
        adapter.charge(ChargeRequest(amount=1, currency="CNY", idempotency_key=key(), product="alipay_qr"))
    with pytest.raises(ChannelInvalidRequest) as missing:
        adapter.charge(charge_request(method=None))
    assert missing.value.code == "missing_elements" and stand_in.seen == []


def test_the_registry_builds_a_stripe_adapter_per_account():
    config = ChannelConfig(id="1", name="Stripe EU", credentials={"secret_key": SECRET_KEY})
    first, second = adapter_for("stripe", config), adapter_for("stripe", config)
    assert isinstance(first, StripeAdapter) and first is not second
    caps = first.capabilities
    assert caps.products == frozenset({"card"}) and caps.manual_capture and caps.refunds and caps.statements
    assert caps.cancel and caps.notifications and caps.payouts and not caps.contracts
    # What an adapter keys its connections by carries nothing of the account.
    assert first.transport == Transport(base_url="https://api.stripe.com", connect_timeout_s=3, read_timeout_s=20)
    assert SECRET_KEY not in repr(first.transport)
