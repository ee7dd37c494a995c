"""Merchant webhooks: a real HTTP receiver on loopback gets signed events that Stripe's own SDK
verifies, retries follow the schedule through RQ's scheduler, the sweep recovers lost work, and
the dashboard manages endpoints, shows the delivery log and resends."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
import stripe
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.scheduler import RQScheduler

from core import crypto
from core import queue as core_queue
from core.db import db
from payments import balance_operations, events, intents, refunds, webhooks
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channels.base import Secret
from payments.errors import InvalidRequest, NotFound
from portal import jobs
from tenants.audit import Actor
from tenants.isolation import tenant_context

OWNER = "owner@coffee.example.com"
STAFF = "staff@coffee.example.com"


# --- a real receiver -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def event(self, secret: str):
        """The event as Stripe's SDK reads it, after it checked the signature."""
        return stripe.Webhook.construct_event(self.body.decode(), self.headers["Stripe-Signature"], secret)


class Receiver:
    """An HTTP server on a free loopback port that records every POST and answers with the
    statuses queued for its path (200 once they run out)."""

    def __init__(self):
        self.requests: list[Received] = []
        self.statuses: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                    queued = receiver.statuses.get(self.path) or []
                    status = queued.pop(0) if queued else 200
                answer = b'{"received": true}' if status < 300 else b"upstream trouble"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str = "/hooks") -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# --- a tenant with two merchants ---------------------------------------------------------------


@dataclass
class Shop:
    tenant_id: object
    host: str
    merchant: object
    other_merchant: object

    def ctx(self, livemode: bool = False) -> intents.MerchantContext:
        return intents.MerchantContext(self.tenant_id, self.merchant, livemode)


@pytest.fixture
def shop(app, make) -> Shop:
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", OWNER)
    other = make.merchant(tenant, "Tea", "owner@tea.example.com")
    make.user(tenant, STAFF, "staff", merchant_id=merchant)
    with app.app_context(), tenant_context(db.session, tenant.id):
        account = ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"])
        create_channel_account(tenant.id, account, {"card"}, Actor.system())
        db.session.remove()
    return Shop(tenant.id, tenant.host, merchant, other)


@contextlib.contextmanager
def as_tenant(app, tenant_id):
    with app.app_context(), tenant_context(db.session, tenant_id):
        try:
            yield
        finally:
            db.session.remove()


def add_endpoint(app, shop: Shop, url: str, events=("*",), *, merchant=None, livemode=False) -> tuple[str, str]:
    with as_tenant(app, shop.tenant_id):
        endpoint, secret = webhooks.create_endpoint(
            shop.tenant_id,
            merchant or shop.merchant,
            livemode,
            url,
            list(events),
            Actor.system(),
            allow_private=True,
        )
        return endpoint.id, secret


def pay(app, shop: Shop, amount: int = 2000) -> str:
    with as_tenant(app, shop.tenant_id):
        pi = intents.create(shop.ctx(), amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True)
        assert pi.status == "succeeded"
        return pi.id


def deliveries(owner_engine, endpoint_id=None) -> list:
    sql = (
        "SELECT d.id, d.endpoint_id, d.event_id, e.type, d.status, d.attempts, d.response_status,"
        " d.next_attempt_at, d.delivered_at, d.error, d.created_at"
        " FROM webhook_deliveries d JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id"
    )
    params = {}
    if endpoint_id:
        sql += " WHERE d.endpoint_id = :e"
        params["e"] = endpoint_id
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(sql + " ORDER BY e.created_at, d.created_at"), params).all()


def scheduled(app) -> dict[str, datetime]:
    """RQ's scheduled jobs of the `webhooks` queue: job id -> when they are due."""
    with app.app_context():
        registry = jobs.queue("webhooks").scheduled_job_registry
        conn = jobs.redis_connection()
        return {
            job_id: datetime.fromtimestamp(conn.zscore(registry.key, job_id), UTC) for job_id in registry.get_job_ids()
        }


