"""Faults of the platform's own infrastructure, with the real servers: a PostgreSQL connection dropped in the
middle of a request, Redis down (and back), a payment channel that accepts a request and never answers.

- PostgreSQL: the test holds a table lock from its own (owner) connection so that a request stops at a known
  point inside a use case, finds the request's backend waiting on that lock in `pg_stat_activity` and
  terminates it (`pg_terminate_backend`, what a server crash or a failover does to a connection). The request
  answers with a clear error (Stripe's `api_error` for the API, the tenant's error page for a page), nothing of
  its transaction is written, and the next request works on a fresh connection.
- Redis: the app is pointed at a Redis server the test starts on a free port and stops. Pages, sign-in and
  an API payment (through a Stripe-compatible channel: the sandbox channel keeps its state in Redis) keep
  working; the events wait in PostgreSQL (the webhook outbox) and are delivered once Redis is back and the
  per-minute sweep runs.
- A channel that hangs: the Stripe adapter's read timeout ends the confirm; the payment is `processing`, the
  attempt `unknown`; the resolution job asks the channel later and the payment succeeds once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, SiteClient
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from test_channels_stripe import HANG, StandIn
from test_webhooks import Receiver, age
from test_worker_kill import _payment_intent
from workers import Workers, wait_for

import ledger
from core.db import db
from ledger.models import JournalEntry
from payments import balance_operations, intents, refunds, webhooks
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.intents import MerchantContext
from payments.models import Event, PaymentAttempt, Transfer
from portal import create_app, jobs
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

SECRET_KEY = "sk_test_51FaultsStandIn0123456789abcdef"


# --- helpers -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def other_app(app):
    """`other_app(**config)`: a second app on the test database with its own connection pool (and Redis, if
    given), disposed of at the end."""
    built = []

    def build(**overrides):
        config = {key: app.config[key] for key in ("DATABASE_URL", "REDIS_URL", "INSTANCE_DIR", "MAIL_DIR")}
        other = create_app(
            {
                **config,
                "TESTING": True,
                "UPLOAD_DIR": app.config["UPLOAD_DIR"],
                "MAIL_BACKEND": "file",
                "PLATFORM_DOMAIN": "localhost",
                "PLATFORM_HOST": "localhost",
                "PUBLIC_PORT": "",
                **overrides,
            }
        )
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()
            conn = other.extensions.get("redis")
            if conn is not None:
                conn.connection_pool.disconnect()


def _key(app, tenant_id, merchant_id) -> str:
    with app.app_context():
        _, secret = api_keys.create_key(tenant_id, merchant_id, "test", "backend", Actor.system())
        db.session.remove()
    return secret


def _api(client, host: str, secret: str, method: str, path: str, data=None, headers=None):
    return client.open(
        path,
        method=method,
        base_url=f"http://{host}",
        data=data,
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
    )


def _ledger_problems(app) -> list[str]:
    with app.app_context(), platform_scope(db.session):
        problems = [str(p) for p in ledger.check(db.session)]
        db.session.remove()
    return problems


def _waiting_on_a_lock(owner_engine) -> int | None:
    """The pid of the backend of this database waiting for a lock (the request the test holds up), if any."""
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
        ).scalar()


@contextlib.contextmanager
def _held(owner_engine, statement: str):
    """Hold a table lock from the test's own connection until the block ends."""
    with owner_engine.connect() as conn:
        conn.execute(sa.text(statement))
        try:
            yield
        finally:
            conn.rollback()


def _terminate_the_waiting_request(owner_engine, pending) -> set[str]:
    """Wait until the request in flight (`pending`, a future) waits for the held lock, and drop its connection.
    Returns the tables its open transaction had written to by then (those it holds a RowExclusiveLock on)."""

    def waiting():
        assert not pending.done(), f"the request ended before it reached the lock: {pending.result()!r}"
        return _waiting_on_a_lock(owner_engine)

    pid = wait_for(waiting, 30, "the request to wait for the test's lock")
    with owner_engine.connect() as conn:
        written = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE l.pid = :pid AND l.granted AND l.mode = 'RowExclusiveLock' AND c.relkind = 'r'"
            ),
            {"pid": pid},
        ).scalars()
        written = set(written)
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    return written


