"""Merchant onboarding: a visitor signs up on a tenant's portal, verifies the e-mail, fills the
business profile, uploads KYC documents and submits; tenant staff review (request changes,
reject, approve with a fee schedule and risk level). Live keys and payouts wait for approval."""

from __future__ import annotations

import io
import re
import uuid
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, link_in, text_of
from pages import body, text
from PIL import Image

from billing import schedules
from core.db import db
from onboarding.models import KycDocument
from tenants.audit import Actor
from tenants.isolation import tenant_context

ADMIN = "admin@acme.example.com"
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
APPLICANT = "founder@noodles.example.com"
NEW_PASSWORD = "noodles-are-great-42"
PROFILE = {
    "legal_name": "Noodle House Ltd",
    "registration_number": "HRB 12345",
    "legal_representative": "Mei Chen",
    "address": "1 Market Street\n10115 Berlin",
    "country": "de",
    "monthly_volume": "25000.50",
    "volume_currency": "eur",
    "bank_holder_name": "Noodle House Ltd",
    "bank_account": "DE89 3704 0044 0532 0130 00",
    "bank_code": "",
    "bank_name": "Commerzbank",
    "bank_country": "",
}


def png(size=(32, 32), color=(10, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def error_of(html: str, field_id: str) -> str | None:
    match = re.search(rf'<p id="{field_id}-error" class="error">(.*?)</p>', html, re.S)
    return unescape(match.group(1)) if match else None


def fetch(client, url):
    """GET `url`, read the body and close the response (a document is a streamed file)."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def count(owner_engine, sql: str, **params):
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


@pytest.fixture
def acme(make):
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    return tenant


def sign_up(site, tenant, outbox, email=APPLICANT, business="Noodle House"):
    """Sign up through the web and verify the e-mail; a client signed in as the new owner."""
    client = site(tenant.host)
    response = client.submit(
        "/signup", {"business_name": business, "email": email, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/signup/sent")
    mails = [m for m in outbox() if m["To"] == email]
    path = urlsplit(link_in(mails[-1])).path
    assert client.submit(path).status_code == 302
    assert client.login(email, NEW_PASSWORD).status_code == 302
    return client


def merchant_row(owner_engine, email=APPLICANT):
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT m.* FROM merchants m JOIN users u ON u.tenant_id = m.tenant_id AND u.merchant_id = m.id"
                " WHERE u.email = :e"
            ),
            {"e": email},
        ).one()


def upload(client, data, name, kind="business_licence", content_type="application/octet-stream"):
    """POST a document as a browser would, with the file name and content type it claims. (The
    multipart body is built here: for a large body the test client would spool it to a temporary
    file that nobody closes.)"""
    boundary = uuid.uuid4().hex
    fields = {"csrf_token": client.csrf_token("/merchant/onboarding"), "kind": kind}
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
    )
    parts += [data, b"\r\n", f"--{boundary}--\r\n".encode()]
    return client.post(
        "/merchant/onboarding/documents",
        data=b"".join(parts),
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def complete_application(client):
    assert client.submit("/merchant/onboarding/profile", PROFILE, form_page="/merchant/onboarding").status_code == 302
    for kind, data, name in (
        ("business_licence", PDF, "licence.pdf"),
        ("representative_id", jpeg(), "passport.jpg"),
        ("bank_proof", png(), "bank.png"),
    ):
        assert upload(client, data, name, kind).status_code == 302


# --- sign-up -------------------------------------------------------------------------------


def test_sign_up_verify_and_sign_in_as_the_owner_of_a_draft_merchant(site, acme, outbox, owner_engine):
    client = site(acme.host)
    assert "Open an account" in body(client.get("/login"))
    response = client.submit(
        "/signup",
        {"business_name": "Noodle House", "email": APPLICANT, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert "we have sent it a link to verify it" in body(client.get("/signup/sent"))
    # Nothing exists before the address is verified: no merchant, no user who could sign in.
    assert count(owner_engine, "SELECT count(*) FROM merchants") == 0
    assert client.login(APPLICANT, NEW_PASSWORD).status_code == 401

    (mail,) = outbox()
    assert mail["To"] == APPLICANT and "verify your e-mail" in mail["Subject"]
    assert mail["From"].addresses[0].addr_spec.endswith("@acme.localhost")
    link = urlsplit(link_in(mail))
    assert link.netloc == acme.host and link.path.startswith("/signup/verify/")
    page = client.get(link.path)
    assert page.status_code == 200 and "Noodle House" in body(page)
    response = client.submit(link.path)
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    # The link works once.
    again = client.submit(link.path, form_page="/login")
    assert again.status_code == 400 and "already been used" in body(again)

    assert client.login(APPLICANT, NEW_PASSWORD).status_code == 302
    dashboard = body(client.get("/merchant/"))
    assert "Noodle House" in dashboard and "Onboarding: Draft" in text(dashboard)
    row = merchant_row(owner_engine)
    assert row.onboarding_status == "draft" and row.status == "active"
    assert count(owner_engine, "SELECT count(*) FROM audit_events WHERE action = 'merchant.signed_up'") == 1


def test_signing_up_an_address_that_has_an_account_reveals_nothing(site, make, acme, outbox, owner_engine):
    make.merchant(acme, "Corner Shop", "owner@corner.example.com")
    outbox()  # the invitation
    client = site(acme.host)
    fresh = client.submit(
        "/signup",
        {"business_name": "X", "email": "new@x.example.com", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    taken = client.submit(
        "/signup",
        {"business_name": "X", "email": "Owner@Corner.example.com", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert (fresh.status_code, fresh.headers["Location"]) == (taken.status_code, taken.headers["Location"])
    mails = {m["To"]: m for m in outbox() if "invited" not in text_of(m)}
    assert "already have an account" in mails["owner@corner.example.com"]["Subject"]
    assert "/signup/verify/" not in text_of(mails["owner@corner.example.com"])
    assert "/signup/verify/" in text_of(mails["new@x.example.com"])
    # The existing account's password is unchanged and no second merchant appeared.
    assert client.login("owner@corner.example.com", PASSWORD).status_code == 302
    assert count(owner_engine, "SELECT count(*) FROM merchants") == 1


def test_sign_up_form_errors_keep_what_was_typed(site, acme, outbox):
    client = site(acme.host)
    response = client.submit(
        "/signup", {"business_name": "Noodle House", "email": "not-an-address", "password": "short", "confirm": "x"}
    )
    assert response.status_code == 422
    html = body(response)
    assert 'value="Noodle House"' in html and 'value="not-an-address"' in html
    assert error_of(html, "confirm") == "The two passwords differ."
    response = client.submit(
        "/signup",
        {"business_name": "Noodle House", "email": "a@b.example.com", "password": "short", "confirm": "short"},
    )
    assert response.status_code == 422 and "at least" in error_of(body(response), "password")
    response = client.submit(
        "/signup",
        {"business_name": "Noodle House", "email": "not-an-address", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 422 and "not a valid e-mail" in error_of(body(response), "email")
    assert outbox() == []


def test_sign_up_mails_one_address_at_most_three_times_an_hour(site, acme, outbox):
    client = site(acme.host)
    form = {"business_name": "Spam", "email": "victim@example.com", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    for _ in range(5):
        assert client.submit("/signup", form).status_code == 302
    assert len(outbox()) == 3


def test_sign_up_exists_only_on_tenant_hosts(site):
    assert site("localhost").get("/signup").status_code == 404


def test_a_tampered_or_expired_link_is_refused(app, site, acme, outbox, monkeypatch):
    client = site(acme.host)
    client.submit(
        "/signup", {"business_name": "N", "email": APPLICANT, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    path = urlsplit(link_in(outbox()[0])).path
    assert client.get(path[:-2] + "xx").status_code == 400
    monkeypatch.setitem(app.config, "SIGNUP_MAX_AGE", -1)
    response = client.get(path)
    assert response.status_code == 400 and "expired" in body(response)


# --- profile ---------------------------------------------------------------------------------


def test_profile_is_saved_exactly_and_the_bank_account_encrypted(site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    response = client.submit("/merchant/onboarding/profile", PROFILE, form_page="/merchant/onboarding")
    assert response.status_code == 302
    with owner_engine.connect() as conn:
        profile = conn.execute(sa.text("SELECT * FROM merchant_profiles")).one()
        bank = conn.execute(sa.text("SELECT * FROM merchant_bank_accounts")).one()
    assert (profile.monthly_volume, profile.volume_currency, profile.country) == (2500050, "EUR", "DE")
    assert profile.legal_name == "Noodle House Ltd"
    assert bank.account_last4 == "3000" and "DE89" not in bank.account_encrypted
    page = body(client.get("/merchant/onboarding"))
    assert 'value="25000.50"' in page and "Saved: Noodle House Ltd, account …3000." in text(page)
    assert "DE89 3704" not in page  # the account is never put back into the form


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("monthly_volume", "12.345", "EUR amounts have at most 2 decimals."),
        ("monthly_volume", "-5", "The volume must be more than zero."),
        ("volume_currency", "EURO", "is not an ISO 4217 currency code"),
        ("country", "Germany", "Give the country as two letters, like DE or CN."),
        ("bank_account", "DE00 1234", "That IBAN is not valid (check the digits)."),
    ],
)
def test_profile_errors_are_shown_at_the_field_and_nothing_is_saved(
    site, acme, outbox, owner_engine, field, value, message
):
    client = sign_up(site, acme, outbox)
    response = client.submit(
        "/merchant/onboarding/profile", {**PROFILE, field: value}, form_page="/merchant/onboarding"
    )
    assert response.status_code == 422
    html = body(response)
    assert message in error_of(html, field)
    assert 'value="Noodle House Ltd"' in html  # what was typed stays
    assert count(owner_engine, "SELECT count(*) FROM merchant_profiles") == 0
    assert count(owner_engine, "SELECT count(*) FROM merchant_bank_accounts") == 0


# --- documents -------------------------------------------------------------------------------


def stored_files(app, tenant) -> list[Path]:
    """The KYC files of `tenant` on disk (the upload folder outlives a test; tenant ids do not)."""
    root = Path(app.config["UPLOAD_DIR"]) / "kyc" / str(tenant.id)
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_documents_are_stored_under_random_names_and_served_safely(app, site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    assert upload(client, PDF, "licence.pdf", "business_licence", "text/html").status_code == 302
    assert upload(client, png(), "../../etc/passwd.png", "representative_id").status_code == 302
    assert upload(client, jpeg(), "bad\x00name/..\\..\\evil.jpg", "bank_proof").status_code == 302
    with owner_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM kyc_documents ORDER BY created_at")).all()
    assert [r.content_type for r in rows] == ["application/pdf", "image/png", "image/jpeg"]
    assert [r.original_name for r in rows] == ["licence.pdf", "passwd.png", "evil.jpg"]
    files = stored_files(app, acme)
    root = (Path(app.config["UPLOAD_DIR"]) / "kyc").resolve()
    assert len(files) == 3
    for path, row in zip(sorted(files, key=lambda p: p.name), sorted(rows, key=lambda r: r.storage_name), strict=True):
        assert path.name == row.storage_name and re.fullmatch(r"[0-9a-f]{32}\.(pdf|png|jpg)", path.name)
        assert root in path.resolve().parents
        assert not path.stat().st_mode & 0o111  # never executable
    assert not (Path(app.config["UPLOAD_DIR"]).parent / "etc").exists()

    pdf = fetch(client, f"/merchant/onboarding/documents/{rows[0].id}")
    assert pdf.status_code == 200 and pdf.data == PDF
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Content-Disposition"].startswith("attachment;")
    assert pdf.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in pdf.headers["Content-Security-Policy"]
    image = fetch(client, f"/merchant/onboarding/documents/{rows[1].id}")
    assert image.headers["Content-Type"] == "image/png" and image.headers["Content-Disposition"].startswith("inline;")
    assert "passwd.png" in image.headers["Content-Disposition"]
    assert image.headers["X-Content-Type-Options"] == "nosniff"


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SCRIPT = b"#!/bin/sh\nrm -rf /\n"


@pytest.mark.parametrize(
    "data,name,message",
    [
        (HTML, "photo.png", "this file is none of them"),
        (HTML, "licence.pdf", "this file is none of them"),
        (SCRIPT, "licence.pdf", "this file is none of them"),
        (b"GIF89a" + b"\x00" * 64, "scan.jpg", "this file is none of them"),
        (b"\x89PNG\r\n\x1a\n" + HTML, "photo.png", "This image is damaged"),
        (b"%PDF-1.7\n" + HTML, "licence.pdf", "This PDF is damaged or incomplete"),
        (b"", "empty.pdf", "The file is empty"),
    ],
)
def test_uploads_that_are_not_what_their_name_says_are_refused(app, site, acme, outbox, data, name, message):
    client = sign_up(site, acme, outbox)
    response = upload(client, data, name, content_type="image/png")
    assert response.status_code == 422
    assert message in error_of(body(response), "file")
    assert stored_files(app, acme) == []


def test_an_image_with_too_many_pixels_is_refused_before_decoding(app, site, acme, outbox):
    client = sign_up(site, acme, outbox)
    out = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(out, format="PNG")  # 50 megapixels, a few kilobytes
    response = upload(client, out.getvalue(), "huge.png")
    assert response.status_code == 422 and "too many pixels" in error_of(body(response), "file")


def test_oversized_uploads_are_refused_at_the_field_or_with_a_page(app, site, acme, outbox, monkeypatch):
    client = sign_up(site, acme, outbox)
    monkeypatch.setitem(app.config, "KYC_DOCUMENT_MAX_BYTES", 1024 * 1024)
    big_pdf = PDF[:-6] + b"%" + b"x" * (1024 * 1024) + b"\n%%EOF\n"
    response = upload(client, big_pdf, "big.pdf")
    assert response.status_code == 422 and error_of(body(response), "file") == "The file is larger than 1 MB."
    # A body far over the limit is cut off by the request limit: the 413 page, no crash.
    response = upload(client, b"%PDF-1.4\n" + b"x" * (3 * 1024 * 1024), "huge.pdf")
    assert response.status_code == 413
    assert "The upload is larger than allowed." in body(response)
    assert stored_files(app, acme) == []


def test_documents_are_only_for_the_merchant_and_its_reviewers(app, make, site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    upload(client, png(), "id.png", "representative_id")
    document = count(owner_engine, "SELECT id FROM kyc_documents")
    merchant = merchant_row(owner_engine).id
    other = make.merchant(acme, "Other Shop", "owner@other.example.com")
    assert other != merchant
    path = f"/merchant/onboarding/documents/{document}"
    console_path = f"/console/onboarding/{merchant}/documents/{document}"

    stranger = site(acme.host)
    stranger.login("owner@other.example.com")
    assert stranger.get(path).status_code == 404  # another merchant of the same tenant
    assert stranger.get(console_path).status_code == 403
    anonymous = site(acme.host)
    for url in (path, console_path):
        response = anonymous.get(url)
        assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    finance = site(acme.host)
    finance.login(FINANCE)
    assert finance.get(console_path).status_code == 403
    operator = site(acme.host)
    operator.login(OPERATOR)
    assert fetch(operator, console_path).status_code == 200
    assert operator.get(f"/console/onboarding/{other}/documents/{document}").status_code == 404
    # Another tenant's staff, on its own host, with the right ids: no such document there.
    beta = make.tenant("beta")
    beta_admin = site(beta.host)
    beta_admin.login(beta.admin_email)
    assert beta_admin.get(console_path).status_code == 404
    # A merchant's colleague (staff) reads it but cannot delete it.
    make.user(acme, "staff@noodles.example.com", "staff", merchant_id=merchant)
    staff = site(acme.host)
    staff.login("staff@noodles.example.com")
    assert fetch(staff, path).status_code == 200
    response = staff.submit(f"{path}/delete", form_page="/merchant/onboarding")
    assert response.status_code == 403
    assert count(owner_engine, "SELECT count(*) FROM kyc_documents") == 1


def test_a_document_is_deleted_while_draft_but_not_once_submitted(app, site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    upload(client, png(), "extra.png", "other")
    extra = count(owner_engine, "SELECT id FROM kyc_documents")
    response = client.submit(f"/merchant/onboarding/documents/{extra}/delete", form_page="/merchant/onboarding")
    assert response.status_code == 302
    assert count(owner_engine, "SELECT count(*) FROM kyc_documents") == 0 and stored_files(app, acme) == []
    complete_application(client)
    assert client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding").status_code == 302
    document = count(owner_engine, "SELECT id FROM kyc_documents LIMIT 1")
    client.submit(f"/merchant/onboarding/documents/{document}/delete", form_page="/merchant/onboarding")
    assert "it can be changed only while it is a draft" in body(client.get("/merchant/onboarding"))
    assert count(owner_engine, "SELECT count(*) FROM kyc_documents") == 3 and len(stored_files(app, acme)) == 3
    # Nor are new documents or profile changes accepted while it is reviewed.
    response = upload(client, png(), "late.png", "other")
    assert response.status_code == 302 and "it can be changed only" in body(client.get("/merchant/onboarding"))
    assert count(owner_engine, "SELECT count(*) FROM kyc_documents") == 3 and len(stored_files(app, acme)) == 3
    response = client.submit(
        "/merchant/onboarding/profile", {**PROFILE, "legal_name": "Changed"}, form_page="/merchant/"
    )
    assert response.status_code == 302 and "it can be changed only" in body(client.get("/merchant/onboarding"))
    assert count(owner_engine, "SELECT legal_name FROM merchant_profiles") == "Noodle House Ltd"


# --- submit and review -----------------------------------------------------------------------


def test_an_incomplete_application_cannot_be_submitted(site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    page = text(body(client.get("/merchant/onboarding")))
    assert "Fill in the legal name." in page and "Upload the document: Bank account proof." in page
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    assert "The application is not complete yet" in body(client.get("/merchant/onboarding"))
    assert merchant_row(owner_engine).onboarding_status == "draft"


def _audit(owner_engine, action):
    with owner_engine.connect() as conn:
        return [
            row.changes
            for row in conn.execute(
                sa.text("SELECT changes FROM audit_events WHERE action = :a ORDER BY created_at"), {"a": action}
            )
        ]


def test_review_request_changes_resubmit_and_approve(app, site, make, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    complete_application(client)
    assert "Everything is there." in body(client.get("/merchant/onboarding"))
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    assert "Submitted, waiting for review" in body(client.get("/merchant/"))
    merchant = merchant_row(owner_engine).id
    assert _audit(owner_engine, "merchant.kyc_submitted")[0]["onboarding_status"] == {
        "before": "draft",
        "after": "submitted",
    }

    operator = site(acme.host)
    operator.login(OPERATOR)
    queue = body(operator.get("/console/onboarding"))
    assert "Noodle House" in queue and "Review queue" in queue
    review_page = f"/console/onboarding/{merchant}"
    html = body(operator.get(review_page))
    assert "Noodle House Ltd" in html and "HRB 12345" in html and "…3000" in html
    assert f"/console/onboarding/{merchant}/documents/" in html and "<img" in html and "Download the PDF" in html
    assert "an admin approves" in html  # operators do not approve
    response = operator.submit(f"{review_page}/approve", {"risk_level": "low"}, form_page=review_page)
    assert response.status_code == 403

    # A request for changes needs a message.
    response = operator.submit(f"{review_page}/request-changes", {"changes-message": " "}, form_page=review_page)
    assert response.status_code == 422
    assert error_of(body(response), "changes-message") == "Tell the merchant why, and what to do next."
    seen = len(outbox())
    message = "The bank proof is older than three months: upload a recent statement."
    response = operator.submit(f"{review_page}/request-changes", {"changes-message": message}, form_page=review_page)
    assert response.status_code == 302
    (mail,) = outbox()[seen:]
    assert mail["To"] == APPLICANT and "changes needed" in mail["Subject"] and message in text_of(mail)
    assert _audit(owner_engine, "merchant.kyc_changes_requested")[0]["onboarding_status"] == {
        "before": "submitted",
        "after": "changes_requested",
    }
    # Not waiting for review any more: a second decision is refused.
    response = operator.submit(f"{review_page}/reject", {"reject-message": "no"}, form_page="/console/")
    assert response.status_code == 302 and "not waiting for review" in body(operator.get(review_page))
    assert merchant_row(owner_engine).onboarding_status == "changes_requested"

    dashboard = body(client.get("/merchant/"))
    assert "Changes requested" in dashboard and message in dashboard
    upload(client, png(color=(0, 0, 0)), "new-statement.png", "bank_proof")
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    assert merchant_row(owner_engine).onboarding_status == "submitted"

    seen = len(outbox())
    with app.app_context(), tenant_context(db.session, acme.id):
        premium = schedules.create_schedule(acme.id, "Premium", Actor.system()).id
        db.session.commit()
    admin = site(acme.host)
    admin.login(ADMIN)
    response = admin.submit(f"{review_page}/approve", {"schedule_id": str(premium), "risk_level": ""})
    assert response.status_code == 422 and error_of(body(response), "risk_level") == "Choose the merchant's risk level."
    response = admin.submit(
        f"{review_page}/approve", {"schedule_id": str(premium), "risk_level": "medium", "message": "Welcome!"}
    )
    assert response.status_code == 302
    row = merchant_row(owner_engine)
    assert (row.onboarding_status, row.risk_level, row.review_message) == ("approved", "medium", "Welcome!")
    assert count(owner_engine, "SELECT schedule_id FROM merchant_fee_schedules") == premium
    changes = _audit(owner_engine, "merchant.kyc_approved")[0]
    assert changes["onboarding_status"] == {"before": "submitted", "after": "approved"}
    assert changes["risk_level"] == {"before": None, "after": "medium"}
    (mail,) = outbox()[seen:]
    assert mail["To"] == APPLICANT
    assert "is approved" in mail["Subject"] and "Welcome!" in text_of(mail)
    assert "Approved" in body(client.get("/merchant/"))
    assert "Noodle House" not in body(operator.get("/console/onboarding"))
    assert "Noodle House" in body(operator.get("/console/onboarding?status=approved"))


def test_reject(site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    complete_application(client)
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    merchant = merchant_row(owner_engine).id
    operator = site(acme.host)
    operator.login(OPERATOR)
    page = f"/console/onboarding/{merchant}"
    seen = len(outbox())
    assert operator.submit(f"{page}/reject", {"reject-message": "We do not serve this industry."}).status_code == 302
    assert merchant_row(owner_engine).onboarding_status == "rejected"
    (mail,) = outbox()[seen:]
    assert "was not approved" in mail["Subject"] and "We do not serve this industry." in text_of(mail)
    page = body(client.get("/merchant/onboarding"))
    assert "Rejected" in page and "We do not serve this industry." in page
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    assert merchant_row(owner_engine).onboarding_status == "rejected"


def test_queue_is_oldest_first_searchable_and_paged(app, site, make, acme, outbox, owner_engine, monkeypatch):
    with owner_engine.begin() as conn:
        for index in range(5):
            conn.execute(
                sa.text(
                    "INSERT INTO merchants (tenant_id, id, name, status, onboarding_status, onboarding_changed_at)"
                    " VALUES (:t, gen_random_uuid(), :n, 'active', 'submitted', now() - make_interval(days => :d))"
                ),
                {"t": acme.id, "n": f"Shop {index}", "d": 10 - index},
            )
    monkeypatch.setitem(app.config, "PAGE_SIZE", 2)
    operator = site(acme.host)
    operator.login(OPERATOR)
    html = body(operator.get("/console/onboarding"))
    names = re.findall(r">(Shop \d)</a>", html)
    assert names == ["Shop 0", "Shop 1"] and "10 days" in text(html)
    after = unescape(re.search(r'href="(/console/onboarding\?after=[^"]+)"', html).group(1))
    assert re.findall(r">(Shop \d)</a>", body(operator.get(after))) == ["Shop 2", "Shop 3"]
    assert re.findall(r">(Shop \d)</a>", body(operator.get("/console/onboarding?q=shop+4"))) == ["Shop 4"]
    assert "is not an onboarding status" in body(operator.get("/console/onboarding?status=bogus"))


# --- what approval opens ---------------------------------------------------------------------


def test_live_keys_and_payouts_wait_for_approval(app, site, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    response = client.submit("/merchant/api-keys", {"name": "Shop", "mode": "live"}, form_page="/merchant/api-keys")
    assert response.status_code == 422
    assert "Live keys are available once your business is approved (onboarding status: draft)" in body(response)
    response = client.submit("/merchant/api-keys", {"name": "Shop", "mode": "test"}, form_page="/merchant/api-keys")
    assert response.status_code == 200
    secret = re.search(r"sk_test_[A-Za-z0-9_-]{40}", body(response)).group(0)
    api = site(acme.host)
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.post("/v1/topups", data={"amount": "5000", "currency": "eur"}, headers=headers).status_code == 200
    response = api.post("/v1/payouts", data={"amount": "100", "currency": "eur"}, headers=headers)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "payouts_not_allowed"
    assert "not approved yet (onboarding status: draft)" in response.json["error"]["message"]
    response = client.submit("/merchant/payouts", {"amount": "1.00", "currency": "EUR"}, form_page="/merchant/payouts")
    assert response.status_code == 422 and "Payouts are not allowed" in body(response)
    assert count(owner_engine, "SELECT count(*) FROM payouts") == 0

    complete_application(client)
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    merchant = merchant_row(owner_engine).id
    admin = site(acme.host)
    admin.login(ADMIN)
    assert (
        admin.submit(
            f"/console/onboarding/{merchant}/approve",
            {"schedule_id": "", "risk_level": "low"},
            form_page=f"/console/onboarding/{merchant}",
        ).status_code
        == 302
    )
    response = client.submit("/merchant/api-keys", {"name": "Shop", "mode": "live"}, form_page="/merchant/api-keys")
    assert response.status_code == 200 and re.search(r"sk_live_[A-Za-z0-9_-]{40}", body(response))
    response = api.post("/v1/payouts", data={"amount": "100", "currency": "eur"}, headers=headers)
    assert response.status_code == 200 and response.json["status"] == "pending"


def test_merchants_created_by_staff_are_approved(make, acme, owner_engine):
    make.merchant(acme, "Corner Shop", "owner@corner.example.com")
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT onboarding_status FROM merchants")).scalar() == "approved"


def test_documents_rows_are_isolated_by_rls(app, site, make, acme, outbox, owner_engine):
    client = sign_up(site, acme, outbox)
    upload(client, png(), "id.png", "representative_id")
    beta = make.tenant("beta")
    with app.app_context(), tenant_context(db.session, beta.id):
        assert db.session.execute(sa.text("SELECT count(*) FROM kyc_documents")).scalar() == 0
        assert db.session.execute(sa.select(KycDocument)).scalars().all() == []
    with app.app_context(), tenant_context(db.session, acme.id):
        assert db.session.execute(sa.text("SELECT count(*) FROM kyc_documents")).scalar() == 1


def test_the_migration_approves_merchants_that_existed_before_it(app, owner_url):
    """Merchants from before onboarding existed (staff-created, demo) are approved by revision
    0022; a row written afterwards without a status is a draft."""
    import psycopg
    from flask_migrate import upgrade
    from sqlalchemy.engine import make_url

    from portal import create_app

    server = make_url(owner_url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"{server.database}_onboarding_migration"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    scratch = create_app({"TESTING": True, "DATABASE_URL": url, "REDIS_URL": app.config["REDIS_URL"]})
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with scratch.app_context():
            upgrade(revision="0021")
        tenant = "11111111-1111-1111-1111-111111111111"
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO tenants (id, slug, name, status, time_zone, default_locale)"
                    " VALUES (:t, 'old', 'Old', 'active', 'UTC', 'en')"
                ),
                {"t": tenant},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO merchants (tenant_id, id, name, status)"
                    " VALUES (:t, gen_random_uuid(), 'Before', 'active')"
                ),
                {"t": tenant},
            )
        with scratch.app_context():
            upgrade()
            db.engine.dispose()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO merchants (tenant_id, id, name, status)"
                    " VALUES (:t, gen_random_uuid(), 'After', 'active')"
                ),
                {"t": tenant},
            )
            rows = dict(conn.execute(sa.text("SELECT name, onboarding_status FROM merchants")).all())
        assert rows == {"Before": "approved", "After": "draft"}
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_merchant_list_shows_each_merchants_onboarding_state(site, make, acme, outbox, owner_engine):
    make.merchant(acme, "Staff Made", "owner@staffmade.example.com")
    client = sign_up(site, acme, outbox)
    complete_application(client)
    client.submit("/merchant/onboarding/submit", form_page="/merchant/onboarding")
    applicant = merchant_row(owner_engine).id
    rows = {}
    operator = site(acme.host)
    operator.login(OPERATOR)
    for row in re.findall(r"<tr>(.*?)</tr>", body(operator.get("/console/merchants")), flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        if cells:
            rows[text(cells[0])] = (text(cells[2]), f"/console/onboarding/{applicant}" in cells[2])
    assert rows == {"Staff Made": ("Approved", False), "Noodle House": ("Submitted, waiting for review", True)}
    # Finance staff see the states but do not review: no link to the review page.
    finance = site(acme.host)
    finance.login(FINANCE)
    assert f"/console/onboarding/{applicant}" not in body(finance.get("/console/merchants"))
