"""Another actor applies a payment's (or a refund's) outcome while the merchant's request waits for the channel.

A confirmation commits its attempt, calls the channel with no transaction open, then locks the intent and the
attempt and applies the answer once (docs/ARCHITECTURE.md, "A payment"). Between the call and the lock, the
query job (`payments.jobs.resolve_attempt`) or a channel notification (`POST /channels/notify/<account>`) may
apply the same outcome first. The request's session still holds the objects it wrote before the call; the
merchant must nevertheless get the final answer (`succeeded`, with what was received) and the money must move
exactly once. The same holds for a refund settled by the `retry_refund` job while the refund request waits, and
for a decline: the channel refuses the charge, another actor already failed the payment, and the request must
then write nothing again (`_fail_attempt`), so the merchant's webhooks get one `payment_intent.payment_failed`.

The channel is the Stripe adapter talking to a local stand-in HTTP server run by the test (as in
tests/test_worker_kill.py). The stand-in keeps what it did per Idempotency-Key, as Stripe does, and on the first
money-moving POST (a charge, a declined charge, a refund) runs the other actor to completion in its own handler
thread (its own app context, so its own database session) before answering: the race is forced, not hoped for,
and no sleep is involved.

Which re-read guards what (checked by removing each `populate_existing` in a copy of the code):
- a charge whose attempt another actor finalised: `apply_charge_result` rolls back, and a rollback expires every
  object of the session, so the answer reloads the intent either way; the first two tests guard the outcome.
- the intent's re-read under the lock (`_lock_statement`): the update test, whose request applies the outcome
  to an intent the merchant changed meanwhile, fails without it (the answer and the event show the old data).
- the refund's re-read under the lock (`refunds.settle`): the refund test fails without it (a 500, the ledger
  refusing the second refund entry).
And the decline tests fail when `_fail_attempt` fails the attempt whatever its status (two payment_failed events).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

import ledger
from core.db import db
from ledger.models import JournalEntry
from payments import intents, refunds
from payments import jobs as payment_jobs
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channels.base import Secret, sign_payload
from payments.channels.stripe import SIGNATURE_HEADER
from payments.models import BalanceTransaction, Event, PaymentAttempt, Refund
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

SECRET_KEY = "sk_test_51PaymentRacesStandIn0123456789"
WEBHOOK_SECRET = "whsec_PaymentRacesStandIn4f8a2c"
AMOUNT = 4_200
REFUND = 1_500
# Stripe's test card declined when charged, and what Stripe says of it (code, decline_code, message).
DECLINED_CARD = "pm_card_chargeDeclinedInsufficientFunds"
DECLINES = {DECLINED_CARD: ("card_declined", "insufficient_funds", "Your card has insufficient funds.")}


# --- the channel: a local stand-in that answers as Stripe does ------------------------------------------------


def _one(form: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[0] for key, values in form.items()}


def _stripe_payment_intent(form: dict[str, list[str]]) -> dict:
    """The PaymentIntent Stripe makes of a confirmed automatic card charge (latest_charge expanded); for a card
    in DECLINES, the PaymentIntent of the declined charge, back in requires_payment_method."""
    one = _one(form)
    amount = int(one["amount"])
    suffix = uuid.uuid4().hex[:20]
    if one.get("payment_method") in DECLINES:
        return _stripe_declined_payment_intent(one, suffix)
    return {
        "id": f"pi_{suffix}",
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount,
        "capture_method": one.get("capture_method", "automatic"),
        "currency": one["currency"],
        "status": "succeeded",
        "metadata": {k[len("metadata[") : -1]: v for k, v in one.items() if k.startswith("metadata[")},
        "last_payment_error": None,
        "next_action": None,
        "payment_method": one.get("payment_method"),
        "livemode": False,
        "created": int(time.time()),
        "latest_charge": {
            "id": f"ch_{suffix}",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "captured": True,
            "status": "succeeded",
        },
    }


def _stripe_declined_payment_intent(one: dict[str, str], suffix: str) -> dict:
    """As Stripe leaves a PaymentIntent whose confirmation the card's issuer declined: requires_payment_method,
    the failed charge as latest_charge, the decline in last_payment_error, the payment method detached."""
    code, decline_code, message = DECLINES[one["payment_method"]]
    amount = int(one["amount"])
    return {
        "id": f"pi_{suffix}",
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "capture_method": one.get("capture_method", "automatic"),
        "currency": one["currency"],
        "status": "requires_payment_method",
        "metadata": {k[len("metadata[") : -1]: v for k, v in one.items() if k.startswith("metadata[")},
        "last_payment_error": {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "charge": f"ch_{suffix}",
            "payment_method": {"id": one["payment_method"], "object": "payment_method", "type": "card"},
        },
        "next_action": None,
        "payment_method": None,
        "livemode": False,
        "created": int(time.time()),
        "latest_charge": {
            "id": f"ch_{suffix}",
            "object": "charge",
            "amount": amount,
            "amount_captured": 0,
            "amount_refunded": 0,
            "captured": False,
            "status": "failed",
            "failure_code": code,
            "failure_message": message,
            "outcome": {"type": "issuer_declined", "reason": decline_code},
        },
    }


def _stripe_card_error(pi: dict) -> dict:
    """Stripe's answer (HTTP 402) to a charge the card's issuer declined: the error, with the PaymentIntent."""
    error = pi["last_payment_error"]
    return {
        "error": {
            "type": "card_error",
            "code": error["code"],
            "decline_code": error["decline_code"],
            "message": error["message"],
            "charge": error["charge"],
            "doc_url": f"https://stripe.com/docs/error-codes/{error['code'].replace('_', '-')}",
            "payment_intent": pi,
        }
    }


def _stripe_refund(form: dict[str, list[str]]) -> dict:
    one = _one(form)
    return {
        "id": f"re_{uuid.uuid4().hex[:20]}",
        "object": "refund",
        "amount": int(one["amount"]),
        "currency": "usd",
        "payment_intent": one["payment_intent"],
        "status": "succeeded",
        "metadata": {k[len("metadata[") : -1]: v for k, v in one.items() if k.startswith("metadata[")},
    }


class StripeStandIn:
    """Charges and refunds kept by Idempotency-Key (a repeat gets the same object, or the same decline, as at
    Stripe); PaymentIntents listed newest first. `interlude`, when set, runs once, in the handler thread of the
    first charge or refund POST, after the money moved (or the charge was declined) and before the answer is
    sent: the other actor's turn."""

    def __init__(self):
        self.lock = threading.Lock()
        self.intents: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.posts: list[str] = []
        self.interlude: Callable[[], None] | None = None
        self.interlude_error: BaseException | None = None
        self.interlude_done = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.stand_in = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def take_interlude(self) -> Callable[[], None] | None:
        with self.lock:
            interlude, self.interlude = self.interlude, None
        return interlude

    def run_interlude(self) -> None:
        interlude = self.take_interlude()
        if interlude is None:
            return
        try:
            interlude()
        except BaseException as exc:  # handed to the test thread, which fails with it
            self.interlude_error = exc
        finally:
            self.interlude_done.set()

    def check_interlude(self) -> None:
        """The other actor ran, and without error (an error in the server thread would otherwise be lost)."""
        assert self.interlude_done.is_set(), "the channel call never reached the stand-in's interlude"
        if self.interlude_error is not None:
            raise AssertionError(f"the other actor failed: {self.interlude_error!r}") from self.interlude_error

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        stand_in: StripeStandIn = self.server.stand_in
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        form = parse_qs(body.decode(), keep_blank_values=True)
        key = self.headers.get("Idempotency-Key") or ""
        route = (self.command, url.path)
        if route == ("POST", "/v1/payment_intents"):
            with stand_in.lock:
                stand_in.posts.append(url.path)
                pi = stand_in.intents.setdefault(key, _stripe_payment_intent(form))
            stand_in.run_interlude()
            if pi["status"] == "requires_payment_method":
                return self._send(402, _stripe_card_error(pi))
            return self._send(200, pi)
        if route == ("POST", "/v1/refunds"):
            with stand_in.lock:
                stand_in.posts.append(url.path)
                refund = stand_in.refunds.setdefault(key, _stripe_refund(form))
            stand_in.run_interlude()
            return self._send(200, refund)
        if route == ("GET", "/v1/payment_intents"):
            with stand_in.lock:
                data = list(reversed(stand_in.intents.values()))
            return self._send(200, {"object": "list", "url": url.path, "has_more": False, "data": data})
        return self._send(404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_standin")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle


# --- the shop ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    tenant_id: uuid.UUID
    host: str
    merchant: uuid.UUID
    channel: uuid.UUID
    secret: str  # the merchant's test API key

    @property
    def ctx(self) -> intents.MerchantContext:
        return intents.MerchantContext(self.tenant_id, self.merchant, livemode=False)


@pytest.fixture
def stand_in():
    server = StripeStandIn()
    yield server
    server.stop()


@pytest.fixture
def shop(app, make, stand_in) -> Shop:
    tenant = make.tenant("raceshop")
    merchant = make.merchant(tenant, "Coffee", "owner@race-coffee.example.com", password=None)
    with app.app_context(), tenant_context(db.session, tenant.id):
        account = create_channel_account(
            tenant.id,
            ChannelAccountInput(
                name="Stripe",
                type="stripe",
                currency="USD",
                products=["card"],
                base_url=stand_in.url,
                credentials={"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET},
            ),
            {"card"},
            Actor.system(),
        )
        channel = account.id
        db.session.remove()
    with app.app_context():
        _, secret = api_keys.create_key(tenant.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    return Shop(tenant.id, tenant.host, merchant, channel, secret)


def _api(app, shop: Shop, path: str, data: dict):
    """A merchant's API call, as its backend makes it."""
    return app.test_client().post(
        path, base_url=f"http://{shop.host}", headers={"Authorization": f"Bearer {shop.secret}"}, data=data
    )


def _attempt_of(app, shop: Shop, pi_id: str) -> uuid.UUID:
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        attempt_id = db.session.execute(
            sa.select(PaymentAttempt.id).where(PaymentAttempt.payment_intent_id == pi_id)
        ).scalar_one()
        db.session.remove()
    return attempt_id


def _books(app, shop: Shop, pi_id: str) -> dict:
    """What was recorded for a payment: the payment as stored, its journal entries, events, balance
    transactions, the merchant's pending balance and what the ledger check finds."""
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi = intents.get(shop.ctx, pi_id)
        refund_ids = db.session.execute(sa.select(Refund.id).where(Refund.payment_intent_id == pi_id)).scalars().all()
        objects_ = [pi_id, *refund_ids]

        def count(model, *where) -> int:
            return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))

        books = {
            "status": pi.status,
            "last_payment_error": pi.last_payment_error,
            "amount_received": pi.amount_received,
            "amount_refunded": pi.amount_refunded,
            "captured_entries": count(
                JournalEntry, JournalEntry.kind == "payment.captured", JournalEntry.reference == pi_id
            ),
            "refund_entries": count(
                JournalEntry, JournalEntry.kind == "refund.succeeded", JournalEntry.reference.in_(refund_ids)
            ),
            "journal_entries": count(JournalEntry, JournalEntry.reference.in_(objects_)),
            "succeeded_events": count(Event, Event.type == "payment_intent.succeeded", Event.object_id == pi_id),
            "payment_failed_events": count(
                Event, Event.type == "payment_intent.payment_failed", Event.object_id == pi_id
            ),
            "attempts": db.session.execute(
                sa.select(PaymentAttempt.status).where(PaymentAttempt.payment_intent_id == pi_id)
            )
            .scalars()
            .all(),
            "charge_refunded_events": count(Event, Event.type == "charge.refunded", Event.object_id == pi_id),
            "charge_txns": count(
                BalanceTransaction, BalanceTransaction.type == "charge", BalanceTransaction.source == pi_id
            ),
            "refund_txns": count(
                BalanceTransaction, BalanceTransaction.type == "refund", BalanceTransaction.source.in_(objects_)
            ),
            "pending": refunds.balance(shop.ctx)["pending"],
        }
        with platform_scope(db.session):
            books["ledger_problems"] = [str(p) for p in ledger.check(db.session)]
        db.session.remove()
    return books


def _signed_event(event_type: str, obj: dict) -> tuple[dict, bytes]:
    """A Stripe event, signed as Stripe signs webhooks with the account's webhook secret."""
    now = int(time.time())
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:20]}",
            "object": "event",
            "type": event_type,
            "created": now,
            "data": {"object": obj},
        }
    ).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(Secret(WEBHOOK_SECRET), body, now)}
    return headers, body


