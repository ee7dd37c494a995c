"""/metrics: who may read it, and that it shows what just happened (a request's latency, a payment's
outcome by status and channel, a job's duration, a queue's length, a failed webhook delivery)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from workers import ROOT, Workers, wait_for

from core.db import db
from payments import webhooks
from portal import jobs
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import tenant_context

PLATFORM = "http://localhost"


def scrape(app, base_url: str = PLATFORM, **kwargs):
    return app.test_client().get("/metrics", base_url=base_url, **kwargs)


def samples(app) -> dict[tuple[str, frozenset], float]:
    response = scrape(app)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def shop(app, make):
    """A tenant with a sandbox channel (USD cards) and a merchant with a test secret key."""
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    make.channel_account(tenant.id)
    with app.app_context():
        _, secret = api_keys.create_key(tenant.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    return tenant, merchant, secret


def api_payment(app, shop, payment_method: str):
    tenant, _, secret = shop
    return app.test_client().post(
        "/v1/payment_intents",
        base_url=f"http://{tenant.host}",
        headers={"Authorization": f"Bearer {secret}"},
        data={"amount": "2000", "currency": "usd", "payment_method": payment_method, "confirm": "true"},
    )


# --- access --------------------------------------------------------------------------------------


def test_metrics_are_served_on_the_platform_host_to_loopback_clients(app):
    assert scrape(app).status_code == 200
    assert scrape(app, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_are_refused_to_other_clients_without_a_token(app):
    response = scrape(app, environ_base={"REMOTE_ADDR": "203.0.113.9"})

    assert response.status_code == 403
    assert "PAYPLAT_METRICS_TOKEN" in response.get_data(as_text=True)
    assert "payplat_" not in response.get_data(as_text=True)


def test_metrics_are_not_on_a_tenants_host(app, make):
    tenant = make.tenant("acme")

    assert scrape(app, base_url=f"http://{tenant.host}").status_code == 404


def test_with_a_token_configured_every_client_needs_it(app, monkeypatch):
    monkeypatch.setitem(app.config, "METRICS_TOKEN", "scrape-token-1")
    outside = {"REMOTE_ADDR": "203.0.113.9"}

    missing = scrape(app)  # loopback too
    wrong = scrape(app, environ_base=outside, headers={"Authorization": "Bearer scrape-token-2"})
    right = scrape(app, environ_base=outside, headers={"Authorization": "Bearer scrape-token-1"})

    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "payplat_http_request_duration_seconds" in right.get_data(as_text=True)


def test_scraping_sets_no_cookie(app):
    assert "Set-Cookie" not in scrape(app).headers


# --- what is measured ----------------------------------------------------------------------------


def test_a_request_shows_in_the_latency_histogram_by_endpoint_method_and_status_class(app, site):
    labels = {"endpoint": "auth.login", "method": "GET", "status_class": "2xx"}
    before = value(samples(app), "payplat_http_request_duration_seconds_count", **labels)

    assert site("localhost").get("/login").status_code == 200

    after = samples(app)
    assert value(after, "payplat_http_request_duration_seconds_count", **labels) == before + 1
    assert value(after, "payplat_http_request_duration_seconds_bucket", le="+Inf", **labels) == before + 1
    assert value(after, "payplat_http_request_duration_seconds_sum", **labels) > 0


def test_an_unknown_page_counts_as_unmatched_4xx(app, site):
    labels = {"endpoint": "unmatched", "method": "GET", "status_class": "4xx"}
    before = value(samples(app), "payplat_http_request_duration_seconds_count", **labels)

    assert site("localhost").get("/no/such/page").status_code == 404

    assert value(samples(app), "payplat_http_request_duration_seconds_count", **labels) == before + 1


def test_api_payments_are_counted_by_status_and_channel(app, shop):
    before = samples(app)

    assert api_payment(app, shop, "pm_card_visa").status_code == 200
    assert api_payment(app, shop, "pm_card_visa").status_code == 200
    assert api_payment(app, shop, "pm_card_chargeDeclined").status_code == 402

    after = samples(app)
    for status, more in (("succeeded", 2), ("requires_payment_method", 1)):
        counted = value(after, "payplat_payments_total", status=status, channel="sandbox")
        assert counted == value(before, "payplat_payments_total", status=status, channel="sandbox") + more, status


def test_queue_lengths_and_job_durations(app, site, make, run_jobs):
    tenant = make.tenant("acme")
    job = {"queue": "mail", "job": "portal.mail.deliver", "outcome": "finished"}
    before = samples(app)
    assert value(before, "payplat_queue_jobs", queue="mail", state="queued") == 0

    # Two e-mails waiting: the queue's length says so.
    client = site(tenant.host)
    for _ in range(2):
        client.submit("/password/forgot", {"email": tenant.admin_email}, form_page="/password/forgot")
    waiting = samples(app)
    assert value(waiting, "payplat_queue_jobs", queue="mail", state="queued") == 2
    assert value(waiting, "payplat_queue_workers", queue="mail") == 0

    assert run_jobs() == 2

    done = samples(app)
    assert value(done, "payplat_queue_jobs", queue="mail", state="queued") == 0
    assert (
        value(done, "payplat_job_duration_seconds_count", **job)
        == value(before, "payplat_job_duration_seconds_count", **job) + 2
    )


def test_failed_webhook_deliveries_are_counted(app, shop, run_jobs):
    tenant, merchant, _ = shop
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing answers there
    with app.app_context(), tenant_context(db.session, tenant.id):
        webhooks.create_endpoint(
            tenant.id, merchant, False, f"http://127.0.0.1:{port}/hooks", ["*"], Actor.system(), allow_private=True
        )
        db.session.remove()
    before = value(samples(app), "payplat_webhook_delivery_failures_total", reason="no_answer")

    assert api_payment(app, shop, "pm_card_visa").status_code == 200
    run_jobs()

    assert value(samples(app), "payplat_webhook_delivery_failures_total", reason="no_answer") > before


def test_metrics_still_answer_when_redis_is_away(app, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setitem(app.config, "REDIS_URL", f"redis://127.0.0.1:{port}/0")

    response = scrape(app)

    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "payplat_http_request_duration_seconds" in text
    assert "payplat_queue_jobs" not in text


def test_the_worker_registry_counts_live_workers_per_queue(app):
    with app.app_context():
        worker = jobs.AppWorker([jobs.queue("exports")], connection=jobs.redis_connection())
        worker.register_birth()
    try:
        found = samples(app)
    finally:
        worker.register_death()

    assert value(found, "payplat_queue_workers", queue="exports") == 1
    assert value(found, "payplat_queue_workers", queue="mail") == 0


# --- several processes: gunicorn's workers and an RQ worker, as `make run` starts them -------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pids_with_values(folder: Path) -> set[str]:
    return {path.stem.rsplit("_", 1)[1] for path in folder.glob("histogram_*.db")}


def test_under_gunicorn_every_process_is_counted_and_every_line_is_json(app, owner_url, make, site, tmp_path):
    shared = tmp_path / "metrics"
    shared.mkdir()
    procs = Workers(app, owner_url, tmp_path)
    procs.env.update(PROMETHEUS_MULTIPROC_DIR=str(shared), WEB_WORKERS="2", WEB_THREADS="4")
    port = _free_port()
    web_log = tmp_path / "web.log"
    with web_log.open("wb") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            cwd=ROOT,
            env=procs.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Host": "localhost"}
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 30, "gunicorn to answer /healthz")

        # Requests on new connections until both of gunicorn's workers have answered some.
        sent = 0

        def both_answered() -> bool:
            nonlocal sent
            with httpx.Client(headers=headers, timeout=5) as client:
                assert client.get(f"{base}/login").status_code == 200
            sent += 1
            return len(_pids_with_values(shared)) >= 2

        wait_for(both_answered, 60, "both gunicorn workers to answer")

        # An e-mail job, worked by a separate `flask worker` process sharing the folder.
        tenant = make.tenant("acme")
        site(tenant.host).submit("/password/forgot", {"email": tenant.admin_email}, form_page="/password/forgot")
        worker = procs.start("mail", "--burst", queue="mail")
        assert worker.wait(60) == 0, procs.logs()

        text = httpx.get(f"{base}/metrics", headers=headers, timeout=5).text
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        login = {"endpoint": "auth.login", "method": "GET", "status_class": "2xx"}
        assert value(found, "payplat_http_request_duration_seconds_count", **login) == sent
        job = {"queue": "mail", "job": "portal.mail.deliver", "outcome": "finished"}
        assert value(found, "payplat_job_duration_seconds_count", **job) == 1

        # A checkout address with its secret: the log keeps the path only.
        httpx.get(f"{base}/checkout/pi_123?client_secret=pi_123_secret_leakcheck", headers={"Host": tenant.host})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(20)
        finally:
            procs.stop_all()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(web.pid, signal.SIGKILL)

    web_lines = [json.loads(line) for line in web_log.read_text().splitlines() if line.strip()]
    assert any(line["logger"] == "gunicorn.error" for line in web_lines)
    requests_logged = [line for line in web_lines if line["logger"] == "portal.request"]
    assert sum(line["path"] == "/login" for line in requests_logged) == sent
    assert all(len(line["request_id"]) == 32 for line in requests_logged)
    assert any(line["path"] == "/checkout/pi_123" for line in requests_logged)
    assert "leakcheck" not in web_log.read_text()
    worker_lines = [json.loads(line) for line in (tmp_path / "mail.log").read_text().splitlines() if line.strip()]
    assert any(line["logger"] == "portal.mail" and line.get("job_id") and line["tenant_id"] for line in worker_lines)
