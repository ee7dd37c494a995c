"""Top-ups charged through the tenant's channel accounts, through the merchant API.

A live top-up goes through a live channel account. The sandbox takes test payments only (a live
sandbox account refuses every charge as misconfigured), so the live channel here is a `stripe`
account pointing at `LiveStripe`: a small Stripe stand-in served over HTTPS on loopback (live
accounts must use https), with a certificate this file makes and the process trusts for the test
(`SSL_CERT_FILE`, which httpx reads). What a channel does on a timeout, and the job that resolves it,
run on the sandbox in test mode, where a top-up with a `source` goes through the same code.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa
import stripe
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ledger
from core.db import db
from tenants.isolation import platform_scope

DECLINED = "pm_live_declined"


@pytest.fixture(autouse=True)
def books_balance(app):
    yield
    with app.app_context(), platform_scope(db.session):
        problems = ledger.check(db.session)
        db.session.remove()
    assert not problems, [str(p) for p in problems]


# --- a Stripe stand-in over HTTPS --------------------------------------------------------------------


def _certificate(folder) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


class LiveStripe:
    """Answers the PaymentIntent calls of the Stripe adapter as live Stripe does: one PaymentIntent per
    Idempotency-Key (the same key answers the first PaymentIntent again), `pm_live_declined` is a card
    decline (402 card_error), any other payment method succeeds."""

    def __init__(self, cert_file: str, key_file: str):
        self.intents: dict[str, dict] = {}  # by idempotency key
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                if self.path != "/v1/payment_intents":
                    return self._send(404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}})
                status, body = stand_in.charge(self.headers.get("Idempotency-Key"), form)
                return self._send(status, body)

            def do_GET(self):
                if self.path.startswith("/v1/payment_intents"):
                    with stand_in.lock:
                        data = list(reversed(stand_in.intents.values()))
                    return self._send(200, {"object": "list", "data": data, "has_more": False})
                return self._send(200, {"object": "balance", "livemode": True, "available": [], "pending": []})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def charge(self, key: str | None, form: dict[str, list[str]]) -> tuple[int, dict]:
        with self.lock:
            if key in self.intents:
                return 200, self.intents[key]
            metadata = {k[len("metadata[") : -1]: v[0] for k, v in form.items() if k.startswith("metadata[")}
            method = form.get("payment_method", [""])[0]
            declined = method == DECLINED
            intent = {
                "id": f"pi_live{len(self.intents) + 1:06d}",
                "object": "payment_intent",
                "amount": int(form["amount"][0]),
                "amount_received": 0 if declined else int(form["amount"][0]),
                "currency": form["currency"][0],
                "capture_method": "automatic",
                "status": "requires_payment_method" if declined else "succeeded",
                "payment_method": method,
                "latest_charge": None,
                "metadata": metadata,
                "livemode": True,
                "created": 1_764_000_000,
                "last_payment_error": (
                    {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": "insufficient_funds",
                        "message": "Your card has insufficient funds.",
                    }
                    if declined
                    else None
                ),
            }
            self.intents[key] = intent
        if declined:
            error = dict(intent["last_payment_error"], payment_intent=intent)
            return 402, {"error": error}
        return 200, intent

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


@pytest.fixture(scope="module")
def live_stripe(tmp_path_factory) -> Iterator[LiveStripe]:
    cert_file, key_file = _certificate(tmp_path_factory.mktemp("live-stripe"))
    server = LiveStripe(cert_file, key_file)
    server.cert_file = cert_file
    yield server
    server.close()


@pytest.fixture
def live(live_stripe, sdk, shop, issue_key, monkeypatch) -> stripe.StripeClient:
    """The shop's live key; the process trusts the stand-in's certificate for this test."""
    monkeypatch.setenv("SSL_CERT_FILE", live_stripe.cert_file)
    live_stripe.intents.clear()
    return sdk(issue_key(shop, "live"))


def _live_stripe_account(make, shop, live_stripe, name="Live Stripe", **fields) -> uuid.UUID:
    return make.channel_account(
        shop.tenant_id,
        name,
        type="stripe",
        mode="live",
        base_url=live_stripe.url,
        credentials={"secret_key": "sk_live_51PayPlatStandInKey0123456789"},
        **fields,
    )


def _available(client: stripe.StripeClient, currency: str = "usd") -> int:
    return sum(b.amount for b in client.v1.balance.retrieve().available if b.currency == currency)


def _event_types(client: stripe.StripeClient, topup_id: str) -> list[str]:
    return sorted(e.type for e in client.v1.events.list().data if e.data.object.id == topup_id)


def _entries(owner_engine, reference: str) -> list[tuple[str, int]]:
    """The journal entries of a top-up and how many lines each has, as the owner sees them."""
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT e.kind, count(l.*) FROM journal_entries e JOIN journal_lines l"
                " ON l.tenant_id = e.tenant_id AND l.entry_id = e.id WHERE e.reference = :r GROUP BY e.id, e.kind"
            ),
            {"r": reference},
        ).all()


# --- live top-ups ------------------------------------------------------------------------------------


def test_a_live_card_topup_through_a_live_channel_makes_the_amount_available(
    live, make, shop, live_stripe, owner_engine
):
    _live_stripe_account(make, shop, live_stripe)
    assert _available(live) == 0
    topup = live.v1.topups.create(
        {"amount": 12_345, "currency": "usd", "source": "pm_1LiveCard", "statement_descriptor": "WALLET"}
    )
    assert (topup.status, topup.livemode, topup.source, topup.statement_descriptor) == (
        "succeeded",
        True,
        "pm_1LiveCard",
        "WALLET",
    )
    assert topup.failure_code is None
    assert _available(live) == 12_345
    assert _entries(owner_engine, topup.id) == [("topup.succeeded", 2)]
    assert _event_types(live, topup.id) == ["topup.created", "topup.succeeded"]
    # The channel was charged once, with the top-up's key, and the top-up is named in its metadata.
    [(key, intent)] = live_stripe.intents.items()
    assert key == f"{topup.id}-charge-1" and intent["metadata"]["payplat_topup"] == topup.id
    assert [t.id for t in live.v1.balance_transactions.list({"source": topup.id}).data]


def test_a_declined_live_card_fails_the_topup_and_moves_no_money(live, make, shop, live_stripe, owner_engine):
    _live_stripe_account(make, shop, live_stripe)
    topup = live.v1.topups.create({"amount": 5_000, "currency": "usd", "source": DECLINED})
    assert topup.status == "failed"
    assert topup.failure_code == "insufficient_funds" and "insufficient funds" in topup.failure_message
    assert _available(live) == 0
    assert _entries(owner_engine, topup.id) == []
    assert _event_types(live, topup.id) == ["topup.created", "topup.failed"]
    assert live.v1.topups.retrieve(topup.id).status == "failed"


def test_a_live_topup_fails_over_from_a_channel_that_cannot_take_it(live, make, shop, live_stripe):
    # The first choice (cheaper) is a live sandbox: it takes no live money and says so before
    # anything is charged, so the top-up goes to the next candidate.
    make.channel_account(shop.tenant_id, "Live sandbox", mode="live", priority=1)
    _live_stripe_account(make, shop, live_stripe, priority=2)
    topup = live.v1.topups.create({"amount": 2_500, "currency": "usd", "source": "pm_1LiveCard"})
    assert topup.status == "succeeded"
    assert _available(live) == 2_500
    assert list(live_stripe.intents) == [f"{topup.id}-charge-2"]


def test_a_live_topup_fails_over_from_an_unreachable_channel(live, make, shop, live_stripe):
    # Nothing listens on the discard port: the connection is refused, so the channel certainly took nothing.
    make.channel_account(
        shop.tenant_id,
        "Live Stripe down",
        type="stripe",
        mode="live",
        base_url="https://127.0.0.1:9",
        credentials={"secret_key": "sk_live_51PayPlatStandInKey0123456789"},
        priority=1,
    )
    _live_stripe_account(make, shop, live_stripe, priority=2)
    topup = live.v1.topups.create({"amount": 2_600, "currency": "usd", "source": "pm_1LiveCard"})
    assert topup.status == "succeeded" and _available(live) == 2_600
    assert list(live_stripe.intents) == [f"{topup.id}-charge-2"]


def test_a_live_topup_no_channel_can_take_fails_and_moves_no_money(live, make, shop):
    make.channel_account(shop.tenant_id, "Live sandbox", mode="live")
    topup = live.v1.topups.create({"amount": 2_500, "currency": "usd", "source": "pm_1LiveCard"})
    assert (topup.status, topup.failure_code) == ("failed", "channel_unavailable")
    assert "nothing was charged" in topup.failure_message
    assert _available(live) == 0
    assert _event_types(live, topup.id) == ["topup.created", "topup.failed"]


def test_a_live_topup_without_a_channel_is_refused_with_what_to_configure(live, make, shop, http):
    # A test channel does not serve live mode; nothing is written.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        live.v1.topups.create({"amount": 5_000, "currency": "usd", "source": "pm_1LiveCard"})
    error = refused.value
    assert error.http_status == 400 and error.param == "source"
    assert "No live channel can take this top-up of 5000 usd by card" in error.user_message
    assert "live card channel taking card in USD" in error.user_message and "Console → Channels" in error.user_message
    assert live.v1.topups.list().data == []
    # A channel that exists but not for this currency: the same refusal, with the routing reasons.
    _ = make.channel_account(shop.tenant_id, "Live EUR", mode="live", currency="EUR")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        live.v1.topups.create({"amount": 5_000, "currency": "usd", "source": "pm_1LiveCard"})
    assert refused.value.code == "payment_method_unavailable" and "dropped" in refused.value.user_message


def test_test_payment_methods_are_refused_for_live_topups(live, make, shop, live_stripe):
    _live_stripe_account(make, shop, live_stripe)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        live.v1.topups.create({"amount": 5_000, "currency": "usd", "source": "pm_card_visa"})
    assert refused.value.code == "live_mode_test_payment_method" and refused.value.param == "source"
    assert live_stripe.intents == {}


def test_the_same_idempotency_key_creates_one_live_topup(live, make, shop, live_stripe, owner_engine):
    _live_stripe_account(make, shop, live_stripe)
    params = {"amount": 700, "currency": "usd", "source": "pm_1LiveCard"}
    first = live.v1.topups.create(params, {"idempotency_key": "wallet-7"})
    again = live.v1.topups.create(params, {"idempotency_key": "wallet-7"})
    assert again.id == first.id and again.status == "succeeded"
    assert [t.id for t in live.v1.topups.list().data] == [first.id]
    assert _available(live) == 700 and len(live_stripe.intents) == 1
    assert _entries(owner_engine, first.id) == [("topup.succeeded", 2)]


# --- the same flow in test mode, on the sandbox ------------------------------------------------------


def test_a_test_topup_with_a_source_goes_through_the_sandbox(stripe_client):
    topup = stripe_client.v1.topups.create({"amount": 3_000, "currency": "usd", "source": "pm_card_visa"})
    assert (topup.status, topup.source) == ("succeeded", "pm_card_visa")
    declined = stripe_client.v1.topups.create(
        {"amount": 3_000, "currency": "usd", "source": "pm_card_chargeDeclinedInsufficientFunds"}
    )
    assert (declined.status, declined.failure_code) == ("failed", "insufficient_funds")
    assert _available(stripe_client) == 3_000


def test_a_topup_no_sandbox_can_take_fails_after_trying_each(stripe_client, make, shop, owner_engine):
    make.channel_account(shop.tenant_id, "Backup sandbox", priority=500)
    # 5003: every sandbox answers 503 before accepting anything: both are tried, nothing is charged.
    topup = stripe_client.v1.topups.create({"amount": 105_003, "currency": "usd", "source": "pm_card_visa"})
    assert (topup.status, topup.failure_code) == ("failed", "channel_unavailable")
    assert _available(stripe_client) == 0
    assert _entries(owner_engine, topup.id) == []
    with owner_engine.connect() as conn:
        log = conn.execute(sa.text("SELECT charge_log FROM topups WHERE id = :id"), {"id": topup.id}).scalar_one()
    assert [(line["key"], line["outcome"]) for line in log] == [
        (f"{topup.id}-charge-1", "unavailable"),
        (f"{topup.id}-charge-2", "unavailable"),
    ]


def test_a_timed_out_topup_stays_pending_until_the_job_asks_the_channel(stripe_client, run_jobs, owner_engine, app):
    # 4001: the sandbox times out but makes the charge; the top-up waits for the resolution job.
    topup = stripe_client.v1.topups.create({"amount": 4_001, "currency": "usd", "source": "pm_card_visa"})
    assert topup.status == "pending"
    assert _available(stripe_client) == 0
    assert _event_types(stripe_client, topup.id) == ["topup.created"]
    assert run_jobs() >= 1
    assert stripe_client.v1.topups.retrieve(topup.id).status == "succeeded"
    assert _available(stripe_client) == 4_001
    assert _event_types(stripe_client, topup.id) == ["topup.created", "topup.succeeded"]
    # Resolving again (a second job, the sweep) changes nothing: the money came once.
    from payments.jobs import resolve_topup
    from tenants.isolation import tenant_context

    shop_tenant = _tenant_of(owner_engine, topup.id)
    with app.app_context(), tenant_context(db.session, shop_tenant):
        assert resolve_topup(shop_tenant, topup.id) == "succeeded"
        db.session.remove()
    assert _available(stripe_client) == 4_001
    assert _entries(owner_engine, topup.id) == [("topup.succeeded", 2)]


def _tenant_of(owner_engine, topup_id: str) -> uuid.UUID:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT tenant_id FROM topups WHERE id = :id"), {"id": topup_id}).scalar_one()


def test_a_test_topup_without_a_source_still_succeeds_at_once(stripe_client, owner_engine):
    topup = stripe_client.v1.topups.create({"amount": 900, "currency": "usd"})
    assert (topup.status, topup.source) == ("succeeded", None)
    assert _available(stripe_client) == 900
    assert _entries(owner_engine, topup.id) == [("topup.succeeded", 2)]


def test_the_sweep_requeues_the_resolution_of_a_topup_whose_job_was_lost(stripe_client, run_jobs, owner_engine, app):
    from redis import Redis

    from payments import webhooks

    topup = stripe_client.v1.topups.create({"amount": 4_001, "currency": "usd", "source": "pm_card_visa"})
    assert topup.status == "pending"
    # The job is lost (Redis emptied: the sandbox's charge goes with it, so the channel now says it
    # never received the call), and the call is over a minute old.
    Redis.from_url(app.config["REDIS_URL"]).flushdb()
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE topups SET charge_started_at = now() - interval '2 minutes' WHERE id = :id"),
            {"id": topup.id},
        )
    with app.app_context():
        assert webhooks.sweep()["attempts"] == 1
        db.session.remove()
    assert run_jobs() >= 1
    resolved = stripe_client.v1.topups.retrieve(topup.id)
    assert (resolved.status, resolved.failure_code) == ("failed", "channel_unavailable")
    assert _available(stripe_client) == 0
    with app.app_context():
        assert webhooks.sweep()["attempts"] == 0  # final: not looked at again
        db.session.remove()
