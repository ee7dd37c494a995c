"""The platform's audit log: every tenant's events, with the filters of the tenant console plus
the tenant (`portal.audit_log`), newest first, keyset-paged, and exported with the same filters as
a direct download (at most `EXPORT_DIRECT_MAX_ROWS` rows: an export job's row is a tenant's, and
this list is every tenant's). Platform scope (the named cross-tenant path) is active for every
request on the platform host."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import current_app, render_template, request

from clearing import listings
from portal import audit_log as audit_filters
from portal import reporting
from portal.access import platform_admin_required
from portal.pagination import newest_first
from portal.platform import bp
from tenants.models import AuditEvent

AUDIENCE = "platform"


def scope() -> listings.Scope:
    return listings.Scope(None, None, ZoneInfo("UTC"))


@bp.route("/audit")
@platform_admin_required
def audit_log():
    every = scope()
    found = audit_filters.filtered(request.args, every)
    page = newest_first(found.statement, AuditEvent, request.args.get("after"), current_app.config["PAGE_SIZE"])
    return render_template(
        "platform/audit.html",
        page=page,
        filters=found.values,
        errors=found.errors,
        paged=bool(request.args.get("after")),
        zone=every.zone,
        events_zone=every.zone,
        tenants=audit_filters.tenant_names(page.items),
        **reporting.tools(AUDIENCE, "audit", every),
    )


@bp.route("/audit/export", methods=["POST"])
@platform_admin_required
def create_export():
    return reporting.start_export(AUDIENCE, scope())