def fire_scheduled(app) -> None:
    """Time passes for RQ: every scheduled job falls due, and RQ's own scheduler moves it to its queue."""
    with app.app_context():
        conn = jobs.redis_connection()
        for name in jobs.QUEUES:
            registry = jobs.queue(name).scheduled_job_registry
            for job_id in registry.get_job_ids():
                conn.zadd(registry.key, {job_id: 0})
        scheduler = RQScheduler(list(jobs.QUEUES), connection=conn)
        try:
            scheduler.prepare_registries(list(jobs.QUEUES))
            scheduler.enqueue_scheduled_jobs()
        finally:
            scheduler.connection.connection_pool.disconnect()


def move_clock_to_next_attempt(owner_engine) -> None:
    """Time passes for the database: pending deliveries' next attempt is due now (all their
    times move back by the same amount, so the three-day limit comes closer as it would)."""
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE webhook_deliveries SET"
                " created_at = created_at - (next_attempt_at - now()),"
                " last_attempt_at = last_attempt_at - (next_attempt_at - now()),"
                " next_attempt_at = now()"
                " WHERE status = 'pending' AND next_attempt_at > now()"
            )
        )


def age(owner_engine, table: str, column: str, minutes: int = 2) -> None:
    with owner_engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET {column} = {column} - make_interval(mins => :m)"), {"m": minutes})


def empty_queues(app) -> None:
    """A worker died with every queued job (and Redis lost them)."""
    with app.app_context():
        for name in jobs.QUEUES:
            jobs.queue(name).empty()


# --- delivery ----------------------------------------------------------------------------------


def test_a_payment_reaches_the_endpoint_signed_so_that_stripes_sdk_accepts_it(
    app, shop, receiver, run_jobs, owner_engine, caplog
):
    caplog.set_level(logging.DEBUG)
    endpoint_id, secret = add_endpoint(app, shop, receiver.url())
    assert re.fullmatch(r"whsec_[A-Za-z0-9]{32}", secret)
    intent_id = pay(app, shop)

    run_jobs()

    got = receiver.at("/hooks")
    assert len(got) == 2
    events = [r.event(secret) for r in got]
    assert [e.type for e in events] == ["payment_intent.created", "payment_intent.succeeded"]
    assert all(e.data.object.id == intent_id and e.livemode is False for e in events)
    assert events[1].data.object.status == "succeeded"
    assert all(r.headers["Content-Type"] == "application/json" for r in got)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", got[0].headers["Stripe-Signature"])
    # A signature made with another secret is refused by the SDK.
    with pytest.raises(stripe.SignatureVerificationError):
        got[0].event("whsec_" + "x" * 32)

    log = deliveries(owner_engine, endpoint_id)
    assert [(d.type, d.status, d.attempts, d.response_status) for d in log] == [
        ("payment_intent.created", "succeeded", 1, 200),
        ("payment_intent.succeeded", "succeeded", 1, 200),
    ]
    assert all(d.delivered_at is not None and d.next_attempt_at is None for d in log)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events WHERE dispatched_at IS NULL")).scalar() == 0
        stored = conn.execute(sa.text("SELECT secret_encrypted FROM webhook_endpoints")).scalar()
        audit_text = conn.execute(sa.text("SELECT string_agg(changes::text, ' ') FROM audit_events")).scalar()
    # The secret is stored encrypted, and appears neither in the logs nor in the audit trail.
    assert secret not in stored
    with app.app_context():
        assert crypto.decrypt(stored) == secret
    assert "webhook" in caplog.text
    assert secret not in caplog.text
    assert "whsec_" not in audit_text and receiver.url() in audit_text


