"""A worker killed (SIGKILL) while a channel query job runs: after restart the payment reaches its final state once.

Everything that matters runs for real and across processes: the charge is made by the test process, the
query job runs in a `python -m flask worker` subprocess (RQ `SimpleWorker`, the same command the Procfile
runs) against the test database and Redis database, and the channel is the Stripe adapter talking to a
local stand-in HTTP server run by the test. (Not the sandbox channel, whose state every process sees in Redis
too: the test must hold the worker's query inside the channel.) The stand-in is shared state every process
sees, and lets the test stop the worker at an exact point:

1. The charge POST reaches the stand-in, which records the PaymentIntent (the money moved) and closes the
   connection without an answer: the adapter raises `ChannelTimeout` (a POST whose answer was lost), the
   attempt stays `unknown`, the intent `processing`, and `resolve_attempt` is queued on `channels`. (A lost
   answer rather than a read timeout, so the test waits for no timer: the adapter maps both to the same
   `ChannelTimeout`.)
2. Worker A (`--burst`) takes the job; the query (`GET /v1/payment_intents`) blocks inside the stand-in. The
   test sees it arrive and SIGKILLs the worker: the job is left `started` in RQ's StartedJobRegistry.
3. Recovery is RQ's own abandoned-job handling, as a restarted production worker does it, with the clock
   moved on. What RQ 2.12 does (rq/executions.py, rq/worker/base.py, rq/registry.py):
   - A job being run is an execution in `StartedJobRegistry`, scored with its lease expiry. For a
     `SimpleWorker` the lease is `job.timeout + 60` s (the queue's default timeout 180 -> 240 s), set once
     when the job starts (a SimpleWorker does not renew it while the job runs).
   - `worker_ttl` only governs the worker's own key; it is not what frees a dead worker's job, so a
     short worker TTL does not help.
   - Every worker runs `clean_registries` at start-up and then every `maintenance_interval` (10 min):
     `StartedJobRegistry.cleanup()` takes executions whose lease has expired, raises `AbandonedJobError`
     for them and, when the job has retries left (ours: `Retry(max=15)`), calls `job.retry()`, which
     schedules it after the next backoff interval (5 s); the worker's scheduler then queues it.
   So in production a killed worker's query job runs again within about 4 to 14 minutes plus the backoff.
   The test asserts that a cleanup now leaves the job alone (its lease holds), then calls the same
   `cleanup()` with a timestamp just past the dead execution's lease (the only simulated thing: 240 s
   passing), and starts worker B with its scheduler, which queues the retry after the real 5 s backoff
   and runs it. No platform change is needed for this path.
4. The payment ends `succeeded`, with one charge at the channel, one attempt, one `payment.captured` ledger
   entry and one `payment_intent.succeeded` event; a further run of the job changes nothing.

No sleeps: waits are on events, `Popen.wait` and a bounded wait-for-condition helper.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from rq.job import JobStatus
from workers import Workers, wait_for

import ledger
from core.db import db
from ledger.models import JournalEntry
from payments import intents, refunds
from payments import jobs as payment_jobs
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.models import Event, PaymentAttempt
from portal import jobs
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

SECRET_KEY = "sk_test_51WorkerKillStandIn0123456789"
AMOUNT = 2_000


# --- the channel: a local stand-in that answers as Stripe does ------------------------------------


class StripeStandIn:
    """Keeps the PaymentIntents it was asked to create; loses the answer to every charge; holds the first
    list query until the test releases it, then answers list queries from what it keeps."""

    def __init__(self):
        self.lock = threading.Lock()
        self.intents: list[dict] = []
        self.calls: list[tuple[str, str, dict]] = []
        self.query_arrived = threading.Event()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.stand_in = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def posts(self) -> list[dict]:
        with self.lock:
            return [form for method, path, form in self.calls if method == "POST" and path == "/v1/payment_intents"]

    def queries(self) -> int:
        with self.lock:
            return sum(1 for method, path, _ in self.calls if method == "GET" and path == "/v1/payment_intents")

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _payment_intent(form: dict[str, list[str]]) -> dict:
    """The PaymentIntent Stripe makes of a confirmed card charge (API 2024-06-20, latest_charge expanded)."""
    one = {key: values[0] for key, values in form.items()}
    amount = int(one["amount"])
    manual = one.get("capture_method") == "manual"
    metadata = {key[len("metadata[") : -1]: value for key, value in one.items() if key.startswith("metadata[")}
    suffix = uuid.uuid4().hex[:20]
    return {
        "id": f"pi_{suffix}",
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": amount if manual else 0,
        "amount_received": 0 if manual else amount,
        "capture_method": one.get("capture_method", "automatic"),
        "currency": one["currency"],
        "status": "requires_capture" if manual else "succeeded",
        "metadata": metadata,
        "last_payment_error": None,
        "next_action": None,
        "payment_method": one.get("payment_method"),
        "livemode": False,
        "created": int(time.time()),
        "latest_charge": {
            "id": f"ch_{suffix}",
            "object": "charge",
            "amount": amount,
            "amount_captured": 0 if manual else amount,
            "amount_refunded": 0,
            "captured": not manual,
            "status": "succeeded",
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        stand_in: StripeStandIn = self.server.stand_in
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        form = parse_qs(body.decode() if body else url.query, keep_blank_values=True)
        with stand_in.lock:
            stand_in.calls.append((self.command, url.path, form))
            first_query = self.command == "GET" and not stand_in.query_arrived.is_set()
        if (self.command, url.path) == ("POST", "/v1/payment_intents"):
            with stand_in.lock:
                stand_in.intents.append(_payment_intent(form))
            self.close_connection = True  # the charge is made, its answer is lost
            return
        if (self.command, url.path) == ("GET", "/v1/payment_intents"):
            if first_query:
                stand_in.query_arrived.set()
                stand_in.release.wait(30)  # the worker is killed meanwhile: nobody reads an answer
                self.close_connection = True
                return
            with stand_in.lock:
                data = list(reversed(stand_in.intents))  # newest first, as Stripe lists
            return self._send(200, {"object": "list", "url": "/v1/payment_intents", "has_more": False, "data": data})
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


# --- the scenario -----------------------------------------------------------------------------------


@pytest.fixture
def stand_in():
    server = StripeStandIn()
    yield server
    server.stop()


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def shop(app, make, stand_in):
    tenant = make.tenant("killshop")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    with app.app_context(), tenant_context(db.session, tenant.id):
        create_channel_account(
            tenant.id,
            ChannelAccountInput(
                name="Stripe",
                type="stripe",
                currency="USD",
                products=["card"],
                base_url=stand_in.url,
                credentials={"secret_key": SECRET_KEY},
            ),
            {"card"},
            Actor.system(),
        )
        db.session.remove()
    return intents.MerchantContext(tenant.id, merchant, livemode=False)


def _state(app, shop, pi_id: str) -> dict:
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi = intents.get(shop, pi_id)
        attempts = db.session.execute(
            sa.select(PaymentAttempt.kind, PaymentAttempt.status, PaymentAttempt.idempotency_key).where(
                PaymentAttempt.payment_intent_id == pi_id
            )
        ).all()
        captured = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.kind == "payment.captured", JournalEntry.reference == pi_id)
        )
        succeeded_events = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Event)
            .where(Event.type == "payment_intent.succeeded", Event.object_id == pi_id)
        )
        pending = refunds.balance(shop)["pending"]
        state = {
            "status": pi.status,
            "amount_received": pi.amount_received,
            "attempts": [tuple(a) for a in attempts],
            "captured_entries": captured,
            "succeeded_events": succeeded_events,
            "pending": pending,
        }
        with platform_scope(db.session):
            state["ledger_problems"] = [str(p) for p in ledger.check(db.session)]
        db.session.remove()
    return state


def test_a_worker_killed_during_the_query_job_leaves_the_payment_to_be_resolved_once(app, shop, stand_in, workers):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi = intents.create(shop, amount=AMOUNT, currency="usd", payment_method="pm_card_visa", confirm=True)
        pi_id = pi.id
        assert pi.status == "processing"
        db.session.remove()
        channels = jobs.queue("channels")
        [job_id] = channels.job_ids
        started = channels.started_job_registry
        conn = channels.connection
    [charge] = stand_in.posts()
    key = charge["metadata[payplat_key]"][0]
    assert key == f"{pi_id}-charge-1"

    # Worker A takes the job; its query is held by the channel; the worker is killed right there.
    worker_a = workers.start("worker-a", "--burst", "--without-scheduler")
    while not stand_in.query_arrived.wait(0.1):
        assert worker_a.poll() is None, f"worker A exited before querying the channel\n{workers.logs()}"
    with app.app_context():
        assert jobs.AppJob.fetch(job_id, connection=conn).get_status() == JobStatus.STARTED
    os.kill(worker_a.pid, signal.SIGKILL)
    assert worker_a.wait(10) == -signal.SIGKILL
    stand_in.release.set()

    state = _state(app, shop, pi_id)
    assert state["status"] == "processing" and state["amount_received"] == 0
    assert state["attempts"] == [("charge", "unknown", key)]
    assert state["captured_entries"] == 0 and state["succeeded_events"] == 0

    with app.app_context():
        job = jobs.AppJob.fetch(job_id, connection=conn)
        assert job.get_status() == JobStatus.STARTED and job.retries_left == 15
        # RQ keeps the dead worker's job while its lease holds: a cleanup now (a restarted worker's
        # start-up maintenance) leaves it where it is.
        started.cleanup()
        assert started.get_job_ids(cleanup=False) == [job_id]
        [(_, lease_expiry)] = conn.zrange(started.key, 0, -1, withscores=True)
        assert lease_expiry > time.time() + 60, "a SimpleWorker's lease is job.timeout + 60 s"
        # The lease runs out (simulated: the cleanup's clock is moved just past it); RQ declares the job
        # abandoned and, as it has retries left, schedules its retry after the first backoff interval.
        started.cleanup(timestamp=lease_expiry + 1)
        assert started.get_job_ids(cleanup=False) == []
        job = jobs.AppJob.fetch(job_id, connection=conn)
        assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 14
        assert job_id in channels.scheduled_job_registry.get_job_ids()

    # Worker B (restarted, with its scheduler): queues the retry when it is due and runs it.
    worker_b = workers.start("worker-b")

    def finished():
        assert worker_b.poll() is None, f"worker B died\n{workers.logs()}"
        with app.app_context():
            status = jobs.AppJob.fetch(job_id, connection=conn).get_status()
        return status == JobStatus.FINISHED

    wait_for(finished, 30, f"the retried query job to finish\n{workers.logs()}")
    worker_b.send_signal(signal.SIGTERM)  # warm shutdown: idle, so it stops now (its scheduler too)
    assert worker_b.wait(15) == 0, workers.logs()

    state = _state(app, shop, pi_id)
    assert state["status"] == "succeeded" and state["amount_received"] == AMOUNT
    assert state["attempts"] == [("charge", "succeeded", key)]
    assert state["captured_entries"] == 1
    assert state["succeeded_events"] == 1
    assert state["pending"] == [{"amount": AMOUNT, "currency": "usd"}]
    assert state["ledger_problems"] == []
    assert len(stand_in.posts()) == 1, "the channel was charged once"
    assert stand_in.queries() == 2, "one query died with worker A, one resolved the payment"

    # The job delivered once more (a duplicate, a late retry): the attempt is final, nothing moves.
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        attempt_id = db.session.scalar(sa.select(PaymentAttempt.id).where(PaymentAttempt.payment_intent_id == pi_id))
        assert payment_jobs.resolve_attempt(shop.tenant_id, str(attempt_id)) == "succeeded"
        db.session.remove()
    assert _state(app, shop, pi_id) == state
    assert stand_in.queries() == 2
