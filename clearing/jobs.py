"""Clearing jobs on RQ's `clearing` queue: every clearing run (settlement, payout batches,
statement imports) is a `ClearingRun` row executed by `run_clearing`.

- `start_settlement` / `start_payout_batch` record a run (queued) and enqueue it, unless a run
  of that kind is already queued or running (that one is returned: two clicks start one run);
  `start_import` queues one statement import in a run of its own.
- `run_clearing` does the run's work, with progress (`processed` of `total`) written as it goes;
  killed halfway and run again it continues where it stopped and ends with the same result. A
  run that fails on its last retry is marked failed; a statement refused for its content too.
- `sweep` runs every five minutes (a chain of scheduled jobs with deterministic ids, started by
  the first worker, as the webhook sweep is): for each active tenant with money due and no
  settlement in progress it starts a scheduled settlement; once a day, after the tenant's cut-off,
  it starts a payout batch run when payouts can be sent; it re-queues runs left behind by a dead
  worker; and once a day it queues `fetch_and_import` of yesterday's statement for each channel
  account whose adapter offers statement downloads (the `stripe` adapter's balance transactions).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from rq import Retry, get_current_job

from clearing import payouts, reconciliation, settlement
from clearing.models import ClearingRun, StatementImport
from core import queue, sweeps
from core.db import db
from payments.channels import ADAPTERS
from payments.models import ChannelAccount
from tenants import audit, isolation
from tenants.audit import Actor
from tenants.models import Tenant

log = logging.getLogger(__name__)

QUEUE = "clearing"
SWEEP_INTERVAL = 300  # seconds
STALE_AFTER = timedelta(minutes=10)  # a run with no progress for this long is re-queued
ACTIVE = ("queued", "running")


def _now() -> datetime:
    return datetime.now(UTC)


def _job_id(run_id: uuid.UUID) -> str:
    return f"clearing-run-{run_id}"


def active_run(tenant_id: uuid.UUID, kind: str = "settlement") -> ClearingRun | None:
    return db.session.execute(
        sa.select(ClearingRun)
        .where(ClearingRun.tenant_id == tenant_id, ClearingRun.kind == kind, ClearingRun.status.in_(ACTIVE))
        .order_by(ClearingRun.created_at)
        .limit(1)
    ).scalar_one_or_none()


def start_run(
    tenant_id: uuid.UUID,
    kind: str,
    *,
    trigger: str = "manual",
    requested_by: str | None = None,
    actor: Actor | None = None,
) -> ClearingRun:
    """Record a run of `kind` and queue it (commits); a run of that kind in progress is returned
    instead. The audit log names `actor` (the system when None) as who started it."""
    if kind not in _RUNNERS:
        raise ValueError(f"unknown clearing run kind {kind!r}")
    # One run of a kind at a time per tenant: serialise the check on the tenant's row.
    db.session.execute(sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    existing = active_run(tenant_id, kind)
    if existing is not None:
        db.session.rollback()
        return active_run(tenant_id, kind) or existing
    run = ClearingRun(tenant_id=tenant_id, id=uuid.uuid4(), kind=kind, trigger=trigger, requested_by=requested_by)
    db.session.add(run)
    audit.record(
        tenant_id,
        actor or Actor.system(),
        "clearing_run.started",
        "clearing_run",
        run.id,
        audit.created(kind=kind, trigger=trigger),
    )
    db.session.commit()
    _enqueue(tenant_id, run.id)
    return run


def start_settlement(
    tenant_id: uuid.UUID, *, trigger: str = "manual", requested_by: str | None = None, actor: Actor | None = None
) -> ClearingRun:
    return start_run(tenant_id, "settlement", trigger=trigger, requested_by=requested_by, actor=actor)


def start_payout_batch(
    tenant_id: uuid.UUID, *, requested_by: str | None = None, actor: Actor | None = None
) -> ClearingRun:
    return start_run(tenant_id, "payout_batch", trigger="manual", requested_by=requested_by, actor=actor)


def start_import(tenant_id: uuid.UUID, import_id: uuid.UUID, *, requested_by: str | None = None) -> ClearingRun:
    """Queue the import of a stored statement, in a run of its own (commits); an import already
    queued or running keeps its run."""
    row = db.session.get(StatementImport, (tenant_id, import_id), with_for_update=True)
    if row.run_id is not None:
        run = db.session.get(ClearingRun, (tenant_id, row.run_id))
        if run is not None and run.status in ACTIVE:
            db.session.rollback()
            return run
    run = ClearingRun(
        tenant_id=tenant_id, id=uuid.uuid4(), kind="reconciliation", trigger="manual", requested_by=requested_by
    )
    db.session.add(run)
    db.session.flush()
    row.run_id, row.status = run.id, "queued"
    db.session.commit()
    _enqueue(tenant_id, run.id)
    return run


def _enqueue(tenant_id: uuid.UUID, run_id: uuid.UUID) -> None:
    with isolation.tenant_context(db.session, tenant_id):
        queue.enqueue(
            QUEUE,
            run_clearing,
            str(tenant_id),
            str(run_id),
            job_id=_job_id(run_id),
            if_absent=True,
            retry=Retry(max=3, interval=[10, 60, 300]),
        )


def _settle(tenant_id: uuid.UUID, run: ClearingRun) -> dict:
    return settlement.settle(tenant_id, run)


def _batch(tenant_id: uuid.UUID, run: ClearingRun) -> dict:
    return payouts.create_batches(tenant_id, run, run.requested_by)


def _reconcile(tenant_id: uuid.UUID, run: ClearingRun) -> dict:
    import_id = db.session.execute(
        sa.select(StatementImport.id).where(StatementImport.tenant_id == tenant_id, StatementImport.run_id == run.id)
    ).scalar_one()
    return reconciliation.run_import(tenant_id, import_id, run)


_RUNNERS = {"settlement": _settle, "payout_batch": _batch, "reconciliation": _reconcile}


def run_clearing(tenant_id: str, run_id: str) -> dict:
    """The job: do what the run is for, recording progress and outcome on it."""
    tenant, run_key = uuid.UUID(tenant_id), uuid.UUID(run_id)
    run = db.session.get(ClearingRun, (tenant, run_key), with_for_update=True)
    if run is None or run.status in ("succeeded", "failed"):
        db.session.rollback()
        return {} if run is None else run.outcome
    run.status = "running"
    run.started_at = run.started_at or _now()
    db.session.commit()
    try:
        outcome = _RUNNERS[run.kind](tenant, run)
    except Exception as exc:
        db.session.rollback()
        run = db.session.get(ClearingRun, (tenant, run_key))
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        job = get_current_job()
        if job is None or not job.retries_left:
            # RQ will not try again: the run ends here, and a new one may be started.
            run.status = "failed"
            run.finished_at = _now()
        db.session.commit()
        raise  # RQ retries while it has retries left; a re-run continues where this one stopped
    run = db.session.get(ClearingRun, (tenant, run_key))
    run.outcome = outcome
    # A file refused for its content is not retried: the run ends with the refusal.
    run.status, run.error = ("failed", outcome["error"]) if "error" in outcome else ("succeeded", None)
    run.finished_at = _now()
    db.session.commit()
    log.info("%s run %s for tenant %s: %s", run.kind, run_key, tenant, outcome)
    return outcome


def runs(tenant_id: uuid.UUID, limit: int = 20) -> list[ClearingRun]:
    return list(
        db.session.execute(
            sa.select(ClearingRun)
            .where(ClearingRun.tenant_id == tenant_id)
            .order_by(ClearingRun.created_at.desc(), ClearingRun.id.desc())
            .limit(limit)
        ).scalars()
    )


# --- the schedule --------------------------------------------------------------------------


def schedule_sweep(after: int | None = None) -> None:
    """Make sure the next sweep is scheduled (one job per slot, whoever asks)."""
    queue.schedule_next(
        QUEUE,
        sweep,
        SWEEP_INTERVAL,
        "clearing-sweep",
        after=after,
        scope=lambda: isolation.platform_scope(db.session),
    )


@sweeps.recorded("clearing", "Settlement runs, statement fetches, payout batches", SWEEP_INTERVAL)
def sweep(slot: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Start the scheduled settlement runs that are due and re-queue abandoned ones."""
    if slot is not None:
        schedule_sweep(after=slot)
    now = now or _now()
    with isolation.platform_scope(db.session):
        tenant_ids = db.session.execute(sa.select(Tenant.id).where(Tenant.status == "active")).scalars().all()
    db.session.commit()
    started = resumed = fetches = batches = 0
    for tenant_id in tenant_ids:
        with isolation.tenant_context(db.session, tenant_id):
            stale = (
                db.session.execute(
                    sa.select(ClearingRun).where(
                        ClearingRun.tenant_id == tenant_id,
                        ClearingRun.kind != "settlement",
                        ClearingRun.status.in_(ACTIVE),
                        sa.func.coalesce(ClearingRun.started_at, ClearingRun.created_at) < now - STALE_AFTER,
                    )
                )
                .scalars()
                .all()
            )
            for other in stale:
                _enqueue(tenant_id, other.id)
                resumed += 1
            fetches += _schedule_fetches(tenant_id, now)
            batches += _schedule_payout_batch(tenant_id, now)
            run = active_run(tenant_id)
            if run is None:
                if settlement.due_groups(tenant_id, now):
                    start_settlement(tenant_id, trigger="schedule")
                    started += 1
                else:
                    db.session.rollback()
            elif (run.started_at or run.created_at) < now - STALE_AFTER:
                db.session.rollback()
                _enqueue(tenant_id, run.id)
                resumed += 1
            else:
                db.session.rollback()
    return {"started": started, "resumed": resumed, "fetches": fetches, "payout_batches": batches}


