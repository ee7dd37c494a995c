"""The tamper-evident audit log: each tenant's events form a hash chain; `flask audit verify` names
every edited or deleted record; appends from concurrent transactions never fork a chain; money
actions taken through the API appear in the tenant's log with the key, the IP and before/after."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from pages import body, signed_in, table, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

from core.db import db
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from portal import create_app
from tenants import api_keys, audit
from tenants.audit import GENESIS, Actor
from tenants.isolation import tenant_context
from tenants.models import AuditChainHead, AuditEvent

ANN = Actor("user", id=uuid.uuid4(), email="ann@alpha.example.com", ip="198.51.100.4")


def _record(app, tenant_id, *specs) -> list[uuid.UUID]:
    """Append events (action, object id, change set) as Ann, one transaction; their ids."""
    with app.app_context(), tenant_context(db.session, tenant_id):
        events = [audit.record(tenant_id, ANN, action, "merchant", obj, change) for action, obj, change in specs]
        ids = [event.id for event in events]
        db.session.commit()
        db.session.remove()
    return ids


def _chain(owner_engine, tenant_id) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT id, seq, prev_hash, hash FROM audit_events WHERE tenant_id = :t ORDER BY seq"),
            {"t": tenant_id},
        ).all()


def _verify(app):
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def alpha(make):
    return make.tenant("alpha", name="Alpha Corp")


@pytest.fixture
def chained(app, make, alpha):
    """Alpha with five events of its own after its provisioning's, and a second tenant."""
    _record(
        app,
        alpha.id,
        *[
            ("merchant.profile_saved", f"m-{n}", audit.changes({"name": f"Shop {n}"}, {"name": f"Shop {n}b"}))
            for n in range(5)
        ],
    )
    make.tenant("beta", name="Beta Corp")
    return alpha


# --- the chain ------------------------------------------------------------------------------


def test_each_event_carries_its_position_the_previous_hash_and_its_own(app, owner_engine, chained):
    rows = _chain(owner_engine, chained.id)
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == GENESIS
    assert all(row.prev_hash == before.hash for before, row in zip(rows, rows[1:], strict=False))
    assert len({row.hash for row in rows}) == len(rows)
    with owner_engine.connect() as conn:
        head = conn.execute(
            sa.select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.tenant_id == chained.id)
        ).one()
    assert (head.seq, head.hash) == (rows[-1].seq, rows[-1].hash)
    # The hash covers the fields: recomputed from the stored row, it is the stored hash.
    with app.app_context(), tenant_context(db.session, chained.id):
        stored = db.session.execute(sa.select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        assert [audit.digest_of(event) for event in stored] == [event.hash for event in stored]
        assert stored[-1].changes == {"name": {"before": "Shop 4", "after": "Shop 4b"}}
        assert stored[-1].ip == "198.51.100.4" and stored[-1].actor_email == "ann@alpha.example.com"
        db.session.remove()


def test_verify_accepts_untouched_chains(app, owner_engine, chained):
    with owner_engine.connect() as conn:
        records = conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one()
        chains = conn.execute(sa.text("SELECT count(DISTINCT tenant_id) FROM audit_events")).scalar_one()
    assert chains == 2
    code, output = _verify(app)
    assert code == 0, output
    assert output.strip() == f"audit: ok ({records} records in 2 chains)"
    with app.app_context():
        report = audit.verify()  # the same check, as a function (the soak test's)
        assert report.ok and (report.records, report.chains) == (records, 2)
        db.session.remove()


def test_concurrent_appends_make_one_unbroken_chain(app, owner_engine, alpha):
    threads, each = 8, 5
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def append(n: int) -> None:
        try:
            with app.app_context(), tenant_context(db.session, alpha.id):
                start.wait(timeout=30)
                for i in range(each):
                    audit.record(alpha.id, ANN, "merchant.profile_saved", "merchant", f"t{n}-{i}", {"n": {"after": i}})
                    db.session.commit()
                db.session.remove()
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            failures.append(exc)

    workers = [threading.Thread(target=append, args=(n,)) for n in range(threads)]
    before = len(_chain(owner_engine, alpha.id))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures, failures
    rows = _chain(owner_engine, alpha.id)
    assert len(rows) == before + threads * each
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert all(row.prev_hash == previous.hash for previous, row in zip(rows, rows[1:], strict=False))
    assert _verify(app)[0] == 0


def test_an_appending_transaction_waits_for_the_one_holding_the_chain(app, owner_engine, alpha):
    """The second append cannot read the head until the first commits: it continues the chain
    from the first's event instead of forking it."""
    second_done = threading.Event()
    results: dict[str, int] = {}

    def second() -> None:
        with app.app_context(), tenant_context(db.session, alpha.id):
            results["second"] = audit.record(alpha.id, ANN, "merchant.created", "merchant", "late").seq
            db.session.commit()
            db.session.remove()
        second_done.set()

    with app.app_context(), tenant_context(db.session, alpha.id):
        first = audit.record(alpha.id, ANN, "merchant.created", "merchant", "early")
        thread = threading.Thread(target=second)
        thread.start()
        # Still open: the second is blocked on the chain head's lock.
        assert not second_done.wait(timeout=1)
        results["first"] = first.seq
        db.session.commit()
        db.session.remove()
    assert second_done.wait(timeout=30)
    thread.join(timeout=30)
    assert results["second"] == results["first"] + 1
    assert _verify(app)[0] == 0


# --- tampering ------------------------------------------------------------------------------


def test_an_edited_record_is_named(app, owner_engine, chained):
    rows = _chain(owner_engine, chained.id)
    victim = rows[-3]
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_events SET changes = :c WHERE id = :i"),
            {"c": '{"name": {"before": "Shop 2", "after": "Somebody else"}}', "i": victim.id},
        )
    code, output = _verify(app)
    assert code == 1
    problems = [line for line in output.splitlines() if line.startswith("audit: edited")]
    assert problems == [
        f"audit: edited: tenant alpha ({chained.id}) seq {victim.seq} record {victim.id}:"
        " its hash does not match its contents"
    ]
    assert "1 problem(s)" in output.splitlines()[-1]


