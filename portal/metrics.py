"""Prometheus metrics (`prometheus_client`) at `/metrics` on the platform host.

What is measured:

| metric | kind | where |
| --- | --- | --- |
| `payplat_http_request_duration_seconds{endpoint,method,status_class}` | histogram | every request (after_request) |
| `payplat_payments_total{status,channel}` | counter | `payments.metrics`, after an outcome is committed |
| `payplat_webhook_delivery_failures_total{reason}` | counter | `payments.webhooks.deliver` |
| `payplat_job_duration_seconds{queue,job,outcome}` | histogram | `portal.jobs.AppJob.perform`, in the worker |
| `payplat_queue_jobs{queue,state}` | gauge | read from Redis at scrape time |
| `payplat_queue_workers{queue}` | gauge | live RQ workers per queue, read from Redis at scrape time |

Several processes: gunicorn runs several workers and the RQ workers are processes of their own, so
the counters and histograms use `prometheus_client`'s multiprocess mode when
`PROMETHEUS_MULTIPROC_DIR` is set (gunicorn.conf.py sets a private one when it is not; `make run`
gives the web and the workers one shared directory): each process writes its values to files
there and a scrape sums them. The gauges need no such thing: they are read from Redis when scraped.

Access: only on the platform host (404 elsewhere). With `PAYPLAT_METRICS_TOKEN` set, a request must
carry `Authorization: Bearer <token>`; without it, only loopback clients are answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REDIS_TIMEOUT = 1.0  # seconds: a scrape never waits long for Redis

log = logging.getLogger(__name__)

REQUEST_LATENCY = Histogram(
    "payplat_http_request_duration_seconds",
    "Time to answer a request, by Flask endpoint, method and status class",
    ["endpoint", "method", "status_class"],
)
JOB_DURATION = Histogram(
    "payplat_job_duration_seconds",
    "Time an RQ job ran, by queue, job function and outcome (finished or failed)",
    ["queue", "job", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)


def init_app(app: Flask) -> None:
    app.config.setdefault("METRICS_TOKEN", os.environ.get("PAYPLAT_METRICS_TOKEN") or None)
    if os.environ.get(MULTIPROC_ENV):
        # Every process writes its values there (a worker started before gunicorn made the folder too).
        Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response):
    started = g.get("metrics_started")
    if started is not None:
        REQUEST_LATENCY.labels(
            request.endpoint or "unmatched", request.method, f"{response.status_code // 100}xx"
        ).observe(time.perf_counter() - started)
    return response


# --- access --------------------------------------------------------------------------------------


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _allowed() -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return _is_loopback(request.remote_addr)


def metrics_view():
    site = g.get("site")
    if site is None or not site.is_platform:
        abort(404)
    if not _allowed():
        if current_app.config.get("METRICS_TOKEN"):
            return Response("A bearer token is needed.\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
        return Response(
            "Metrics are served to loopback clients only; set PAYPLAT_METRICS_TOKEN to scrape from elsewhere.\n",
            403,
            mimetype="text/plain",
        )
    return Response(exposition(current_app.config["REDIS_URL"]), mimetype=CONTENT_TYPE_LATEST)


def exposition(redis_url: str) -> bytes:
    """The text a scrape gets: this process's metrics (or every process's, in multiprocess mode),
    then what is read from Redis now."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    live = CollectorRegistry()
    live.register(QueueCollector(redis_url))
    return generate_latest(registry) + generate_latest(live)


# --- read at scrape time -------------------------------------------------------------------------


class QueueCollector:
    """Each queue's jobs by state and its live workers, from Redis; nothing when Redis is away."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def collect(self):
        from redis import Redis
        from rq import Queue
        from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

        from portal import jobs
        from portal.health import live_workers

        jobs_family = GaugeMetricFamily(
            "payplat_queue_jobs",
            "Jobs in each RQ queue by state: queued (waiting), started, scheduled, failed",
            labels=["queue", "state"],
        )
        workers_family = GaugeMetricFamily(
            "payplat_queue_workers", "RQ workers alive (recent heartbeat) serving each queue", labels=["queue"]
        )
        conn = Redis.from_url(self.redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
        try:
            for name in jobs.QUEUES:
                counts = {
                    "queued": Queue(name, connection=conn).count,
                    "started": StartedJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                    "scheduled": ScheduledJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                    "failed": FailedJobRegistry(name, connection=conn).get_job_count(cleanup=False),
                }
                for state, count in counts.items():
                    jobs_family.add_metric([name, state], count)
            serving = dict.fromkeys(jobs.QUEUES, 0)
            for worker in live_workers(conn, datetime.now(UTC)):
                for name in worker.queue_names():
                    if name in serving:
                        serving[name] += 1
            for name, count in serving.items():
                workers_family.add_metric([name], count)
        except Exception as exc:  # noqa: BLE001  (a scrape shows what it can; the log says why)
            log.warning("metrics: could not read the queues from Redis (%s)", type(exc).__name__)
            return
        finally:
            conn.close()
        yield jobs_family
        yield workers_family
