"""/healthz and /readyz: what a load balancer or an orchestrator sees, on any host, with the
database, Redis or the workers away, and with a dependency that accepts connections but never
answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from portal import create_app, health, jobs

HOSTS = ("localhost", "acme.localhost", "10.1.2.3:8000")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def app_with(app):
    """`app_with(**settings)` -> a new app on the test database and Redis, with `settings` changed."""

    def build(**settings):
        return create_app(
            {
                "TESTING": True,
                "DATABASE_URL": app.config["DATABASE_URL"],
                "APP_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
                "REDIS_URL": app.config["REDIS_URL"],
                "PLATFORM_DOMAIN": "localhost",
                **settings,
            }
        )

    return build


@pytest.fixture
def worker(app):
    """`worker(queues)` registers a real RQ worker (as `flask worker` does when it starts) on those queues."""
    started = []

    def register(queues=jobs.QUEUES):
        with app.app_context():
            w = jobs.AppWorker([jobs.queue(name) for name in queues], connection=jobs.redis_connection())
            w.register_birth()
        started.append(w)
        return w

    yield register
    for w in started:
        w.register_death()


def probe(app, path: str, host: str = "localhost", method: str = "GET"):
    return app.test_client().open(path, method=method, base_url=f"http://{host}")


@pytest.mark.parametrize("host", HOSTS)
def test_healthz_answers_on_every_host_without_a_cookie(app, host):
    response = probe(app, "/healthz", host)

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_healthz_needs_nothing_but_the_process(app_with):
    dead = app_with(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", APP_DATABASE_URL=_db_url_on(closed_port()))

    assert probe(dead, "/healthz").status_code == 200


@pytest.mark.parametrize("host", HOSTS)
def test_readyz_is_ready_when_the_database_redis_and_a_worker_for_every_queue_answer(app, worker, host):
    worker()

    response = probe(app, "/readyz", host)

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "status": "ok",
        "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}, "workers": {"status": "ok"}},
    }
    assert "Set-Cookie" not in response.headers


def test_readyz_is_unavailable_without_workers_and_names_them(app):
    response = probe(app, "/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "fail"
    assert body["checks"]["workers"] == {"status": "fail", "error": "no live worker", "queues": list(jobs.QUEUES)}
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["redis"] == {"status": "ok"}


def test_readyz_names_the_queues_no_worker_serves(app, worker):
    # The Procfile's first worker alone: nothing serves the exports queue.
    worker([name for name in jobs.QUEUES if name != "exports"])

    body = probe(app, "/readyz").get_json()

    assert body["checks"]["workers"] == {"status": "fail", "error": "no live worker", "queues": ["exports"]}


def test_a_worker_that_stopped_reporting_does_not_count(app, worker):
    w = worker()
    with app.app_context():
        # Its last heartbeat three minutes ago: registered still, but probably dead.
        jobs.redis_connection().hset(w.key, "last_heartbeat", "2000-01-01T00:00:00.000000Z")

    response = probe(app, "/readyz")

    assert response.status_code == 503
    assert response.get_json()["checks"]["workers"]["status"] == "fail"


def test_readyz_names_redis_when_it_is_away(app_with):
    away = app_with(REDIS_URL=f"redis://:redis-pass-1@127.0.0.1:{closed_port()}/0")

    response = probe(away, "/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["redis"] == {"status": "fail", "error": "unreachable"}
    assert body["checks"]["workers"]["status"] == "fail"
    assert body["checks"]["database"] == {"status": "ok"}
    assert "redis-pass-1" not in response.get_data(as_text=True)


def _db_url_on(port: int) -> str:
    return f"postgresql://payplat_app:db-pass-1@127.0.0.1:{port}/payplat"


def test_readyz_names_the_database_when_it_is_away(app_with, worker):
    worker()
    away = app_with(APP_DATABASE_URL=_db_url_on(closed_port()))

    response = probe(away, "/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == {"status": "fail", "error": "unreachable"}
    assert body["checks"]["redis"] == {"status": "ok"}
    assert body["checks"]["workers"] == {"status": "ok"}
    assert "db-pass-1" not in response.get_data(as_text=True)


def test_readyz_answers_in_time_when_dependencies_hang(app_with, silent_port):
    hanging = app_with(REDIS_URL=f"redis://127.0.0.1:{silent_port}/0", APP_DATABASE_URL=_db_url_on(silent_port))

    started = time.monotonic()
    response = probe(hanging, "/readyz")
    took = time.monotonic() - started

    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["redis"]["status"] == "fail"
    assert checks["database"]["status"] == "fail"
    assert took < health.READY_TIMEOUT + 1.5


def test_probes_refuse_other_methods(app):
    response = probe(app, "/readyz", method="POST")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
