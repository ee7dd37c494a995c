"""Who may open what: one decorator per scope (platform, tenant, merchant).

Anonymous visitors are sent to sign in; a signed-in user of the wrong scope or role gets 403.
Blueprints also refuse to exist on the wrong kind of host (404), see each blueprint's guard.
"""

from __future__ import annotations

import functools

from flask import abort, g
from flask_login import current_user

from portal.extensions import login_manager


def _require(predicate):
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not predicate(current_user):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def platform_admin_required(view):
    return _require(lambda user: user.scope == "platform" and user.role == "admin")(view)


def tenant_role_required(*roles: str):
    """Tenant staff (not merchant users) with one of `roles` (all staff roles when empty)."""
    return _require(
        lambda user: (
            user.scope == "tenant"
            and not user.is_merchant_user
            and (not roles or user.role in roles)
            and user.tenant_id == g.tenant.id
        )
    )


def merchant_role_required(*roles: str):
    """A merchant's user with one of `roles` (owner, staff; all when empty)."""
    return _require(
        lambda user: (
            user.scope == "tenant"
            and user.is_merchant_user
            and (not roles or user.role in roles)
            and user.tenant_id == g.tenant.id
        )
    )


def host_guard(kind: str):
    """A blueprint's before_request: the blueprint exists only on `kind` hosts (else 404)."""

    def guard():
        site = getattr(g, "site", None)
        if site is None or site.kind != kind:
            abort(404)

    return guard
