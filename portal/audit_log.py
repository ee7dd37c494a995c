"""The audit log's filters, shared by the tenant console (its own tenant's events) and the platform
console (every tenant's): tenant (platform only), actor, action, object type and id, a date range
and a search, narrowing a query of `AuditEvent` that the caller pages with `newest_first`.

Tenant staff never learn who at the platform acted (the page says "Platform operator"), so on the
tenant console the actor filter and the search match only the tenant's own people's e-mails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask_babel import gettext as _

from core.db import db
from portal.pagination import search_term
from tenants.models import AuditEvent, Tenant

FILTERS = ("q", "tenant", "actor", "action", "object_type", "object_id", "from", "to")


@dataclass
class AuditFilters:
    statement: sa.Select
    # What the user typed, as typed: shown again in the form and carried by the page links.
    values: dict[str, str]
    # A message per field that could not be used (the list ignores that field).
    errors: dict[str, str] = field(default_factory=dict)


def zone_of(tenant) -> ZoneInfo:
    """The tenant's time zone (days in the filters are its calendar days), UTC when unset or unknown."""
    try:
        return ZoneInfo(getattr(tenant, "time_zone", None) or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(_("%(text)s is not a date: use YYYY-MM-DD, for example 2026-03-31.", text=text)) from None


def _tenant(text: str) -> Tenant | None:
    """A tenant by its slug or id (the caller is in platform scope)."""
    try:
        by_id = uuid.UUID(text)
    except ValueError:
        return db.session.execute(sa.select(Tenant).where(Tenant.slug == text.lower())).scalar_one_or_none()
    return db.session.get(Tenant, by_id)


def filtered(args, zone: ZoneInfo, *, platform: bool) -> AuditFilters:
    """`AuditEvent`s narrowed by the filters in `args` (a request's query string); `platform`: the
    platform console (any tenant, platform people's e-mails searchable)."""
    values = {key: args[key].strip() for key in FILTERS if (args.get(key) or "").strip()}
    if not platform:
        values.pop("tenant", None)
    errors: dict[str, str] = {}
    statement = sa.select(AuditEvent)
    # Whose e-mails may be matched: on the tenant console, only the tenant's own people's.
    email = AuditEvent.actor_email if platform else sa.case((AuditEvent.actor_kind == "user", AuditEvent.actor_email))

    if "tenant" in values:
        tenant = _tenant(values["tenant"])
        if tenant is None:
            errors["tenant"] = _("No tenant has the slug or id %(text)s.", text=values["tenant"])
        else:
            statement = statement.where(AuditEvent.tenant_id == tenant.id)
    pattern = search_term(values.get("q"))
    if pattern:
        statement = statement.where(
            sa.or_(
                AuditEvent.action.ilike(pattern),
                email.ilike(pattern),
                AuditEvent.object_type.ilike(pattern),
                AuditEvent.object_id.ilike(pattern),
            )
        )
    actor = values.get("actor")
    if actor:
        kinds = {"system": "system", "platform": "platform"} if platform else {"system": "system"}
        if actor.lower() in kinds:
            statement = statement.where(AuditEvent.actor_kind == kinds[actor.lower()])
        else:
            statement = statement.where(email.ilike(search_term(actor)))
    action = values.get("action")
    if action:
        # A prefix: "api_key." lists every action on API keys, "api_key.created" that one.
        escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(AuditEvent.action.ilike(f"{escaped}%"))
    if values.get("object_type"):
        statement = statement.where(AuditEvent.object_type == values["object_type"])
    if values.get("object_id"):
        statement = statement.where(AuditEvent.object_id == values["object_id"])

    days = {}
    for bound in ("from", "to"):
        if bound in values:
            try:
                days[bound] = _day(values[bound])
            except ValueError as exc:
                errors[bound] = str(exc)
    if "from" in days and "to" in days and days["from"] > days["to"]:
        errors["to"] = _("“To” is before “From”.")
    else:
        if "from" in days:
            statement = statement.where(AuditEvent.created_at >= datetime.combine(days["from"], time.min, tzinfo=zone))
        if "to" in days:
            end = datetime.combine(days["to"] + timedelta(days=1), time.min, tzinfo=zone)
            statement = statement.where(AuditEvent.created_at < end)
    return AuditFilters(statement, values, errors)


def tenant_names(events) -> dict[uuid.UUID, Tenant]:
    """The tenants of a page of events, by id (one query; the caller is in platform scope)."""
    ids = {event.tenant_id for event in events}
    if not ids:
        return {}
    return {t.id: t for t in db.session.execute(sa.select(Tenant).where(Tenant.id.in_(ids))).scalars()}