def test_only_the_merchants_matching_endpoints_of_the_same_mode_get_an_event(
    app, shop, receiver, run_jobs, owner_engine
):
    _, secret = add_endpoint(app, shop, receiver.url("/all"))
    add_endpoint(app, shop, receiver.url("/refunds"), ["refund.created"])
    add_endpoint(app, shop, receiver.url("/live"), livemode=True)
    add_endpoint(app, shop, receiver.url("/tea"), merchant=shop.other_merchant)
    disabled_id, _ = add_endpoint(app, shop, receiver.url("/disabled"))
    with as_tenant(app, shop.tenant_id):
        endpoint = webhooks.get_endpoint(shop.tenant_id, shop.merchant, disabled_id)
        webhooks.update_endpoint(endpoint, Actor.system(), disabled=True)

    intent_id = pay(app, shop)
    run_jobs()
    assert [r.event(secret).type for r in receiver.at("/all")] == ["payment_intent.created", "payment_intent.succeeded"]
    assert {r.path for r in receiver.requests} == {"/all"}

    with as_tenant(app, shop.tenant_id):
        refunds.create(shop.ctx(), payment_intent=intent_id, amount=500)
    run_jobs()
    assert [json.loads(r.body)["type"] for r in receiver.at("/refunds")] == ["refund.created"]
    assert {r.path for r in receiver.requests} == {"/all", "/refunds"}

    # A live event goes to the live endpoint only (the sandbox takes no live payments).
    with as_tenant(app, shop.tenant_id):
        events.record(shop.tenant_id, shop.merchant, True, "payment_intent.succeeded", {"id": "pi_live"})
        events.record(shop.tenant_id, shop.merchant, True, "refund.updated", {"id": "re_live"})
        db.session.commit()
    run_jobs()
    assert len(receiver.at("/live")) == 2 and not receiver.at("/tea") and not receiver.at("/disabled")


def test_top_ups_transfers_and_payouts_reach_a_subscribed_endpoint(app, shop, site, receiver, run_jobs, owner_engine):
    wallet = ["topup.created", "topup.succeeded", "transfer.created", "payout.created", "payout.canceled"]
    endpoint_id, secret = add_endpoint(app, shop, receiver.url(), wallet)
    add_endpoint(app, shop, receiver.url("/payouts"), ["payout.canceled"])
    with as_tenant(app, shop.tenant_id):
        topup = balance_operations.create_topup(shop.ctx(), amount=5000, currency="usd").id
        transfer = balance_operations.create_transfer(
            shop.ctx(), amount=1000, currency="usd", destination=shop.other_merchant
        ).id
        payout = balance_operations.create_payout(shop.ctx(), amount=2000, currency="usd").id
        balance_operations.cancel_payout(shop.ctx(), payout)
    run_jobs()

    got = [r.event(secret) for r in receiver.at("/hooks")]
    assert sorted((e.type, e.data.object.id) for e in got) == sorted(
        [
            ("topup.created", topup),
            ("topup.succeeded", topup),
            ("transfer.created", transfer),
            ("payout.created", payout),
            ("payout.canceled", payout),
        ]
    )
    assert {e.data.object.id: e.data.object.object for e in got} == {
        topup: "topup",
        transfer: "transfer",
        payout: "payout",
    }
    assert [json.loads(r.body)["type"] for r in receiver.at("/payouts")] == ["payout.canceled"]
    log = deliveries(owner_engine, endpoint_id)
    assert len(log) == 5 and {(d.status, d.attempts) for d in log} == {("succeeded", 1)}
    # The dashboard's delivery log lists them.
    owner = site(shop.host)
    owner.login(OWNER)
    detail = owner.get(f"/merchant/webhooks/{endpoint_id}").get_data(as_text=True)
    assert all(name in detail for name in wallet)
    assert all(f'value="{name}"' in owner.get("/merchant/webhooks").get_data(as_text=True) for name in wallet)


