"""Clearing jobs on RQ's `clearing` queue: settlement runs (on demand and on a schedule) and
payout batch runs (on demand).

- `start_settlement` records a run (queued) and enqueues `run_settlement`, unless a run of the
  tenant is already queued or running (that one is returned: two clicks start one run).
- `run_settlement` settles what is due, one committed transaction per merchant-day, with the
  run's progress (`processed` of `total`) written in the same transactions; killed halfway and
  run again it continues where it stopped and ends with the same result.
- `sweep` runs every five minutes (a chain of scheduled jobs with deterministic ids, started by
  the first worker, as the webhook sweep is): for each active tenant with something due and no
  run in progress it starts a scheduled run, and it re-queues runs left behind by a dead worker.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from rq import Retry, get_current_job

from clearing import payouts, settlement
from clearing.models import ClearingRun
from core import queue
from core.db import db
from tenants import isolation
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
    tenant_id: uuid.UUID, kind: str, *, trigger: str = "manual", requested_by: str | None = None
) -> ClearingRun:
    """Record a run of `kind` and queue it (commits); a run of that kind in progress is returned instead."""
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
    db.session.commit()
    _enqueue(tenant_id, run.id)
    return run


def start_settlement(tenant_id: uuid.UUID, *, trigger: str = "manual", requested_by: str | None = None) -> ClearingRun:
    return start_run(tenant_id, "settlement", trigger=trigger, requested_by=requested_by)


def start_payout_batch(tenant_id: uuid.UUID, *, requested_by: str | None = None) -> ClearingRun:
    return start_run(tenant_id, "payout_batch", trigger="manual", requested_by=requested_by)


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


_RUNNERS = {"settlement": _settle, "payout_batch": _batch}


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
    run.status = "succeeded"
    run.error = None
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


def _slot(moment: float) -> int:
    return int(moment) // SWEEP_INTERVAL * SWEEP_INTERVAL


def schedule_sweep(after: int | None = None) -> None:
    """Make sure the next sweep is scheduled (one job per slot, whoever asks)."""
    slot = max(_slot(time.time()), after or 0) + SWEEP_INTERVAL
    try:
        with isolation.platform_scope(db.session):
            queue.enqueue(
                QUEUE,
                sweep,
                slot,
                job_id=f"clearing-sweep-{slot}",
                if_absent=True,
                at=datetime.fromtimestamp(slot, UTC),
            )
    except Exception:  # noqa: BLE001  (best effort: the next sweep or worker start tries again)
        log.warning("could not schedule the clearing sweep", exc_info=True)


def sweep(slot: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Start the scheduled settlement runs that are due and re-queue abandoned ones."""
    if slot is not None:
        schedule_sweep(after=slot)
    now = now or _now()
    with isolation.platform_scope(db.session):
        tenant_ids = db.session.execute(sa.select(Tenant.id).where(Tenant.status == "active")).scalars().all()
    db.session.commit()
    started = resumed = 0
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
    return {"started": started, "resumed": resumed}
