"""The platform admin provisions, lists, suspends tenants, in the console and from the CLI."""

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, link_in

from tenants.models import AuditEvent, Tenant

NEW = {
    "name": "Nova Pay",
    "slug": "nova",
    "domains": "pay.nova.example.com\nnova-pay.example.com",
    "theme": "midnight",
    "admin_email": "Boss@Nova.example.com",
}


@pytest.fixture
def platform(make, site):
    make.platform_admin()
    client = site("localhost")
    client.login("root@platform.example.com")
    return client


def test_provision_a_tenant_in_the_console(platform, outbox, site, owner_engine):
    page = platform.submit("/platform/tenants/new", NEW, follow_redirects=True)
    html = page.get_data(as_text=True)
    assert "Nova Pay is ready" in html and "boss@nova.example.com" in html
    assert "pay.nova.example.com (primary)" in html
    [invitation] = outbox()
    assert invitation["To"] == "boss@nova.example.com"
    link = link_in(invitation)
    assert link.startswith("http://pay.nova.example.com/invitation/")
    # The invitee sets a password on the tenant's own host, then signs in there.
    tenant_site = site("pay.nova.example.com")
    path = link.split("pay.nova.example.com", 1)[1]
    done = tenant_site.submit(
        path, {"password": "a-brand-new-secret", "confirm": "a-brand-new-secret"}, follow_redirects=True
    )
    assert "Your password is set" in done.get_data(as_text=True)
    console = tenant_site.login("boss@nova.example.com", "a-brand-new-secret")
    assert console.status_code == 302 and console.location.endswith("/console/")
    # The subdomain reaches the same tenant.
    assert "Nova Pay" in site("nova.localhost").get("/login").get_data(as_text=True)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(AuditEvent.action).where(AuditEvent.action == "tenant.provisioned")).scalar()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("slug", "Not A Slug", "Use lower-case letters, digits and hyphens"),
        ("slug", "admin", "reserved"),
        ("admin_email", "not-an-email", "is not a valid e-mail address"),
        ("domains", "bad domain!", "is not a valid domain name"),
    ],
)
def test_bad_input_is_explained_and_keeps_what_was_typed(platform, owner_engine, field, value, message):
    page = platform.submit("/platform/tenants/new", {**NEW, field: value})
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert message in html
    assert 'value="Nova Pay"' in html
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Tenant)).scalar() == 0


def test_a_taken_slug_or_domain_is_refused(platform, make):
    make.tenant("nova", domains=["pay.nova.example.com"])
    taken_slug = platform.submit("/platform/tenants/new", {**NEW, "domains": ""})
    assert "The slug &#39;nova&#39; is taken." in taken_slug.get_data(as_text=True)
    taken_domain = platform.submit("/platform/tenants/new", {**NEW, "slug": "nova2"})
    assert "Domain already in use: pay.nova.example.com" in taken_domain.get_data(as_text=True)


def test_tenant_list_search_filter_and_pages(platform, make, app):
    for index in range(3):
        make.tenant(f"shop{index}", name=f"Shop {index}")
    make.tenant("other", name="Other Co")
    everyone = platform.get("/platform/").get_data(as_text=True)
    assert all(name in everyone for name in ("Shop 0", "Shop 1", "Shop 2", "Other Co"))
    found = platform.get("/platform/?q=other").get_data(as_text=True)
    assert "Other Co" in found and "Shop 0" not in found
    assert "No tenants match." in platform.get("/platform/?status=suspended").get_data(as_text=True)


def test_tenant_list_pages_through_everything_once(platform, make, app, monkeypatch):
    import re

    for index in range(5):
        make.tenant(f"shop{index}", name=f"Shop {index}")
    monkeypatch.setitem(app.config, "PAGE_SIZE", 2)
    seen, path, pages = [], "/platform/", 0
    while path:
        html = platform.get(path).get_data(as_text=True)
        seen += re.findall(r">(Shop \d)</a>", html)
        more = re.search(r'href="(/platform/\?after=[^"]+)"', html)
        path = more.group(1).replace("&amp;", "&") if more else None
        pages += 1
    assert pages == 3
    assert sorted(seen) == [f"Shop {i}" for i in range(5)]
    assert seen[0] == "Shop 4"  # newest first