# --- PostgreSQL: a connection dropped mid-request ----------------------------------------------------


@dataclass
class Pair:
    tenant: object
    payer: uuid.UUID
    payee: uuid.UUID
    secret: str


@pytest.fixture
def pair(app, make) -> Pair:
    tenant = make.tenant("dropshop")
    payer = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    payee = make.merchant(tenant, "Tea", "owner@tea.example.com")
    with app.app_context(), tenant_context(db.session, tenant.id):
        balance_operations.create_topup(MerchantContext(tenant.id, payer, False), amount=50_000, currency="usd")
        db.session.remove()
    return Pair(tenant, payer, payee, _key(app, tenant.id, payer))


def _money(owner_engine, tenant_id) -> dict:
    with owner_engine.connect() as conn:
        return {
            "transfers": conn.execute(
                sa.select(sa.func.count()).select_from(Transfer).where(Transfer.tenant_id == tenant_id)
            ).scalar_one(),
            "entries": conn.execute(
                sa.select(sa.func.count())
                .select_from(JournalEntry)
                .where(JournalEntry.tenant_id == tenant_id, JournalEntry.kind == "transfer.created")
            ).scalar_one(),
            "transfer_events": conn.execute(
                sa.select(sa.func.count())
                .select_from(Event)
                .where(Event.tenant_id == tenant_id, Event.type == "transfer.created")
            ).scalar_one(),
            "balance_rows": conn.execute(
                sa.text("SELECT count(*) FROM balance_transactions WHERE tenant_id = :t AND type = 'transfer'"),
                {"t": tenant_id},
            ).scalar_one(),
        }


def _available(app, tenant_id, merchant_id) -> int:
    with app.app_context(), tenant_context(db.session, tenant_id):
        available = refunds.balance(MerchantContext(tenant_id, merchant_id, False))["available"]
        db.session.remove()
    return sum(row["amount"] for row in available if row["currency"] == "usd")


def test_a_transfer_whose_connection_drops_mid_request_writes_nothing_and_the_retry_makes_it_once(
    app, other_app, pair, owner_engine
):
    web = other_app()
    client = web.test_client()
    host = pair.tenant.host
    before = (_available(app, pair.tenant.id, pair.payer), _available(app, pair.tenant.id, pair.payee))
    body = {"amount": "1500", "currency": "usd", "destination": str(pair.payee)}
    headers = {"Idempotency-Key": "transfer-once-42"}

    # The transfer runs up to its last write (the event of the outbox, after the transfer row, its ledger
    # entry and both balance transactions), waits there for the test's lock, and loses its connection.
    with ThreadPoolExecutor(1) as pool, _held(owner_engine, "LOCK TABLE events IN SHARE MODE"):
        pending = pool.submit(_api, client, host, pair.secret, "POST", "/v1/transfers", body, headers)
        written = _terminate_the_waiting_request(owner_engine, pending)
        answer = pending.result(timeout=30)
    # By then its transaction had written the transfer, the journal entry and lines, the balances and the
    # merchants' balance transactions: all of it is gone with the connection.
    assert {"transfers", "journal_entries", "journal_lines", "ledger_accounts", "balance_transactions"} <= written

    assert answer.status_code == 500
    assert answer.mimetype == "application/json"
    error = answer.get_json()["error"]
    assert error["type"] == "api_error"
    assert error["message"] == "An unknown error occurred on our side; nothing more was done. Try again later."
    assert "Traceback" not in answer.get_data(as_text=True) and "terminating connection" not in error["message"]
    assert _money(owner_engine, pair.tenant.id) == {
        "transfers": 0,
        "entries": 0,
        "transfer_events": 0,
        "balance_rows": 0,
    }
    assert (_available(app, pair.tenant.id, pair.payer), _available(app, pair.tenant.id, pair.payee)) == before
    assert _ledger_problems(app) == []

    # The merchant retries with the same key: the pool has a fresh connection, the key was released (5xx),
    # and the transfer is made once.
    again = _api(client, host, pair.secret, "POST", "/v1/transfers", body, headers)
    assert again.status_code == 200, again.get_data(as_text=True)
    transfer = again.get_json()
    assert (transfer["object"], transfer["amount"], transfer["destination"]) == ("transfer", 1500, str(pair.payee))
    replay = _api(client, host, pair.secret, "POST", "/v1/transfers", body, headers)
    assert replay.get_json()["id"] == transfer["id"] and replay.headers.get("Idempotent-Replayed") == "true"
    assert _money(owner_engine, pair.tenant.id) == {
        "transfers": 1,
        "entries": 1,
        "transfer_events": 1,
        "balance_rows": 2,
    }
    assert _available(app, pair.tenant.id, pair.payer) == before[0] - 1500
    assert _available(app, pair.tenant.id, pair.payee) == before[1] + 1500
    assert _ledger_problems(app) == []


