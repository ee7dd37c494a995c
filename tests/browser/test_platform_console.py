"""A platform admin looks after the platform in the browser: system health, the jobs dashboard
(rq-dashboard, whose delete action goes through with the app's CSRF protection) and every tenant's
audit log, filtered."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from rq.job import Job

from core.db import db
from portal import jobs
from tenants import audit
from tenants.audit import Actor
from tenants.isolation import platform_scope
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD


def _waiting_job(app) -> str:
    """A job that waits in the `mail` queue (no worker runs in this test)."""
    with app.app_context():
        return jobs.enqueue("mail", print, "hello from the queue").id


def test_a_platform_admin_checks_health_jobs_and_the_audit_log(app, page, live_server, make, artifacts):
    alpha = make.tenant("alpha", name="Alpha Corp")
    make.tenant("beta", name="Beta Corp")
    with app.app_context(), platform_scope(db.session):
        audit.record(
            alpha.id,
            Actor("user", email="ann@alpha.example.com"),
            "merchant.renamed",
            "merchant",
            "m-1",
            {"name": {"before": "Corner Shop", "after": "Corner Café"}},
        )
        db.session.commit()
        db.session.remove()
    job_id = _waiting_job(app)
    root = make.platform_admin()
    sign_in(page, live_server.url("localhost", "/login"), root, PASSWORD)
    page.wait_for_url(live_server.url("localhost", "/platform/"))

    # Health: every component listed; the database and Redis up; no worker runs here, which it says.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    page.wait_for_url(live_server.url("localhost", "/platform/health"))
    expect(page.get_by_role("heading", level=1)).to_have_text("System health")
    components = page.locator("#components")
    expect(components.get_by_role("row", name=re.compile(r"^Database up"))).to_be_visible()
    expect(components.get_by_role("row", name=re.compile(r"^Redis up"))).to_be_visible()
    expect(components).to_contain_text("No worker is running")
    expect(page.locator("#queue-mail")).to_contain_text("1")
    expect(page.locator("#sweeps")).to_contain_text("never ran")
    page.screenshot(path=str(artifacts / "platform-health.png"), full_page=True)

    # Jobs: rq-dashboard shows the queue with the waiting job; deleting it works (CSRF and all).
    page.goto(live_server.url("localhost", "/platform/health"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    page.wait_for_url(live_server.url("localhost", "/platform/jobs/"))
    expect(page.get_by_role("row", name=re.compile(r"^mail 1 "))).to_be_visible()
    page.screenshot(path=str(artifacts / "platform-jobs.png"), full_page=True)
    page.goto(live_server.url("localhost", f"/platform/jobs/0/view/job/{job_id}"))
    expect(page.locator("body")).to_contain_text("hello from the queue")
    page.screenshot(path=str(artifacts / "platform-job.png"), full_page=True)
    with page.expect_response(lambda r: r.url.endswith(f"/job/{job_id}/delete")) as deleted:
        page.locator("#delete-job-btn").click()
        page.locator("#confirmation-modal-yes").click()
    assert deleted.value.status == 200
    with app.app_context():
        assert not Job.exists(job_id, connection=jobs.redis_connection())

    # The audit log: every tenant's events, filtered to one tenant, with what changed.
    page.goto(live_server.url("localhost", "/platform/"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    page.wait_for_url(live_server.url("localhost", "/platform/audit"))
    log = page.locator("#audit-log")
    expect(log).to_contain_text("Beta Corp")
    page.get_by_label("Tenant", exact=True).fill("alpha")
    page.get_by_label("Action", exact=True).fill("merchant.")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/platform/audit\?.*tenant=alpha"))
    expect(log).not_to_contain_text("Beta Corp")
    row = log.locator("tr.audit-event")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("ann@alpha.example.com")
    expect(row.locator("td.changes")).to_have_text("name: Corner Shop → Corner Café")
    expect(page.get_by_label("Tenant", exact=True)).to_have_value("alpha")
    page.screenshot(path=str(artifacts / "platform-audit.png"), full_page=True)
