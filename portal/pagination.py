"""Keyset pagination for lists: newest first, by (created_at, id), or oldest first by another
moment (a work queue), with an opaque cursor."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.db import db


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None
    # A cursor was given but could not be read (garbled or cut short): this is the first page.
    cursor_invalid: bool = False


def _encode(created_at: datetime, ident: Any) -> str:
    # str() of any id (uuid, `pi_...`, int); `_decode` turns it back by the model's id column type.
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def _decode(cursor: str, model) -> tuple[datetime, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.split("|", 1)
        if "\x00" in raw:  # PostgreSQL refuses NUL in text: a 500 instead of "bad cursor"
            return None
        return datetime.fromisoformat(stamp), model.id.type.python_type(ident)
    except ValueError:  # binascii.Error, UnicodeDecodeError and a bad uuid are all ValueErrors
        return None


def newest_first(statement: sa.Select, model, cursor: str | None, size: int) -> Page:
    """One page of `statement` ordered by `model.created_at DESC, model.id DESC`; a cursor that
    cannot be read gives the first page, marked `cursor_invalid`."""
    position = _decode(cursor, model) if cursor else None
    if position is not None:
        statement = statement.where(sa.tuple_(model.created_at, model.id) < sa.tuple_(*position))
    rows = (
        db.session.execute(statement.order_by(model.created_at.desc(), model.id.desc()).limit(size + 1)).scalars().all()
    )
    items = list(rows[:size])
    more = len(rows) > size
    return Page(
        items,
        _encode(items[-1].created_at, items[-1].id) if more and items else None,
        cursor_invalid=bool(cursor) and position is None,
    )


def oldest_first(statement: sa.Select, model, at, cursor: str | None, size: int) -> Page:
    """One page of `statement` ordered by `at ASC, model.id ASC` (`at` a datetime column of
    `model`, e.g. when a work item was opened); a cursor that cannot be read gives the first page."""
    position = _decode(cursor, model) if cursor else None
    if position is not None:
        statement = statement.where(sa.tuple_(at, model.id) > sa.tuple_(*position))
    rows = db.session.execute(statement.order_by(at.asc(), model.id.asc()).limit(size + 1)).scalars().all()
    items = list(rows[:size])
    more = len(rows) > size
    return Page(
        items,
        _encode(getattr(items[-1], at.key), items[-1].id) if more and items else None,
        cursor_invalid=bool(cursor) and position is None,
    )


def search_term(value: str | None) -> str | None:
    """A user's search text as an ILIKE pattern (wildcards in the text are taken literally)."""
    text = (value or "").strip()
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
