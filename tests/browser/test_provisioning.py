"""The tenant's whole life through the browser: a platform admin provisions it, its admin
accepts the e-mailed invitation on the tenant's own host and signs in to the console; later
the platform admin suspends it and nobody can sign in there any more."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD, link_in

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_provisioned_tenant_admin_accepts_the_invitation_and_reaches_the_console(
    page, live_server, make, outbox, artifacts
):
    root = make.platform_admin()
    sign_in(page, live_server.url("localhost", "/login"), root, PASSWORD)
    page.wait_for_url(live_server.url("localhost", "/platform/"))

    page.locator("main").get_by_role("link", name="Provision a tenant").click()
    page.wait_for_url(live_server.url("localhost", "/platform/tenants/new"))
    page.get_by_label("Name", exact=True).fill("Nova Payments")
    page.get_by_label("Slug", exact=True).fill("nova")
    page.get_by_label("Theme", exact=True).select_option("midnight")
    page.get_by_label("Admin e-mail", exact=True).fill("boss@nova.example.com")
    page.get_by_role("button", name="Provision").click()

    page.wait_for_url(re.compile(re.escape(live_server.url("localhost", "/platform/tenants/")) + UUID + "$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Nova Payments")
    expect(page.locator("#tenant-status")).to_have_text("active")
    expect(page.get_by_text("An invitation went to boss@nova.example.com")).to_be_visible()

    messages = [m for m in outbox() if m["To"] == "boss@nova.example.com"]
    assert len(messages) == 1
    invitation = messages[0]
    sender = invitation["From"].addresses[0]
    assert sender.display_name == "Nova Payments"
    assert sender.domain == "nova.localhost"
    assert "Platform" not in str(invitation["From"])
    link = link_in(invitation)
    assert re.fullmatch(re.escape(live_server.url("nova.localhost", "/invitation/")) + r"[\w.-]+", link), link

    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to Nova Payments")
    new_password = "nova-admin-passphrase"
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("Repeat the password", exact=True).fill(new_password)
    page.get_by_role("button", name="Set the password").click()
    page.wait_for_url(live_server.url("nova.localhost", "/login"))
    expect(page.get_by_text("Your password is set.")).to_be_visible()

    sign_in(page, live_server.url("nova.localhost", "/login"), "boss@nova.example.com", new_password)
    page.wait_for_url(live_server.url("nova.localhost", "/console/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Nova Payments console")
    expect(page.locator(".sidebar .brand-name")).to_have_text("Nova Payments")  # the midnight layout
    expect(page.locator("body")).to_have_css("font-family", re.compile(r"^Georgia\b"))
    page.screenshot(path=str(artifacts / "console-nova.png"), full_page=True)

    # The invitation is spent: the same link does not set a password twice.
    response = page.goto(link)
    assert response is not None and response.status == 400


def test_suspended_tenant_shows_the_notice_and_nobody_signs_in(page, new_context, live_server, make):
    orbit = make.tenant("orbit", name="Orbit Pay")
    root = make.platform_admin()
    tenant_login = live_server.url(orbit.host, "/login")

    # A colleague is signed in to the console; the tenant's admin has the sign-in form open.
    colleague = new_context().new_page()
    sign_in(colleague, tenant_login, orbit.admin_email, PASSWORD)
    colleague.wait_for_url(live_server.url(orbit.host, "/console/"))
    expect(colleague.get_by_role("heading", level=1)).to_have_text("Orbit Pay console")

    latecomer = new_context().new_page()
    latecomer.goto(tenant_login)
    latecomer.get_by_label("E-mail", exact=True).fill(orbit.admin_email)
    latecomer.get_by_label("Password", exact=True).fill(PASSWORD)

    # The platform admin suspends the tenant from its page.
    sign_in(page, live_server.url("localhost", "/login"), root, PASSWORD)
    page.wait_for_url(live_server.url("localhost", "/platform/"))
    page.get_by_role("link", name="Orbit Pay").click()
    page.wait_for_url(re.compile(re.escape(live_server.url("localhost", "/platform/tenants/")) + UUID + "$"))
    expect(page.locator("#tenant-status")).to_have_text("active")
    page.locator("#suspend-button").click()
    expect(page.locator("#tenant-status")).to_have_text("suspended")
    expect(page.get_by_text("Orbit Pay is now suspended.")).to_be_visible()
    expect(page.locator("#reactivate-button")).to_be_visible()

    # The form that was open before: submitting it signs no one in.
    latecomer.locator("#signin-button").click()
    expect(latecomer.locator(".suspended-notice")).to_contain_text("suspended")
    expect(latecomer).to_have_url(tenant_login)
    expect(latecomer.locator("#signin-button")).to_have_count(0)
    latecomer.goto(live_server.url(orbit.host, "/console/"))
    expect(latecomer.locator(".suspended-notice")).to_be_visible()

    # The login page now is the notice alone, in the tenant's brand, with no form.
    response = latecomer.goto(tenant_login)
    assert response is not None and response.status == 403
    expect(latecomer.get_by_role("heading", level=1)).to_have_text("Orbit Pay")
    expect(latecomer.get_by_role("alert")).to_contain_text("This portal is suspended")
    expect(latecomer.locator("form")).to_have_count(0)

    # The colleague who was signed in sees only the notice too.
    colleague.reload()
    expect(colleague.locator(".suspended-notice")).to_contain_text("suspended")
    expect(colleague.get_by_text("Orbit Pay console")).to_have_count(0)
