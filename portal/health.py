"""Probes for load balancers and orchestrators: `/healthz` (liveness) and `/readyz` (readiness).

Both are answered by a WSGI middleware in front of the Flask app, on every host (a probe names the
machine's address, not a tenant's domain), before anything of a request happens: no host look-up
in the database, no session or cookie, no CSRF, no rate limit, no request log line.

- `/healthz`: the process answers. 200 `{"status": "ok"}`, nothing else is looked at.
- `/readyz`: the database (`SELECT 1` over a new connection as the app's role), Redis (`PING`) and
  the RQ workers (for every queue of `portal.jobs.QUEUES`, the queues the Procfile's workers
  serve, at least one registered worker with a recent heartbeat). 200 when all are ok, else 503;
  the body names each check: `{"status": "fail", "checks": {"database": {"status": "ok"},
  "redis": {"status": "fail", "error": "unreachable"}, "workers": {...}}}`. The checks run side by
  side, each with a two-second timeout, and the answer comes within `READY_TIMEOUT` whatever hangs.
  An error is named by its kind only (`unreachable`, `timeout`, `error`); its text, which may name
  hosts and users, goes to the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask
from redis import Redis
from redis import exceptions as redis_errors
from rq import Worker
from sqlalchemy.engine import make_url

CHECK_TIMEOUT = 2  # seconds: to connect and for each answer (libpq's connect_timeout has 2 s as its minimum)
READY_TIMEOUT = 3.0  # seconds: the longest /readyz takes, whatever a check does
PATHS = ("/healthz", "/readyz")

log = logging.getLogger(__name__)

Result = dict[str, Any]


def ok(**facts: Any) -> Result:
    return {"status": "ok", **facts}


def failed(error: str, **facts: Any) -> Result:
    return {"status": "fail", "error": error, **facts}


def _kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | redis_errors.TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timeout"
    if isinstance(exc, psycopg.OperationalError | redis_errors.ConnectionError | OSError):
        return "unreachable"
    return "error"


def _guarded(name: str, check: Callable[[], Result]) -> Result:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001  (a failing dependency is a result, not an error)
        log.warning("readyz: %s check failed: %s: %s", name, type(exc).__name__, " ".join(str(exc).split())[:300])
        return failed(_kind(exc))


def check_database(app_db_url: str) -> Result:
    url = make_url(app_db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(
        url,
        connect_timeout=CHECK_TIMEOUT,
        options=f"-c statement_timeout={CHECK_TIMEOUT * 1000}",
        autocommit=True,
        application_name="payplat-readyz",
    ) as conn:
        conn.execute("SELECT 1").fetchone()
    return ok()


def live_workers(conn: Redis, now: datetime) -> list[Worker]:
    """The registered workers whose heartbeat is recent (a dead one stays registered for a while)."""
    from portal.platform.health import HEARTBEAT_STALE

    alive = []
    for worker in Worker.all(connection=conn):
        beat = worker.last_heartbeat
        if beat is None:
            continue
        beat = beat.replace(tzinfo=UTC) if beat.tzinfo is None else beat
        if now - beat <= HEARTBEAT_STALE:
            alive.append(worker)
    return alive


def check_redis_and_workers(redis_url: str, queues: Iterable[str]) -> tuple[Result, Result]:
    conn = Redis.from_url(redis_url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT)
    try:
        redis = _guarded("redis", lambda: ok() if conn.ping() else failed("error"))
        if redis["status"] != "ok":
            return redis, failed("redis unavailable")

        def workers() -> Result:
            served = {name for worker in live_workers(conn, datetime.now(UTC)) for name in worker.queue_names()}
            missing = [name for name in queues if name not in served]
            return failed("no live worker", queues=missing) if missing else ok()

        return redis, _guarded("workers", workers)
    finally:
        conn.close()


def readiness(app: Flask) -> tuple[int, Result]:
    from portal import jobs

    db_url, redis_url = app.config["SQLALCHEMY_DATABASE_URI"], app.config["REDIS_URL"]
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
    try:
        database = pool.submit(_guarded, "database", lambda: check_database(db_url))
        redis = pool.submit(check_redis_and_workers, redis_url, jobs.QUEUES)
        wait([database, redis], timeout=READY_TIMEOUT)
    finally:
        # A check still hanging is left to end on its own timeout; the probe does not wait for it.
        pool.shutdown(wait=False, cancel_futures=True)
    checks = {"database": database.result() if database.done() else failed("timeout")}
    if not redis.done():
        checks.update(redis=failed("timeout"), workers=failed("timeout"))
    elif redis.exception() is not None:  # not even a client could be made (a malformed REDIS_URL)
        log.warning("readyz: redis check failed: %s", type(redis.exception()).__name__)
        checks.update(redis=failed("error"), workers=failed("redis unavailable"))
    else:
        checks.update(zip(("redis", "workers"), redis.result(), strict=True))
    healthy = all(check["status"] == "ok" for check in checks.values())
    return (200 if healthy else 503), {"status": "ok" if healthy else "fail", "checks": checks}


class ProbeMiddleware:
    """Answers `/healthz` and `/readyz` itself; everything else goes to the app."""

    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable):
        path = environ.get("PATH_INFO", "")
        if path not in PATHS:
            return self.wsgi_app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._answer(start_response, 405, {"status": "method not allowed"}, method, allow="GET, HEAD")
        if path == "/healthz":
            return self._answer(start_response, 200, {"status": "ok"}, method)
        code, body = readiness(self.app)
        return self._answer(start_response, code, body, method)

    @staticmethod
    def _answer(start_response: Callable, code: int, body: Result, method: str, allow: str | None = None):
        payload = json.dumps(body, separators=(",", ":")).encode()
        reason = {200: "OK", 405: "METHOD NOT ALLOWED", 503: "SERVICE UNAVAILABLE"}[code]
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if allow:
            headers.append(("Allow", allow))
        start_response(f"{code} {reason}", headers)
        return [] if method == "HEAD" else [payload]


def init_app(app: Flask) -> None:
    app.wsgi_app = ProbeMiddleware(app, app.wsgi_app)  # type: ignore[method-assign]
