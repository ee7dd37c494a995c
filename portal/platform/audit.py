"""The platform's audit log: every tenant's events, with the filters of the tenant console plus
the tenant (`portal.audit_log`), newest first, keyset-paged. Platform scope (the named
cross-tenant path) is active for every request on the platform host."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import current_app, render_template, request

from portal import audit_log as audit_filters
from portal.access import platform_admin_required
from portal.pagination import newest_first
from portal.platform import bp
from tenants.models import AuditEvent


@bp.route("/audit")
@platform_admin_required
def audit_log():
    zone = ZoneInfo("UTC")
    found = audit_filters.filtered(request.args, zone, platform=True)
    page = newest_first(found.statement, AuditEvent, request.args.get("after"), current_app.config["PAGE_SIZE"])
    return render_template(
        "platform/audit.html",
        page=page,
        filters=found.values,
        errors=found.errors,
        paged=bool(request.args.get("after")),
        zone=zone,
        events_zone=zone,
        tenants=audit_filters.tenant_names(page.items),
    )
