"""Signing in through the web: the right host, lockout, CSRF, resets, invitations, suspension.

Each test drives the portal as a browser would (Flask test client, one client per host) and
checks what a person would notice: where they land, the message, the e-mail, whether they
can sign in afterwards.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, link_in, text_of
from itsdangerous.timed import TimestampSigner

from core.db import db
from tenants import provisioning
from tenants.audit import Actor
from tenants.isolation import platform_scope
from tenants.models import Tenant

GENERIC_FAILURE = "The e-mail or password is not correct."
FORGOT_ANSWER = "If an account exists for that address, we have sent it a link to choose a new password."
NEW_PASSWORD = "a-brand-new-password-42"


@pytest.fixture
def acme(make):
    return make.tenant("acme", name="Acme Payments")


def body(response) -> str:
    return response.get_data(as_text=True)


def path_of(response) -> str:
    return urlsplit(response.headers["Location"]).path


def assert_signed_in(client, home: str = "/console/") -> None:
    response = client.get(home)
    assert response.status_code == 200, f"{home} answered {response.status_code}: not signed in"


def assert_not_signed_in(client) -> None:
    response = client.get("/console/")
    assert response.status_code == 302
    assert path_of(response) == "/login"


def login_attempts(owner_engine, tenant_id) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT email, ip, outcome, created_at FROM login_attempts WHERE tenant_id = :t ORDER BY created_at"
            ),
            {"t": tenant_id},
        ).all()


def set_status(app, tenant_id, status: str) -> None:
    with app.app_context():
        with platform_scope(db.session):
            tenant = db.session.get(Tenant, tenant_id)
            provisioning.set_tenant_status(tenant, status, Actor.system())
        db.session.remove()


# --- signing in --------------------------------------------------------------------------


def test_staff_sign_in_lands_on_the_console(site, acme):
    client = site(acme.host)
    response = client.login(acme.admin_email)
    assert response.status_code == 302
    assert path_of(response) == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    assert acme.admin_email in body(page)


def test_merchant_user_sign_in_lands_on_the_merchant_dashboard(make, site, acme):
    make.merchant(acme, "Corner Shop", "owner@corner.example.com")
    client = site(acme.host)
    response = client.login("owner@corner.example.com")
    assert response.status_code == 302
    assert path_of(response) == "/merchant/"
    page = client.get("/merchant/")
    assert page.status_code == 200
    assert "Corner Shop" in body(page)


def test_email_is_not_case_sensitive_at_sign_in(site, acme):
    response = site(acme.host).login(acme.admin_email.upper())
    assert response.status_code == 302
    assert path_of(response) == "/console/"


@pytest.mark.parametrize(
    ("email", "password"),
    [("admin@acme.example.com", "not-the-password"), ("nobody@acme.example.com", PASSWORD)],
    ids=["wrong-password", "unknown-email"],
)
def test_failed_sign_in_gives_401_and_the_generic_message(site, acme, email, password):
    client = site(acme.host)
    response = client.login(email, password)
    assert response.status_code == 401
    assert GENERIC_FAILURE in body(response)
    assert_not_signed_in(client)


def test_every_attempt_is_logged_with_time_ip_and_outcome(site, acme, owner_engine):
    started = datetime.now(UTC)
    site(acme.host).login(acme.admin_email, "not-the-password")
    site(acme.host).login("nobody@acme.example.com")
    site(acme.host).login(acme.admin_email)
    finished = datetime.now(UTC)

    rows = login_attempts(owner_engine, acme.id)
    assert sorted((row.email, row.outcome) for row in rows) == sorted(
        [
            (acme.admin_email, "bad_password"),
            ("nobody@acme.example.com", "unknown_user"),
            (acme.admin_email, "success"),
        ]
    )
    for row in rows:
        assert row.ip == "127.0.0.1"
        assert started - timedelta(seconds=5) <= row.created_at <= finished + timedelta(seconds=5)


def test_same_email_under_two_tenants_is_two_accounts(make, site):
    alpha, beta = make.tenant("alpha"), make.tenant("beta")
    shared = "pat@example.com"
    make.user(alpha, shared, "operator", password="alpha-password-1")
    make.user(beta, shared, "operator", password="beta-password-22")

    assert site(alpha.host).login(shared, "alpha-password-1").status_code == 302
    assert site(beta.host).login(shared, "beta-password-22").status_code == 302
    # Each password works only on its own tenant's host.
    wrong = site(alpha.host).login(shared, "beta-password-22")
    assert wrong.status_code == 401 and GENERIC_FAILURE in body(wrong)
    wrong = site(beta.host).login(shared, "alpha-password-1")
    assert wrong.status_code == 401 and GENERIC_FAILURE in body(wrong)


def test_credentials_of_tenant_a_fail_on_tenant_b(make, site):
    alpha, beta = make.tenant("alpha"), make.tenant("beta")
    client = site(beta.host)
    response = client.login(alpha.admin_email)
    assert response.status_code == 401
    assert GENERIC_FAILURE in body(response)
    assert_not_signed_in(client)


def test_session_of_tenant_a_does_not_authenticate_on_tenant_b(make, site):
    alpha, beta = make.tenant("alpha"), make.tenant("beta")
    client = site(alpha.host)
    assert client.login(alpha.admin_email).status_code == 302
    assert_signed_in(client)

    # The same browser on B's host: the cookie is host-only, so B sees an anonymous visitor.
    on_beta = client.client.get("/console/", base_url=f"http://{beta.host}")
    assert on_beta.status_code == 302 and path_of(on_beta) == "/login"

    # A stolen cookie replayed on B's host: the user loader must reject an account of A.
    cookie = client.client.get_cookie("session", domain=alpha.host)
    assert cookie is not None, "no session cookie on A's host"
    thief = site(beta.host)
    thief.client.set_cookie("session", cookie.value, domain=beta.host)
    response = thief.get("/console/")
    assert response.status_code == 302 and path_of(response) == "/login"
    assert alpha.admin_email not in body(thief.get("/login"))

    # Control: the same cookie value on A's host is a valid session.
    replay = site(alpha.host)
    replay.client.set_cookie("session", cookie.value, domain=alpha.host)
    assert_signed_in(replay)


def test_platform_admin_signs_in_only_on_the_platform_host(make, site, acme):
    admin = make.platform_admin()
    platform = site("localhost")
    response = platform.login(admin)
    assert response.status_code == 302
    assert path_of(response) == "/platform/"
    assert platform.get("/platform/").status_code == 200

    on_tenant = site(acme.host).login(admin)
    assert on_tenant.status_code == 401 and GENERIC_FAILURE in body(on_tenant)

    tenant_admin_on_platform = site("localhost")
    response = tenant_admin_on_platform.login(acme.admin_email)
    assert response.status_code == 401 and GENERIC_FAILURE in body(response)
    response = tenant_admin_on_platform.get("/platform/")
    assert response.status_code == 302 and path_of(response) == "/login"


def test_sessions_do_not_cross_between_platform_and_tenant_hosts(make, site, acme):
    admin = make.platform_admin()
    platform = site("localhost")
    platform.login(admin)
    platform_cookie = platform.client.get_cookie("session", domain="localhost")
    tenant = site(acme.host)
    tenant.login(acme.admin_email)
    tenant_cookie = tenant.client.get_cookie("session", domain=acme.host)
    assert platform_cookie is not None and tenant_cookie is not None

    stolen = site(acme.host)
    stolen.client.set_cookie("session", platform_cookie.value, domain=acme.host)
    assert_not_signed_in(stolen)

    stolen = site("localhost")
    stolen.client.set_cookie("session", tenant_cookie.value, domain="localhost")
    response = stolen.get("/platform/")
    assert response.status_code == 302 and path_of(response) == "/login"


# --- lockout -----------------------------------------------------------------------------


def test_sixth_attempt_is_refused_after_five_failures_even_with_the_right_password(site, acme, owner_engine):
    client = site(acme.host)
    for _ in range(5):
        response = client.login(acme.admin_email, "not-the-password")
        assert response.status_code == 401
        assert GENERIC_FAILURE in body(response)
    response = client.login(acme.admin_email)
    assert response.status_code == 401
    assert "Too many failed sign-ins. This account is locked for 15 minutes." in body(response)
    assert_not_signed_in(client)
    assert login_attempts(owner_engine, acme.id)[-1].outcome == "locked"


def test_four_failures_do_not_lock(site, acme):
    client = site(acme.host)
    for _ in range(4):
        assert client.login(acme.admin_email, "not-the-password").status_code == 401
    response = client.login(acme.admin_email)
    assert response.status_code == 302
    assert_signed_in(client)


def test_lockout_follows_the_configuration(app, site, acme, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_LOCKOUT_ATTEMPTS", 2)
    monkeypatch.setitem(app.config, "LOGIN_LOCKOUT_MINUTES", 7)
    client = site(acme.host)
    for _ in range(2):
        assert client.login(acme.admin_email, "not-the-password").status_code == 401
    response = client.login(acme.admin_email)
    assert response.status_code == 401
    assert "locked for 7 minutes" in body(response)


def test_lockout_is_per_tenant(make, site, acme):
    other = make.tenant("other")
    shared = "shared@example.com"
    make.user(acme, shared, "operator")
    make.user(other, shared, "operator")
    for _ in range(5):
        site(acme.host).login(shared, "not-the-password")
    assert "Too many failed sign-ins" in body(site(acme.host).login(shared))
    assert site(other.host).login(shared).status_code == 302


@pytest.mark.parametrize(("minutes_ago", "locked"), [(16, False), (14, True)])
def test_only_failures_within_the_window_count(site, acme, owner_engine, minutes_ago, locked):
    with owner_engine.begin() as conn:
        for _ in range(5):
            conn.execute(
                sa.text(
                    "INSERT INTO login_attempts (tenant_id, id, email, ip, outcome, created_at) "
                    "VALUES (:t, :i, :e, '10.0.0.9', 'bad_password', now() - make_interval(mins => :m))"
                ),
                {"t": acme.id, "i": uuid.uuid4(), "e": acme.admin_email, "m": minutes_ago},
            )
    client = site(acme.host)
    response = client.login(acme.admin_email)
    if locked:
        assert response.status_code == 401
        assert "Too many failed sign-ins" in body(response)
    else:
        assert response.status_code == 302
        assert_signed_in(client)


# --- CSRF --------------------------------------------------------------------------------


def _bad_tokens(site, host) -> dict[str, str | None]:
    # A real token, but of another visitor's session.
    return {"missing": None, "garbage": "not-a-csrf-token", "other-session": site(host).csrf_token("/login")}


@pytest.mark.parametrize("kind", ["missing", "garbage", "other-session"])
def test_login_post_without_a_valid_csrf_token_is_refused(site, acme, kind):
    client = site(acme.host)
    client.get("/login")
    data = {"email": acme.admin_email, "password": PASSWORD}
    token = _bad_tokens(site, acme.host)[kind]
    if token is not None:
        data["csrf_token"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 400
    assert "Form expired" in body(response)
    assert "security token" in body(response)
    assert_not_signed_in(client)


def _draft_name(owner_engine, tenant_id) -> str:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT display_name FROM tenant_brands WHERE tenant_id = :t AND stage = 'draft'"),
            {"t": tenant_id},
        ).scalar_one()


BRAND_FORM = {
    "display_name": "Renamed Brand",
    "theme": "default",
    "primary_color": "#112233",
    "accent_color": "#445566",
    "support_email": "",
}


@pytest.mark.parametrize("kind", ["missing", "garbage", "other-session"])
def test_console_post_without_a_valid_csrf_token_is_refused(site, acme, owner_engine, kind):
    client = site(acme.host)
    client.login(acme.admin_email)
    data = dict(BRAND_FORM)
    token = _bad_tokens(site, acme.host)[kind]
    if token is not None:
        data["csrf_token"] = token
    response = client.post("/console/branding", data=data)
    assert response.status_code == 400
    assert "Form expired" in body(response)
    assert _draft_name(owner_engine, acme.id) == "Acme Payments"
    # Control: the same form with the page's own token is accepted.
    response = client.submit("/console/branding", BRAND_FORM)
    assert response.status_code == 302
    assert _draft_name(owner_engine, acme.id) == "Renamed Brand"


# --- password reset ----------------------------------------------------------------------


def _request_reset(client, email: str):
    response = client.submit("/password/forgot", {"email": email})
    assert response.status_code == 302
    assert path_of(response) == "/login"
    return client.get("/login")


def _reset_path(message, host: str) -> str:
    link = urlsplit(link_in(message))
    assert link.netloc == host, f"the link points to {link.netloc}, not the tenant's own host"
    assert link.path.startswith("/password/reset/")
    return link.path


def test_password_reset_changes_the_password_once(site, acme, outbox):
    client = site(acme.host)
    page = _request_reset(client, acme.admin_email)
    assert FORGOT_ANSWER in body(page)
    mails = outbox()
    assert [m["To"] for m in mails] == [acme.admin_email]
    assert "Acme Payments" in text_of(mails[0])
    path = _reset_path(mails[0], acme.host)

    assert client.get(path).status_code == 200
    response = client.submit(path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302 and path_of(response) == "/login"
    assert "Your password is changed" in body(client.get("/login"))

    old = site(acme.host).login(acme.admin_email, PASSWORD)
    assert old.status_code == 401 and GENERIC_FAILURE in body(old)
    assert site(acme.host).login(acme.admin_email, NEW_PASSWORD).status_code == 302

    # The same link a second time: refused, and the password stays the one chosen.
    again = site(acme.host)
    response = again.get(path)
    assert response.status_code == 400
    assert "already been used" in body(response)
    response = again.submit(
        path, {"password": "yet-another-password", "confirm": "yet-another-password"}, form_page="/login"
    )
    assert response.status_code == 400
    assert site(acme.host).login(acme.admin_email, "yet-another-password").status_code == 401
    assert site(acme.host).login(acme.admin_email, NEW_PASSWORD).status_code == 302


@pytest.mark.parametrize(("seconds_after_expiry", "expired"), [(5, True), (-60, False)])
def test_reset_link_expires(app, site, acme, outbox, monkeypatch, seconds_after_expiry, expired):
    client = site(acme.host)
    _request_reset(client, acme.admin_email)
    path = _reset_path(outbox()[0], acme.host)
    # Jump the token clock to just after (or just before) the link's lifetime.
    later = app.config["PASSWORD_RESET_MAX_AGE"] + seconds_after_expiry
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + later)
    response = client.get(path)
    if expired:
        assert response.status_code == 400
        assert "This link has expired" in body(response)
    else:
        assert response.status_code == 200
        assert "This link" not in body(response)


def test_expired_link_does_not_change_the_password(app, site, acme, outbox, monkeypatch):
    client = site(acme.host)
    _request_reset(client, acme.admin_email)
    path = _reset_path(outbox()[0], acme.host)
    token = client.csrf_token(path)
    real = TimestampSigner.get_timestamp
    later = app.config["PASSWORD_RESET_MAX_AGE"] + 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + later)
    response = client.post(path, data={"csrf_token": token, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    monkeypatch.undo()
    assert site(acme.host).login(acme.admin_email, NEW_PASSWORD).status_code == 401
    assert site(acme.host).login(acme.admin_email, PASSWORD).status_code == 302


def test_tampered_reset_link_is_refused(site, acme, outbox):
    client = site(acme.host)
    _request_reset(client, acme.admin_email)
    path = _reset_path(outbox()[0], acme.host)
    prefix, token = path.rsplit("/", 1)
    position = len(token) // 3
    swapped = "A" if token[position] != "A" else "B"
    tampered = f"{prefix}/{token[:position]}{swapped}{token[position + 1 :]}"
    response = client.get(tampered)
    assert response.status_code == 400
    assert "This link is not valid." in body(response)
    assert client.get(path).status_code == 200  # the untouched link works


def test_forgot_password_for_an_unknown_email_says_the_same_and_sends_nothing(site, acme, outbox):
    page = _request_reset(site(acme.host), "nobody@acme.example.com")
    assert FORGOT_ANSWER in body(page)
    assert outbox() == []


def test_forgot_password_on_another_tenants_host_sends_nothing(make, site, acme, outbox):
    other = make.tenant("other")
    page = _request_reset(site(other.host), acme.admin_email)
    assert FORGOT_ANSWER in body(page)
    assert outbox() == []


def test_a_used_reset_link_invalidates_every_other_one(site, acme, outbox, monkeypatch):
    client = site(acme.host)
    # The first link is stamped two minutes earlier, so the two links surely differ.
    with monkeypatch.context() as patch:
        real = TimestampSigner.get_timestamp
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - 120)
        _request_reset(client, acme.admin_email)
    _request_reset(client, acme.admin_email)
    mails = outbox()
    assert len(mails) == 2
    first, second = (_reset_path(m, acme.host) for m in mails)
    assert first != second
    assert client.get(first).status_code == 200
    assert client.get(second).status_code == 200

    response = client.submit(first, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    response = site(acme.host).get(second)
    assert response.status_code == 400
    assert "already been used" in body(response)
    assert site(acme.host).login(acme.admin_email, NEW_PASSWORD).status_code == 302


# --- invitations -------------------------------------------------------------------------


def test_invitation_is_branded_sets_the_password_and_works_once(site, acme, outbox):
    admin = site(acme.host)
    admin.login(acme.admin_email)
    # A brand name that differs from the tenant's name and slug, to see which one the e-mail uses.
    assert admin.submit("/console/branding", dict(BRAND_FORM, display_name="Acme Pay")).status_code == 302
    assert admin.submit("/console/branding/publish", form_page="/console/branding").status_code == 302

    response = admin.submit(
        "/console/users", {"email": "new.person@example.com", "name": "New Person", "role": "operator"}
    )
    assert response.status_code == 302
    assert "An invitation went to new.person@example.com" in body(admin.get("/console/users"))

    mails = outbox()
    assert [m["To"] for m in mails] == ["new.person@example.com"]
    mail = mails[0]
    display_name, address = parseaddr(mail["From"])
    assert display_name == "Acme Pay"
    assert address.endswith("@acme.localhost")
    text = text_of(mail)
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Acme Pay" in mail["Subject"]
    assert "You are invited to Acme Pay as operator" in text
    for part in (mail["Subject"], mail["From"], text, html):
        assert "Payment Platform" not in part
        assert "platform" not in part.lower()

    link = urlsplit(link_in(mail))
    assert link.netloc == acme.host
    assert link.path.startswith("/invitation/")

    # Before accepting, the invitee has no password and cannot sign in.
    assert site(acme.host).login("new.person@example.com", NEW_PASSWORD).status_code == 401

    invitee = site(acme.host)
    page = invitee.get(link.path)
    assert page.status_code == 200
    assert "Welcome to Acme Pay" in body(page)
    response = invitee.submit(link.path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302 and path_of(response) == "/login"

    response = invitee.login("new.person@example.com", NEW_PASSWORD)
    assert response.status_code == 302 and path_of(response) == "/console/"
    assert_signed_in(invitee)

    second = site(acme.host).get(link.path)
    assert second.status_code == 400
    assert "already been used" in body(second)


def test_invitation_refuses_a_mismatched_confirmation(site, acme, outbox):
    admin = site(acme.host)
    admin.login(acme.admin_email)
    admin.submit("/console/users", {"email": "new.person@example.com", "name": "", "role": "finance"})
    path = urlsplit(link_in(outbox()[0])).path
    invitee = site(acme.host)
    response = invitee.submit(path, {"password": NEW_PASSWORD, "confirm": "something-else-entirely"})
    assert response.status_code == 200
    assert "The two passwords differ." in body(response)
    assert site(acme.host).login("new.person@example.com", NEW_PASSWORD).status_code == 401
    # The link is still good after the mistake.
    assert invitee.submit(path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code == 302
    assert site(acme.host).login("new.person@example.com", NEW_PASSWORD).status_code == 302


# --- suspended tenants, unknown hosts ----------------------------------------------------


def test_suspended_tenant_shows_only_the_notice_until_reactivated(app, site, acme):
    signed_in = site(acme.host)
    signed_in.login(acme.admin_email)
    assert_signed_in(signed_in)
    visitor = site(acme.host)
    token = visitor.csrf_token("/login")

    set_status(app, acme.id, "suspended")
    for path in ("/", "/login", "/password/forgot", "/console/", "/merchant/", "/no-such-page"):
        response = visitor.get(path)
        assert response.status_code == 403, path
        assert "This portal is suspended" in body(response), path
    response = visitor.post("/login", data={"csrf_token": token, "email": acme.admin_email, "password": PASSWORD})
    assert response.status_code == 403
    assert "This portal is suspended" in body(response)
    response = signed_in.get("/console/")
    assert response.status_code == 403
    assert "This portal is suspended" in body(response)

    set_status(app, acme.id, "active")
    assert_not_signed_in(visitor)  # the attempt during the suspension did not sign in
    assert_signed_in(signed_in)
    assert site(acme.host).login(acme.admin_email).status_code == 302


@pytest.mark.parametrize("host", ["nosuch.localhost", "evil.example.com"])
@pytest.mark.parametrize("path", ["/", "/login"])
def test_unknown_host_gets_a_plain_404_naming_no_tenant(site, acme, host, path):
    response = site(host).get(path)
    assert response.status_code == 404
    text = body(response)
    assert "Page not found" in text
    for name in ("Acme", "acme", "Payment Platform"):
        assert name not in text
    assert "<form" not in text
    assert "<link" not in text  # the plain page: no theme's stylesheet either


def test_known_host_shows_the_tenants_name(site, acme):
    # Control for the test above: the tenant's own host does name it.
    response = site(acme.host).get("/login")
    assert response.status_code == 200
    assert "Acme Payments" in body(response)


# --- cookies -----------------------------------------------------------------------------


def test_session_cookie_is_httponly_lax_and_host_only(app, site, acme):
    response = site(acme.host).login(acme.admin_email)
    assert response.status_code == 302
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, "signing in set no session cookie"
    attributes = [part.strip().lower() for part in cookies[-1].split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    # Host-only: a Domain attribute would share the session with every tenant's subdomain.
    assert not any(a.startswith("domain=") for a in attributes)
    # Plain-HTTP development configuration: no Secure flag (production sets it from HTTPS).
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert "secure" not in attributes
