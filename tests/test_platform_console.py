"""The platform console's jobs dashboard (rq-dashboard), audit log with filters and system health:
platform admins only, on the platform host only; a component that is down shows as down."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from conftest import second_factor_code
from pages import body, signed_in, table, text
from rq import SimpleWorker
from rq.job import Job

from core import sweeps
from core.db import db
from portal import create_app, jobs
from tenants import audit
from tenants.audit import Actor
from tenants.isolation import platform_scope

PLATFORM_PAGES = [
    "/platform/audit",
    "/platform/health",
    "/platform/jobs/",
    "/platform/jobs/0/view/workers",
    "/platform/jobs/0/data/queues.json",
]


@pytest.fixture
def admin(make, site):
    client = site("localhost")
    assert client.login(make.platform_admin()).status_code == 302
    return client


@pytest.fixture
def two_tenants(make):
    alpha = make.tenant("alpha", name="Alpha Corp")
    beta = make.tenant("beta", name="Beta Corp")
    return alpha, beta


def _job_done() -> str:
    return "done"


def _enqueue(app, queue: str = "default") -> str:
    with app.app_context():
        return jobs.enqueue(queue, _job_done).id


# --- who may open what --------------------------------------------------------------------


@pytest.mark.parametrize("path", PLATFORM_PAGES)
def test_a_platform_admin_opens_the_pages(admin, path):
    assert admin.get(path).status_code == 200


@pytest.mark.parametrize("path", PLATFORM_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(site, path):
    response = site("localhost").get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query)["next"] == [path]


@pytest.mark.parametrize("path", PLATFORM_PAGES)
def test_the_pages_do_not_exist_on_a_tenant_host(two_tenants, site, path):
    alpha, _ = two_tenants
    tenant_admin = signed_in(site, alpha, alpha.admin_email)
    assert tenant_admin.get("/console/").status_code == 200  # signed in, for the control
    response = tenant_admin.get(path)
    assert response.status_code == 404
    assert "RQ dashboard" not in body(response) and "Audit log of every tenant" not in body(response)
    assert site(alpha.host).get(path).status_code == 404


# --- jobs: rq-dashboard ---------------------------------------------------------------------


def test_the_jobs_dashboard_shows_the_queues(app, admin):
    _enqueue(app, "mail")
    _enqueue(app, "mail")
    page = admin.get("/platform/jobs/")
    assert page.status_code == 200 and "RQ dashboard" in body(page)
    queues = {q["name"]: q for q in admin.get("/platform/jobs/0/data/queues.json").get_json()["queues"]}
    assert queues["mail"]["count"] == 2
    # Linked from the platform's navigation.
    assert 'href="/platform/jobs/"' in body(admin.get("/platform/"))


def test_dashboard_actions_need_the_csrf_token(app, admin):
    job_id = _enqueue(app)
    page = admin.get("/platform/jobs/0/view/jobs")
    cookie = admin.client.get_cookie("_csrf_token", domain="localhost", path="/platform/jobs")
    assert page.status_code == 200 and cookie is not None

    # Without the token (what a cross-site form would send): refused, the job stays.
    refused = admin.post(f"/platform/jobs/job/{job_id}/delete")
    assert refused.status_code == 400
    with app.app_context():
        assert Job.exists(job_id, connection=jobs.redis_connection())
    # The requeue-everything action is never taken by a GET (a link or an image elsewhere).
    assert admin.get("/platform/jobs/requeue/default").status_code == 405

    # With it, as the dashboard's script sends it: done.
    done = admin.post(f"/platform/jobs/job/{job_id}/delete", headers={"X-CSRFToken": cookie.value})
    assert done.status_code == 200
    with app.app_context():
        assert not Job.exists(job_id, connection=jobs.redis_connection())


# --- system health --------------------------------------------------------------------------


def test_health_shows_every_component_up(app, admin):
    _enqueue(app, "webhooks")
    with app.app_context():
        worker = SimpleWorker([jobs.queue("default")], connection=jobs.redis_connection(), name="worker-one")
        worker.register_birth()
        worker.heartbeat()
    page = body(admin.get("/platform/health"))
    components = text(table(page, "components"))
    assert "Database up" in components or "Database warning" in components
    assert re.search(r"PostgreSQL version \d+", components)
    assert "Redis up" in components and "Memory used" in components
    workers = text(table(page, "workers"))
    assert "worker-one" in workers and "default" in workers
    # The worker serves only `default`: the other queues have nobody.
    assert "No live worker serves: mail, channels, webhooks, clearing, exports." in components
    queues = text(table(page, "queues"))
    assert "webhooks 1 0 0 0" in queues and "clearing 0 0 0 0" in queues


def test_health_shows_the_last_run_of_each_sweep_and_warns_when_overdue(app, admin, owner_engine):
    page = text(table(body(admin.get("/platform/health")), "sweeps"))
    assert page.count("never ran") == 3  # webhooks, payments, clearing

    with app.app_context(), platform_scope(db.session):
        from payments import webhooks

        webhooks.sweep()  # the webhooks sweep, which runs the payments one too
        db.session.remove()
    page = body(admin.get("/platform/health"))
    webhooks_row = text(re.search(r'<tr id="sweep-webhooks".*?</tr>', page, re.S).group(0))
    assert "succeeded" in webhooks_row and "s ago" in webhooks_row
    assert "never ran" not in text(re.search(r'<tr id="sweep-payments".*?</tr>', page, re.S).group(0))

    # An hour without a run: overdue.
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE sweep_runs SET last_started_at = :at, last_finished_at = :at WHERE name = 'webhooks'"),
            {"at": datetime.now(UTC) - timedelta(hours=1)},
        )
    page = body(admin.get("/platform/health"))
    assert "Webhook deliveries and channel outcomes: overdue" in text(table(page, "components"))
    assert "60 min ago" in text(re.search(r'<tr id="sweep-webhooks".*?</tr>', page, re.S).group(0))


def test_a_failing_sweep_is_shown_with_its_error(app, admin):
    @sweeps.recorded("test-failing", "A sweep that fails", 60)
    def failing():
        raise RuntimeError("the bank is closed")

    try:
        with app.app_context(), pytest.raises(RuntimeError):
            failing()
        page = body(admin.get("/platform/health"))
    finally:
        sweeps.SWEEPS.pop("test-failing")
    row = text(re.search(r'<tr id="sweep-test-failing".*?</tr>', page, re.S).group(0))
    assert "failed" in row and "RuntimeError: the bank is closed" in row
    assert "A sweep that fails: the last run failed" in text(table(page, "components"))


def test_health_shows_redis_down_without_an_error_page(app, make):
    email = make.platform_admin()
    # Another app on the same database whose Redis is nowhere (port 1 refuses connections).
    other = create_app(
        {
            **{key: app.config[key] for key in ("INSTANCE_DIR", "MAIL_DIR", "UPLOAD_DIR", "SECRET_KEY")},
            "TESTING": True,
            "DATABASE_URL": app.config["DATABASE_URL"],
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "MAIL_BACKEND": "file",
            "PLATFORM_DOMAIN": "localhost",
            "PLATFORM_HOST": "localhost",
            "PUBLIC_PORT": "",
        }
    )
    try:
        client = other.test_client()
        login = client.get("/login", base_url="http://localhost").get_data(as_text=True)
        token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', login).group(1)
        signed = client.post(
            "/login",
            base_url="http://localhost",
            data={"email": email, "password": "correct-horse-battery", "csrf_token": token},
        )
        assert signed.status_code == 302 and signed.headers["Location"].endswith("/login/code")
        signed = client.post(
            "/login/code",
            base_url="http://localhost",
            data={"code": second_factor_code(email), "csrf_token": token},
        )
        assert signed.status_code == 302
        response = client.get("/platform/health", base_url="http://localhost")
        assert response.status_code == 200
        components = text(table(response.get_data(as_text=True), "components"))
        assert re.search(r"Redis down ConnectionError: .*(refused|111)", components), components
        assert "Workers down Redis is down" in components and "Queues down Redis is down" in components
        assert re.search(r"Database (up|warning) PostgreSQL version", components)
        # The jobs dashboard answers too (its own error page, not a crash of the portal).
        assert client.get("/platform/audit", base_url="http://localhost").status_code == 200
    finally:
        with other.app_context():
            db.engine.dispose()


# --- the audit log with filters -------------------------------------------------------------


def _events(app, owner_engine, tenant, *specs) -> None:
    """Record audit events for `tenant`: (actor e-mail or None for the platform, action, type, id, days ago).
    (The app may only append to the log: the owner moves the older ones back in time.)"""
    aged = []
    with app.app_context(), platform_scope(db.session):
        for actor_email, action, object_type, object_id, days_ago in specs:
            actor = (
                Actor("user", email=actor_email)
                if actor_email
                else Actor("platform", email="root@platform.example.com")
            )
            event = audit.record(
                tenant.id, actor, action, object_type, object_id, {"name": {"before": "Old", "after": "New"}}
            )
            if days_ago:
                aged.append({"id": event.id, "at": datetime.now(UTC) - timedelta(days=days_ago)})
        db.session.commit()
        db.session.remove()
    if aged:
        with owner_engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET created_at = :at WHERE id = :id"), aged)


@pytest.fixture
def audited(app, owner_engine, two_tenants):
    alpha, beta = two_tenants
    _events(
        app,
        owner_engine,
        alpha,
        ("ann@alpha.example.com", "merchant.created", "merchant", "m-alpha-1", 0),
        ("bob@alpha.example.com", "api_key.created", "api_key", "k-alpha-1", 0),
        (None, "tenant.suspended", "tenant", "t-alpha", 10),
    )
    _events(app, owner_engine, beta, ("carol@beta.example.com", "merchant.created", "merchant", "m-beta-1", 0))
    return alpha, beta


def _listed(response) -> str:
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<div id="audit-log">' in page
    match = re.search(r'<table class="table audit-events" id="audit-events">(.*?)</table>', page, re.S)
    return text(match.group(1)) if match else ""


def test_the_platform_audit_log_filters_every_tenants_events(audited, admin):
    alpha, _ = audited
    everything = _listed(admin.get("/platform/audit"))
    assert "m-alpha-1" in everything and "m-beta-1" in everything and "Beta Corp" in everything

    only_alpha = _listed(admin.get("/platform/audit?tenant=alpha&action=merchant."))
    assert "m-alpha-1" in only_alpha and "m-beta-1" not in only_alpha and "k-alpha-1" not in only_alpha
    assert _listed(admin.get(f"/platform/audit?tenant={alpha.id}&object_type=api_key")).count("api_key.created") == 1
    by_actor = _listed(admin.get("/platform/audit?actor=carol"))
    assert "m-beta-1" in by_actor and "m-alpha-1" not in by_actor
    platform_actor = _listed(admin.get("/platform/audit?actor=platform"))
    assert "tenant.suspended" in platform_actor and "root@platform.example.com" in platform_actor
    assert "merchant.created" not in platform_actor
    by_object = _listed(admin.get("/platform/audit?object_id=k-alpha-1"))
    assert "api_key.created" in by_object and "merchant.created" not in by_object
    searched = _listed(admin.get("/platform/audit?q=bob@"))
    assert "k-alpha-1" in searched and "m-alpha-1" not in searched

    today = datetime.now(UTC).date()
    recent = _listed(admin.get(f"/platform/audit?from={today - timedelta(days=1)}"))
    assert "tenant.suspended" not in recent and "m-alpha-1" in recent
    old = _listed(admin.get(f"/platform/audit?to={today - timedelta(days=5)}"))
    assert "tenant.suspended" in old and "m-alpha-1" not in old
    # Each event shows its changed fields before and after.
    assert "name : Old → New" in old


def test_unusable_filters_are_named_next_to_their_field(audited, admin):
    response = admin.get("/platform/audit?tenant=nobody&from=31.12.2026")
    page = body(response)
    assert response.status_code == 200
    assert "No tenant has the slug or id nobody." in page
    assert "&#39;31.12.2026&#39; is not a date" in page
    assert 'value="nobody"' in page  # what was typed stays in the field


def test_the_platform_audit_log_pages_with_its_filters(app, audited, admin, monkeypatch, owner_engine):
    alpha, _ = audited
    with owner_engine.connect() as conn:
        alphas = conn.execute(sa.text("SELECT count(*) FROM audit_events WHERE tenant_id = :t"), {"t": alpha.id})
        alphas = alphas.scalar_one()
    monkeypatch.setitem(app.config, "PAGE_SIZE", 1)
    first = admin.get("/platform/audit?tenant=alpha")
    older = re.search(r'href="([^"]*after=[^"]*)">Older', body(first)).group(1).replace("&amp;", "&")
    assert "tenant=alpha" in older
    seen = [_listed(first)]
    while older:
        response = admin.get(older)
        seen.append(_listed(response))
        match = re.search(r'href="([^"]*after=[^"]*)">Older', body(response))
        older = match.group(1).replace("&amp;", "&") if match else None
    assert len(seen) == alphas >= 3  # one event a page, each of alpha's once
    assert not any("Beta Corp" in page for page in seen)
    assert sum("m-alpha-1" in page for page in seen) == 1


def test_tenant_staff_filter_only_their_own_tenants_events(audited, site):
    alpha, beta = audited
    console = signed_in(site, alpha, alpha.admin_email)
    mine = _listed(console.get("/console/audit?action=merchant."))
    assert "m-alpha-1" in mine and "m-beta-1" not in mine
    # Another tenant named in the query string changes nothing: the filter does not exist here.
    assert "m-beta-1" not in _listed(console.get(f"/console/audit?tenant={beta.id}"))
    assert "m-beta-1" not in _listed(console.get("/console/audit?q=carol"))
    # The platform's people stay anonymous to tenants, in the list and in the filters.
    assert "root@platform.example.com" not in _listed(console.get("/console/audit"))
    assert "tenant.suspended" not in _listed(console.get("/console/audit?actor=root@platform"))
    assert "tenant.suspended" not in _listed(console.get("/console/audit?q=root@platform"))
    assert "tenant.suspended" in _listed(console.get("/console/audit?object_type=tenant"))
    by_actor = _listed(console.get("/console/audit?actor=bob"))
    assert "k-alpha-1" in by_actor and "m-alpha-1" not in by_actor