def test_a_page_whose_connection_drops_shows_the_tenants_error_page_and_the_next_visit_works(
    other_app, pair, owner_engine
):
    # Not TESTING: the error is handled as in production (the error page, not the exception).
    web = other_app(TESTING=False, WTF_CSRF_ENABLED=True)
    browser = SiteClient(web, pair.tenant.host)
    assert browser.login("owner@coffee.example.com", PASSWORD).status_code == 302
    assert browser.get("/merchant/").status_code == 200

    with (
        ThreadPoolExecutor(1) as pool,
        _held(owner_engine, "LOCK TABLE payment_intents, balance_transactions IN ACCESS EXCLUSIVE MODE"),
    ):
        pending = pool.submit(browser.get, "/merchant/")
        _terminate_the_waiting_request(owner_engine, pending)
        page = pending.result(timeout=30)

    html = page.get_data(as_text=True)
    assert page.status_code == 500
    assert "Something went wrong" in html and "We could not complete the request. Please try again." in html
    assert "Dropshop" in html, "the error page wears the tenant's brand"
    assert "Traceback" not in html and "terminating connection" not in html and "psycopg" not in html

    again = browser.get("/merchant/")
    assert again.status_code == 200
    assert "Coffee" in again.get_data(as_text=True)


# --- Redis down ----------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a free port, stopped and started again at will."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        probe = Redis(port=self.port, socket_connect_timeout=1)

        def answering():
            assert self.process.poll() is None, (self.folder / "redis.log").read_text()
            with contextlib.suppress(RedisError):
                return probe.ping()
            return False

        try:
            wait_for(answering, 20, "the test's redis-server to answer")
        finally:
            probe.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_with_redis_down_a_password_reset_mail_is_still_sent(make, other_app, redis_server, tmp_path, caplog):
    tenant = make.tenant("mailer", name="Mailer")
    web = other_app(REDIS_URL=redis_server.url, MAIL_DIR=tmp_path / "mail")
    redis_server.stop()
    caplog.set_level(logging.WARNING)

    browser = SiteClient(web, tenant.host)
    response = browser.submit("/password/forgot", {"email": tenant.admin_email})

    assert response.status_code == 302
    mails = list((tmp_path / "mail").glob("*.eml"))
    assert len(mails) == 1 and tenant.admin_email in mails[0].read_text()
    assert "/password/reset/" in mails[0].read_text()
    assert any("mail queue is unavailable" in record.getMessage() for record in caplog.records)


