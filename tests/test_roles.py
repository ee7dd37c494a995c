"""Who may open what, through the web: tenant staff roles, merchant roles, anonymous visitors,
and blueprints that exist only on their own kind of host."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from conftest import link_in

FORBIDDEN = "Your account is not allowed to open this page."
NEW_PASSWORD = "a-brand-new-password-42"

EMAILS = {
    "admin": "admin@acme.example.com",
    "operator": "operator@acme.example.com",
    "finance": "finance@acme.example.com",
    "owner": "owner@corner.example.com",
    "staff": "staff@corner.example.com",
}


@pytest.fixture
def acme(make):
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, EMAILS["operator"], "operator")
    make.user(tenant, EMAILS["finance"], "finance")
    merchant_id = make.merchant(tenant, "Corner Shop", EMAILS["owner"])
    make.user(tenant, EMAILS["staff"], "staff", merchant_id=merchant_id)
    return tenant


@pytest.fixture
def signed_in(site, acme):
    """`signed_in("operator")` -> a client on acme's host, signed in with that role."""

    def build(role: str):
        client = site(acme.host)
        response = client.login(EMAILS[role])
        assert response.status_code == 302, f"{role} could not sign in"
        return client

    return build


def body(response) -> str:
    return response.get_data(as_text=True)


def count(owner_engine, sql: str, **params) -> int:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def draft_brand(owner_engine, tenant_id) -> tuple:
    with owner_engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT display_name, theme, primary_color, accent_color, support_email "
                    "FROM tenant_brands WHERE tenant_id = :t AND stage = 'draft'"
                ),
                {"t": tenant_id},
            ).one()
        )


BRAND_FORM = {
    "display_name": "Taken Over",
    "theme": "midnight",
    "primary_color": "#000000",
    "accent_color": "#ffffff",
    "support_email": "",
}

# Who may open which page, route by route and role by role: ACCESS in tests/test_route_access.py.


# --- tenant staff roles ------------------------------------------------------------------


def test_operator_cannot_change_the_brand(signed_in, acme, owner_engine):
    before = draft_brand(owner_engine, acme.id)
    operator = signed_in("operator")
    assert operator.get("/console/branding").status_code == 403
    response = operator.submit("/console/branding", BRAND_FORM, form_page="/console/")
    assert response.status_code == 403
    assert FORBIDDEN in body(response)
    response = operator.submit("/console/branding/publish", form_page="/console/")
    assert response.status_code == 403
    assert draft_brand(owner_engine, acme.id) == before
    # Control: the admin's identical request does change the draft.
    admin = signed_in("admin")
    assert admin.submit("/console/branding", BRAND_FORM).status_code == 302
    assert draft_brand(owner_engine, acme.id)[0] == "Taken Over"


def test_only_the_admin_sets_the_tenants_language_and_time_zone(signed_in, acme, owner_engine):
    form = {"default_locale": "zh", "time_zone": "Asia/Shanghai"}
    for role, home in (
        ("operator", "/console/"),
        ("finance", "/console/"),
        ("owner", "/merchant/"),
        ("staff", "/merchant/"),
    ):
        response = signed_in(role).submit("/console/branding/preferences", form, form_page=home)
        assert response.status_code == 403, role
    assert count(owner_engine, "SELECT count(*) FROM tenants WHERE default_locale = 'zh'") == 0
    # Control: the admin's identical request changes it.
    assert (
        signed_in("admin").submit("/console/branding/preferences", form, form_page="/console/branding").status_code
        == 302
    )
    assert count(owner_engine, "SELECT count(*) FROM tenants WHERE default_locale = 'zh'") == 1