def test_an_edit_that_rehashes_the_record_still_breaks_the_chain(app, owner_engine, chained):
    """Whoever edits a record and writes it a new, matching hash is caught by the next record."""
    rows = _chain(owner_engine, chained.id)
    victim, following = rows[-3], rows[-2]
    with app.app_context(), tenant_context(db.session, chained.id):
        event = db.session.get(AuditEvent, (chained.id, victim.id))
        event.action = "merchant.created"
        forged = audit.digest_of(event)
        db.session.rollback()
        db.session.remove()
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_events SET action = 'merchant.created', hash = :h WHERE id = :i"),
            {"h": forged, "i": victim.id},
        )
    code, output = _verify(app)
    assert code == 1
    assert f"seq {following.seq} record {following.id}" in output
    assert "previous-record hash does not match" in output


def test_a_deleted_record_is_named_by_the_gap(app, owner_engine, chained):
    rows = _chain(owner_engine, chained.id)
    gone, after = rows[-4], rows[-3]
    with owner_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_events WHERE id = :i"), {"i": gone.id})
    code, output = _verify(app)
    assert code == 1
    assert (
        f"audit: deleted: tenant alpha ({chained.id}) seq {after.seq} record {after.id}: seq {gone.seq} missing"
        " before this record"
    ) in output.splitlines()
    assert "edited" not in output


def test_deleting_the_newest_records_shows_at_the_chain_end(app, owner_engine, chained):
    rows = _chain(owner_engine, chained.id)
    with owner_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_events WHERE id IN (:a, :b)"), {"a": rows[-1].id, "b": rows[-2].id})
    code, output = _verify(app)
    assert code == 1
    assert f"seq {rows[-2].seq} to {rows[-1].seq} missing at the end of the chain" in output


# --- isolation ------------------------------------------------------------------------------


def test_rls_keeps_each_tenants_log_and_chain_to_itself(app, owner_engine, chained, make):
    beta = make.get_tenant("beta")
    with app.app_context(), tenant_context(db.session, beta.id):
        raw = db.session.execute(
            sa.text("SELECT count(*) FROM audit_events WHERE tenant_id = :t"), {"t": chained.id}
        ).scalar_one()
        heads = db.session.execute(
            sa.text("SELECT count(*) FROM audit_chain_heads WHERE tenant_id = :t"), {"t": chained.id}
        ).scalar_one()
        assert (raw, heads) == (0, 0)
        # Appending to another tenant's chain is refused by the policies, and nothing is written.
        with pytest.raises(DBAPIError):
            audit.record(chained.id, ANN, "merchant.created", "merchant", "intruder")
        db.session.rollback()
        db.session.remove()
    assert "intruder" not in {row.object_id for row in _objects(owner_engine, chained.id)}
    assert _verify(app)[0] == 0


def _objects(owner_engine, tenant_id):
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT object_id FROM audit_events WHERE tenant_id = :t"), {"t": tenant_id}).all()


def test_the_app_can_only_append_to_the_log(app, chained):
    with app.app_context(), tenant_context(db.session, chained.id):
        for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                db.session.execute(sa.text(statement))
            db.session.rollback()
        db.session.remove()


# --- money actions through the API ----------------------------------------------------------