class StripeAnswers:
    """A Stripe-compatible stand-in that takes charges (or leaves them hanging) and answers queries from what it
    took: `hang_charges` makes a charge's answer never come, though the charge is made."""

    def __init__(self, hang_charges: bool = False):
        self.intents: list[dict] = []
        self.lock = threading.Lock()
        self.hang_charges = hang_charges
        self.server = StandIn()
        self.server.on("POST", "/v1/payment_intents", self._charge)
        self.server.on("GET", "/v1/payment_intents", self._list)
        self.server.on("POST", "/v1/refunds", self._refund)
        self.url = self.server.url

    def _charge(self, seen):
        intent = _payment_intent(seen.form)
        with self.lock:
            self.intents.append(intent)
        return HANG if self.hang_charges else (200, intent)

    def _list(self, seen):
        with self.lock:
            data = list(reversed(self.intents))
        return 200, {"object": "list", "url": "/v1/payment_intents", "has_more": False, "data": data}

    def _refund(self, seen):
        form = {key: values[0] for key, values in seen.form.items()}
        return 200, {
            "id": f"re_{uuid.uuid4().hex[:20]}",
            "object": "refund",
            "amount": int(form["amount"]),
            "currency": "usd",
            "payment_intent": form["payment_intent"],
            "status": "succeeded",
        }

    def charges(self) -> int:
        return len(self.server.requests("POST", "/v1/payment_intents"))

    def queries(self) -> int:
        return len(self.server.requests("GET", "/v1/payment_intents"))

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def stripe_answers():
    server = StripeAnswers()
    yield server
    server.stop()


@dataclass
class StripeShop:
    tenant: object
    merchant: uuid.UUID
    secret: str

    @property
    def ctx(self) -> MerchantContext:
        return MerchantContext(self.tenant.id, self.merchant, False)


def _stripe_shop(app, make, slug: str, base_url: str, **settings) -> StripeShop:
    tenant = make.tenant(slug)
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    with app.app_context(), tenant_context(db.session, tenant.id):
        create_channel_account(
            tenant.id,
            ChannelAccountInput(
                name="Stripe",
                type="stripe",
                currency="USD",
                products=["card"],
                base_url=base_url,
                credentials={"secret_key": SECRET_KEY},
                settings=settings,
            ),
            {"card"},
            Actor.system(),
        )
        db.session.remove()
    return StripeShop(tenant, merchant, _key(app, tenant.id, merchant))


def _work(app) -> int:
    """Run every queued job of `app`'s Redis with a real RQ worker (burst); how many finished."""
    with app.app_context():
        queues = [jobs.queue(name) for name in jobs.QUEUES]
        before = sum(q.finished_job_registry.count for q in queues)
        SimpleWorker(queues, connection=jobs.redis_connection(), job_class=jobs.AppJob).work(
            burst=True, with_scheduler=False
        )
        return sum(q.finished_job_registry.count for q in queues) - before


