"""RQ plumbing: queues, enqueueing with the tenant in `job.meta`, and the job class that runs
every job inside the app context with the tenant (and its RLS setting) restored.

Jobs themselves live beside the code they run (`portal/mail.py`, later `clearing/jobs.py`).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue
from rq.job import Job

from core.db import db
from tenants import isolation

QUEUES = ("default", "mail", "channels", "webhooks")


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


def enqueue(queue_name: str, func, *args: Any, **kwargs: Any) -> Job:
    """Queue `func(*args)`; the current tenant travels in the job's meta."""
    tenant = isolation.current_tenant_id()
    meta = {"tenant_id": str(tenant) if tenant else None, "platform_scope": isolation.in_platform_scope()}
    return queue(queue_name).enqueue(func, *args, meta=meta, **kwargs)


class AppJob(Job):
    """Runs in the worker's app context with the job's tenant restored."""

    def perform(self) -> Any:
        tenant = self.meta.get("tenant_id")
        try:
            if tenant:
                isolation.activate_tenant(db.session, uuid.UUID(tenant))
            elif self.meta.get("platform_scope"):
                isolation.activate_platform_scope(db.session)
            else:
                isolation.reset(db.session)
            return super().perform()
        finally:
            db.session.remove()
            isolation.reset()
