"""The SDK flow of test_sdk.py with the tenant's only channel account of type `stripe`, pointing at localstripe
(a fake Stripe run as a subprocess), with the account setting {"test_instruments": "localstripe"}: the
merchant uses Stripe's documented test payment methods, the platform hands localstripe its own.

What localstripe lacks that this flow relies on (see "What localstripe lacks" in payments/channels/stripe.py),
and what the flow does about it:

- Stripe's test payment methods other than pm_card_visa, pm_card_visa_chargeDeclined and
  pm_card_chargeCustomerFail: the `localstripe` test instruments map them (cards that succeed → pm_card_visa,
  cards declined when charged → pm_card_chargeCustomerFail). Without the setting pm_card_chargeDeclined is
  "No such PaymentMethod" there (checked below).
- Decline codes: localstripe's decline is a 402 invalid_request_error with code card_declined and no
  decline_code, so every decline reaches the merchant as a CardError with decline_code "card_declined"
  (at Stripe: generic_decline, insufficient_funds, ...).
- `description` on a PaymentIntent is refused by localstripe, so no PaymentIntent here has one (the adapter
  forwards it to the channel when set).
- A partial capture is recorded by localstripe as a full capture plus a refund of the rest; the platform
  keeps its own books from what it asked for (captured 4000 of 5000), so the flow still holds.
- Idempotency-Key is ignored by localstripe: the flow never retries, so it does not matter here.

localstripe runs once per session on a free loopback port (as in tests/test_channels_stripe.py, without the
webhook receiver that file registers) and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe

import ledger
from core.db import db
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channels import adapter_for
from payments.channels.base import ChannelConfig, ChannelConfigError
from payments.channels.stripe import LOCALSTRIPE_INSTRUMENTS
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

CHANNEL_KEY = "sk_test_51PayPlatLocalstripeKey0123456789"


# --- localstripe ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            with contextlib.suppress(subprocess.TimeoutExpired):  # the pause between polls; ends if it dies
                process.wait(timeout=0.05)


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory) -> Iterator[str]:
    """localstripe as a subprocess (never imported: its import warns), stopped at the end of the session."""
    workdir = tmp_path_factory.mktemp("localstripe-api")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
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
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _all_at_localstripe(url: str) -> list[dict]:
    """Every PaymentIntent localstripe holds (it lists oldest first, so page through them all)."""
    held: list[dict] = []
    params: dict = {"limit": 100}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CHANNEL_KEY}"}) as client:
        while True:
            page = client.get("/v1/payment_intents", params=params).raise_for_status().json()
            held.extend(page["data"])
            if not page["has_more"]:
                return held
            params = {"limit": 100, "starting_after": page["data"][-1]["id"]}


def _at_localstripe(url: str, our_intent: str) -> dict:
    """The PaymentIntent localstripe holds for one of ours (found by the metadata the adapter sends)."""
    found = [pi for pi in _all_at_localstripe(url) if pi["metadata"].get("payplat_payment_intent") == our_intent]
    assert len(found) == 1, f"localstripe holds {len(found)} PaymentIntents for {our_intent}"
    return found[0]


# --- the shop ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeShop:
    tenant_id: uuid.UUID
    merchant: uuid.UUID
    channel: uuid.UUID
    secret: str


def _shop(app, make, acme, localstripe_url: str, settings: dict) -> StripeShop:
    merchant = make.merchant(acme, "Coffee", "owner@coffee.example.com")
    with app.app_context():
        with tenant_context(db.session, acme.id):
            account = create_channel_account(
                acme.id,
                ChannelAccountInput(
                    name="Stripe (localstripe)",
                    type="stripe",
                    currency="USD",
                    products=["card"],
                    base_url=localstripe_url,
                    credentials={"secret_key": CHANNEL_KEY},
                    settings=settings,
                ),
                {"card"},
                Actor.system(),
            )
            channel = account.id
        _, secret = api_keys.create_key(acme.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    return StripeShop(acme.id, merchant, channel, secret)


@pytest.fixture
def stripe_shop(app, make, acme, localstripe_url) -> StripeShop:
    return _shop(app, make, acme, localstripe_url, {"test_instruments": "localstripe"})


@pytest.fixture
def client(sdk, stripe_shop) -> stripe.StripeClient:
    return sdk(stripe_shop.secret)


@pytest.fixture
def ledger_checked(app):
    """After the test: the platform's ledger check finds nothing wrong (as `flask ledger check`)."""
    yield
    with app.app_context(), platform_scope(db.session):
        problems = ledger.check(db.session)
        db.session.remove()
    assert problems == []


