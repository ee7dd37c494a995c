"""Keyset pages newest first: every row once, whether the ids are uuids or `pi_...` strings."""

import base64
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from core.db import db
from payments import intents
from payments.models import PaymentIntent
from portal.pagination import newest_first
from tenants.isolation import tenant_context
from tenants.models import Merchant

SAME_INSTANT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def rows(app, make, owner_engine):
    """Five merchants (uuid ids) and five payments (`pi_...` ids) of one tenant, all created at one
    instant, so only the ids tell the pages apart."""
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com", password=None)
    for n in range(4):
        make.merchant(tenant, f"Shop {n}", f"owner{n}@shop.example.com", password=None)
    make.channel_account(tenant.id)
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, merchant, False)
        for n in range(5):
            intents.create(ctx, amount=100 + n, currency="usd")
        db.session.remove()
    with owner_engine.begin() as conn:
        for model in (Merchant, PaymentIntent):
            conn.execute(sa.update(model).values(created_at=SAME_INSTANT))
    with app.app_context(), tenant_context(db.session, tenant.id):
        yield
        db.session.remove()


def _all_pages(model, size=2):
    pages, cursor = [], None
    while True:
        page = newest_first(sa.select(model), model, cursor, size)
        assert not page.cursor_invalid
        pages.append([row.id for row in page.items])
        if page.next_cursor is None:
            return pages
        assert len(pages) < 10, "the cursor never moves on"
        cursor = page.next_cursor


@pytest.mark.parametrize("model", [Merchant, PaymentIntent])
def test_pages_hold_every_row_once_in_id_order(rows, model):
    pages = _all_pages(model)
    assert [len(page) for page in pages] == [2, 2, 1]
    # The database's order, not Python's: string ids sort by the column's collation.
    every = db.session.execute(sa.select(model.id).order_by(model.id.desc())).scalars().all()
    assert [ident for page in pages for ident in page] == every


def _cursor(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    "model, cursor",
    [
        (Merchant, "%%%"),
        (Merchant, _cursor(b"2026-03-01T12:00:00+00:00|pi_not_a_uuid")),
        (PaymentIntent, _cursor(b"yesterday|pi_123")),
        (PaymentIntent, _cursor(b"2026-03-01T12:00:00+00:00")),
        (PaymentIntent, _cursor(b"2026-03-01T12:00:00+00:00|pi_\x00")),
    ],
)
def test_an_unreadable_cursor_gives_the_first_page(rows, model, cursor):
    first = newest_first(sa.select(model), model, None, 2)
    page = newest_first(sa.select(model), model, cursor, 2)
    assert page.cursor_invalid
    assert [row.id for row in page.items] == [row.id for row in first.items]
