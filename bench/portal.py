"""The merchant payments list with a million payments in one tenant.

    DATABASE_URL=... REDIS_URL=... python bench/portal.py [--rows 1000000] [--repeat 100] [--reuse]

Builds the database `payplat_bench_portal` (migrations, one tenant on 127.0.0.1, a merchant whose
owner signs in, a second merchant so the tenant holds more than one), fills `payment_intents`
with ROWS payments of the first merchant spread over a year (statuses, currencies and amounts
varied, a tenth in live mode) by one INSERT ... SELECT, and ANALYZEs. `--reuse` keeps a database
that already holds ROWS payments.

Then it signs the owner in and times whole requests of the list page (host resolution, session,
the query, the template), in-process through Flask's test client, for four pages:

- first:    /merchant/payments                                  (newest 25)
- filtered: /merchant/payments?status=canceled&from=..&to=..    (a status in a 90-day window)
- deep:     /merchant/payments?after=<cursor 90% down the list> (keyset, far from the top)
- amount:   /merchant/payments?currency=EUR&min=1000.00&max=1010.00 (a narrow amount search)

Each page is fetched REPEAT times after 5 warm-up requests, interleaved. It prints one line per page
and the total over all of them:

    portal: page=<name> rows=<N> p50_ms=<x> p95_ms=<x>
    portal: rows=<N> p50_ms=<x> p95_ms=<x>
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal.config import sqlalchemy_url  # noqa: E402

BENCH_DB = "payplat_bench_portal"
HOST = "127.0.0.1"
EMAIL = "owner@bench.example.com"
PASSWORD = "bench-portal-password-1"


def server_url(database: str) -> str:
    from sqlalchemy.engine import make_url

    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL (the server's owner URL) and REDIS_URL first")
    return make_url(sqlalchemy_url(url)).set(drivername="postgresql", database=database).render_as_string(False)


def payment_count() -> int | None:
    """Payments in the bench database, or None when it does not exist or is not migrated."""
    try:
        with psycopg.connect(server_url(BENCH_DB)) as conn:
            return conn.execute("SELECT count(*) FROM payment_intents").fetchone()[0]
    except psycopg.Error:
        return None


def create_database() -> None:
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


def build_app():
    from portal import create_app

    return create_app(
        {
            "DATABASE_URL": sqlalchemy_url(server_url(BENCH_DB)),
            "PLATFORM_DOMAIN": "localhost",
            "PLATFORM_HOST": "localhost",
            "WTF_CSRF_ENABLED": False,
        }
    )


def provision(app) -> None:
    """Tenant, two merchants, the owner's password. Returns nothing: the fill finds them by e-mail."""
    from flask_migrate import upgrade

    from core.db import db
    from portal import theming
    from tenants import passwords, provisioning
    from tenants.audit import Actor
    from tenants.isolation import platform_scope, tenant_context

    with app.app_context():
        upgrade()
        colors = {name: t.colors for name, t in theming.themes().items()}
        with platform_scope(db.session):
            tenant, _ = provisioning.provision_tenant(
                provisioning.TenantSpec(
                    name="Bench", slug="bench", admin_email="admin@bench.example.com", domains=[HOST]
                ),
                Actor.system(),
                colors,
            )
        with tenant_context(db.session, tenant.id):
            _, owner = provisioning.create_merchant(tenant.id, "Bench shop", EMAIL, Actor.system())
            provisioning.create_merchant(tenant.id, "Other shop", "other@bench.example.com", Actor.system())
            owner.password_hash = passwords.hash_password(PASSWORD)
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