def _visa(client, amount=2000, **extra):
    return client.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True, **extra}
    )


# --- the flow ---------------------------------------------------------------------------------------------


def test_create_and_confirm_with_a_test_card_succeeds_at_localstripe(client, localstripe_url, ledger_checked):
    pi = _visa(client, metadata={"order_id": "6735"})
    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == ("succeeded", 2000, 2000, "usd")
    assert pi.latest_charge.startswith("pi_")  # the channel's reference: localstripe's PaymentIntent
    held = _at_localstripe(localstripe_url, pi.id)
    assert (held["id"], held["status"], held["amount"]) == (pi.latest_charge, "succeeded", 2000)

    # Created first, confirmed later with another of Stripe's test cards: mapped to localstripe's visa.
    later = client.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    confirmed = client.v1.payment_intents.confirm(later.id, {"payment_method": "pm_card_mastercard"})
    assert confirmed.status == "succeeded" and confirmed.amount_received == 1500
    assert _at_localstripe(localstripe_url, later.id)["status"] == "succeeded"
    assert [p.id for p in client.v1.payment_intents.list().data] == [later.id, pi.id]


def test_manual_capture_partial_refund_list_and_balance(client, localstripe_url, ledger_checked):
    pi = _visa(client, amount=5000, capture_method="manual")
    assert (pi.status, pi.amount_capturable) == ("requires_capture", 5000)
    assert _at_localstripe(localstripe_url, pi.id)["status"] == "requires_capture"
    assert client.v1.balance.retrieve().pending == []

    pi = client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 4000})
    assert (pi.status, pi.amount_received, pi.amount_capturable) == ("succeeded", 4000, 0)
    assert _at_localstripe(localstripe_url, pi.id)["status"] == "succeeded"

    refund = client.v1.refunds.create({"payment_intent": pi.id, "amount": 1500, "reason": "requested_by_customer"})
    assert (refund.status, refund.amount, refund.payment_intent) == ("succeeded", 1500, pi.id)
    assert client.v1.payment_intents.retrieve(pi.id).amount_refunded == 1500
    assert [r.id for r in client.v1.refunds.list({"payment_intent": pi.id}).data] == [refund.id]
    with pytest.raises(stripe.InvalidRequestError) as too_much:  # refused by the platform, not localstripe
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 3000})
    assert too_much.value.code == "amount_too_large"

    assert [p.id for p in client.v1.payment_intents.list({"limit": 1}).data] == [pi.id]
    balance = client.v1.balance.retrieve()
    assert [(b.amount, b.currency) for b in balance.pending] == [(4000 - 1500, "usd")]


@pytest.mark.parametrize("method", ["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"])
def test_a_declined_test_card_is_a_card_error(client, method, ledger_checked):
    with pytest.raises(stripe.CardError) as declined:
        _visa(client, payment_method=method)
    error = declined.value
    assert error.http_status == 402 and error.code == "card_declined" and error.param == "payment_method"
    assert error.error.decline_code == "card_declined"  # localstripe gives no finer decline code
    intent = error.error.payment_intent
    assert intent.status == "requires_payment_method" and intent.last_payment_error.code == "card_declined"
    # The payer tries another card on the same PaymentIntent.
    assert client.v1.payment_intents.confirm(intent.id, {"payment_method": "pm_card_visa"}).status == "succeeded"
    assert client.v1.balance.retrieve().pending[0].amount == 2000


