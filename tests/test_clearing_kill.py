"""A worker killed (SIGKILL) in the middle of a statement import: nothing of the file is imported,
and running the import again gives the result of one uninterrupted run.

The worker is a real `python -m flask worker --queue clearing` process. To stop it at an exact
point without any hook in the platform, the stored statement is replaced by a named pipe (FIFO)
that the test feeds: the worker counts the lines (the test writes the whole file once), then
opens it again to stream it into COPY; the test writes half the lines, waits until the worker's
import transaction is open in PostgreSQL, and kills the worker. PostgreSQL aborts the dead
connection's transaction. The test puts the real file back and runs the same run again, as a
restarted worker would.
"""

from __future__ import annotations

import io
import os
import signal

import pytest
import sqlalchemy as sa
from workers import Workers, wait_for

import ledger
from clearing import jobs, reconciliation
from clearing.models import ClearingRun, StatementImport, StatementLine, SuspenseItem
from clearing.statement_formats import ColumnMapping
from core.db import db
from core.money import to_major
from payments import intents
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

FINANCE = Actor(kind="user", email="finance@kill.example.com")


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    yield group
    group.stop_all()


def _statement(app, tenant_id, merchant, channel) -> bytes:
    refs = []
    ctx = intents.MerchantContext(tenant_id, merchant, livemode=False)
    with app.app_context(), tenant_context(db.session, tenant_id):
        for amount in (1_000, 2_000, 3_000):
            refs.append(intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True))
        rows = [(pi.channel_reference, str(to_major(pi.amount, "USD"))) for pi in refs]
        day = refs[0].created_at.date().isoformat()
        db.session.remove()
    rows += [(f"ch_unknown_{n}", "1.00") for n in range(200)]
    lines = ["ref,amount,currency,date,type"] + [f"{ref},{amount},USD,{day},charge" for ref, amount in rows]
    return ("\n".join(lines) + "\n").encode()


def _state(app, tenant_id):
    with app.app_context(), tenant_context(db.session, tenant_id):
        lines = db.session.execute(
            sa.select(StatementLine.status, sa.func.count()).group_by(StatementLine.status)
        ).all()
        items = db.session.execute(sa.select(SuspenseItem.kind, sa.func.count()).group_by(SuspenseItem.kind)).all()
        balance = ledger.account(tenant_id, "suspense", "USD", False).balance
        with platform_scope(db.session):
            problems = [str(p) for p in ledger.check(db.session)]
        db.session.remove()
    return {"lines": dict(lines), "items": dict(items), "suspense": balance, "ledger": problems}


def test_a_worker_killed_during_an_import_leaves_nothing_and_the_rerun_completes(app, make, workers, owner_url):
    tenant = make.tenant("killrecon")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    channel = make.channel_account(tenant.id)
    data = _statement(app, tenant.id, merchant, channel)
    upload_dir = workers.folder / "instance" / "uploads"
    with app.app_context(), tenant_context(db.session, tenant.id):
        reconciliation.save_mapping(
            tenant.id,
            channel,
            ColumnMapping(reference="ref", amount="amount", date="date", currency="currency", type="type"),
            FINANCE,
        )
        db.session.commit()
        stored = reconciliation.store_upload(
            tenant.id,
            io.BytesIO(data),
            filename="day.csv",
            fmt="csv",
            channel_account_id=channel,
            livemode=None,
            upload_dir=upload_dir,
            actor=FINANCE,
        )
        import_id, path = stored.import_.id, stored.import_.storage_path
        os.unlink(path)
        os.mkfifo(path)
        run_id = jobs.start_import(tenant.id, import_id, requested_by=FINANCE.email).id
        db.session.remove()

    worker = workers.start("a", "--burst", queue="clearing")
    with open(path, "wb") as fifo:  # blocks until the worker opens it: the line count
        fifo.write(data)
    # The count is done (the run knows its total) before the pipe is opened again: a second writer
    # opened while the count still reads would feed the count instead of the import.
    engine = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)

    def total() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(ClearingRun.total).where(ClearingRun.id == run_id)).scalar_one()

    wait_for(total, 30, "the worker to count the statement's lines")
    assert total() == data.count(b"\n")
    half = data[: len(data) // 2]
    with open(path, "wb") as fifo:  # the import itself
        fifo.write(half)
        fifo.flush()

        def copying() -> int:
            with engine.connect() as conn:
                return conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'COPY statement_staging%'"
                    )
                ).scalar_one()

        try:
            wait_for(copying, 30, "the worker's import to be copying rows")
        finally:
            engine.dispose()
        os.killpg(worker.pid, signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL

    killed = _state(app, tenant.id)
    assert killed["lines"] == {} and killed["items"] == {} and killed["suspense"] == 0, workers.logs()
    assert killed["ledger"] == []

    os.unlink(path)
    with open(path, "wb") as real:
        real.write(data)
    with app.app_context(), tenant_context(db.session, tenant.id):
        jobs.run_clearing(str(tenant.id), str(run_id))  # what the restarted worker runs
        done = db.session.get(ClearingRun, (tenant.id, run_id))
        assert (done.status, done.outcome["matched"], done.outcome["long"]) == ("succeeded", 3, 200)
        assert db.session.get(StatementImport, (tenant.id, import_id)).status == "succeeded"
        db.session.remove()
    assert _state(app, tenant.id) == {
        "lines": {"matched": 3, "long": 200},
        "items": {"long": 200},
        "suspense": -200 * 100,
        "ledger": [],
    }