FILL = """
INSERT INTO payment_intents (
    tenant_id, id, merchant_id, livemode, amount, currency, status, capture_method,
    payment_method, payment_method_types, product, amount_capturable, amount_received, amount_refunded,
    description, metadata, client_secret, created_at, updated_at, payer_details)
SELECT u.tenant_id, 'pi_bench' || lpad(g::text, 10, '0'), u.merchant_id, g %% 10 = 0,
       100 + (g::bigint * 7919) %% 500000,
       (ARRAY['USD', 'CNY', 'EUR'])[1 + g %% 3],
       (ARRAY['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded',
              'requires_payment_method', 'canceled', 'processing'])[1 + g %% 10],
       'automatic', 'pm_card_visa', ARRAY['card'], 'card', 0,
       CASE WHEN g %% 10 < 7 THEN 100 + (g::bigint * 7919) %% 500000 ELSE 0 END, 0,
       NULL, '{}'::jsonb, 'pi_bench' || g || '_secret_bench',
       now() - make_interval(secs => (%(rows)s - g) * (31536000.0 / %(rows)s)),
       now(), '{}'::jsonb
FROM generate_series(1, %(rows)s) AS g,
     (SELECT tenant_id, merchant_id FROM users WHERE email = %(email)s) AS u
"""


def fill(rows: int) -> float:
    started = time.monotonic()
    with psycopg.connect(server_url(BENCH_DB), autocommit=True) as conn:
        conn.execute(FILL, {"rows": rows, "email": EMAIL})
        conn.execute("ANALYZE")
    return time.monotonic() - started


def deep_cursor(rows: int) -> str:
    """The list's own cursor (portal.pagination) for the payment 90% of the way down the test-mode list."""
    with psycopg.connect(server_url(BENCH_DB)) as conn:
        created_at, ident = conn.execute(
            "SELECT created_at, id FROM payment_intents WHERE NOT livemode ORDER BY created_at DESC, id DESC "
            "OFFSET %s LIMIT 1",
            (int(rows * 0.9 * 0.9),),
        ).fetchone()
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(app, rows: int, repeat: int) -> dict[str, list[float]]:
    from datetime import date, timedelta

    today = date.today()
    pages = {
        "first": "/merchant/payments",
        "filtered": f"/merchant/payments?status=canceled&from={today - timedelta(days=120)}"
        f"&to={today - timedelta(days=30)}",
        "deep": f"/merchant/payments?after={deep_cursor(rows)}",
        "amount": "/merchant/payments?currency=EUR&min=1000.00&max=1010.00",
    }
    client = app.test_client()
    signed_in = client.post(
        "/login", data={"email": EMAIL, "password": PASSWORD}, headers={"Host": HOST}, follow_redirects=False
    )
    if signed_in.status_code != 302:
        raise SystemExit(f"sign-in failed: {signed_in.status_code}")
    timings: dict[str, list[float]] = {name: [] for name in pages}
    for round_ in range(repeat + 5):
        for name, path in pages.items():
            started = time.perf_counter()
            answer = client.get(path, headers={"Host": HOST})
            elapsed = (time.perf_counter() - started) * 1000
            body = answer.get_data(as_text=True)
            if answer.status_code != 200 or len(re.findall(r"pi_bench\d+", body)) < 1:
                raise SystemExit(f"{name}: {answer.status_code}, no payments on the page")
            if round_ >= 5:
                timings[name].append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--reuse", action="store_true", help="keep a database that already holds ROWS payments")
    args = parser.parse_args()
    if not (args.reuse and payment_count() == args.rows):
        create_database()
        provision(build_app())
        print(f"filled {args.rows} payments in {fill(args.rows):.1f} s", file=sys.stderr)
    app = build_app()
    timings = measure(app, args.rows, args.repeat)
    every = []
    for name, values in timings.items():
        every.extend(values)
        print(
            f"portal: page={name} rows={args.rows} p50_ms={statistics.median(values):.1f} "
            f"p95_ms={percentile(values, 0.95):.1f}"
        )
    print(f"portal: rows={args.rows} p50_ms={statistics.median(every):.1f} p95_ms={percentile(every, 0.95):.1f}")


if __name__ == "__main__":
    main()
