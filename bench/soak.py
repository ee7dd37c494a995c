"""Soak: mixed merchant API traffic for a set time, then the books and the audit log are checked.

    DATABASE_URL=... REDIS_URL=... python bench/soak.py [--seconds 60] [--concurrency 8]

Builds a fresh database (`payplat_soak`) with a tenant on 127.0.0.1, a sandbox channel account and
two merchants with a test key each (as `bench/payments.py` does), starts the app under gunicorn
with `gunicorn.conf.py`, and has C clients send, until the time is up, a mix of: create+confirm a
payment (40 %), a partial refund of one of the client's earlier payments (20 %), and lists of
payments, refunds and balance transactions (40 %). An answer other than the expected 200 (a
succeeded payment, a succeeded refund, a list) is an error. Then it stops the app and runs
`flask ledger check` and `flask audit verify` on the database, and prints one final line:

    soak: seconds=<x> requests=<n> errors=<n> p99_ms=<x> ledger=ok|FAIL audit=ok|FAIL

(a failed check's output is printed above it). Loopback only; the exit status is 1 when there
were errors or a check failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# bench/payments.py's helpers (free port, gunicorn process), loaded by path: `payments` is also the
# platform's package name.
_spec = importlib.util.spec_from_file_location("bench_payments", ROOT / "bench" / "payments.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SOAK_DB = "payplat_soak"
MERCHANTS = 2


def fresh_database() -> str:
    from sqlalchemy.engine import make_url

    from portal.config import sqlalchemy_url

    server = make_url(sqlalchemy_url(bench.admin_url())).set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SOAK_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{SOAK_DB}"')
    return bench.database_url(SOAK_DB)


def setup(database: str) -> list[str]:
    """Migrate; a tenant on 127.0.0.1 with a sandbox channel account and MERCHANTS merchants; their test keys."""
    from flask_migrate import upgrade

    from core.db import db
    from payments.channel_accounts import ChannelAccountInput, create_channel_account
    from portal import create_app, theming
    from tenants import api_keys, provisioning
    from tenants.audit import Actor
    from tenants.isolation import platform_scope, tenant_context

    app = create_app({"DATABASE_URL": database, "PLATFORM_DOMAIN": "localhost", "PLATFORM_HOST": "localhost"})
    secrets = []
    with app.app_context():
        upgrade()
        colors = {name: t.colors for name, t in theming.themes().items()}
        with platform_scope(db.session):
            tenant, _ = provisioning.provision_tenant(
                provisioning.TenantSpec(
                    name="Soak", slug="soak", admin_email="admin@soak.example.com", domains=["127.0.0.1"]
                ),
                Actor.system(),
                colors,
            )
        tenant_id = tenant.id
        with tenant_context(db.session, tenant_id):
            create_channel_account(
                tenant_id,
                ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"]),
                {"card"},
                Actor.system(),
            )
            for n in range(MERCHANTS):
                merchant, _ = provisioning.create_merchant(
                    tenant_id, f"Soak shop {n + 1}", f"owner{n + 1}@soak.example.com", Actor.system()
                )
                _, secret = api_keys.create_key(tenant_id, merchant.id, "test", "soak", Actor.system())
                secrets.append(secret)
        db.session.remove()
        db.engine.dispose()
    return secrets


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)  # the first few errors, to print
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float, error: str | None) -> None:
        with self.lock:
            self.latencies.append(ms)
            if error is not None:
                self.errors += 1
                if len(self.samples) < 5:
                    self.samples.append(error)


def _expect(response: httpx.Response, check) -> str | None:
    if response.status_code != 200:
        return f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:200]}"
    body = response.json()
    if not check(body):
        return f"{response.request.method} {response.request.url.path}: unexpected {str(body)[:200]}"
    return None


def client(port: int, secret: str, seed: int, deadline: float, tally: Tally) -> None:
    """One client: a seeded mix of operations until the deadline."""
    rng = random.Random(seed)
    refundable: list[tuple[str, int]] = []  # (payment id, amount not refunded yet) of this client's payments
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(secret, ""), timeout=60) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            started = time.perf_counter()
            try:
                if roll < 0.4 or (roll < 0.6 and not refundable):
                    amount = rng.randrange(500, 20_000)
                    response = http.post(
                        "/v1/payment_intents",
                        data={
                            "amount": str(amount),
                            "currency": "usd",
                            "payment_method": "pm_card_visa",
                            "confirm": "true",
                        },
                    )
                    error = _expect(response, lambda body: body.get("status") == "succeeded")
                    if error is None:
                        refundable.append((response.json()["id"], amount))
                elif roll < 0.6:
                    index = rng.randrange(len(refundable))
                    pi_id, left = refundable[index]
                    part = max(1, left // rng.choice((2, 3, 4)))
                    response = http.post("/v1/refunds", data={"payment_intent": pi_id, "amount": str(part)})
                    error = _expect(response, lambda body: body.get("status") == "succeeded")
                    if error is None:
                        if left - part > 0:
                            refundable[index] = (pi_id, left - part)
                        else:
                            refundable.pop(index)
                else:
                    path = rng.choice(("/v1/payment_intents", "/v1/refunds", "/v1/balance_transactions"))
                    response = http.get(path, params={"limit": str(rng.choice((10, 25, 100)))})
                    error = _expect(response, lambda body: body.get("object") == "list")
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            tally.add((time.perf_counter() - started) * 1000, error)


def drive(port: int, secrets: list[str], seconds: float, concurrency: int) -> tuple[float, Tally]:
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(port, secrets[n % len(secrets)], n, deadline, tally))
        for n in range(concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, tally


def flask_check(database: str, *command: str) -> tuple[bool, str]:
    """Run a `flask` command of the platform on the soak database: (succeeded, its output)."""
    env = {**os.environ, "DATABASE_URL": database, "FLASK_APP": "wsgi.py", "PAYPLAT_PLATFORM_DOMAIN": "localhost"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    args = parser.parse_args()

    database = fresh_database()
    secrets = setup(database)
    port = bench.free_port()
    server = bench.Gunicorn(port, database)
    try:
        seconds, tally = drive(port, secrets, args.seconds, args.concurrency)
    finally:
        server.stop()

    for sample in tally.samples:
        print(f"error: {sample}", flush=True)
    ledger_ok, ledger_out = flask_check(database, "ledger", "check")
    print(ledger_out, flush=True)
    audit_ok, audit_out = flask_check(database, "audit", "verify")
    print(audit_out, flush=True)

    latencies = sorted(tally.latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    print(
        f"soak: seconds={seconds:.1f} requests={len(latencies)} errors={tally.errors} p99_ms={p99:.1f} "
        f"ledger={'ok' if ledger_ok else 'FAIL'} audit={'ok' if audit_ok else 'FAIL'}",
        flush=True,
    )
    return 0 if tally.errors == 0 and ledger_ok and audit_ok else 1


if __name__ == "__main__":
    sys.exit(main())
