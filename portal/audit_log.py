"""The audit log pages' filters, shared by the tenant console (its own tenant's events) and the
platform console (every tenant's): tenant (platform only), actor, action, object type and id, a date
range and a search. The parsing is `clearing.listings.audit_events`, the same that selects the rows
of the audit log's export, so a page and its file hold the same events; this gives the pages what
they show around it.

Tenant staff never learn who at the platform acted (the page says "Platform operator"), so on the
tenant console the actor filter and the search match only the tenant's own people's e-mails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from clearing import listings
from core.db import db
from tenants.models import Tenant

FILTERS = listings.AUDIT_FILTERS


@dataclass
class AuditFilters:
    statement: sa.Select
    # What the user typed (trimmed): shown again in the form and carried by the page links.
    values: dict[str, str]
    # A message per field that could not be used (the list ignores that field).
    errors: dict[str, str] = field(default_factory=dict)


def zone_of(tenant) -> ZoneInfo:
    """The tenant's time zone (days in the filters are its calendar days), UTC when unset or unknown."""
    try:
        return ZoneInfo(getattr(tenant, "time_zone", None) or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def filtered(args, scope: listings.Scope) -> AuditFilters:
    """`AuditEvent`s of `scope` (one tenant's, or on the platform every tenant's) narrowed by the
    filters in `args` (a request's query string)."""
    statement, errors = listings.audit_events(scope, args)
    values = {key: args[key].strip() for key in FILTERS if (args.get(key) or "").strip()}
    if not scope.platform:
        values.pop("tenant", None)
    return AuditFilters(statement, values, errors)


def tenant_names(events) -> dict[uuid.UUID, Tenant]:
    """The tenants of a page of events, by id (one query; the caller is in platform scope)."""
    ids = {event.tenant_id for event in events}
    if not ids:
        return {}
    return {t.id: t for t in db.session.execute(sa.select(Tenant).where(Tenant.id.in_(ids))).scalars()}
