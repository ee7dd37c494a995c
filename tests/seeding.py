"""Many payments quickly, in SQL: `seed_payments` writes succeeded card payments of one merchant with
their `charge` balance transactions (fee 0), one second apart going back from now, in a few
statements (INSERT ... SELECT generate_series), for tests that need tens of thousands of rows.

They are what the lists and exports read; no ledger entries are written (nothing checks balances).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

_PAYMENTS = sa.text(
    """
    INSERT INTO payment_intents (tenant_id, id, merchant_id, livemode, amount, currency, status, capture_method,
                                 payment_method, payment_method_types, product, amount_capturable, amount_received,
                                 amount_refunded, description, metadata, client_secret, created_at, updated_at)
    SELECT :tenant_id, :prefix || lpad(g::text, 8, '0'), :merchant_id, false, 100 + g % 9900, 'usd', 'succeeded',
           'automatic', 'pm_card_visa', ARRAY['card'], 'card', 0, 100 + g % 9900, 0, 'seeded order ' || g,
           '{}'::jsonb, :prefix || lpad(g::text, 8, '0') || '_secret_seeded',
           now() - g * interval '1 second', now() - g * interval '1 second'
    FROM generate_series(1, :count) AS g
    """
)
_CHARGES = sa.text(
    """
    INSERT INTO balance_transactions (tenant_id, id, merchant_id, livemode, amount, currency, fee, fee_details, net,
                                      type, source, status, description, created_at)
    SELECT tenant_id, 'txn_' || substr(id, 4), merchant_id, false, amount, currency, 0, '[]'::jsonb, amount,
           'charge', id, 'pending', id || ' captured', created_at
    FROM payment_intents WHERE tenant_id = :tenant_id AND id LIKE :prefix || '%'
    """
)


def seed_payments(owner_engine, tenant_id: uuid.UUID, merchant_id: uuid.UUID, count: int, prefix: str = "pi_seed"):
    """`count` succeeded USD card payments of the merchant (amounts 1.01 to 99.99), newest a second ago."""
    params = {"tenant_id": tenant_id, "merchant_id": merchant_id, "count": count, "prefix": prefix}
    with owner_engine.begin() as conn:
        conn.execute(_PAYMENTS, params)
        conn.execute(_CHARGES, params)
        conn.execute(sa.text("ANALYZE payment_intents"))
