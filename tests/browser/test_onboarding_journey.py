"""A merchant's onboarding through the browser: sign-up on the tenant's portal, the e-mailed
verification link, the business profile and documents, submission; the tenant's admin requests
changes, the merchant reads the message, fixes and resubmits; the admin approves; the merchant
creates a live API key. Screenshots of each step go to test-artifacts/onboarding-*.png."""

from __future__ import annotations

import io
import re

from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD, link_in

OWNER = "founder@noodles.example.com"
OWNER_PASSWORD = "noodles-are-great-42"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
CHANGES = "The bank proof is older than three months: upload a statement from this month."


def _image(path, color, kind="PNG"):
    out = io.BytesIO()
    Image.new("RGB", (320, 200), color).save(out, format=kind)
    path.write_bytes(out.getvalue())
    return str(path)


def _upload(page, kind: str, path: str) -> None:
    page.get_by_label("Document", exact=True).select_option(kind)
    page.get_by_label("File", exact=True).set_input_files(path)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".flash-success")).to_contain_text("uploaded")


def test_sign_up_review_with_changes_approval_and_a_live_key(
    page, new_context, live_server, make, outbox, artifacts, tmp_path
):
    acme = make.tenant("acme", name="Acme Payments")
    host = acme.host
    shot = 0

    def screenshot(tab, name):
        nonlocal shot
        shot += 1
        tab.screenshot(path=str(artifacts / f"onboarding-{shot:02d}-{name}.png"), full_page=True)

    # Sign-up on the tenant's branded portal.
    page.goto(live_server.url(host, "/login"))
    page.get_by_role("link", name="Open an account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Open an account with Acme Payments")
    page.get_by_label("Business name", exact=True).fill("Noodle House")
    page.get_by_label("E-mail", exact=True).fill(OWNER)
    page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
    page.get_by_label("Repeat the password", exact=True).fill(OWNER_PASSWORD)
    screenshot(page, "sign-up")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#signup-sent")).to_contain_text("we have sent it a link to verify it")
    screenshot(page, "check-your-e-mail")

    # The verification link, from the e-mail.
    (mail,) = [m for m in outbox() if m["To"] == OWNER]
    assert mail["From"].addresses[0].display_name == "Acme Payments"
    link = link_in(mail)
    assert link.startswith(live_server.url(host, "/signup/verify/"))
    page.goto(link)
    expect(page.get_by_text("Confirm that founder@noodles.example.com is your address")).to_be_visible()
    screenshot(page, "verify")
    page.locator("#verify-button").click()
    page.wait_for_url(live_server.url(host, "/login"))
    expect(page.locator(".flash-success")).to_contain_text("Your e-mail address is verified")

    # The owner signs in: a draft; live keys are refused.
    sign_in(page, live_server.url(host, "/login"), OWNER, OWNER_PASSWORD)
    page.wait_for_url(live_server.url(host, "/merchant/"))
    expect(page.locator("#onboarding-status h2")).to_have_text("Onboarding: Draft")
    screenshot(page, "dashboard-draft")
    page.goto(live_server.url(host, "/merchant/api-keys"))
    page.get_by_label("Name", exact=True).fill("Web shop")
    page.get_by_label("Mode", exact=True).select_option("live")
    page.get_by_role("button", name="Create the key").click()
    expect(page.locator("#mode-error")).to_contain_text("Live keys are available once your business is approved")

    # Profile and documents.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Onboarding").click()
    page.wait_for_url(live_server.url(host, "/merchant/onboarding"))
    for label, value in (
        ("Legal name", "Noodle House Ltd"),
        ("Registration number", "HRB 12345"),
        ("Legal representative", "Mei Chen"),
        ("Registered address", "1 Market Street\n10115 Berlin"),
        ("Country", "DE"),
        ("Expected monthly volume", "25000.00"),
        ("Currency of the volume", "EUR"),
        ("Account holder", "Noodle House Ltd"),
        ("IBAN or account number", "DE89 3704 0044 0532 0130 00"),
        ("Bank name", "Commerzbank"),
    ):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Save the profile").click()
    expect(page.locator(".flash-success")).to_have_text("Business profile saved.")
    expect(page.locator("#saved-bank-account")).to_contain_text("…3000")
    licence = tmp_path / "licence.pdf"
    licence.write_bytes(PDF)
    _upload(page, "business_licence", str(licence))
    _upload(page, "representative_id", _image(tmp_path / "passport.jpg", (180, 40, 40), "JPEG"))
    _upload(page, "bank_proof", _image(tmp_path / "bank-statement.png", (40, 40, 180)))
    expect(page.locator("#document-list tr.document")).to_have_count(3)
    expect(page.locator("#ready")).to_be_visible()
    screenshot(page, "profile-and-documents")
    page.locator("#submit-button").click()
    expect(page.locator("#onboarding-status h2")).to_have_text("Onboarding: Submitted, waiting for review")
    expect(page.locator("#profile-form")).to_have_count(0)  # no changes while it is reviewed
    screenshot(page, "submitted")

    # The tenant's admin reviews it and asks for changes.
    admin = new_context().new_page()
    sign_in(admin, live_server.url(host, "/login"), acme.admin_email, PASSWORD)
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    expect(admin.locator("#review-queue tr.application")).to_have_count(1)
    screenshot(admin, "review-queue")
    admin.get_by_role("link", name="Noodle House").click()
    expect(admin.locator("#review-profile")).to_contain_text("HRB 12345")
    expect(admin.locator("#review-documents img")).to_have_count(2)
    for image in admin.locator("#review-documents img").all():
        # Shown, from the protected URL: decode() waits for the image to load (and fails if it cannot).
        assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") == 320
    expect(admin.get_by_role("link", name="Download the PDF")).to_be_visible()
    screenshot(admin, "review-page")
    admin.locator("#changes-message").fill(CHANGES)
    admin.get_by_role("button", name="Request changes").click()
    expect(admin.locator(".flash-success")).to_contain_text("Changes are requested from Noodle House")
    expect(admin.locator("#onboarding-state")).to_have_text("Changes requested")

    # The merchant reads the message (on the page and by e-mail), fixes and resubmits.
    changes_mail = [m for m in outbox() if m["To"] == OWNER][-1]
    assert "changes needed" in changes_mail["Subject"]
    page.goto(live_server.url(host, "/merchant/"))
    expect(page.locator("#onboarding-status h2")).to_have_text("Onboarding: Changes requested")
    expect(page.locator("#review-message")).to_contain_text(CHANGES)
    screenshot(page, "changes-requested")
    page.get_by_role("link", name="Open the application").click()
    old_proof = page.locator("#document-list tr.document", has_text="Bank account proof")
    old_proof.get_by_role("button", name=re.compile("Delete")).click()
    expect(page.locator("#document-list tr.document")).to_have_count(2)
    _upload(page, "bank_proof", _image(tmp_path / "bank-statement-this-month.png", (40, 160, 40)))
    page.locator("#submit-button").click()
    expect(page.locator("#onboarding-status h2")).to_have_text("Onboarding: Submitted, waiting for review")

    # The admin approves, with a risk level.
    admin.reload()
    expect(admin.locator("#onboarding-state")).to_have_text("Submitted, waiting for review")
    admin.get_by_label("Risk level", exact=True).select_option("low")
    admin.locator("#message").fill("Welcome aboard!")
    screenshot(admin, "approve")
    admin.get_by_role("button", name="Approve", exact=True).click()
    expect(admin.locator("#onboarding-state")).to_have_text("Approved")

    # The merchant is approved and creates a live key.
    page.goto(live_server.url(host, "/merchant/"))
    expect(page.locator("#onboarding-status h2")).to_have_text("Onboarding: Approved")
    expect(page.locator("#review-message")).to_contain_text("Welcome aboard!")
    screenshot(page, "approved")
    page.goto(live_server.url(host, "/merchant/api-keys"))
    page.get_by_label("Name", exact=True).fill("Web shop")
    page.get_by_label("Mode", exact=True).select_option("live")
    page.get_by_role("button", name="Create the key").click()
    expect(page.locator("#api-key-secret")).to_have_value(re.compile(r"^sk_live_[A-Za-z0-9_-]{40}$"))
    screenshot(page, "live-key")
