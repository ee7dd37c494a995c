"""Per request: which site the host names (platform, a tenant, or nothing) and its brand.

Runs before every view. An unknown host gets a plain 404 that names no tenant; a suspended
tenant's host shows only the suspension notice. The tenant's id is written into the
transaction (`app.tenant_id`) before any tenant data is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, abort, current_app, g, request
from flask_login import current_user
from sqlalchemy.orm import lazyload

from core.db import db
from tenants import branding, hosts, isolation
from tenants.models import Tenant, TenantBrand


@dataclass(frozen=True)
class BrandView:
    """The brand values templates may use (`brand.*`); for the platform, the platform's own."""

    display_name: str
    theme: str
    primary_color: str
    accent_color: str
    support_email: str | None
    logo_file: str | None
    is_preview: bool = False

    @classmethod
    def of(cls, row: TenantBrand, is_preview: bool = False) -> BrandView:
        return cls(
            row.display_name,
            row.theme,
            row.primary_color,
            row.accent_color,
            row.support_email,
            row.logo_file,
            is_preview,
        )


PLATFORM_BRAND = BrandView("Payment Platform", "default", "#334155", "#0ea5e9", None, None)


def init_app(app: Flask) -> None:
    app.before_request(resolve_site)
    app.teardown_request(_forget_site)
    app.add_url_rule("/_brand/logo/<name>", endpoint="brand_logo", view_func=_brand_logo)


def resolve_site():
    isolation.reset(db.session)
    g.tenant = None
    site = hosts.resolve(
        db.session, request.host, current_app.config["PLATFORM_HOST"], current_app.config["PLATFORM_DOMAIN"]
    )
    g.site = site
    if request.endpoint in ("theme_static",):
        return None
    if site.is_platform:
        isolation.activate_platform_scope(db.session)
        g.brand = PLATFORM_BRAND
        return None
    if not site.is_tenant:
        abort(404)
    if _is_api(request.path):
        # The merchant API needs only whether the tenant is active (the host look-up said): no
        # tenant object, no brand, on the platform's busiest path.
        g.brand = None
        if site.tenant_status != "active":
            from portal.errors import suspended_response

            return suspended_response()
        return None
    # The domains load when a page asks for them.
    tenant = db.session.get(Tenant, site.tenant_id, options=[lazyload(Tenant.domains)])
    if tenant is None:
        abort(404)
    g.tenant = tenant
    g.brand = BrandView.of(branding.brand(tenant.id, "published"))
    if not tenant.is_active:
        from portal.errors import suspended_response

        return suspended_response()
    return None


def _is_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def use_draft_brand() -> None:
    """Show the draft brand on this response (the brand preview of a tenant admin)."""
    g.brand = BrandView.of(branding.brand(g.tenant.id, "draft"), is_preview=True)


def _forget_site(_exc=None):
    isolation.reset()


def tenant_base_url(tenant: Tenant) -> str:
    """The address of a tenant's portal: its primary domain, else `<slug>.<platform domain>`."""
    cfg = current_app.config
    host = tenant.primary_domain or f"{tenant.slug}.{cfg['PLATFORM_DOMAIN']}"
    port = cfg.get("PUBLIC_PORT")
    suffix = f":{port}" if port and port not in ("80", "443") else ""
    return f"{cfg['PREFERRED_URL_SCHEME']}://{host}{suffix}"


def platform_base_url() -> str:
    cfg = current_app.config
    port = cfg.get("PUBLIC_PORT")
    suffix = f":{port}" if port and port not in ("80", "443") else ""
    return f"{cfg['PREFERRED_URL_SCHEME']}://{cfg['PLATFORM_HOST']}{suffix}"


def current_actor():
    from tenants.audit import Actor

    if not current_user.is_authenticated:
        return Actor.system()
    kind = "platform" if current_user.scope == "platform" else "user"
    return Actor(kind=kind, id=current_user.id, email=current_user.email, ip=request.remote_addr)


def _brand_logo(name: str):
    from flask import send_file

    if getattr(g, "tenant", None) is None:
        abort(404)
    path = branding.logo_path(current_app.config["UPLOAD_DIR"], g.tenant.id, name)
    if path is None:
        abort(404)
    return send_file(path, mimetype="image/png", max_age=86400)
