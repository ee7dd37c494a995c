"""System health for platform admins: the database, Redis, the RQ workers, the queues and the last
run of each scheduled sweep (`core.sweeps`).

Every component is checked on its own and a failure shows as that component being down, with its
error, never as an error page: Redis is asked through a client of its own with short timeouts, so
a Redis that is away answers within seconds too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import gettext as _
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

# The sweeps register themselves with core.sweeps when their modules are imported.
import clearing.jobs  # noqa: F401
import payments.jobs  # noqa: F401
import payments.webhooks  # noqa: F401
from core import sweeps
from core.db import db
from portal import jobs
from portal.access import platform_admin_required
from portal.platform import bp

REDIS_TIMEOUT = 2  # seconds, to connect and for each answer
ERROR_CHARS = 300
# A worker writes its heartbeat at least this often while it lives (RQ's default is every few seconds
# when idle, and with each job): older than that, it is probably gone.
HEARTBEAT_STALE = timedelta(minutes=2)


@dataclass
class Component:
    name: str
    up: bool
    facts: list[tuple[str, Any]] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def database() -> Component:
    try:
        row = db.session.execute(
            sa.text(
                "SELECT current_setting('server_version') AS version,"
                " pg_database_size(current_database()) AS size,"
                " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS connections,"
                " current_setting('max_connections')::int AS max_connections"
            )
        ).one()
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001  (a component that fails is shown as down)
        db.session.rollback()
        return Component(_("Database"), False, error=_error(exc))
    return Component(
        _("Database"),
        True,
        [
            (_("PostgreSQL version"), row.version),
            (_("Database size"), _size(row.size)),
            (_("Connections"), f"{row.connections} / {row.max_connections}"),
        ],
    )


def redis_client() -> Redis:
    return Redis.from_url(
        current_app.config["REDIS_URL"], socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )


def redis(conn: Redis) -> Component:
    try:
        conn.ping()
        memory = conn.info("memory")
        server = conn.info("server")
        clients = conn.info("clients")
    except Exception as exc:  # noqa: BLE001
        return Component("Redis", False, error=_error(exc))
    limit = memory.get("maxmemory") or 0
    return Component(
        "Redis",
        True,
        [
            (_("Version"), server.get("redis_version")),
            (_("Memory used"), _size(memory.get("used_memory", 0))),
            (_("Peak memory"), _size(memory.get("used_memory_peak", 0))),
            (_("Memory limit"), _size(limit) if limit else _("none")),
            (_("Clients"), clients.get("connected_clients")),
        ],
    )


@dataclass
class WorkerRow:
    name: str
    state: str
    queues: str
    current_job: str | None
    last_heartbeat: datetime | None
    stale: bool


def workers(conn: Redis, now: datetime) -> tuple[Component, list[WorkerRow]]:
    try:
        rows = []
        for worker in Worker.all(connection=conn):
            beat = worker.last_heartbeat
            beat = beat.replace(tzinfo=UTC) if beat is not None and beat.tzinfo is None else beat
            rows.append(
                WorkerRow(
                    name=worker.name,
                    state=str(getattr(worker.get_state(), "value", worker.get_state())),
                    queues=", ".join(worker.queue_names()),
                    current_job=worker.get_current_job_id(),
                    last_heartbeat=beat,
                    stale=beat is None or now - beat > HEARTBEAT_STALE,
                )
            )
    except Exception as exc:  # noqa: BLE001
        return Component(_("Workers"), False, error=_error(exc)), []
    rows.sort(key=lambda row: row.name)
    component = Component(_("Workers"), True, [(_("Workers"), len(rows))])
    if not rows:
        component.warnings.append(_("No worker is running: nothing queued will run. Start one with `flask worker`."))
    served = {name.strip() for row in rows if not row.stale for name in row.queues.split(",")}
    missing = [name for name in jobs.QUEUES if name not in served]
    if rows and missing:
        component.warnings.append(_("No live worker serves: %(queues)s.", queues=", ".join(missing)))
    for row in rows:
        if row.stale:
            component.warnings.append(_("%(name)s has not reported for a while: it may have died.", name=row.name))
    return component, rows


@dataclass
class QueueRow:
    name: str
    queued: int
    started: int
    scheduled: int
    failed: int


def queues(conn: Redis) -> tuple[Component, list[QueueRow]]:
    try:
        rows = []
        for name in jobs.QUEUES:
            queue = Queue(name, connection=conn)
            rows.append(
                QueueRow(
                    name=name,
                    queued=queue.count,
                    started=StartedJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                    scheduled=ScheduledJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                    failed=FailedJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                )
            )
    except Exception as exc:  # noqa: BLE001
        return Component(_("Queues"), False, error=_error(exc)), []
    component = Component(_("Queues"), True)
    failed = [row for row in rows if row.failed]
    if failed:
        component.warnings.append(
            _("Failed jobs in: %(queues)s.", queues=", ".join(f"{row.name} ({row.failed})" for row in failed))
        )
    return component, rows


def scheduled(now: datetime) -> tuple[Component, list[sweeps.SweepStatus]]:
    try:
        statuses = sweeps.statuses(now)
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001
        db.session.rollback()
        return Component(_("Scheduled jobs"), False, error=_error(exc)), []
    component = Component(_("Scheduled jobs"), True)
    for status in statuses:
        if status.warning:
            component.warnings.append(f"{status.sweep.label}: {status.warning}")
    return component, statuses


def _age(now: datetime, at: datetime | None) -> str:
    if at is None:
        return _("never")
    seconds = max(int((now - at).total_seconds()), 0)
    if seconds < 120:
        return _("%(n)s s ago", n=seconds)
    if seconds < 7200:
        return _("%(n)s min ago", n=seconds // 60)
    if seconds < 172800:
        return _("%(n)s h ago", n=seconds // 3600)
    return _("%(n)s days ago", n=seconds // 86400)


@bp.route("/health")
@platform_admin_required
def health():
    now = datetime.now(UTC)
    conn = redis_client()
    try:
        redis_state = redis(conn)
        if redis_state.up:
            worker_state, worker_rows = workers(conn, now)
            queue_state, queue_rows = queues(conn)
        else:
            # Without Redis neither can be read: said once, with Redis's own error.
            unreachable = _("Redis is down: %(error)s", error=redis_state.error)
            worker_state, worker_rows = Component(_("Workers"), False, error=unreachable), []
            queue_state, queue_rows = Component(_("Queues"), False, error=unreachable), []
    finally:
        conn.close()
    database_state = database()
    sweep_state, sweep_rows = scheduled(now)
    components = [database_state, redis_state, worker_state, queue_state, sweep_state]
    return render_template(
        "platform/health.html",
        now=now,
        components=components,
        healthy=all(c.up and not c.warnings for c in components),
        workers=worker_rows,
        queues=queue_rows,
        sweeps=sweep_rows,
        age=lambda at: _age(now, at),
    )