def test_with_redis_down_pages_sign_in_and_payments_work_and_the_webhooks_follow_when_it_returns(
    app, make, other_app, redis_server, stripe_answers, owner_engine, caplog
):
    web = other_app(REDIS_URL=redis_server.url)
    shop = _stripe_shop(web, make, "redisless", stripe_answers.url)
    receiver = Receiver()
    try:
        with web.app_context(), tenant_context(db.session, shop.tenant.id):
            endpoint, _ = webhooks.create_endpoint(
                shop.tenant.id, shop.merchant, False, receiver.url(), ["*"], Actor.system(), allow_private=True
            )
            db.session.remove()

        redis_server.stop()
        caplog.set_level(logging.WARNING)

        # The site: the sign-in page, signing in, the dashboard and its payments list.
        browser = SiteClient(web, shop.tenant.host)
        assert browser.get("/login").status_code == 200
        signed_in = browser.login("owner@coffee.example.com", PASSWORD)
        assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
        assert browser.get("/merchant/").status_code == 200

        # The API: a payment confirmed at once succeeds at the channel.
        client = web.test_client()
        paid = _api(
            client,
            shop.tenant.host,
            shop.secret,
            "POST",
            "/v1/payment_intents",
            {"amount": "2500", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
        )
        assert paid.status_code == 200, paid.get_data(as_text=True)
        payment = paid.get_json()
        assert (payment["status"], payment["amount_received"]) == ("succeeded", 2500)
        refunded = _api(
            client,
            shop.tenant.host,
            shop.secret,
            "POST",
            "/v1/refunds",
            {"payment_intent": payment["id"], "amount": "700"},
        )
        assert refunded.status_code == 200, refunded.get_data(as_text=True)
        assert (refunded.get_json()["status"], refunded.get_json()["amount"]) == ("succeeded", 700)
        listed = _api(client, shop.tenant.host, shop.secret, "GET", "/v1/payment_intents")
        assert [p["id"] for p in listed.get_json()["data"]] == [payment["id"]]
        page = browser.get("/merchant/payments")
        assert page.status_code == 200 and payment["id"] in page.get_data(as_text=True)
        assert "could not queue webhook dispatch" in caplog.text

        # Its events wait in PostgreSQL, undispatched: nothing was lost with the queue.
        with owner_engine.connect() as conn:
            waiting = conn.execute(
                sa.select(Event.type).where(Event.tenant_id == shop.tenant.id, Event.dispatched_at.is_(None))
            ).scalars()
            assert sorted(waiting) == [
                "charge.refunded",
                "payment_intent.created",
                "payment_intent.succeeded",
                "refund.created",
                "refund.updated",
            ]
        assert receiver.requests == []

        # Redis is back (empty: what it held is lost too). The per-minute sweep finds the events older than
        # its grace (the clock moved on) and the worker delivers them.
        redis_server.start()
        age(owner_engine, "events", "created_at")
        with web.app_context():
            assert webhooks.sweep()["tenants"] == 1
            db.session.remove()
        wait_for(lambda: _work(web) == 0 and len(receiver.at("/hooks")) >= 5, 30, "the deliveries")
        delivered = sorted(json.loads(r.body)["type"] for r in receiver.at("/hooks"))
        assert delivered == [
            "charge.refunded",
            "payment_intent.created",
            "payment_intent.succeeded",
            "refund.created",
            "refund.updated",
        ]
        with owner_engine.connect() as conn:
            statuses = conn.execute(
                sa.text("SELECT status, attempts FROM webhook_deliveries WHERE endpoint_id = :e"), {"e": endpoint.id}
            ).all()
        assert sorted(tuple(s) for s in statuses) == [("succeeded", 1)] * 5
    finally:
        receiver.close()
    assert stripe_answers.charges() == 1
    assert _ledger_problems(app) == []


# --- a channel that hangs ------------------------------------------------------------------------------


@pytest.fixture
def hanging_stripe():
    server = StripeAnswers(hang_charges=True)
    yield server
    server.stop()


def test_a_channel_that_never_answers_is_cut_off_by_the_timeout_and_the_payment_resolved_once_by_query(
    app, make, hanging_stripe, run_jobs, owner_engine
):
    shop = _stripe_shop(app, make, "hangshop", hanging_stripe.url, read_timeout_s=1)
    client = app.test_client()
    started = time.monotonic()
    answer = _api(
        client,
        shop.tenant.host,
        shop.secret,
        "POST",
        "/v1/payment_intents",
        {"amount": "4200", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
    )
    elapsed = time.monotonic() - started
    # The stand-in holds the charge for 10 s; the adapter gives up after its 1 s read timeout.
    assert elapsed < 8, f"the confirm took {elapsed:.1f} s: the read timeout did not hold"
    assert answer.status_code == 200, answer.get_data(as_text=True)
    pi = answer.get_json()
    assert (pi["status"], pi["amount_received"]) == ("processing", 0)
    assert hanging_stripe.charges() == 1

    def state() -> dict:
        with app.app_context(), tenant_context(db.session, shop.tenant.id):
            current = intents.get(shop.ctx, pi["id"])
            attempts = db.session.execute(
                sa.select(PaymentAttempt.status).where(PaymentAttempt.payment_intent_id == pi["id"])
            ).scalars()
            captured = db.session.scalar(
                sa.select(sa.func.count())
                .select_from(JournalEntry)
                .where(JournalEntry.kind == "payment.captured", JournalEntry.reference == pi["id"])
            )
            result = {
                "status": current.status,
                "received": current.amount_received,
                "attempts": list(attempts),
                "captured": captured,
            }
            db.session.remove()
        return result

    assert state() == {"status": "processing", "received": 0, "attempts": ["unknown"], "captured": 0}

    # The resolution job (queued by the confirm) asks the channel, which now answers: succeeded, once.
    assert run_jobs() >= 1
    assert state() == {"status": "succeeded", "received": 4200, "attempts": ["succeeded"], "captured": 1}
    assert hanging_stripe.charges() == 1 and hanging_stripe.queries() == 1
    shown = _api(client, shop.tenant.host, shop.secret, "GET", f"/v1/payment_intents/{pi['id']}").get_json()
    assert (shown["status"], shown["amount_received"]) == ("succeeded", 4200)

    # The job once more (a duplicate, the sweep): the attempt is final, the channel is not asked again.
    from payments.jobs import resolve_attempt

    with app.app_context(), tenant_context(db.session, shop.tenant.id):
        attempt_id = db.session.scalar(sa.select(PaymentAttempt.id).where(PaymentAttempt.payment_intent_id == pi["id"]))
        assert resolve_attempt(shop.tenant.id, str(attempt_id)) == "succeeded"
        db.session.remove()
    assert state()["captured"] == 1 and hanging_stripe.queries() == 1
    assert _ledger_problems(app) == []


# --- a fresh process's first connection ------------------------------------------------------------------


def test_the_ledger_check_runs_on_a_connection_that_was_just_checked(other_app, make):
    """`flask ledger check` asks for a REPEATABLE READ snapshot on the connection it checks out. A new process's
    first checkout (and one after an idle spell) is checked with a round trip first (`core.db`), which must
    leave the connection outside a transaction, or the isolation level cannot be set."""
    make.tenant("checked")
    fresh = other_app(DB_PING_IDLE_SECONDS=0)  # every checkout is checked
    result = fresh.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.startswith("ledger: ok")


# --- Redis back without its data ---------------------------------------------------------------------------

SWEEP_CHAINS = ("webhooks-sweep-", "clearing-sweep-", "exports-sweep-")


def _scheduled_sweeps(app) -> list[str]:
    with app.app_context():
        ids = [job_id for name in jobs.QUEUES for job_id in jobs.queue(name).scheduled_job_registry.get_job_ids()]
    return sorted(prefix for prefix in SWEEP_CHAINS if any(job_id.startswith(prefix) for job_id in ids))


def test_a_worker_schedules_the_sweeps_again_when_redis_came_back_empty(app, owner_url, tmp_path):
    # A real `flask worker` (not a burst) schedules the three sweep chains when it starts...
    group = Workers(app, owner_url, tmp_path)
    try:
        worker = group.start("keeper", "--without-scheduler", queue="default")
        wait_for(
            lambda: worker.poll() is None and _scheduled_sweeps(app) == sorted(SWEEP_CHAINS),
            30,
            f"the worker to schedule the sweeps\n{group.logs()}",
        )
    finally:
        group.stop_all()
    # ...and so does each of its periodic maintenance runs (every 10 minutes), so a Redis that lost
    # everything (restarted without persistence, a failover) gets the chains back without a restart.
    Redis.from_url(app.config["REDIS_URL"]).flushdb()
    assert _scheduled_sweeps(app) == []
    with app.app_context():
        names = [jobs.queue(name) for name in jobs.QUEUES]
        keeper = jobs.AppWorker(names, connection=jobs.redis_connection(), job_class=jobs.AppJob, keeps_sweeps=True)
        keeper.run_maintenance_tasks()
        db.session.remove()
    assert _scheduled_sweeps(app) == sorted(SWEEP_CHAINS)
    # A burst worker (tests, one-off runs) leaves the chains to the long-running ones.
    Redis.from_url(app.config["REDIS_URL"]).flushdb()
    with app.app_context():
        burst = jobs.AppWorker(names, connection=jobs.redis_connection(), job_class=jobs.AppJob)
        burst.run_maintenance_tasks()
    assert _scheduled_sweeps(app) == []
