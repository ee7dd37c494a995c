"""Payments throughput: the merchant API under gunicorn, create+confirm through a channel.

    DATABASE_URL=... REDIS_URL=... python bench/payments.py [-n 2000] [-c 16]

For each channel setting (sandbox, sandbox answering after 100 ms, localstripe) it builds a
fresh database, starts the app under gunicorn's threaded workers, and drives N
`POST /v1/payment_intents` (confirm=true, pm_card_visa) from C concurrent clients. The baseline
replays, with a plain psycopg connection per client, the SQL statements the platform executed
for one such payment (captured from SQLAlchemy's cursor events), with fresh ids each time.
It prints one line per run:

    payments: channel=<name> n=<N> concurrency=<C> per_second=<x> p50_ms=<x> p99_ms=<x>
              baseline_per_second=<x> ratio=<x>

Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal.config import sqlalchemy_url  # noqa: E402

BENCH_DB = "payplat_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL (the server's owner URL) and REDIS_URL first, or run `make bench`")
    return url


def database_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url(admin_url())).set(database=name).render_as_string(hide_password=False)


def fresh_database() -> str:
    from sqlalchemy.engine import make_url

    server = make_url(sqlalchemy_url(admin_url())).set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return database_url(BENCH_DB)


def setup(channel: str, settings: dict, base_url: str | None) -> tuple[str, list[tuple[str, tuple]]]:
    """Migrate, create a tenant on 127.0.0.1 with one channel account and a merchant key, run one
    payment in-process while capturing its SQL. Returns (secret key, captured statements)."""
    from flask_migrate import upgrade
    from sqlalchemy import event

    from core.db import db
    from payments import intents
    from payments.channel_accounts import ChannelAccountInput, create_channel_account
    from portal import create_app, theming
    from tenants import api_keys, provisioning
    from tenants.audit import Actor
    from tenants.isolation import platform_scope, tenant_context

    app = create_app({"DATABASE_URL": fresh_database(), "PLATFORM_DOMAIN": "localhost", "PLATFORM_HOST": "localhost"})
    with app.app_context():
        upgrade()
        colors = {name: t.colors for name, t in theming.themes().items()}
        with platform_scope(db.session):
            tenant, _ = provisioning.provision_tenant(
                provisioning.TenantSpec(
                    name="Bench", slug="bench", admin_email="admin@bench.example.com", domains=["127.0.0.1"]
                ),
                Actor.system(),
                colors,
            )
        tenant_id = tenant.id
        with tenant_context(db.session, tenant_id):
            merchant, _ = provisioning.create_merchant(
                tenant_id, "Bench shop", "owner@bench.example.com", Actor.system()
            )
            create_channel_account(
                tenant_id,
                ChannelAccountInput(
                    name=channel,
                    type="stripe" if channel == "localstripe" else "sandbox",
                    currency="USD",
                    products=["card"],
                    base_url=base_url,
                    settings=settings,
                    credentials={"secret_key": "sk_test_bench"} if channel == "localstripe" else {},
                ),
                {"card"},
                Actor.system(),
            )
            _, secret = api_keys.create_key(tenant_id, merchant.id, "test", "bench", Actor.system())
            ctx = intents.MerchantContext(tenant_id, merchant.id, False)
            # A first payment creates the ledger accounts; the captured one is a steady-state payment.
            intents.create(ctx, amount=1000, currency="usd", payment_method="pm_card_visa", confirm=True)
        db.session.remove()
        client = app.test_client()
        request = {
            "data": {"amount": "1000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
            "headers": {"Authorization": f"Bearer {secret}", "Host": "127.0.0.1"},
        }
        # A first API request writes the key's `last_used_at` (once a minute): not a steady-state cost.
        client.post("/v1/payment_intents", **request)
        # The captured payment is a whole API request (host, key, create, confirm), as clients send it.
        captured: list[tuple[str, tuple]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            captured.append((statement, ("many", parameters) if executemany else parameters))

        def commit(conn):
            captured.append(("COMMIT", None))

        event.listen(db.engine, "before_cursor_execute", capture)
        event.listen(db.engine, "commit", commit)
        answer = client.post("/v1/payment_intents", **request)
        event.remove(db.engine, "before_cursor_execute", capture)
        event.remove(db.engine, "commit", commit)
        if answer.status_code != 200:
            raise SystemExit(f"the captured payment failed: {answer.status_code} {answer.get_data(as_text=True)}")
        db.session.remove()
        db.engine.dispose()
    return secret, captured


class Gunicorn:
    def __init__(self, port: int, database: str):
        env = {**os.environ, "DATABASE_URL": database, "PAYPLAT_PLATFORM_DOMAIN": "localhost"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/balance", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("gunicorn did not start within 30 s")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(15)


def drive(port: int, secret: str, n: int, concurrency: int) -> tuple[float, list[float], int]:
    """N create+confirm requests from C clients; returns (seconds, latencies in ms, errors)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(n))
    barrier = threading.Barrier(concurrency + 1)

    def client():
        nonlocal errors
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(secret, ""), timeout=30) as http:
            barrier.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                response = http.post(
                    "/v1/payment_intents",
                    data={
                        "amount": str(1000 + index % 500),
                        "currency": "usd",
                        "payment_method": "pm_card_visa",
                        "confirm": "true",
                    },
                )
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200 or response.json().get("status") != "succeeded":
                        errors += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors


# Prefixed object ids (pi_..., evt_..., txn_...) and the idempotency keys derived from them.
ID_RE = re.compile(r"^[a-z]{1,5}_[A-Za-z0-9]{16,}(-[a-z]+-\d+)?$")


def baseline(database: str, captured: list[tuple[str, tuple]], n: int, concurrency: int) -> float:
    """The same statements through plain psycopg, as the app's role, with fresh ids per payment."""
    from sqlalchemy.engine import make_url

    url = make_url(database).set(drivername="postgresql", username="payplat_app").render_as_string(hide_password=False)
    # Ids that existed before the captured payment (tenant, merchant, channel, ledger accounts)
    # are shared by every payment; every other id is new for each replayed payment.
    with psycopg.connect(make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        keep = {
            row[0]
            for table in ("tenants", "merchants", "channel_accounts", "ledger_accounts", "api_keys")
            for row in conn.execute(f"SELECT id FROM {table}")
        }  # noqa: S608  (fixed table names)

    def renew(value, fresh):
        if isinstance(value, list):  # arrays (a journal entry's lines)
            return [renew(v, fresh) for v in value]
        if isinstance(value, uuid.UUID) and value not in keep:
            return fresh.setdefault(value, uuid.uuid4())
        if isinstance(value, str) and ID_RE.match(value):
            # Ids derived from one another (a key from its intent's id) stay derived.
            for old, new in fresh.items():
                if isinstance(old, str) and value.startswith(old):
                    return new + value[len(old) :]
            prefix, _, rest = value.partition("_")
            body, dash, tail = rest.partition("-")
            return fresh.setdefault(value, f"{prefix}_{uuid.uuid4().hex[:24]}{dash}{tail}")
        return value

    counter = iter(range(n))
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    failures: list[BaseException] = []

    def worker():
        try:
            replay()
        except BaseException as exc:  # reported below: a failed replay must not pass as a fast one
            failures.append(exc)
            barrier.abort()

    def replay():
        with psycopg.connect(url) as conn:
            barrier.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                fresh: dict = {}
                # The platform's own transaction boundaries are kept: a COMMIT marker commits.
                for statement, params in captured:
                    if statement == "COMMIT":
                        conn.commit()
                        continue
                    if isinstance(params, tuple) and params and params[0] == "many":
                        rows = [
                            {k: renew(v, fresh) for k, v in row.items()}
                            if isinstance(row, dict)
                            else tuple(renew(v, fresh) for v in row)
                            for row in params[1]
                        ]
                        conn.cursor().executemany(statement, rows)
                        continue
                    if isinstance(params, dict):
                        params = {k: renew(v, fresh) for k, v in params.items()}
                    elif isinstance(params, (list, tuple)):
                        params = tuple(renew(v, fresh) for v in params)
                    conn.execute(statement, params or None)
                conn.commit()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"the baseline replay failed: {failures[0]!r}")
    return n / (time.perf_counter() - started)


def run(channel: str, settings: dict, base_url: str | None, n: int, concurrency: int) -> None:
    secret, captured = setup(channel, settings, base_url)
    database = database_url(BENCH_DB)
    port = free_port()
    server = Gunicorn(port, database)
    try:
        drive(port, secret, min(50, n), concurrency)  # warm-up: connections, imports, caches
        seconds, latencies, errors = drive(port, secret, n, concurrency)
    finally:
        server.stop()
    latencies.sort()
    per_second = n / seconds
    base = baseline(database, captured, n, concurrency)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    name = channel if not settings.get("latency_ms") else f"{channel}-{settings['latency_ms']}ms"
    print(
        f"payments: channel={name} n={n} concurrency={concurrency} per_second={per_second:.0f} "
        f"p50_ms={statistics.median(latencies):.1f} p99_ms={p99:.1f} baseline_per_second={base:.0f} "
        f"ratio={per_second / base:.2f} errors={errors}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument(
        "--channels",
        default="sandbox,sandbox-100ms",
        help="comma-separated: sandbox, sandbox-100ms, localstripe=<base url>",
    )
    args = parser.parse_args()
    for spec in args.channels.split(","):
        if spec == "sandbox":
            run("sandbox", {}, None, args.n, args.concurrency)
        elif spec == "sandbox-100ms":
            run("sandbox", {"latency_ms": 100}, None, args.n, args.concurrency)
        elif spec.startswith("localstripe="):
            run("localstripe", {}, spec.split("=", 1)[1], args.n, args.concurrency)
        else:
            raise SystemExit(f"unknown channel setting {spec!r}")


if __name__ == "__main__":
    main()
