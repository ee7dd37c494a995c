"""A worker killed (SIGKILL) in the middle of a settlement run, a payout batch run and a webhook delivery: the
re-run gives the result of one uninterrupted run, and a webhook is recorded delivered once.

The workers are real `python -m flask worker` processes (tests/workers.py). Each is stopped at a known point
without any hook in the platform:

- settlement and payout batch: the test holds a row lock (`SELECT ... FOR UPDATE` from its own connection) on
  the ledger account the run's second group posts to; the worker commits the first group, then waits on the
  lock. The test sees the worker's backend waiting (`pg_stat_activity`), kills the worker, releases the lock,
  and waits until PostgreSQL has ended the dead worker's session (rolling back its open transaction).
- webhook delivery: the merchant's endpoint (a server in the test) holds the first POST until the worker is
  killed.

The re-run is what the platform does after a crash, as test_worker_kill.py describes for RQ 2.x: the dead
worker's job stays `started` until its lease runs out; a worker's registry cleanup then declares it abandoned
and schedules its retry, and a new worker runs it. The time that passes is the only thing simulated: the
cleanup is given a timestamp past the lease, the retry's backoff is made due at once (`fire_scheduled`), and
for webhooks the delivery's due time is moved back so that the per-minute sweep takes it up. The "same
result" is checked against a second tenant with the same data whose run was not interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from rq.job import JobStatus
from test_webhooks import age, fire_scheduled
from workers import Workers, wait_for

import ledger
from clearing import jobs as clearing_jobs
from clearing import payouts
from clearing.models import ClearingRun, PayoutBatch, Settlement
from core.db import db
from ledger.models import LedgerAccount
from payments import balance_operations, intents, refunds, webhooks
from payments.intents import MerchantContext
from payments.models import BalanceTransaction, Payout
from portal import jobs
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

FINANCE = Actor(kind="user", email="finance@kill.example.com")


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    yield group
    group.stop_all()


@dataclass
class Books:
    tenant_id: uuid.UUID
    merchants: dict[str, uuid.UUID]  # by name


def _ledger_problems() -> list[str]:
    with platform_scope(db.session):
        return [str(p) for p in ledger.check(db.session)]


def _balances(app, books: Books) -> dict:
    with app.app_context(), tenant_context(db.session, books.tenant_id):
        result = {
            name: {
                bucket: sorted((row["currency"], row["amount"]) for row in rows)
                for bucket, rows in refunds.balance(MerchantContext(books.tenant_id, merchant, False)).items()
                if bucket in ("available", "pending")
            }
            for name, merchant in books.merchants.items()
        }
        db.session.remove()
    return result


def _account_lock(owner_engine, books: Books, merchant: str, purpose: str, currency: str):
    """A connection holding the lock of a merchant's ledger account (roll it back to release it)."""
    conn = owner_engine.connect()
    locked = conn.execute(
        sa.select(LedgerAccount.id)
        .where(
            LedgerAccount.tenant_id == books.tenant_id,
            LedgerAccount.merchant_id == books.merchants[merchant],
            LedgerAccount.purpose == purpose,
            LedgerAccount.currency == currency,
            LedgerAccount.livemode.is_(False),
        )
        .with_for_update()
    ).all()
    assert len(locked) == 1
    return conn


def _waiting_backend(owner_engine) -> int | None:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
        ).scalar()


def _backend_gone(owner_engine, pid: int) -> bool:
    with owner_engine.connect() as conn:
        return not conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar()


