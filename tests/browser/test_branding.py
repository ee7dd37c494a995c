"""What a person sees on two tenants' sign-in pages: each its own name, logo, colour and type,
and nothing of the other tenant. An unknown host gets a plain 404 that names no one."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from playwright.sync_api import expect

from core.db import db
from portal import demo
from tenants import branding
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context
from tenants.models import Tenant


@dataclass(frozen=True)
class Look:
    """What the demo data promises for one tenant's sign-in page."""

    slug: str
    name: str
    button_rgb: str  # the brand's primary colour as the browser reports it
    font: re.Pattern  # the theme's body font stack
    logo_rgb: tuple[int, int, int]  # the colour of the logo uploaded below
    stranger_names: tuple[str, ...]  # what must never appear: the other tenant's names


LOOKS = {
    "acme": Look(
        slug="acme",
        name="Acme Pay",
        button_rgb="rgb(29, 78, 216)",  # #1d4ed8
        font=re.compile(r"^system-ui\b.*\bsans-serif$"),
        logo_rgb=(16, 185, 129),
        stranger_names=("Dragon", "龙付"),
    ),
    "dragon": Look(
        slug="dragon",
        name="Dragon Pay 龙付",
        button_rgb="rgb(220, 38, 38)",  # #dc2626
        font=re.compile(r"^Georgia\b.*[^-]serif$"),
        logo_rgb=(250, 204, 21),
        stranger_names=("Acme",),
    ),
}


def _png(rgb: tuple[int, int, int], size=(120, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def demo_tenants(app) -> dict[str, str]:
    """The demo data, plus a published logo of its own colour for each tenant: {slug: logo file}."""
    logos = {}
    with app.app_context():
        demo.load()
        with platform_scope(db.session):
            ids = dict(db.session.execute(sa.select(Tenant.slug, Tenant.id)).all())
        for slug, look in LOOKS.items():
            with tenant_context(db.session, ids[slug]):
                logos[slug] = branding.store_logo(
                    ids[slug],
                    _png(look.logo_rgb),
                    Path(app.config["UPLOAD_DIR"]),
                    app.config["LOGO_MAX_BYTES"],
                    Actor.system(),
                )
                branding.publish(ids[slug], Actor.system())
        db.session.remove()
    return logos


# Resolves with the logo's natural size and the colour of its centre pixel once it has loaded
# (0 wide if it failed to load): the picture the person actually gets, not just a src.
LOGO_PIXELS = """img => new Promise(resolve => {
  const measure = () => {
    if (!img.naturalWidth) { resolve({width: 0, rgb: null}); return; }
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const g = canvas.getContext('2d');
    g.drawImage(img, 0, 0);
    const [r, gr, b] = g.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data;
    resolve({width: img.naturalWidth, rgb: [r, gr, b]});
  };
  if (img.complete) measure(); else { img.addEventListener('load', measure); img.addEventListener('error', measure); }
})"""


def test_each_tenant_sign_in_page_wears_its_own_brand(page, live_server, demo_tenants, artifacts):
    seen = {}
    for slug, look in LOOKS.items():
        response = page.goto(live_server.url(f"{slug}.localhost", "/login"))
        assert response is not None and response.status == 200

        heading = page.locator("#signin-title")
        expect(heading).to_have_text(look.name)
        expect(page).to_have_title(re.compile(re.escape(look.name)))
        expect(page.locator("#signin-button")).to_have_css("background-color", look.button_rgb)
        expect(page.locator("body")).to_have_css("font-family", look.font)

        logo = page.locator("img[src*='/_brand/logo/']:visible").first
        expect(logo).to_be_visible()
        src = logo.get_attribute("src")
        assert src == f"/_brand/logo/{demo_tenants[slug]}"
        pixels = logo.evaluate(LOGO_PIXELS)
        assert pixels["width"] == 120, f"{slug}: the logo did not load"
        assert tuple(pixels["rgb"]) == look.logo_rgb

        html = page.content()
        for stranger in look.stranger_names:
            assert stranger not in html, f"{slug}'s sign-in page mentions {stranger!r}"
        page.screenshot(path=str(artifacts / f"login-{slug}.png"), full_page=True)
        seen[slug] = {
            "heading": heading.inner_text(),
            "logo": src,
            "button": page.locator("#signin-button").evaluate("b => getComputedStyle(b).backgroundColor"),
            "font": page.locator("body").evaluate("b => getComputedStyle(b).fontFamily"),
        }

    acme, dragon = seen["acme"], seen["dragon"]
    for what in ("heading", "logo", "button", "font"):
        assert acme[what] != dragon[what], f"both tenants show the same {what}: {acme[what]!r}"
    # One tenant's logo is not served on the other's host. (Through the browser: Playwright's
    # own request client resolves names with the system resolver, which knows no *.localhost.)
    other = page.goto(live_server.url("acme.localhost", dragon["logo"]))
    assert other is not None and other.status == 404


def test_unknown_host_gets_a_plain_404_naming_no_tenant(page, live_server, demo_tenants):
    response = page.goto(live_server.url("nosuch.localhost", "/login"))
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("404 Page not found")
    html = page.content()
    for name in ("Acme", "Dragon", "龙付", "Payment Platform", "Sign in"):
        assert name not in html
    assert page.locator("link[rel=stylesheet], img, form").count() == 0
