"""A worker killed (SIGKILL) in the middle of an export, and the export finished by another worker:
one complete file with every row once, no partial file left, the progress in the database and in
the job's meta.

The worker is a real `python -m flask worker --queue exports` process writing an Excel file of
30,000 seeded payments; the test kills it once it has written some chunks and before it has
finished, then does what the platform does: the sweep finds the export quiet for `STALE_AFTER`
(the test passes it a later `now` instead of waiting) and queues it again, and a new worker runs it.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from rq.job import Job
from seeding import seed_payments
from workers import Workers, wait_for

from clearing import exports, listings
from clearing.models import ReportExport
from core.db import db
from portal import jobs
from tenants.audit import Actor
from tenants.isolation import tenant_context

ROWS = 30_000


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    # The workers write where the web app reads the files from.
    group.env["PAYPLAT_INSTANCE_DIR"] = str(app.config["INSTANCE_DIR"])
    yield group
    group.stop_all()


def _state(owner_engine, export_id) -> tuple:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.select(
                ReportExport.status, ReportExport.rows_done, ReportExport.rows_total, ReportExport.attempts
            ).where(ReportExport.id == export_id)
        ).one()


def test_a_worker_killed_mid_export_and_a_new_one_give_one_complete_file(app, make, owner_engine, workers):
    tenant = make.tenant("killexport")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    seed_payments(owner_engine, tenant.id, merchant, ROWS)
    with app.app_context(), tenant_context(db.session, tenant.id):
        scope = listings.Scope(tenant.id, merchant, exports.tenant_zone(tenant.id))
        export = exports.request_export(scope, "payments", "xlsx", {}, Actor(kind="user", email="owner@x.example.com"))
        export_id, file_name = export.id, export.file_name
        db.session.remove()
    folder = Path(app.config["INSTANCE_DIR"]) / "exports"

    worker = workers.start("first", "--burst", queue="exports")
    wait_for(lambda: _state(owner_engine, export_id)[1] >= 3 * exports.CHUNK, 60, "the first worker to write some rows")
    os.killpg(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    status, done, total, _ = _state(owner_engine, export_id)
    assert status == "running" and 0 < done < ROWS, workers.logs()
    assert total == ROWS
    assert not (folder / file_name).exists(), "a file under the final name before the export finished"
    # The job's progress is in its meta too (what the dead worker last saved).
    with app.app_context():
        job = Job.fetch(f"export-{export_id}-0", connection=jobs.redis_connection())
        assert 0 < job.meta["rows_done"] <= done
        # The sweep does not touch a run that progressed moments ago; once quiet long enough, it queues it again.
        assert exports.sweep()["resumed"] == 0
        later = datetime.now(UTC) + exports.STALE_AFTER + timedelta(seconds=5)
        assert exports.sweep(now=later)["resumed"] == 1
        db.session.remove()

    second = workers.start("second", "--burst", queue="exports")
    assert second.wait(120) == 0, workers.logs()
    status, done, total, attempts = _state(owner_engine, export_id)
    assert (status, done, total) == ("succeeded", ROWS, ROWS), workers.logs()
    assert attempts == 3  # taken over by the first run, bumped by the sweep, taken over by the second
    book = openpyxl.load_workbook(folder / file_name, read_only=True)
    try:
        ids = [row[0] for row in book.worksheets[0].iter_rows(min_row=2, values_only=True)]
    finally:
        book.close()
    assert len(ids) == ROWS and len(set(ids)) == ROWS
    assert ids[0] == "pi_seed00000001" and ids[-1] == f"pi_seed{ROWS:08d}"  # newest first, as the list
    assert sorted(path.name for path in folder.iterdir() if path.name.startswith(file_name)) == [file_name]
