"""A person switches the portal to Chinese in the page header and reads the console in Chinese,
after signing in too; switching back gives English again."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.conftest import PASSWORD


def test_switching_the_language_in_the_header(live_server, page, artifacts, make):
    tenant = make.tenant("acme", name="Acme Pay")

    page.goto(live_server.url(tenant.host, "/login"))
    expect(page.get_by_role("heading", name="Acme Pay")).to_be_visible()
    expect(page.get_by_text("Sign in to your account")).to_be_visible()
    page.get_by_role("button", name="中文").click()
    expect(page.get_by_text("登录您的账户")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.screenshot(path=str(artifacts / "language-switch-login-zh.png"), full_page=True)

    page.get_by_label("邮箱").fill(tenant.admin_email)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="Acme Pay 管理后台")).to_be_visible()
    nav = page.get_by_role("navigation", name="主导航")
    expect(nav.get_by_role("link", name="商户")).to_be_visible()
    expect(page.get_by_role("heading", name="最近动态")).to_be_visible()
    page.screenshot(path=str(artifacts / "language-switch-console-zh.png"), full_page=True)

    # The header's switcher, signed in: back to English on the same page, and it stays.
    nav.get_by_role("link", name="商户", exact=True).click()
    expect(page.get_by_role("heading", name="商户", exact=True)).to_be_visible()
    page.locator("header").get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", name="Merchants", exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Merchants", exact=True)).to_be_visible()
    page.screenshot(path=str(artifacts / "language-switch-console-en.png"), full_page=True)
