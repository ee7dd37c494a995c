"""RQ plumbing: queues, enqueueing with the tenant in `job.meta`, and the job class that runs
every job inside the app context with the tenant (and its RLS setting) restored.

Jobs themselves live beside the code they run (`portal/mail.py`, later `clearing/jobs.py`).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core.db import db
from portal import logs, metrics
from tenants import isolation

QUEUES = ("default", "mail", "channels", "webhooks", "clearing", "exports")


def redis_connection() -> Redis:
    app = current_app._get_current_object()  # noqa: SLF001
    conn = app.extensions.get("redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"])
        app.extensions["redis"] = conn
    return conn


def queue(name: str) -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(QUEUES)}")
    return Queue(name, connection=redis_connection(), job_class=AppJob)


# A job in one of these states will still run: `if_absent` keeps it instead of adding another.
LIVE_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED)


def enqueue(
    queue_name: str, func, *args: Any, at: datetime | None = None, if_absent: bool = False, **kwargs: Any
) -> Job:
    """Queue `func(*args)`; the current tenant travels in the job's meta.

    `at`: run at that time instead, through RQ's scheduler (the worker's `--with-scheduler`).
    `if_absent` (needs a deterministic `job_id`): a job of that id that is still queued, scheduled,
    deferred or running is kept and returned; a finished, failed or stopped one is replaced.
    """
    tenant = isolation.current_tenant_id()
    meta = {"tenant_id": str(tenant) if tenant else None, "platform_scope": isolation.in_platform_scope()}
    target = queue(queue_name)
    if if_absent:
        job_id = kwargs.get("job_id")
        if not job_id:
            raise ValueError("if_absent needs a job_id")
        try:
            existing = AppJob.fetch(job_id, connection=target.connection)
        except NoSuchJobError:
            existing = None
        if existing is not None:
            if existing.get_status(refresh=False) in LIVE_STATUSES:
                return existing
            existing.delete()
    if at is not None:
        return target.enqueue_at(at, func, *args, meta=meta, **kwargs)
    return target.enqueue(func, *args, meta=meta, **kwargs)


class AppJob(Job):
    """Runs in the worker's app context with the job's tenant restored; its log lines carry its id
    and its duration is observed (`portal.metrics.JOB_DURATION`)."""

    def perform(self) -> Any:
        tenant = self.meta.get("tenant_id")
        started = time.perf_counter()
        outcome = "failed"
        bound = logs.bind_job(self.id)
        try:
            if tenant:
                isolation.activate_tenant(db.session, uuid.UUID(tenant))
            elif self.meta.get("platform_scope"):
                isolation.activate_platform_scope(db.session)
            else:
                isolation.reset(db.session)
            result = super().perform()
            outcome = "finished"
            return result
        finally:
            db.session.remove()
            isolation.reset()
            metrics.JOB_DURATION.labels(self.origin, self.func_name, outcome).observe(time.perf_counter() - started)
            logs.unbind_job(bound)


def schedule_sweeps() -> None:
    """Make sure each sweep chain (webhooks, clearing, exports) has its next run scheduled; best effort,
    and one job per slot whoever asks (`core.queue.schedule_next`)."""
    from clearing import exports
    from clearing import jobs as clearing_jobs
    from payments import webhooks

    webhooks.schedule_sweep()
    clearing_jobs.schedule_sweep()
    exports.schedule_sweep()


class AppWorker(SimpleWorker):
    """The worker of `flask worker`: RQ's `SimpleWorker` (jobs run in its own process, no fork per job).

    Its log lines name a job by id only, never by its arguments (an e-mail job's carry the message, links
    with tokens included), and the lines RQ writes about a job (its failure, its traceback) carry the job's id.

    When `keeps_sweeps`, it also makes sure the sweep chains are scheduled with each of RQ's maintenance runs
    (at start-up and every `maintenance_interval`, 10 minutes). The sweeps re-queue what waits in PostgreSQL
    (undispatched events, overdue deliveries, unknown channel outcomes, stale runs); their chain lives in
    Redis, so a Redis that comes back without its data (restarted without persistence, a failover) would
    otherwise stop them until a worker restarts. RQ's own worker outlives a Redis outage (it retries the
    connection)."""

    def __init__(self, *args: Any, keeps_sweeps: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("log_job_description", False)
        kwargs.setdefault("job_class", AppJob)
        super().__init__(*args, **kwargs)
        self.keeps_sweeps = keeps_sweeps

    def perform_job(self, job: Job, queue: Queue) -> bool:
        bound = logs.bind_job(job.id)
        try:
            return super().perform_job(job, queue)
        finally:
            logs.unbind_job(bound)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        if self.keeps_sweeps:
            schedule_sweeps()