def test_a_failing_endpoint_is_retried_on_schedule_until_it_answers(app, shop, receiver, run_jobs, owner_engine):
    receiver.statuses["/flaky"] = [500, 500]
    endpoint_id, secret = add_endpoint(app, shop, receiver.url("/flaky"), ["payment_intent.succeeded"])
    pay(app, shop)

    run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    assert (d.status, d.attempts, d.response_status) == ("pending", 1, 500)
    # The next attempt is scheduled with RQ's scheduler, a minute after the first, under a
    # job id of its own (queueing the same attempt again would keep the one job).
    due = scheduled(app)
    assert abs((due[f"webhook-{d.id}-2"] - d.next_attempt_at).total_seconds()) < 1
    assert timedelta(seconds=55) < d.next_attempt_at - d.created_at < timedelta(seconds=65)
    run_jobs()
    assert len(receiver.at("/flaky")) == 1, "nothing is sent before the attempt is due"

    fire_scheduled(app)
    run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    assert (d.status, d.attempts, d.response_status) == ("pending", 2, 500)
    assert timedelta(minutes=5, seconds=-5) < d.next_attempt_at - datetime.now(UTC) < timedelta(minutes=5, seconds=5)

    fire_scheduled(app)
    run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    assert (d.status, d.attempts, d.response_status) == ("succeeded", 3, 200)
    assert d.delivered_at is not None and d.next_attempt_at is None

    fire_scheduled(app)
    run_jobs()
    got = receiver.at("/flaky")
    assert len(got) == 3, "a succeeded delivery is never sent again by itself"
    assert {r.event(secret).id for r in got} == {d.event_id}
    assert len(deliveries(owner_engine)) == 1
    assert not [job_id for job_id in scheduled(app) if job_id.startswith("webhook-")]


def test_an_endpoint_that_keeps_failing_is_given_up_after_three_days(app, shop, receiver, run_jobs, owner_engine):
    receiver.statuses["/down"] = [503] * 100
    endpoint_id, _ = add_endpoint(app, shop, receiver.url("/down"), ["payment_intent.succeeded"])
    pay(app, shop)
    run_jobs()
    for _ in range(30):
        [d] = deliveries(owner_engine, endpoint_id)
        if d.status != "pending":
            break
        move_clock_to_next_attempt(owner_engine)
        fire_scheduled(app)
        run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    # 1 min, 5 min, 30 min, 2 h, 5 h, then every 10 h: the 12th attempt is at 67 h 36 min, and a
    # 13th would come after the three days.
    assert (d.status, d.attempts, d.response_status, d.next_attempt_at) == ("failed", 12, 503, None)
    assert len(receiver.at("/down")) == 12
    fire_scheduled(app)
    run_jobs()
    assert len(receiver.at("/down")) == 12

    # The merchant fixed the server and resends: it is delivered.
    receiver.statuses["/down"] = []
    with as_tenant(app, shop.tenant_id):
        endpoint = webhooks.get_endpoint(shop.tenant_id, shop.merchant, endpoint_id)
        webhooks.resend(webhooks.get_delivery(endpoint, d.id), Actor.system())
    run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    assert (d.status, d.attempts, d.response_status) == ("succeeded", 13, 200)