# --- payments ---------------------------------------------------------------------------------------------------


def _assert_paid_once(app, shop, stand_in, pi_id: str) -> None:
    """One charge at the channel, and the books of exactly one succeeded payment of AMOUNT."""
    assert stand_in.posts == ["/v1/payment_intents"], "the channel was charged once"
    books = _books(app, shop, pi_id)
    assert books["status"] == "succeeded" and books["amount_received"] == AMOUNT
    assert books["captured_entries"] == 1
    assert books["succeeded_events"] == 1
    assert books["charge_txns"] == 1
    assert books["pending"] == [{"amount": AMOUNT, "currency": "usd"}]
    assert books["ledger_problems"] == []


def test_the_query_job_resolving_the_payment_during_the_charge_call_leaves_the_answer_succeeded(app, shop, stand_in):
    def query_job():
        # The job as a worker runs it: its own app context (own session), in the payment's tenant.
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            attempt_id = db.session.execute(sa.select(PaymentAttempt.id)).scalar_one()
            assert payment_jobs.resolve_attempt(shop.tenant_id, str(attempt_id)) == "succeeded"
            db.session.remove()

    stand_in.interlude = query_job
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi = intents.create(shop.ctx, amount=AMOUNT, currency="usd", payment_method="pm_card_visa", confirm=True)
        # What the merchant's code reads from the answer, with the request's session still open.
        answer = (pi.id, pi.status, pi.amount_received)
        db.session.remove()
    stand_in.check_interlude()

    pi_id = answer[0]
    assert answer == (pi_id, "succeeded", AMOUNT)
    _assert_paid_once(app, shop, stand_in, pi_id)


