"""Every page goes through the tenant's theme; missing or broken theme templates fall back."""

import shutil

import pytest
from conftest import SiteClient

from core.db import db
from portal import create_app


def test_each_tenant_gets_its_own_theme_and_cache_does_not_mix_them(make, site):
    make.tenant("acme", theme="default", name="Acme Pay")
    make.tenant("dragon", theme="midnight", name="Dragon Pay")
    acme, dragon = site("acme.localhost"), site("dragon.localhost")
    for _ in range(2):  # the second round is served from Jinja's cache
        a = acme.get("/login").get_data(as_text=True)
        d = dragon.get("/login").get_data(as_text=True)
        assert "Acme Pay" in a and "Dragon Pay" not in a
        assert "Dragon Pay" in d and "Acme Pay" not in d
        assert "split-hero" in d and "split-hero" not in a
        assert "/_theme/midnight/theme.css" in d and "/_theme/midnight/theme.css" not in a


def test_a_template_missing_from_a_theme_falls_back_to_default(make, site):
    tenant = make.tenant("dragon", theme="midnight")
    client = site("dragon.localhost")
    client.login(tenant.admin_email)
    page = client.get("/console/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    # console/dashboard.html exists only in default; it renders inside midnight's layout.
    assert 'class="shell"' in html and "console" in html


def test_a_theme_template_that_does_not_compile_falls_back(app, owner_url, make, tmp_path):
    themes = tmp_path / "themes"
    shutil.copytree(app.config["THEMES_DIR"], themes)
    broken = themes / "broken"
    (broken / "templates" / "auth").mkdir(parents=True)
    (broken / "static").mkdir()
    (broken / "theme.toml").write_text('name = "Broken"\n[colors]\nprimary = "#000000"\naccent = "#ffffff"\n')
    (broken / "templates" / "auth" / "login.html").write_text("{% extends 'base.html' %}{% block content %}{% if %}")
    other = create_app(
        {
            **{k: app.config[k] for k in ("TESTING", "REDIS_URL", "MAIL_DIR", "UPLOAD_DIR")},
            "DATABASE_URL": owner_url,
            "THEMES_DIR": themes,
            "PLATFORM_DOMAIN": "localhost",
            "PLATFORM_HOST": "localhost",
        }
    )
    other.config["PROPAGATE_EXCEPTIONS"] = False
    Factory = type(make)
    Factory(other).tenant("brk", theme="broken", name="Broken Brand")
    page = SiteClient(other, "brk.localhost").get("/login")
    assert page.status_code == 200
    assert "Broken Brand" in page.get_data(as_text=True)
    with other.app_context():
        db.engine.dispose()


def test_theme_static_files_are_served_and_paths_cannot_escape(site, make):
    make.tenant("acme")
    client = site("acme.localhost")
    css = client.get("/_theme/midnight/theme.css")
    assert css.status_code == 200 and b"Midnight" in css.data
    css.close()
    assert client.get("/_theme/midnight/../../portal/config.py").status_code == 404
    assert client.get("/_theme/nosuch/theme.css").status_code == 404


@pytest.mark.parametrize("theme", ["default", "midnight"])
def test_brand_values_are_escaped(app, make, site, theme):
    from tenants import branding
    from tenants.audit import Actor
    from tenants.isolation import tenant_context

    tenant = make.tenant("acme", theme=theme)
    with app.app_context(), tenant_context(db.session, tenant.id):
        from portal import theming

        branding.save_draft(
            tenant.id,
            {
                "display_name": "<script>alert(1)</script>",
                "primary_color": "#112233",
                "accent_color": "#445566",
                "theme": theme,
            },
            theming.themes(),
            Actor.system(),
        )
        branding.publish(tenant.id, Actor.system())
        db.session.remove()
    html = site("acme.localhost").get("/login").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