def test_dispatch_is_idempotent_and_safe_side_by_side(app, shop, receiver, run_jobs, owner_engine):
    endpoint_id, _ = add_endpoint(app, shop, receiver.url())
    pay(app, shop)
    with app.app_context():
        assert webhooks.dispatch(shop.tenant_id) == 2
        assert webhooks.dispatch(shop.tenant_id) == 0
        db.session.remove()
    # Even events that lost their mark get no second delivery for the same endpoint.
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET dispatched_at = NULL"))
    barrier = threading.Barrier(4)
    created = []

    def dispatch():
        with app.app_context():
            barrier.wait(timeout=10)
            created.append(webhooks.dispatch(shop.tenant_id))
            db.session.remove()

    threads = [threading.Thread(target=dispatch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert created == [0, 0, 0, 0]
    assert len(deliveries(owner_engine, endpoint_id)) == 2

    run_jobs()
    assert len(receiver.at("/hooks")) == 2
    assert [d.status for d in deliveries(owner_engine, endpoint_id)] == ["succeeded", "succeeded"]


def test_a_delivery_job_run_twice_sends_once(app, shop, receiver, run_jobs, owner_engine):
    endpoint_id, _ = add_endpoint(app, shop, receiver.url(), ["payment_intent.succeeded"])
    pay(app, shop)
    with app.app_context():
        webhooks.dispatch(shop.tenant_id)
        db.session.remove()
    [d] = deliveries(owner_engine, endpoint_id)
    with app.app_context():
        assert webhooks.deliver(shop.tenant_id, d.id, 1) == "succeeded"
        assert webhooks.deliver(shop.tenant_id, d.id, 1) == "skipped"
        assert webhooks.deliver(shop.tenant_id, d.id) == "skipped"
        db.session.remove()
    run_jobs()
    assert len(receiver.at("/hooks")) == 1
    assert deliveries(owner_engine, endpoint_id)[0].attempts == 1


def test_the_same_attempt_run_side_by_side_is_sent_once(app, shop, receiver, owner_engine):
    endpoint_id, _ = add_endpoint(app, shop, receiver.url(), ["payment_intent.succeeded"])
    pay(app, shop)
    with app.app_context():
        webhooks.dispatch(shop.tenant_id)
        db.session.remove()
    [d] = deliveries(owner_engine, endpoint_id)
    barrier = threading.Barrier(4)
    outcomes = []

    def deliver():
        with app.app_context():
            barrier.wait(timeout=10)
            outcomes.append(webhooks.deliver(shop.tenant_id, d.id, 1))
            db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["skipped", "skipped", "skipped", "succeeded"]
    assert len(receiver.at("/hooks")) == 1


# --- the sweep ---------------------------------------------------------------------------------


def test_the_sweep_dispatches_events_whose_job_was_lost(app, shop, receiver, run_jobs, owner_engine):
    add_endpoint(app, shop, receiver.url())
    pay(app, shop)
    empty_queues(app)
    run_jobs()
    assert receiver.requests == []
    with app.app_context():
        young = webhooks.sweep()
        assert young == {"tenants": 0, "deliveries": 0, "attempts": 0}, "young events are left to their own job"
        age(owner_engine, "events", "created_at")
        assert webhooks.sweep() == {"tenants": 1, "deliveries": 0, "attempts": 0}
        db.session.remove()
    run_jobs()
    assert len(receiver.at("/hooks")) == 2
    assert [d.status for d in deliveries(owner_engine)] == ["succeeded", "succeeded"]


def test_the_sweep_requeues_deliveries_whose_job_was_lost(app, shop, receiver, run_jobs, owner_engine):
    add_endpoint(app, shop, receiver.url())
    pay(app, shop)
    with app.app_context():
        webhooks.dispatch(shop.tenant_id)
        db.session.remove()
    empty_queues(app)
    run_jobs()
    assert receiver.requests == []
    age(owner_engine, "webhook_deliveries", "next_attempt_at")
    with app.app_context():
        assert webhooks.sweep() == {"tenants": 0, "deliveries": 2, "attempts": 0}
        # A second sweep (another scheduler, the next minute) finds the jobs queued and adds none.
        assert webhooks.sweep() == {"tenants": 0, "deliveries": 2, "attempts": 0}
        assert len(jobs.queue("webhooks").get_job_ids()) == 2
        db.session.remove()
    run_jobs()
    assert len(receiver.at("/hooks")) == 2
    assert [(d.status, d.attempts) for d in deliveries(owner_engine)] == [("succeeded", 1), ("succeeded", 1)]


def test_the_sweep_is_scheduled_every_minute_with_one_job_per_minute(app, shop, receiver, run_jobs):
    add_endpoint(app, shop, receiver.url())
    pay(app, shop)
    run_jobs()
    sweeps = {job_id: at for job_id, at in scheduled(app).items() if job_id.startswith("webhooks-sweep-")}
    assert len(sweeps) == 1
    [(job_id, at)] = sweeps.items()
    assert job_id == f"webhooks-sweep-{int(at.timestamp())}" and at.second == 0
    assert timedelta(0) < at - datetime.now(UTC) <= timedelta(seconds=60)
    # Asking again (another dispatch, another worker) keeps the one job.
    with app.app_context():
        webhooks.schedule_sweep()
    assert [j for j in scheduled(app) if j.startswith("webhooks-sweep-")] == [job_id]
    # When it has run, the next minute's sweep is scheduled.
    fire_scheduled(app)
    run_jobs()
    with app.app_context():
        finished = jobs.queue("webhooks").finished_job_registry.get_job_ids()
    assert job_id in finished
    following = [j for j in scheduled(app) if j.startswith("webhooks-sweep-")]
    assert following == [f"webhooks-sweep-{int(at.timestamp()) + 60}"]


def test_a_payment_succeeds_with_redis_away_and_the_sweep_delivers_later(
    app, shop, receiver, run_jobs, owner_engine, monkeypatch, caplog
):
    add_endpoint(app, shop, receiver.url())

    def unreachable(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(core_queue, "_enqueuer", unreachable)
    pay(app, shop)
    assert "could not queue webhook dispatch" in caplog.text
    monkeypatch.undo()
    run_jobs()
    assert receiver.requests == []
    age(owner_engine, "events", "created_at")
    with app.app_context():
        webhooks.sweep()
        db.session.remove()
    run_jobs()
    assert len(receiver.at("/hooks")) == 2


# --- safety of destinations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://localhost:8000/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
        "http://api.internal/hooks",
    ],
)
def test_private_addresses_are_refused_unless_allowed(url):
    with pytest.raises(InvalidRequest) as refused:
        webhooks.clean_url(url, livemode=False, allow_private=False)
    assert refused.value.param == "url"
    assert webhooks.clean_url(url, livemode=False, allow_private=True) == url


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/x", "https:///x", "not a url", "http://u:p@93.184.216.34/"])
def test_urls_must_be_plain_http_or_https(url):
    with pytest.raises(InvalidRequest):
        webhooks.clean_url(url, livemode=False, allow_private=True)


def test_public_addresses_pass_and_live_mode_needs_https():
    assert webhooks.clean_url("https://93.184.216.34/hooks", livemode=True, allow_private=False)
    with pytest.raises(InvalidRequest, match="https"):
        webhooks.clean_url("http://93.184.216.34/hooks", livemode=True, allow_private=False)


def test_delivery_to_a_private_address_is_refused_in_production(receiver):
    outcome = webhooks.send(receiver.url(), b"{}", Secret("whsec_x"), allow_private=False)
    assert not outcome.ok and outcome.error.startswith("Refused")
    assert receiver.requests == []


def test_an_unreachable_endpoint_is_a_failed_attempt_not_an_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = webhooks.send(f"http://127.0.0.1:{port}/hooks", b"{}", Secret("whsec_x"), allow_private=True)
    assert outcome.status is None and outcome.error.startswith("Could not connect")


# --- use cases for the API ---------------------------------------------------------------------


def test_endpoint_use_cases_validate_scope_and_audit(app, shop, owner_engine):
    with as_tenant(app, shop.tenant_id):
        endpoint, secret = webhooks.create_endpoint(
            shop.tenant_id,
            shop.merchant,
            False,
            "https://93.184.216.34/hooks",
            "payment_intent.succeeded, refund.created",
            Actor.system(),
            description="Order system",
        )
        body = webhooks.endpoint_object(endpoint, secret)
        assert body["object"] == "webhook_endpoint" and body["id"].startswith("we_") and body["secret"] == secret
        assert body["enabled_events"] == ["payment_intent.succeeded", "refund.created"]
        assert "secret" not in webhooks.endpoint_object(endpoint)
        with pytest.raises(InvalidRequest, match="not an event type"):
            webhooks.create_endpoint(
                shop.tenant_id, shop.merchant, False, "https://93.184.216.34/", ["charge.nope"], Actor.system()
            )
        with pytest.raises(NotFound):
            webhooks.get_endpoint(shop.tenant_id, shop.other_merchant, endpoint.id)
        with pytest.raises(NotFound):
            webhooks.get_endpoint(shop.tenant_id, shop.merchant, endpoint.id, livemode=True)
        assert webhooks.list_endpoints(shop.tenant_id, shop.other_merchant) == []
        updated = webhooks.update_endpoint(endpoint, Actor.system(), enabled_events=["*", "refund.created"])
        assert updated.enabled_events == ["*"]
        webhooks.delete_endpoint(updated, Actor.system())
        assert webhooks.list_endpoints(shop.tenant_id, shop.merchant) == []
    with owner_engine.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action FROM audit_events WHERE object_type = 'webhook_endpoint' ORDER BY created_at")
        ).scalars()
        assert list(actions) == ["webhook_endpoint.created", "webhook_endpoint.updated", "webhook_endpoint.deleted"]