def test_finance_cannot_create_merchants_but_an_operator_can(signed_in, acme, owner_engine, outbox):
    form = {"name": "New Shop", "owner_email": "boss@new-shop.example.com"}
    finance = signed_in("finance")
    response = finance.submit("/console/merchants", form)
    assert response.status_code == 403
    assert FORBIDDEN in body(response)
    assert count(owner_engine, "SELECT count(*) FROM merchants WHERE name = 'New Shop'") == 0
    assert outbox() == []

    operator = signed_in("operator")
    response = operator.submit("/console/merchants", form)
    assert response.status_code == 302
    page = operator.get(urlsplit(response.headers["Location"]).path)
    assert page.status_code == 200
    assert "New Shop" in body(page)
    assert "boss@new-shop.example.com" in body(page)
    assert count(owner_engine, "SELECT count(*) FROM merchants WHERE name = 'New Shop'") == 1
    assert [m["To"] for m in outbox()] == ["boss@new-shop.example.com"]


def test_operator_cannot_invite_staff(signed_in, acme, owner_engine, outbox):
    operator = signed_in("operator")
    response = operator.submit(
        "/console/users", {"email": "new@example.com", "name": "", "role": "admin"}, form_page="/console/"
    )
    assert response.status_code == 403
    assert count(owner_engine, "SELECT count(*) FROM users WHERE email = 'new@example.com'") == 0
    assert outbox() == []


# --- merchant users and tenant staff stay in their own area ------------------------------


def test_merchant_user_cannot_open_the_console(signed_in):
    for role in ("owner", "staff"):
        response = signed_in(role).get("/console/")
        assert response.status_code == 403
        assert FORBIDDEN in body(response)


def test_tenant_admin_cannot_open_the_merchant_dashboard(signed_in):
    response = signed_in("admin").get("/merchant/")
    assert response.status_code == 403
    assert FORBIDDEN in body(response)


@pytest.mark.parametrize(
    "path",
    [
        "/console/",
        "/console/branding",
        "/console/users",
        "/console/onboarding",
        "/merchant/",
        "/merchant/team",
        "/merchant/onboarding",
    ],
)
def test_anonymous_visitors_are_sent_to_sign_in(site, acme, path):
    response = site(acme.host).get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [path]


@pytest.mark.parametrize(
    "path", ["/platform/", "/platform/audit", "/platform/health", "/platform/risk", "/platform/jobs/"]
)
def test_anonymous_on_the_platform_host_is_sent_to_sign_in(site, path):
    response = site("localhost").get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [path]


@pytest.mark.parametrize("path", ["/platform/audit", "/platform/health", "/platform/risk", "/platform/jobs/"])
def test_a_platform_admin_opens_the_platform_pages(make, site, path):
    platform = site("localhost")
    platform.login(make.platform_admin())
    assert platform.get(path).status_code == 200