def test_without_the_setting_localstripe_does_not_know_stripes_decline_card(
    app, make, acme, sdk, localstripe_url, ledger_checked
):
    shop = _shop(app, make, acme, localstripe_url, {})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        _visa(sdk(shop.secret), payment_method="pm_card_chargeDeclined")
    assert unknown.value.code == "resource_missing" and unknown.value.param == "payment_method"


def test_lists_page_newest_first_over_payments_made_at_localstripe(client, localstripe_url, ledger_checked):
    made = [_visa(client, amount=1000 + i).id for i in range(12)]
    newest_first = made[::-1]
    paid_there = {pi["metadata"].get("payplat_payment_intent"): pi for pi in _all_at_localstripe(localstripe_url)}
    assert all(paid_there[i]["status"] == "succeeded" for i in made)  # each one really went through localstripe

    first = client.v1.payment_intents.list({"limit": 5})
    assert first.object == "list" and first.url == "/v1/payment_intents" and first.has_more is True
    assert [pi.id for pi in first.data] == newest_first[:5]
    second = client.v1.payment_intents.list({"limit": 5, "starting_after": first.data[-1].id})
    assert [pi.id for pi in second.data] == newest_first[5:10] and second.has_more is True
    third = client.v1.payment_intents.list({"limit": 5, "starting_after": second.data[-1].id})
    assert [pi.id for pi in third.data] == newest_first[10:] and third.has_more is False
    # Back towards newer payments: the page before the second one is the first one.
    back = client.v1.payment_intents.list({"limit": 5, "ending_before": second.data[0].id})
    assert [pi.id for pi in back.data] == newest_first[:5] and back.has_more is False

    # The SDK's own pager follows has_more: every payment once, newest first, whatever the page size.
    assert [pi.id for pi in first.auto_paging_iter()] == newest_first
    assert [pi.id for pi in client.v1.payment_intents.list({"limit": 4}).auto_paging_iter()] == newest_first
    assert all(pi.status == "succeeded" for pi in client.v1.payment_intents.list({"limit": 100}).data)
    assert [(b.amount, b.currency) for b in client.v1.balance.retrieve().pending] == [(sum(range(1000, 1012)), "usd")]


# --- webhook endpoints ------------------------------------------------------------------------------------