# --- the dashboard -----------------------------------------------------------------------------


def _csrf(client, page: str) -> str:
    return client.csrf_token(page)


def test_the_owner_adds_an_endpoint_and_sees_its_secret_once(app, shop, site, receiver, run_jobs, owner_engine):
    owner = site(shop.host)
    owner.login(OWNER)
    response = owner.submit(
        "/merchant/webhooks",
        {"url": receiver.url(), "mode": "test", "events": ["payment_intent.succeeded"], "description": "Shop"},
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    secret = re.search(r'value="(whsec_[A-Za-z0-9]{32})"', html).group(1)
    listing = owner.get("/merchant/webhooks").get_data(as_text=True)
    assert receiver.url() in listing and secret not in listing
    with owner_engine.connect() as conn:
        endpoint_id = conn.execute(sa.text("SELECT id FROM webhook_endpoints")).scalar()
    detail = owner.get(f"/merchant/webhooks/{endpoint_id}").get_data(as_text=True)
    assert secret not in detail and "No events sent to this endpoint yet." in detail

    pay(app, shop)
    run_jobs()
    [got] = receiver.at("/hooks")
    assert got.event(secret).type == "payment_intent.succeeded"
    detail = owner.get(f"/merchant/webhooks/{endpoint_id}").get_data(as_text=True)
    assert "payment_intent.succeeded" in detail and "succeeded" in detail
    assert re.search(r'<td class="attempts">1</td>', detail)


def test_the_form_explains_a_refused_url(shop, site):
    owner = site(shop.host)
    owner.login(OWNER)
    response = owner.submit(
        "/merchant/webhooks",
        {"url": "ftp://example.com/x", "mode": "test", "events": ["*"]},
        form_page="/merchant/webhooks",
    )
    assert response.status_code == 422
    assert "Invalid URL: use an http:// or https:// address." in response.get_data(as_text=True)
    response = owner.submit("/merchant/webhooks", {"url": "https://93.184.216.34/", "mode": "test"})
    assert response.status_code == 422
    assert "Choose at least one event type" in response.get_data(as_text=True)


def test_resend_from_the_dashboard_posts_again_and_the_log_shows_it(
    app, shop, site, receiver, run_jobs, owner_engine, caplog
):
    caplog.set_level(logging.DEBUG)
    endpoint_id, secret = add_endpoint(app, shop, receiver.url(), ["payment_intent.succeeded"])
    pay(app, shop)
    run_jobs()
    [d] = deliveries(owner_engine, endpoint_id)
    owner = site(shop.host)
    owner.login(OWNER)
    page = f"/merchant/webhooks/{endpoint_id}"
    response = owner.submit(f"{page}/deliveries/{d.id}/resend", form_page=page)
    assert response.status_code == 302
    run_jobs()
    got = receiver.at("/hooks")
    assert len(got) == 2 and got[0].event(secret).id == got[1].event(secret).id == d.event_id
    [d] = deliveries(owner_engine, endpoint_id)
    assert (d.status, d.attempts) == ("succeeded", 2)
    detail = owner.get(page).get_data(as_text=True)
    assert re.search(r'<td class="attempts">2</td>', detail)
    assert "is being sent again" in detail
    with owner_engine.connect() as conn:
        audited = conn.execute(
            sa.text(
                "SELECT action, actor_email, changes::text FROM audit_events WHERE object_type = 'webhook_delivery'"
            )
        ).all()
    assert [(a.action, a.actor_email) for a in audited] == [("webhook_delivery.resent", OWNER)]
    assert secret not in audited[0].changes and secret not in caplog.text


def test_disable_enable_and_delete(app, shop, site, receiver, run_jobs, owner_engine):
    endpoint_id, _ = add_endpoint(app, shop, receiver.url())
    owner = site(shop.host)
    owner.login(OWNER)
    page = f"/merchant/webhooks/{endpoint_id}"
    assert owner.submit(f"{page}/status", {"disabled": "1"}, form_page=page).status_code == 302
    assert "disabled" in owner.get(page).get_data(as_text=True)
    pay(app, shop)
    run_jobs()
    assert receiver.requests == [], "a disabled endpoint gets no events"
    assert owner.submit(f"{page}/status", {"disabled": "0"}, form_page=page).status_code == 302
    pay(app, shop)
    run_jobs()
    assert len(receiver.at("/hooks")) == 2
    response = owner.submit(page, {"url": receiver.url("/v2"), "events": ["refund.created"]}, form_page=page)
    assert response.status_code == 302
    with owner_engine.connect() as conn:
        row = conn.execute(sa.text("SELECT url, enabled_events FROM webhook_endpoints")).one()
    assert row.url == receiver.url("/v2") and row.enabled_events == ["refund.created"]
    assert owner.submit(f"{page}/delete", form_page=page).status_code == 302
    assert owner.get(page).status_code == 404
    assert deliveries(owner_engine) == []


def test_staff_see_the_log_but_change_nothing_and_other_merchants_get_404(app, shop, site, receiver, run_jobs):
    endpoint_id, _ = add_endpoint(app, shop, receiver.url(), ["payment_intent.succeeded"])
    tea_endpoint, _ = add_endpoint(app, shop, receiver.url("/tea"), merchant=shop.other_merchant)
    pay(app, shop)
    run_jobs()
    staff = site(shop.host)
    staff.login(STAFF)
    page = f"/merchant/webhooks/{endpoint_id}"
    html = staff.get(page).get_data(as_text=True)
    assert "payment_intent.succeeded" in html and "Resend" not in html and "Change the endpoint" not in html
    assert "Add an endpoint" not in staff.get("/merchant/webhooks").get_data(as_text=True)
    token = _csrf(staff, page)
    for path in (f"{page}/status", f"{page}/delete", "/merchant/webhooks"):
        assert staff.post(path, data={"csrf_token": token, "disabled": "1"}).status_code == 403
    # Coffee's owner cannot open or change Tea's endpoint.
    owner = site(shop.host)
    owner.login(OWNER)
    assert owner.get(f"/merchant/webhooks/{tea_endpoint}").status_code == 404
    token = _csrf(owner, page)
    assert owner.post(f"/merchant/webhooks/{tea_endpoint}/delete", data={"csrf_token": token}).status_code == 404
    assert tea_endpoint not in owner.get("/merchant/webhooks").get_data(as_text=True)
    # Nor resend Tea's delivery through an endpoint of Coffee's own.
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        events.record(shop.tenant_id, shop.other_merchant, False, "payment_intent.succeeded", {"id": "pi_tea"})
        db.session.commit()
        webhooks.dispatch(shop.tenant_id)
        tea_delivery = db.session.execute(
            sa.select(webhooks.WebhookDelivery.id).where(webhooks.WebhookDelivery.endpoint_id == tea_endpoint)
        ).scalar()
        db.session.remove()
    assert tea_delivery is not None
    response = owner.post(f"{page}/deliveries/{tea_delivery}/resend", data={"csrf_token": token})
    assert response.status_code == 404


def test_the_payment_timeline_shows_the_webhooks_sent_for_it(app, shop, site, receiver, run_jobs):
    add_endpoint(app, shop, receiver.url(), ["payment_intent.succeeded"])
    pi_id = pay(app, shop)
    owner = site(shop.host)
    owner.login(OWNER)
    before = owner.get(f"/merchant/payments/{pi_id}").get_data(as_text=True)
    assert "webhook payment_intent.succeeded" not in before  # not dispatched yet
    run_jobs()
    html = owner.get(f"/merchant/payments/{pi_id}").get_data(as_text=True)
    assert f"webhook payment_intent.succeeded to {receiver.url()}: succeeded" in html
    assert "1 attempt, last answer HTTP 200" in html