def test_a_refund_through_the_api_shows_in_the_tenants_audit_log(app, make, site, alpha, owner_engine):
    merchant = make.merchant(alpha, "Coffee", "owner@coffee.example.com")
    with app.app_context(), tenant_context(db.session, alpha.id):
        create_channel_account(
            alpha.id,
            ChannelAccountInput(name="Sandbox", type="sandbox", currency="USD", products=["card"]),
            {"card"},
            Actor.system(),
        )
        key, secret = api_keys.create_key(alpha.id, merchant, "test", "backend", Actor.system())
        key_id = key.id
        db.session.commit()
        db.session.remove()
    api = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    where = {"base_url": f"http://{alpha.host}", "headers": headers, "environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    paid = api.post(
        "/v1/payment_intents",
        data={"amount": "2500", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
        **where,
    )
    assert paid.status_code == 200, paid.get_data(as_text=True)
    assert paid.json["status"] == "succeeded"
    refund = api.post("/v1/refunds", data={"payment_intent": paid.json["id"], "amount": "500"}, **where)
    assert refund.status_code == 200, refund.get_data(as_text=True)

    with owner_engine.connect() as conn:
        event = conn.execute(
            sa.text("SELECT * FROM audit_events WHERE action = 'payment.refunded'"),
        ).one()
    assert (event.actor_kind, event.actor_id, event.ip) == ("api_key", key_id, "203.0.113.7")
    assert event.object_id == paid.json["id"]
    assert event.changes["amount_refunded"] == {"before": 0, "after": 500}
    assert event.changes["refund"] == {"after": refund.json["id"]}

    console = signed_in(site, alpha, alpha.admin_email)
    log = text(table(body(console.get("/console/audit?action=payment.")), "audit-events"))
    assert "payment.refunded" in log and "API key" in log and "203.0.113.7" in log
    assert "amount_refunded : 0 → 500" in log
    assert f"{event.seq} " in log  # its place in the chain
    by_ip = text(table(body(console.get("/console/audit?q=203.0.113")), "audit-events"))
    assert "payment.refunded" in by_ip

    # The platform's log of every tenant shows it too, with the tenant and the chain position.
    platform = site("localhost")
    assert platform.login(make.platform_admin()).status_code == 302
    listed = text(table(body(platform.get("/platform/audit?tenant=alpha&actor=api_key")), "audit-events"))
    assert listed.startswith("# When Tenant Who") and f"{event.seq} " in listed
    assert "Alpha Corp" in listed and "payment.refunded" in listed and "203.0.113.7" in listed
    assert _verify(app)[0] == 0


# --- events recorded before the chain ------------------------------------------------------


@pytest.fixture
def scratch(app, owner_url):
    """An app on an empty database of its own (dropped afterwards), and that database's owner URL."""
    server = make_url(owner_url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"{server.database}_chain"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    other = create_app({"TESTING": True, "DATABASE_URL": url, "REDIS_URL": app.config["REDIS_URL"]})
    yield other, url
    with other.app_context():
        db.engine.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migration_chains_events_recorded_before_it_in_time_order(scratch):
    other, url = scratch
    with other.app_context():
        upgrade(revision="0027")
    tenants = {"one": uuid.uuid4(), "two": uuid.uuid4()}
    # Inserted out of order: the chain follows (created_at, id), not the insertion order.
    events = [
        ("one", 3, "merchant.created", {"name": {"after": "Café ☕"}}),
        ("one", 1, "tenant.provisioned", {}),
        ("two", 5, "api_key.created", {"mode": {"after": "test"}, "amount": {"before": 1, "after": 2}}),
        ("one", 2, "user.invited", {"role": {"after": "admin"}}),
    ]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT set_config('app.scope', 'platform', true)")
            for slug, tenant_id in tenants.items():
                conn.execute(
                    sa.text(
                        "INSERT INTO tenants (id, slug, name, status, time_zone, default_locale)"
                        " VALUES (:id, :slug, :slug, 'active', 'UTC', 'en')"
                    ),
                    {"id": tenant_id, "slug": slug},
                )
            for slug, minute, action, changes in events:
                conn.execute(
                    sa.text(
                        "INSERT INTO audit_events (tenant_id, id, actor_kind, actor_email, action, object_type,"
                        " object_id, changes, ip, created_at) VALUES (:t, :id, 'user', 'ann@example.com', :action,"
                        " 'tenant', 'x', CAST(:changes AS jsonb), '192.0.2.1',"
                        " '2026-11-01 10:00:00.123456+00'::timestamptz + make_interval(mins => :minute))"
                    ),
                    {
                        "t": tenants[slug],
                        "id": uuid.uuid4(),
                        "action": action,
                        "changes": json.dumps(changes),
                        "minute": minute,
                    },
                )
        with other.app_context():
            upgrade()
        with engine.connect() as conn:
            chained = conn.execute(
                sa.text(
                    "SELECT t.slug, e.seq, e.action FROM audit_events e JOIN tenants t ON t.id = e.tenant_id"
                    " ORDER BY t.slug, e.seq"
                )
            ).all()
        assert [tuple(row) for row in chained] == [
            ("one", 1, "tenant.provisioned"),
            ("one", 2, "user.invited"),
            ("one", 3, "merchant.created"),
            ("two", 1, "api_key.created"),
        ]
        with other.app_context():
            report = audit.verify()
            assert report.ok, [str(p) for p in report.problems]
            assert (report.records, report.chains) == (4, 2)
            # New events continue the chains.
            with tenant_context(db.session, tenants["one"]):
                assert audit.record(tenants["one"], ANN, "merchant.created", "merchant", "m").seq == 4
                db.session.commit()
            assert audit.verify().ok
            db.session.remove()
    finally:
        engine.dispose()