def _schedule_payout_batch(tenant_id: uuid.UUID, now: datetime) -> int:
    """Once a day, after the tenant's cut-off (its local time), send what payouts can be sent."""
    terms = settlement.tenant_terms(tenant_id)
    zone = settlement.tenant_zone(tenant_id)
    local = now.astimezone(zone)
    slot = local.date().isoformat()
    if local < datetime.combine(local.date(), terms.cutoff, zone) or not any(
        g.count > g.without_account for g in payouts.pending_summary(tenant_id)
    ):
        db.session.rollback()
        return 0
    taken = db.session.execute(
        sa.select(ClearingRun.id).where(
            ClearingRun.tenant_id == tenant_id, ClearingRun.kind == "payout_batch", ClearingRun.slot == slot
        )
    ).first()
    if taken is not None or active_run(tenant_id, "payout_batch") is not None:
        db.session.rollback()
        return 0
    run = ClearingRun(tenant_id=tenant_id, id=uuid.uuid4(), kind="payout_batch", trigger="schedule", slot=slot)
    db.session.add(run)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # another sweep took the slot a moment ago
        db.session.rollback()
        return 0
    _enqueue(tenant_id, run.id)
    return 1


# --- statements fetched from channels ----------------------------------------------------------


def _schedule_fetches(tenant_id: uuid.UUID, now: datetime) -> int:
    """Once a day, yesterday's statement (UTC day) of each active channel account that offers one."""
    day = (now - timedelta(days=1)).date()
    downloadable = [name for name, adapter in ADAPTERS.items() if adapter.capabilities.statements]
    fetched = StatementImport.filename.like(f"% {day.isoformat()} (fetched)")
    due = (
        db.session.execute(
            sa.select(ChannelAccount.id).where(
                ChannelAccount.tenant_id == tenant_id,
                ChannelAccount.status == "active",
                ChannelAccount.type.in_(downloadable),
                ~sa.exists().where(
                    StatementImport.tenant_id == ChannelAccount.tenant_id,
                    StatementImport.channel_account_id == ChannelAccount.id,
                    StatementImport.format == "channel",
                    fetched,
                ),
            )
        )
        .scalars()
        .all()
    )
    db.session.rollback()
    for account_id in due:
        queue.enqueue(
            QUEUE,
            fetch_and_import,
            str(tenant_id),
            str(account_id),
            day.isoformat(),
            job_id=f"clearing-fetch-{account_id}-{day.isoformat()}",
            if_absent=True,
            retry=Retry(max=3, interval=[60, 300, 900]),
        )
    return len(due)


def fetch_and_import(tenant_id: str, account_id: str, day: str) -> dict:
    """The job: download the day's statement through the channel and queue its import."""
    tenant = uuid.UUID(tenant_id)
    stored = reconciliation.fetch_statement(
        tenant,
        uuid.UUID(account_id),
        date.fromisoformat(day),
        upload_dir=Path(current_app.config["UPLOAD_DIR"]),
        actor=Actor.system(),
    )
    if stored.already_imported:
        return {"import": str(stored.import_.id), "already_imported": True}
    run = start_import(tenant, stored.import_.id, requested_by=None)
    return {"import": str(stored.import_.id), "run": str(run.id)}
