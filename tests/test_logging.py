"""Structured logs: one JSON object per line with the request id and the tenant, a line per request
that keeps secrets (a checkout's client_secret, a reset link's token) out, and the job id in the
lines written while a job runs."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from core.db import db
from portal import logs
from tenants import api_keys
from tenants.audit import Actor


@pytest.fixture
def json_lines(caplog):
    """The JSON lines the app's formatter writes, for everything logged at INFO and above."""
    caplog.set_level(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)

    class Lines:
        @property
        def text(self) -> str:
            handler.flush()
            return stream.getvalue()

        def all(self) -> list[dict]:
            return [json.loads(line) for line in self.text.splitlines() if line.strip()]

        def of(self, logger: str) -> list[dict]:
            return [line for line in self.all() if line["logger"] == logger]

    yield Lines()
    root.removeHandler(handler)


@pytest.fixture
def checkout(app, make):
    """A tenant, and a PaymentIntent of its merchant made through the API: (tenant, intent)."""
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    make.channel_account(tenant.id)
    with app.app_context():
        _, secret = api_keys.create_key(tenant.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    response = app.test_client().post(
        "/v1/payment_intents",
        base_url=f"http://{tenant.host}",
        headers={"Authorization": f"Bearer {secret}"},
        data={"amount": "2000", "currency": "usd"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return tenant, response.get_json()


def test_a_request_writes_one_json_line_with_its_id_and_tenant_and_no_client_secret(app, site, checkout, json_lines):
    tenant, intent = checkout
    assert intent["client_secret"]

    response = site(tenant.host).get(
        f"/checkout/{intent['id']}?client_secret={intent['client_secret']}", headers={"X-Request-ID": "probe-1234"}
    )

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "probe-1234"
    [line] = [x for x in json_lines.of("portal.request") if x["request_id"] == "probe-1234"]
    assert line["tenant_id"] == str(tenant.id)
    assert line["level"] == "INFO"
    assert line["time"].endswith("+00:00")
    assert line["method"] == "GET"
    assert line["path"] == f"/checkout/{intent['id']}"
    assert line["endpoint"] == "checkout.page"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["message"] == f"GET /checkout/{intent['id']} 200"
    assert intent["client_secret"] not in json_lines.text
    assert "client_secret" not in json_lines.text


def test_every_line_of_a_request_carries_its_id(app, site, checkout, json_lines):
    tenant, intent = checkout

    response = site(tenant.host).get(f"/checkout/{intent['id']}?client_secret=wrong")

    request_id = response.headers["X-Request-ID"]
    lines = [line for line in json_lines.all() if line["request_id"] == request_id]
    assert lines
    assert all(line["tenant_id"] == str(tenant.id) for line in lines)


@pytest.mark.parametrize("given", ["", "has space", "x" * 200, "<script>", 'quote"d', "ünïcode"])
def test_an_unusable_request_id_is_replaced_by_a_new_one(site, given, json_lines):
    response = site("localhost").get("/login", headers={"X-Request-ID": given})

    request_id = response.headers["X-Request-ID"]
    assert request_id != given
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    [line] = [x for x in json_lines.of("portal.request") if x["request_id"] == request_id]
    assert line["tenant_id"] is None  # the platform's own host
    assert line["path"] == "/login"


def test_each_request_without_an_id_gets_its_own(site):
    client = site("localhost")

    first = client.get("/login").headers["X-Request-ID"]
    second = client.get("/login").headers["X-Request-ID"]

    assert first != second


def test_a_token_in_the_path_is_not_logged(site, make, json_lines):
    tenant = make.tenant("acme")
    token = "reset-token-that-must-not-leak"

    response = site(tenant.host).get(f"/password/reset/{token}")

    [line] = [x for x in json_lines.of("portal.request") if x["request_id"] == response.headers["X-Request-ID"]]
    assert line["path"] == "/password/reset/[redacted]"
    assert token not in json_lines.text


def test_lines_written_by_a_job_carry_its_id_and_tenant(app, site, make, run_jobs, json_lines):
    tenant = make.tenant("acme")
    site(tenant.host).submit("/password/forgot", {"email": tenant.admin_email}, form_page="/password/forgot")
    with app.app_context():
        from portal import jobs

        [job_id] = jobs.queue("mail").job_ids

    assert run_jobs() == 1

    mail_lines = [line for line in json_lines.of("portal.mail") if line.get("job_id") == job_id]
    assert mail_lines, json_lines.text
    assert all(line["tenant_id"] == str(tenant.id) for line in mail_lines)
    # Outside the job, no job id.
    assert all("job_id" not in line for line in json_lines.of("portal.request"))


def test_the_development_servers_request_lines_lose_their_query_string(json_lines):
    logging.getLogger("werkzeug").info(
        '127.0.0.1 - - [01/Dec/2026 00:00:00] "GET /checkout/pi_1?client_secret=pi_1_secret_abc HTTP/1.1" 200 -'
    )

    [line] = json_lines.of("werkzeug")
    assert line["message"] == '127.0.0.1 - - [01/Dec/2026 00:00:00] "GET /checkout/pi_1 HTTP/1.1" 200 -'


def test_an_exception_is_logged_in_the_same_line(json_lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("portal.test").exception("it failed")

    [line] = json_lines.of("portal.test")
    assert line["level"] == "ERROR"
    assert line["message"] == "it failed"
    assert "ValueError: boom" in line["exc_info"]


def test_httpx_does_not_log_the_urls_it_requests(app, caplog):
    """httpx writes each request's whole URL at INFO; a merchant's webhook URL may carry a token and a
    checkout link carries its client secret, so its request lines stay out of the log."""
    caplog.set_level(logging.INFO)
    secret = "pi_3Nlogged_secret_9f8e7d"
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://localhost") as client:
        assert client.get(f"/checkout/pi_3Nlogged?client_secret={secret}").status_code == 404
    assert not [record for record in caplog.records if secret in record.getMessage()]