def _kill_when_waiting(owner_engine, workers: Workers, worker, lock_conn) -> None:
    """Wait until the worker waits for the held lock; SIGKILL it; release the lock; wait for PostgreSQL to end
    the dead worker's session (its open transaction is rolled back)."""

    def waiting():
        assert worker.poll() is None, f"the worker ended before it reached the lock\n{workers.logs()}"
        return _waiting_backend(owner_engine)

    pid = wait_for(waiting, 60, f"the worker to wait for the test's lock\n{workers.logs()}")
    os.killpg(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    lock_conn.rollback()
    lock_conn.close()
    wait_for(lambda: _backend_gone(owner_engine, pid), 30, "PostgreSQL to end the killed worker's session")


def _recover_abandoned_job(app, queue_name: str, job_id: str) -> None:
    """What a restarted worker's registry cleanup does once the dead worker's lease has run out (the clock is
    moved past it): the job is abandoned and its retry scheduled; then its backoff has passed."""
    with app.app_context():
        target = jobs.queue(queue_name)
        conn = target.connection
        assert jobs.AppJob.fetch(job_id, connection=conn).get_status() == JobStatus.STARTED
        started = target.started_job_registry
        leases = dict(conn.zrange(started.key, 0, -1, withscores=True))
        [lease_expiry] = [score for member, score in leases.items() if member.decode().startswith(job_id)]
        started.cleanup(timestamp=lease_expiry + 1)
        assert jobs.AppJob.fetch(job_id, connection=conn).get_status() == JobStatus.SCHEDULED
    fire_scheduled(app)


def _run_to_the_end(app, workers: Workers, name: str, queue_name: str, *job_ids: str) -> None:
    """A new worker (burst) works the queue; the jobs named have finished."""
    worker = workers.start(name, "--burst", "--without-scheduler", queue=queue_name)
    assert worker.wait(60) == 0, workers.logs()
    with app.app_context():
        conn = jobs.redis_connection()
        statuses = [jobs.AppJob.fetch(job_id, connection=conn).get_status() for job_id in job_ids]
    assert statuses == [JobStatus.FINISHED] * len(job_ids), workers.logs()


# --- settlement ---------------------------------------------------------------------------------------


def _books_with_payments(app, make, slug: str) -> Books:
    """Two merchants with three days of captured payments (and a refund), all due for settlement now."""
    tenant = make.tenant(slug)
    merchants = {
        name: make.merchant(tenant, name, f"owner@{name.lower()}.example.com", password=None)
        for name in ("Coffee", "Tea")
    }
    make.channel_account(tenant.id)
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    with app.app_context(), tenant_context(db.session, tenant.id):
        for days_ago in (5, 4, 3):
            at = today - timedelta(days=days_ago)
            for n, merchant in enumerate(merchants[name] for name in sorted(merchants)):
                ctx = MerchantContext(tenant.id, merchant, False)
                pi = intents.create(
                    ctx, amount=1_000 * days_ago + 100 * n, currency="usd", payment_method="pm_card_visa", confirm=True
                )
                moved = [pi.id]
                if days_ago == 4:
                    moved.append(refunds.create(ctx, payment_intent=pi.id, amount=300).id)
                db.session.execute(
                    sa.update(BalanceTransaction).where(BalanceTransaction.source.in_(moved)).values(created_at=at)
                )
                db.session.commit()
        db.session.remove()
    return Books(tenant.id, merchants)


def _settlements(app, books: Books) -> list[tuple]:
    names = {merchant: name for name, merchant in books.merchants.items()}
    with app.app_context(), tenant_context(db.session, books.tenant_id):
        rows = db.session.execute(sa.select(Settlement)).scalars().all()
        result = sorted(
            (
                names[s.merchant_id],
                s.business_day.isoformat(),
                s.charges_count,
                s.charges_amount,
                s.refunds_count,
                s.refunds_amount,
                s.fees,
                s.net,
            )
            for s in rows
        )
        db.session.remove()
    return result


def _run_state(app, tenant_id, run_id) -> tuple:
    with app.app_context(), tenant_context(db.session, tenant_id):
        run = db.session.get(ClearingRun, (tenant_id, run_id))
        state = (run.status, run.processed, run.total, run.outcome)
        db.session.remove()
    return state


def test_a_worker_killed_during_a_settlement_run_and_the_rerun_settle_as_one_uninterrupted_run(
    app, make, workers, owner_engine
):
    control = _books_with_payments(app, make, "settlecontrol")
    killed = _books_with_payments(app, make, "settlekill")
    with app.app_context(), tenant_context(db.session, control.tenant_id):
        run = clearing_jobs.start_settlement(control.tenant_id, requested_by=FINANCE.email)
        expected_outcome = clearing_jobs.run_clearing(str(control.tenant_id), str(run.id))
        db.session.remove()
    expected = _settlements(app, control)
    assert len(expected) == 6 and expected_outcome["settlements"] == 6

    with app.app_context(), tenant_context(db.session, killed.tenant_id):
        groups = clearing_jobs.settlement.due_groups(killed.tenant_id)
        second = next(name for name, m in killed.merchants.items() if m == groups[1].merchant_id)
        run = clearing_jobs.start_settlement(killed.tenant_id, requested_by=FINANCE.email)
        run_id = run.id
        db.session.remove()
    # The second group (the first day's other merchant) waits for its pending account.
    lock = _account_lock(owner_engine, killed, second, "merchant_pending", "USD")
    worker = workers.start("a", "--burst", "--without-scheduler", queue="clearing")
    _kill_when_waiting(owner_engine, workers, worker, lock)

    status, processed, total, _ = _run_state(app, killed.tenant_id, run_id)
    assert (status, processed, total) == ("running", 1, 6)
    assert len(_settlements(app, killed)) == 1
    with app.app_context():
        assert _ledger_problems() == []
        db.session.remove()

    job_id = f"clearing-run-{run_id}"
    _recover_abandoned_job(app, "clearing", job_id)
    _run_to_the_end(app, workers, "b", "clearing", job_id)

    status, processed, total, outcome = _run_state(app, killed.tenant_id, run_id)
    assert (status, processed) == ("succeeded", 6)
    assert outcome == expected_outcome
    assert _settlements(app, killed) == expected
    assert _balances(app, killed) == _balances(app, control)
    with app.app_context(), tenant_context(db.session, killed.tenant_id):
        entries = db.session.execute(sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'settlement'"))
        assert entries.scalar_one() == 6
        assert _ledger_problems() == []
        db.session.remove()


# --- payout batch -------------------------------------------------------------------------------------


def _books_with_payouts(app, make, slug: str) -> Books:
    """Two merchants with bank accounts and pending payouts in EUR and USD (two batches to make)."""
    tenant = make.tenant(slug)
    merchants = {
        name: make.merchant(tenant, name, f"owner@{name.lower()}.example.com", password=None)
        for name in ("Coffee", "Tea")
    }
    with app.app_context(), tenant_context(db.session, tenant.id):
        for n, merchant in enumerate(merchants[name] for name in sorted(merchants)):
            ctx = MerchantContext(tenant.id, merchant, False)
            for currency in ("eur", "usd"):
                balance_operations.create_topup(ctx, amount=100_000, currency=currency)
                for amount in (10_000 + n, 20_000 + n):
                    balance_operations.create_payout(ctx, amount=amount, currency=currency)
        payouts.set_bank_account(
            tenant.id, merchants["Coffee"], holder_name="Coffee GmbH", account="DE89370400440532013000", actor=FINANCE
        )
        payouts.set_bank_account(
            tenant.id, merchants["Tea"], holder_name="Tea B.V.", account="NL91ABNA0417164300", actor=FINANCE
        )
        db.session.commit()
        db.session.remove()
    return Books(tenant.id, merchants)


def _batches(app, books: Books) -> dict:
    names = {merchant: name for name, merchant in books.merchants.items()}
    with app.app_context(), tenant_context(db.session, books.tenant_id):
        batches = db.session.execute(sa.select(PayoutBatch)).scalars().all()
        by_id = {b.id: b.currency for b in batches}
        sent = db.session.execute(
            sa.select(Payout.merchant_id, Payout.amount, Payout.currency, Payout.status, Payout.batch_id)
        ).all()
        result = {
            "batches": sorted((b.currency, b.count, b.total, b.created_by) for b in batches),
            "payouts": sorted(
                (names[m], amount, currency, status, by_id.get(batch)) for m, amount, currency, status, batch in sent
            ),
        }
        db.session.remove()
    return result


def test_a_worker_killed_during_a_payout_batch_run_and_the_rerun_make_each_batch_once(app, make, workers, owner_engine):
    control = _books_with_payouts(app, make, "batchcontrol")
    killed = _books_with_payouts(app, make, "batchkill")
    with app.app_context(), tenant_context(db.session, control.tenant_id):
        run = clearing_jobs.start_payout_batch(control.tenant_id, requested_by=FINANCE.email)
        expected_outcome = clearing_jobs.run_clearing(str(control.tenant_id), str(run.id))
        db.session.remove()
    expected = _batches(app, control)
    assert [b[:3] for b in expected["batches"]] == [("EUR", 4, 60_002), ("USD", 4, 60_002)]

    with app.app_context(), tenant_context(db.session, killed.tenant_id):
        run = clearing_jobs.start_payout_batch(killed.tenant_id, requested_by=FINANCE.email)
        run_id = run.id
        db.session.remove()
    # Batches are made EUR first, then USD: the USD batch waits for a merchant's reserved USD account.
    lock = _account_lock(owner_engine, killed, "Tea", "merchant_reserved", "USD")
    worker = workers.start("a", "--burst", "--without-scheduler", queue="clearing")
    _kill_when_waiting(owner_engine, workers, worker, lock)

    status, processed, total, _ = _run_state(app, killed.tenant_id, run_id)
    assert (status, processed, total) == ("running", 1, 2)
    halfway = _batches(app, killed)
    assert [b[:3] for b in halfway["batches"]] == [("EUR", 4, 60_002)]
    assert {p[2:4] for p in halfway["payouts"]} == {("EUR", "in_transit"), ("USD", "pending")}
    with app.app_context():
        assert _ledger_problems() == []
        db.session.remove()

    job_id = f"clearing-run-{run_id}"
    _recover_abandoned_job(app, "clearing", job_id)
    _run_to_the_end(app, workers, "b", "clearing", job_id)

    status, processed, total, outcome = _run_state(app, killed.tenant_id, run_id)
    assert (status, processed) == ("succeeded", 2)
    strip = lambda o: {**o, "batches": sorted((b["currency"], b["count"], b["total"]) for b in o["batches"])}  # noqa: E731
    assert strip(outcome) == strip(expected_outcome)
    assert _batches(app, killed) == expected
    assert _balances(app, killed) == _balances(app, control)
    with app.app_context(), tenant_context(db.session, killed.tenant_id):
        entries = db.session.execute(sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'payout_batch.sent'"))
        assert entries.scalar_one() == 2
        assert _ledger_problems() == []
        db.session.remove()


# --- webhook delivery ---------------------------------------------------------------------------------


class HoldingEndpoint:
    """A merchant's webhook endpoint that holds the first POST unanswered until released, and answers the
    others 200 at once."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with endpoint.lock:
                    endpoint.bodies.append(body)
                    first = len(endpoint.bodies) == 1
                if first:
                    endpoint.first_arrived.set()
                    endpoint.release.wait(60)  # the worker is killed meanwhile: nobody reads the answer
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def event_ids(self) -> list[str]:
        with self.lock:
            return [json.loads(body)["id"] for body in self.bodies]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def holding_endpoint():
    server = HoldingEndpoint()
    yield server
    server.stop()


def _delivery(owner_engine) -> tuple:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT id, event_id, status, attempts, delivered_at IS NOT NULL FROM webhook_deliveries")
        ).one()


def test_a_worker_killed_during_a_webhook_delivery_and_the_redelivery_record_it_delivered_once(
    app, make, workers, holding_endpoint, owner_engine
):
    tenant = make.tenant("killhooks")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    make.channel_account(tenant.id)
    with app.app_context(), tenant_context(db.session, tenant.id):
        webhooks.create_endpoint(
            tenant.id,
            merchant,
            False,
            holding_endpoint.url,
            ["payment_intent.succeeded"],
            Actor.system(),
            allow_private=True,
        )
        ctx = MerchantContext(tenant.id, merchant, False)
        pi = intents.create(ctx, amount=2_000, currency="usd", payment_method="pm_card_visa", confirm=True)
        assert pi.status == "succeeded"
        db.session.remove()

    # Worker A dispatches the event and makes the first attempt, which the endpoint holds: killed there.
    worker = workers.start("a", "--burst", "--without-scheduler", queue="webhooks")
    while not holding_endpoint.first_arrived.wait(0.1):
        assert worker.poll() is None, f"worker A ended before delivering\n{workers.logs()}"
    os.killpg(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    holding_endpoint.release.set()

    delivery_id, event_id, status, attempts, delivered = _delivery(owner_engine)
    assert (status, attempts, delivered) == ("pending", 1, False)
    assert holding_endpoint.event_ids() == [event_id]

    # RQ gives the dead worker's job back (its lease ran out); and the attempt, overdue as it never reported
    # back, is taken up by the per-minute sweep, which queues the next attempt after it.
    retried = f"webhook-{delivery_id}-1"
    _recover_abandoned_job(app, "webhooks", retried)
    with app.app_context():
        assert retried in jobs.queue("webhooks").get_job_ids()
    age(owner_engine, "webhook_deliveries", "next_attempt_at", minutes=3)
    with app.app_context():
        assert webhooks.sweep()["deliveries"] == 1
        db.session.remove()
    # A new worker runs both: the first attempt is already counted, so its job sends nothing again; the
    # second attempt is delivered.
    _run_to_the_end(app, workers, "b", "webhooks", retried, f"webhook-{delivery_id}-2")

    assert _delivery(owner_engine)[2:] == ("succeeded", 2, True)
    assert holding_endpoint.event_ids() == [event_id, event_id], "the endpoint got the event at most twice"
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 1
    # Any further job, sweep or duplicate, leaves the delivered delivery alone and sends nothing.
    with app.app_context():
        assert webhooks.deliver(tenant.id, delivery_id) == "skipped"
        assert webhooks.deliver(tenant.id, delivery_id, 2) == "skipped"
        assert webhooks.sweep()["deliveries"] == 0
        db.session.remove()
    assert _delivery(owner_engine)[2:] == ("succeeded", 2, True)
    assert len(holding_endpoint.event_ids()) == 2