def test_a_notification_applied_during_the_charge_call_leaves_the_api_answer_succeeded(app, shop, stand_in):
    notified = []

    def channel_notifies():
        # Stripe's payment_intent.succeeded webhook for the charge being answered, delivered to the tenant's
        # notify URL while the API request still waits for Stripe's answer.
        [pi] = stand_in.intents.values()
        headers, body = _signed_event("payment_intent.succeeded", pi)
        response = app.test_client().post(
            f"/channels/notify/{shop.channel}", base_url=f"http://{shop.host}", headers=headers, data=body
        )
        notified.append((response.status_code, response.get_json()))

    stand_in.interlude = channel_notifies
    response = _api(
        app,
        shop,
        "/v1/payment_intents",
        {"amount": str(AMOUNT), "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
    )
    stand_in.check_interlude()
    assert notified == [(200, {"received": True})]

    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["status"] == "succeeded"
    assert answer["amount_received"] == AMOUNT
    _assert_paid_once(app, shop, stand_in, answer["id"])


def test_an_update_during_the_charge_call_is_in_the_answer_and_the_succeeded_event(app, shop, stand_in):
    # Here the request applies the outcome itself, on an intent the merchant changed meanwhile (description and
    # metadata may change in any status). Unlike the two tests above, where the request finds the attempt final
    # and its rollback expires what the session held, this one shows whether the lock re-reads the intent.
    updated = []

    def merchant_updates():
        [pi] = stand_in.intents.values()
        intent = pi["metadata"]["payplat_payment_intent"]
        response = _api(
            app, shop, f"/v1/payment_intents/{intent}", {"description": "Order 1042", "metadata[order]": "1042"}
        )
        updated.append((response.status_code, response.get_json().get("metadata")))

    stand_in.interlude = merchant_updates
    response = _api(
        app,
        shop,
        "/v1/payment_intents",
        {"amount": str(AMOUNT), "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
    )
    stand_in.check_interlude()
    assert updated == [(200, {"order": "1042"})]

    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert (answer["status"], answer["amount_received"]) == ("succeeded", AMOUNT)
    assert (answer["description"], answer["metadata"]) == ("Order 1042", {"order": "1042"})
    # What the merchant's webhook endpoint receives for the success.
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        [sent] = db.session.execute(
            sa.select(Event.data).where(Event.type == "payment_intent.succeeded", Event.object_id == answer["id"])
        ).scalars()
        db.session.remove()
    assert (sent["object"]["description"], sent["object"]["metadata"]) == ("Order 1042", {"order": "1042"})
    books = _books(app, shop, answer["id"])
    assert books["captured_entries"] == 1 and books["succeeded_events"] == 1 and books["charge_txns"] == 1
    assert books["ledger_problems"] == []


@pytest.mark.parametrize("other_actor", ["notification", "query_job"])
def test_a_decline_applied_by_another_actor_during_the_charge_call_fails_the_payment_once(
    app, shop, stand_in, other_actor
):
    # The card's issuer declines the charge. Before Stripe's 402 reaches the request, the decline is applied by
    # Stripe's payment_intent.payment_failed webhook, or by the query job finding the declined PaymentIntent
    # by our key. The request then finds the attempt final and must not fail the payment a second time.
    applied = []

    def channel_notifies():
        [pi] = stand_in.intents.values()
        headers, body = _signed_event("payment_intent.payment_failed", pi)
        response = app.test_client().post(
            f"/channels/notify/{shop.channel}", base_url=f"http://{shop.host}", headers=headers, data=body
        )
        applied.append((response.status_code, response.get_json()))

    def query_job():
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            attempt_id = db.session.execute(sa.select(PaymentAttempt.id)).scalar_one()
            applied.append(payment_jobs.resolve_attempt(shop.tenant_id, str(attempt_id)))
            db.session.remove()

    stand_in.interlude = {"notification": channel_notifies, "query_job": query_job}[other_actor]
    response = _api(
        app,
        shop,
        "/v1/payment_intents",
        {"amount": str(AMOUNT), "currency": "usd", "payment_method": DECLINED_CARD, "confirm": "true"},
    )
    stand_in.check_interlude()
    assert applied == [{"notification": (200, {"received": True}), "query_job": "requires_payment_method"}[other_actor]]

    # The merchant gets Stripe's card error, with the declined (retryable) PaymentIntent.
    assert response.status_code == 402, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "insufficient_funds",
    )
    answered = error["payment_intent"]
    assert answered["status"] == "requires_payment_method"
    assert answered["last_payment_error"]["decline_code"] == "insufficient_funds"
    assert stand_in.posts == ["/v1/payment_intents"], "the channel was asked to charge once"

    books = _books(app, shop, answered["id"])
    assert books["status"] == "requires_payment_method" and books["amount_received"] == 0
    assert (books["last_payment_error"]["code"], books["last_payment_error"]["decline_code"]) == (
        "card_declined",
        "insufficient_funds",
    )
    assert books["payment_failed_events"] == 1, "the merchant's webhooks would get the decline twice"
    assert books["succeeded_events"] == 0
    assert books["attempts"] == ["declined"]
    assert books["journal_entries"] == 0 and books["charge_txns"] == 0
    assert books["pending"] == []
    assert books["ledger_problems"] == []


# --- refunds ----------------------------------------------------------------------------------------------------


def test_the_retry_job_settling_the_refund_during_the_refund_call_leaves_the_api_answer_succeeded(app, shop, stand_in):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi_id = intents.create(shop.ctx, amount=AMOUNT, currency="usd", payment_method="pm_card_visa", confirm=True).id
        db.session.remove()
    assert _books(app, shop, pi_id)["status"] == "succeeded"

    def retry_job():
        # `retry_refund` as a worker runs it: it sends the refund again with the same key (the stand-in answers
        # with the refund it already made) and settles it, while the merchant's request still waits.
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            refund_id = db.session.execute(sa.select(Refund.id)).scalar_one()
            assert refunds.retry_refund(shop.tenant_id, shop.merchant, False, refund_id) == "succeeded"
            db.session.remove()

    stand_in.interlude = retry_job
    response = _api(app, shop, "/v1/refunds", {"payment_intent": pi_id, "amount": str(REFUND)})
    stand_in.check_interlude()

    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert (answer["status"], answer["amount"], answer["payment_intent"]) == ("succeeded", REFUND, pi_id)
    assert len(stand_in.refunds) == 1, "the channel refunded once (the retry reused the key)"
    books = _books(app, shop, pi_id)
    assert books["amount_refunded"] == REFUND
    assert books["refund_entries"] == 1
    assert books["charge_refunded_events"] == 1
    assert books["refund_txns"] == 1
    assert books["pending"] == [{"amount": AMOUNT - REFUND, "currency": "usd"}]
    assert books["ledger_problems"] == []
