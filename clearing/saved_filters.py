"""Saved report filters: a named set of a list's or report's filters, shared by the scope that saved
it (the tenant's staff, or one merchant's users). Applying one opens the page with those filters."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import sqlalchemy as sa

from clearing.models import SavedReportFilter
from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.errors import InvalidInput

NAME_MAX = 80
MAX_PER_PAGE = 50


def list_for(tenant_id: uuid.UUID, merchant_id: uuid.UUID | None, page: str) -> list[SavedReportFilter]:
    owner = (
        SavedReportFilter.merchant_id.is_(None) if merchant_id is None else SavedReportFilter.merchant_id == merchant_id
    )
    return list(
        db.session.execute(
            sa.select(SavedReportFilter)
            .where(SavedReportFilter.tenant_id == tenant_id, owner, SavedReportFilter.page == page)
            .order_by(SavedReportFilter.name)
        ).scalars()
    )


def get(tenant_id: uuid.UUID, merchant_id: uuid.UUID | None, filter_id: uuid.UUID) -> SavedReportFilter | None:
    """A saved filter of exactly this scope (a merchant's is not the tenant staff's, nor another merchant's)."""
    item = db.session.get(SavedReportFilter, (tenant_id, filter_id))
    if item is None or item.merchant_id != merchant_id:
        return None
    return item


def save(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID | None,
    page: str,
    name: str,
    filters: Mapping[str, str],
    actor: audit.Actor,
) -> SavedReportFilter:
    """Save `filters` under `name` for `page`; the same name again replaces them (commits)."""
    name = " ".join((name or "").split())
    if not name:
        raise InvalidInput(gettext("Give the filter a name, for example “Last month in EUR”."), "name")
    if len(name) > NAME_MAX:
        raise InvalidInput(gettext("The name is longer than %(limit)s characters.", limit=NAME_MAX), "name")
    values = {str(key): str(value) for key, value in filters.items() if value}
    existing = next((item for item in list_for(tenant_id, merchant_id, page) if item.name == name), None)
    if existing is None:
        if len(list_for(tenant_id, merchant_id, page)) >= MAX_PER_PAGE:
            raise InvalidInput(
                gettext("This page already has %(limit)s saved filters: delete one first.", limit=MAX_PER_PAGE),
                "name",
            )
        existing = SavedReportFilter(
            tenant_id=tenant_id,
            id=uuid.uuid4(),
            merchant_id=merchant_id,
            page=page,
            name=name,
            filters=values,
            created_by=actor.email or "system",
        )
        db.session.add(existing)
    else:
        existing.filters = values
        existing.created_by = actor.email or "system"
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # the same name saved a moment ago by someone else of the scope
        db.session.rollback()
        raise InvalidInput(
            gettext("“%(name)s” was just saved by someone else: save again to replace it.", name=name), "name"
        ) from None
    return existing


def delete(item: SavedReportFilter) -> None:
    db.session.delete(item)
    db.session.commit()