class _Receiver:
    """A loopback HTTP server that records every POST (body and headers) and answers 200."""

    def __init__(self):
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def events(self, path: str, secret: str) -> list[stripe.Event]:
        """What reached `path`, each read by the SDK's own signature check."""
        with self._lock:
            got = [(headers, body) for p, headers, body in self.received if p == path]
        return [stripe.Webhook.construct_event(body.decode(), h["Stripe-Signature"], secret) for h, body in got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    yield server
    server.close()


def test_a_webhook_endpoint_made_with_the_sdk_gets_the_localstripe_payment_signed(
    client, receiver, run_jobs, localstripe_url, ledger_checked
):
    url = receiver.url("/hooks/payments")
    endpoint = client.v1.webhook_endpoints.create(
        {
            "url": url,
            "enabled_events": ["payment_intent.succeeded", "charge.refunded"],
            "description": "Orders",
            "metadata": {"team": "shop"},
        }
    )
    assert isinstance(endpoint, stripe.WebhookEndpoint)
    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_")
    assert (endpoint.url, endpoint.status, endpoint.livemode) == (url, "enabled", False)
    assert endpoint.enabled_events == ["payment_intent.succeeded", "charge.refunded"]
    again = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert (again.url, again.description, again.metadata.to_dict()) == (url, "Orders", {"team": "shop"})
    assert "secret" not in again  # shown once, at creation
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]

    pi = _visa(client, amount=3000)
    client.v1.refunds.create({"payment_intent": pi.id, "amount": 1000})
    assert _at_localstripe(localstripe_url, pi.id)["status"] == "succeeded"
    run_jobs()  # dispatch and deliver, as the worker does

    events = receiver.events("/hooks/payments", endpoint.secret)
    assert sorted(e.type for e in events) == ["charge.refunded", "payment_intent.succeeded"]
    by_type = {e.type: e for e in events}
    assert by_type["payment_intent.succeeded"].data.object.id == pi.id
    assert by_type["payment_intent.succeeded"].data.object.amount_received == 3000
    assert by_type["charge.refunded"].data.object.amount_refunded == 1000
    # The events the merchant's endpoint got are the ones the API lists.
    listed = {e.id for e in client.v1.events.list({"type": "payment_intent.succeeded"}).data}
    assert by_type["payment_intent.succeeded"].id in listed
    with pytest.raises(stripe.SignatureVerificationError):
        receiver.events("/hooks/payments", "whsec_" + "x" * 32)


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"amount": -5}, "amount", "amount_too_small"),
        ({"amount": "12.50"}, "amount", "parameter_invalid_integer"),
        ({"currency": "xyz"}, "currency", "parameter_invalid"),
        ({"shoe_size": 42}, "shoe_size", "parameter_unknown"),
        ({"capture_method": "later"}, "capture_method", None),
    ],
)
def test_a_bad_parameter_is_an_sdk_error_and_nothing_reaches_localstripe(
    client, localstripe_url, params, param, code, ledger_checked
):
    before = len(_all_at_localstripe(localstripe_url))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _visa(client, **params)
    error = refused.value
    assert error.http_status == 400 and error.error.type == "invalid_request_error"
    assert (error.param, error.code) == (param, code)
    assert len(_all_at_localstripe(localstripe_url)) == before
    assert client.v1.payment_intents.list().data == []
    assert client.v1.balance.retrieve().pending == []


def test_capturing_more_than_authorised_is_refused_and_localstripe_keeps_the_authorisation(
    client, localstripe_url, ledger_checked
):
    pi = _visa(client, amount=5000, capture_method="manual")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 5001})
    error = refused.value
    assert (error.http_status, error.code, error.param) == (400, "amount_too_large", "amount_to_capture")
    assert _at_localstripe(localstripe_url, pi.id)["status"] == "requires_capture"
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"
    assert client.v1.payment_intents.capture(pi.id).amount_received == 5000


# --- the mapping itself -----------------------------------------------------------------------------------


def _adapter(settings: dict, livemode: bool = False):
    config = ChannelConfig(
        id=str(uuid.uuid4()),
        name="Stripe",
        credentials={"secret_key": CHANNEL_KEY},
        settings={"base_url": "https://api.stripe.com", **settings},
        livemode=livemode,
    )
    return adapter_for("stripe", config)


def test_stripe_itself_knows_its_test_methods_and_a_live_account_never_maps():
    real = _adapter({})
    assert real.test_instrument("pm_card_chargeDeclined") == "pm_card_chargeDeclined"
    live = _adapter({"test_instruments": "localstripe"}, livemode=True)
    assert live.test_instrument("pm_card_chargeDeclined") == "pm_card_chargeDeclined"
    local = _adapter({"test_instruments": "localstripe"})
    assert local.test_instrument("pm_card_chargeDeclinedExpiredCard") == "pm_card_chargeCustomerFail"
    assert local.test_instrument("pm_card_amex") == "pm_card_visa"
    assert local.test_instrument("pm_1PxYzRealCard") == "pm_1PxYzRealCard"
    assert set(LOCALSTRIPE_INSTRUMENTS.values()) == {"pm_card_visa", "pm_card_chargeCustomerFail"}
    # The sandbox takes Stripe's names itself: the contract's default is the identity.
    sandbox = adapter_for("sandbox", ChannelConfig(id="x", name="Sandbox"))
    assert sandbox.test_instrument("pm_card_chargeDeclined") == "pm_card_chargeDeclined"
    with pytest.raises(ChannelConfigError, match="test_instruments"):
        _adapter({"test_instruments": "fakestripe"})