def test_suspend_and_reactivate(platform, make, site, owner_engine):
    tenant = make.tenant("acme", name="Acme Pay")
    user_site = site("acme.localhost")
    assert user_site.login(tenant.admin_email).status_code == 302
    suspended = platform.submit(
        f"/platform/tenants/{tenant.id}/status",
        {"status": "suspended"},
        form_page=f"/platform/tenants/{tenant.id}",
        follow_redirects=True,
    )
    assert "Acme Pay is now suspended." in suspended.get_data(as_text=True)
    # Signed-in users are out, and nobody can sign in.
    page = user_site.get("/console/")
    assert page.status_code == 403 and "This portal is suspended" in page.get_data(as_text=True)
    assert site("acme.localhost").get("/login").status_code == 403
    platform.submit(
        f"/platform/tenants/{tenant.id}/status", {"status": "active"}, form_page=f"/platform/tenants/{tenant.id}"
    )
    assert site("acme.localhost").login(tenant.admin_email).status_code == 302
    with owner_engine.connect() as conn:
        actions = conn.execute(sa.select(AuditEvent.action).order_by(AuditEvent.created_at)).scalars().all()
    assert actions[-2:] == ["tenant.suspended", "tenant.reactivated"]


def test_platform_console_needs_a_platform_admin(site, make):
    tenant = make.tenant("acme")
    anonymous = site("localhost").get("/platform/")
    assert anonymous.status_code == 302 and "/login" in anonymous.location
    # A tenant admin's credentials mean nothing on the platform host.
    assert site("localhost").login(tenant.admin_email).status_code == 401


def test_cli_create_list_suspend(app, outbox, owner_engine):
    runner = app.test_cli_runner()
    created = runner.invoke(
        args=[
            "tenants",
            "create",
            "--name",
            "Cli Pay",
            "--slug",
            "clipay",
            "--theme",
            "midnight",
            "--admin-email",
            "admin@clipay.example.com",
            "--domain",
            "pay.clipay.example.com",
        ]
    )
    assert created.exit_code == 0, created.output
    assert "created tenant clipay" in created.output
    assert "http://pay.clipay.example.com/invitation/" in created.output
    [mail] = outbox()
    assert mail["To"] == "admin@clipay.example.com"
    listed = runner.invoke(args=["tenants", "list"])
    assert "clipay" in listed.output and "active" in listed.output and "pay.clipay.example.com" in listed.output
    again = runner.invoke(
        args=["tenants", "create", "--name", "X", "--slug", "clipay", "--admin-email", "a@x.example.com"]
    )
    assert again.exit_code != 0 and "slug: The slug 'clipay' is taken." in again.output
    assert runner.invoke(args=["tenants", "suspend", "clipay"]).exit_code == 0
    assert "suspended" in runner.invoke(args=["tenants", "list"]).output
    missing = runner.invoke(args=["tenants", "suspend", "nosuch"])
    assert missing.exit_code != 0 and "no tenant with slug 'nosuch'" in missing.output


def test_cli_create_admin_then_sign_in(app, site):
    result = app.test_cli_runner().invoke(
        args=["platform", "create-admin", "--email", "ops@platform.example.com"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert site("localhost").login("ops@platform.example.com").status_code == 302


def test_tenants_see_platform_actions_without_the_operators_identity(platform, make, site):
    tenant = make.tenant("acme", name="Acme Pay")
    platform.submit(
        f"/platform/tenants/{tenant.id}/status", {"status": "suspended"}, form_page=f"/platform/tenants/{tenant.id}"
    )
    platform.submit(
        f"/platform/tenants/{tenant.id}/status", {"status": "active"}, form_page=f"/platform/tenants/{tenant.id}"
    )
    assert "root@platform.example.com" in platform.get(f"/platform/tenants/{tenant.id}").get_data(as_text=True)
    console = site("acme.localhost")
    console.login(tenant.admin_email)
    html = console.get("/console/audit").get_data(as_text=True)
    assert "tenant.suspended" in html and "Platform operator" in html
    assert "root@platform.example.com" not in html
