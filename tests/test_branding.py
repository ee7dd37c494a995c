"""A tenant admin edits the brand as a draft, previews it, publishes it; e-mails follow."""

import io

import pytest
import sqlalchemy as sa
from conftest import text_of
from PIL import Image

from tenants.models import AuditEvent, TenantBrand

GOOD = {
    "display_name": "Acme Payments",
    "theme": "midnight",
    "primary_color": "#112233",
    "accent_color": "#ffcc00",
    "support_email": "help@acme.example.com",
}


@pytest.fixture
def admin(make, site):
    tenant = make.tenant("acme", name="Acme Pay")
    client = site("acme.localhost")
    client.login(tenant.admin_email)
    return tenant, client


def _brand(owner_engine, tenant_id, stage):
    with owner_engine.connect() as conn:
        return (
            conn.execute(
                sa.select(TenantBrand.__table__).where(TenantBrand.tenant_id == tenant_id, TenantBrand.stage == stage)
            )
            .mappings()
            .one()
        )


def _png(color=(200, 30, 30), size=(60, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def test_a_bad_colour_is_rejected_next_to_the_field_and_changes_nothing(admin, owner_engine):
    tenant, client = admin
    before = _brand(owner_engine, tenant.id, "draft")
    page = client.submit("/console/branding", {**GOOD, "primary_color": "blue-ish"})
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert "Use a colour of the form #1a2b3c." in html
    assert 'value="blue-ish"' in html and 'value="Acme Payments"' in html  # what the user typed is kept
    assert _brand(owner_engine, tenant.id, "draft") == before


def test_draft_preview_and_publish(admin, owner_engine, site):
    tenant, client = admin
    visitor = site("acme.localhost")
    saved = client.submit("/console/branding", GOOD, follow_redirects=True)
    assert "Draft saved" in saved.get_data(as_text=True)
    # Not yet visible to anyone else.
    assert "Acme Payments" not in visitor.get("/login").get_data(as_text=True)
    preview = client.get("/console/branding/preview").get_data(as_text=True)
    assert "Acme Payments" in preview and "Preview of the draft brand" in preview
    assert "--primary: #112233" in preview and "/_theme/midnight/theme.css" in preview
    published = client.submit("/console/branding/publish", {}, form_page="/console/branding", follow_redirects=True)
    assert "The brand is published." in published.get_data(as_text=True)
    live = visitor.get("/login").get_data(as_text=True)
    assert "Acme Payments" in live and "--primary: #112233" in live and "Preview" not in live
    with owner_engine.connect() as conn:
        actions = conn.execute(sa.select(AuditEvent.action).where(AuditEvent.tenant_id == tenant.id)).scalars().all()
    assert {"brand.draft_saved", "brand.published"} <= set(actions)


def test_logo_upload_is_checked_by_content(admin, owner_engine, site):
    tenant, client = admin
    fake = client.submit(
        "/console/branding/logo",
        {"logo": (io.BytesIO(b"#!/bin/sh\necho hi"), "logo.png")},
        form_page="/console/branding",
        follow_redirects=True,
    )
    assert "not an image we can read" in fake.get_data(as_text=True)
    too_big = client.submit(
        "/console/branding/logo",
        {"logo": (io.BytesIO(_png(size=(2500, 10))), "wide.png")},
        form_page="/console/branding",
        follow_redirects=True,
    )
    assert "larger than 2000 pixels" in too_big.get_data(as_text=True)
    assert _brand(owner_engine, tenant.id, "draft")["logo_file"] is None

    ok = client.submit(
        "/console/branding/logo",
        {"logo": (io.BytesIO(_png()), "../../etc/passwd")},
        form_page="/console/branding",
        follow_redirects=True,
    )
    assert "Logo added to the draft." in ok.get_data(as_text=True)
    name = _brand(owner_engine, tenant.id, "draft")["logo_file"]
    assert name and "/" not in name and name.endswith(".png")
    client.submit("/console/branding/publish", {}, form_page="/console/branding")
    login = site("acme.localhost").get("/login").get_data(as_text=True)
    assert f"/_brand/logo/{name}" in login
    image = site("acme.localhost").get(f"/_brand/logo/{name}")
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (60, 30)
    image.close()


def test_logo_size_limit(admin, app, owner_engine):
    tenant, client = admin
    limit = app.config["LOGO_MAX_BYTES"]
    noise = Image.frombytes(
        "RGB", (600, 600), bytes(range(256)) * (600 * 600 * 3 // 256) + b"\0" * (600 * 600 * 3 % 256)
    )
    out = io.BytesIO()
    noise.save(out, format="BMP")
    assert len(out.getvalue()) > limit
    page = client.submit(
        "/console/branding/logo",
        {"logo": (io.BytesIO(out.getvalue()), "big.bmp")},
        form_page="/console/branding",
        follow_redirects=True,
    )
    assert f"larger than {limit // 1024} KiB" in page.get_data(as_text=True)
    assert _brand(owner_engine, tenant.id, "draft")["logo_file"] is None


def test_emails_carry_the_published_brand(admin, outbox):
    tenant, client = admin
    client.submit("/console/branding", GOOD)
    client.submit("/console/branding/publish", {}, form_page="/console/branding")
    client.submit("/console/users", {"email": "ops@acme.example.com", "name": "Ops", "role": "operator"})
    [message] = outbox()
    assert message["To"] == "ops@acme.example.com"
    assert message["From"].addresses[0].display_name == "Acme Payments"
    assert message["From"].addresses[0].addr_spec.endswith("@acme.localhost")
    assert message["Reply-To"] == "help@acme.example.com"
    assert "Acme Payments" in message["Subject"]
    body = text_of(message)
    assert "Acme Payments" in body and "Platform" not in body
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "#112233" in html