def test_signing_in_returns_to_the_page_asked_for(site, acme):
    client = site(acme.host)
    login_url = client.get("/console/users").headers["Location"]
    response = client.submit(login_url, {"email": EMAILS["admin"], "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/console/users"


@pytest.mark.parametrize("target", ["https://evil.example.com/", "//evil.example.com/x", "javascript:alert(1)"])
def test_signing_in_never_redirects_off_site(site, acme, target):
    client = site(acme.host)
    response = client.submit(
        f"/login?next={target}", {"email": EMAILS["admin"], "password": "correct-horse-battery"}, form_page="/login"
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.netloc in ("", acme.host)
    assert location.path == "/console/"


# --- blueprints exist only on their own kind of host -------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/platform/", "/platform/tenants/new", "/platform/audit", "/platform/health", "/platform/risk", "/platform/jobs/"],
)
def test_platform_console_does_not_exist_on_a_tenant_host(site, signed_in, acme, path):
    response = signed_in("admin").get(path)
    assert response.status_code == 404
    assert "Page not found" in body(response)
    assert site(acme.host).get(path).status_code == 404


@pytest.mark.parametrize(
    "path", ["/console/", "/console/branding", "/console/audit", "/merchant/", "/merchant/team", "/merchant/terminals"]
)
def test_tenant_areas_do_not_exist_on_the_platform_host(make, site, path):
    platform = site("localhost")
    platform.login(make.platform_admin())
    assert platform.get("/platform/").status_code == 200  # signed in, for the control
    response = platform.get(path)
    assert response.status_code == 404
    assert "Page not found" in body(response)
    assert site("localhost").get(path).status_code == 404


# --- the hosted checkout: public, for payers ----------------------------------------------


@pytest.fixture
def checkout_link(app, make, acme):
    """The checkout link of a PaymentIntent of acme's merchant: what its payer opens."""
    from core.db import db
    from payments import intents
    from tenants.isolation import tenant_context
    from tenants.models import Merchant

    make.channel_account(acme.id)
    with app.app_context(), tenant_context(db.session, acme.id):
        merchant = db.session.execute(sa.select(Merchant.id)).scalar_one()
        pi = intents.create(intents.MerchantContext(acme.id, merchant, False), amount=1500, currency="usd")
        link = f"/checkout/{pi.id}?client_secret={pi.client_secret}"
        db.session.remove()
    return link


@pytest.mark.parametrize("role", [None, *sorted(EMAILS)])
def test_the_checkout_opens_for_anyone_with_the_link(site, signed_in, acme, checkout_link, role):
    client = site(acme.host) if role is None else signed_in(role)
    response = client.get(checkout_link)
    assert response.status_code == 200
    assert "Corner Shop" in body(response) and "15.00 USD" in body(response)
    # Without the link's secret it is no page, for anyone.
    assert client.get(checkout_link.split("?")[0]).status_code == 404


def test_the_checkout_does_not_exist_on_the_platform_host(make, site, checkout_link):
    platform = site("localhost")
    platform.login(make.platform_admin())
    for client in (platform, site("localhost")):
        response = client.get(checkout_link)
        assert response.status_code == 404
        assert "Corner Shop" not in body(response)


# --- merchant team -----------------------------------------------------------------------


def test_merchant_staff_cannot_manage_the_team(signed_in, acme, owner_engine, outbox):
    staff = signed_in("staff")
    assert staff.get("/merchant/team").status_code == 403
    response = staff.submit(
        "/merchant/team", {"email": "friend@example.com", "name": "", "role": "owner"}, form_page="/merchant/"
    )
    assert response.status_code == 403
    assert count(owner_engine, "SELECT count(*) FROM users WHERE email = 'friend@example.com'") == 0
    assert outbox() == []


def test_merchant_owner_invites_a_colleague(signed_in, site, acme, outbox):
    owner = signed_in("owner")
    page = owner.get("/merchant/team")
    assert page.status_code == 200
    assert "Team of Corner Shop" in body(page)

    response = owner.submit(
        "/merchant/team", {"email": "colleague@corner.example.com", "name": "Col League", "role": "staff"}
    )
    assert response.status_code == 302
    page = owner.get("/merchant/team")
    assert "An invitation went to colleague@corner.example.com" in body(page)
    assert "colleague@corner.example.com" in body(page)

    mails = outbox()
    assert [m["To"] for m in mails] == ["colleague@corner.example.com"]
    link = urlsplit(link_in(mails[0]))
    assert link.netloc == acme.host
    colleague = site(acme.host)
    response = colleague.submit(link.path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    response = colleague.login("colleague@corner.example.com", NEW_PASSWORD)
    assert urlsplit(response.headers["Location"]).path == "/merchant/"
    dashboard = colleague.get("/merchant/")
    assert dashboard.status_code == 200
    assert "Corner Shop" in body(dashboard)
    assert colleague.get("/merchant/team").status_code == 403  # invited as staff, not owner


def test_merchant_owner_cannot_invite_tenant_staff(signed_in, acme, owner_engine, outbox):
    owner = signed_in("owner")
    response = owner.submit("/merchant/team", {"email": "sneaky@example.com", "name": "", "role": "admin"})
    assert response.status_code == 422
    assert count(owner_engine, "SELECT count(*) FROM users WHERE email = 'sneaky@example.com'") == 0
    assert outbox() == []
