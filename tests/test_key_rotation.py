"""`flask keys rotate`: every secret at rest ends up under the newest key while the app keeps
reading them; an interrupted rotation finishes on the next run; a value no key opens is named.
And the registry of encrypted columns (`core.crypto.ENCRYPTED_COLUMNS`) misses none."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from clearing import payouts
from clearing.models import ClearingRun
from core import crypto
from core.db import db
from onboarding import documents
from onboarding import signup as signups
from onboarding.models import KycDocument
from payments import balance_operations
from payments.channel_accounts import credentials_of
from payments.intents import MerchantContext
from payments.models import ChannelAccount
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

FERNET_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_\-]{60,}={0,2}")
WEBHOOK_SECRET = "whsec_channel0123456789abcdefghijklmnop"
MERCHANT_IBAN = "DE89370400440532013000"
DEBTOR_IBAN = "GB82WEST12345698765432"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@dataclass
class Seeded:
    tenant_id: object
    host: str
    channel_id: object
    api_secret: str
    endpoint_secret: str


@pytest.fixture
def keys(app):
    """Set PAYPLAT_ENCRYPTION_KEYS for the test (as a deploy would); the session's keys come back after."""
    original = list(app.config["ENCRYPTION_KEYS"])

    def use(*values: str) -> None:
        app.config["ENCRYPTION_KEYS"] = list(values)
        crypto.configure(list(values))

    yield use
    use(*original)


def _create_endpoint(app, seeded_host: str, api_secret: str):
    return app.test_client().post(
        "/v1/webhook_endpoints",
        base_url=f"http://{seeded_host}",
        headers={"Authorization": f"Bearer {api_secret}", "Idempotency-Key": "endpoint-1"},
        data={"url": "http://127.0.0.1:9/hooks", "enabled_events[]": "payment_intent.succeeded"},
    )


@pytest.fixture
def seeded(app, make) -> Seeded:
    """A secret in every registered column, written by the use cases."""
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    channel = make.channel_account(tenant.id, credentials={"webhook_secret": WEBHOOK_SECRET})
    second = make.merchant(tenant, "Tea", "owner@tea.example.com")
    with app.app_context(), tenant_context(db.session, tenant.id):
        for who, iban in ((merchant, MERCHANT_IBAN), (second, "FR1420041010050500013M02606")):
            payouts.set_bank_account(tenant.id, who, holder_name="Owner", account=iban, actor=Actor.system())
        payouts.set_debtor(tenant.id, name="Acme Payments", iban=DEBTOR_IBAN, bic="DEUTDEFF", actor=Actor.system())
        db.session.commit()
        # A payout sent to the bank in a batch: its line keeps the account as it was.
        ctx = MerchantContext(tenant.id, merchant, False)
        balance_operations.create_topup(ctx, amount=100_000, currency="eur")
        balance_operations.create_payout(ctx, amount=30_000, currency="eur")
        run = ClearingRun(tenant_id=tenant.id, kind="payout_batch")
        db.session.add(run)
        db.session.commit()
        assert payouts.create_batches(tenant.id, run, "finance@acme.example.com")["payouts"] == 1
        # An applicant's identity document: a file, encrypted too.
        applicant = signups.verify(
            signups.start(tenant.id, "Noodles", "founder@noodles.example.com", "a-long-password-1", None).signup, None
        ).merchant_id
        documents.upload(
            tenant.id,
            applicant,
            "business_licence",
            "licence.pdf",
            PDF,
            upload_dir=app.config["UPLOAD_DIR"],
            max_bytes=app.config["KYC_DOCUMENT_MAX_BYTES"],
            actor=Actor.system(),
        )
        _, api_secret = api_keys.create_key(tenant.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    created = _create_endpoint(app, tenant.host, api_secret)
    assert created.status_code == 200, created.get_data(as_text=True)
    # Two-factor sign-in: a tenant user's and a platform admin's authenticator secrets.
    make.enrol(tenant, "owner@coffee.example.com")
    make.platform_admin()
    return Seeded(tenant.id, tenant.host, channel, api_secret, created.json["secret"])


def _tokens(owner_engine) -> dict[str, list[str]]:
    """Every stored token of every registered column, read as the owner."""
    found: dict[str, list[str]] = {}
    with owner_engine.connect() as conn:
        for column in crypto.ENCRYPTED_COLUMNS:
            expr = sa.column(column.column)
            if column.json_path:
                expr = sa.literal_column(f"{column.column} #>> '{{{','.join(column.json_path)}}}'")
            rows = conn.execute(sa.select(expr).select_from(sa.table(column.table)).where(expr.is_not(None)))
            found[column.name] = [row[0] for row in rows]
    return found


def _plaintexts(app, seeded: Seeded) -> dict[str, object]:
    """What the app reads back through its own code."""
    with app.app_context(), platform_scope(db.session):
        account = db.session.get(ChannelAccount, (seeded.tenant_id, seeded.channel_id))
        credentials = credentials_of(account)
        tokens = {
            table: sorted(crypto.decrypt(t) for t in values)
            for table, values in _tokens_in_session().items()
            if table != "channel_accounts.credentials_encrypted"
        }
        files = [documents.read(app.config["UPLOAD_DIR"], d) for d in db.session.scalars(sa.select(KycDocument))]
        db.session.remove()
    return {"credentials": credentials, "files": files, **tokens}


def _stored_files(app, seeded: Seeded) -> list[bytes]:
    return [p.read_bytes() for p in _document_files(app, seeded)]


def _document_files(app, seeded: Seeded) -> list:
    return list((app.config["UPLOAD_DIR"] / "kyc" / str(seeded.tenant_id)).rglob("*.pdf"))


def _tokens_in_session() -> dict[str, list[str]]:
    found = {}
    for column in crypto.ENCRYPTED_COLUMNS:
        expr = column.column if not column.json_path else f"{column.column} #>> '{{{','.join(column.json_path)}}}'"
        found[column.name] = (
            db.session.execute(sa.text(f"SELECT {expr} FROM {column.table} WHERE {expr} IS NOT NULL")).scalars().all()
        )
    return found


def _rotate(app, *args: str):
    return app.test_cli_runner().invoke(args=["keys", "rotate", *args])


def test_rotation_puts_every_secret_under_the_new_key_and_the_old_key_can_then_go(app, seeded, keys, owner_engine):
    old = app.config["ENCRYPTION_KEYS"][0]
    before = _plaintexts(app, seeded)
    assert before["credentials"] == {"webhook_secret": WEBHOOK_SECRET}
    assert before["clearing_settings.debtor_iban_encrypted"] == [DEBTOR_IBAN]
    stored = _tokens(owner_engine)
    assert all(stored[c.name] for c in crypto.ENCRYPTED_COLUMNS)
    assert before["payout_batch_lines.account_encrypted"] == [MERCHANT_IBAN]
    assert before["files"] == [PDF]
    [stored_file] = _stored_files(app, seeded)
    assert b"%PDF" not in stored_file and Fernet(old.encode()).decrypt(stored_file) == PDF

    new = crypto.generate_key()
    keys(new, old)  # step 1 of the procedure: the new key first, the old one still there
    # Both kinds of token are read meanwhile: the app keeps running.
    assert _plaintexts(app, seeded) == before
    result = _rotate(app, "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "merchant_bank_accounts.account_encrypted: 2 value(s), 2 re-encrypted" in result.output
    assert "webhook_endpoints.secret_encrypted: 1 value(s), 1 re-encrypted" in result.output
    assert "idempotency_keys.response_body[secret][encrypted]: 1 value(s), 1 re-encrypted" in result.output
    assert "payout_batch_lines.account_encrypted: 1 value(s), 1 re-encrypted" in result.output
    assert "kyc_documents (files): 1 value(s), 1 re-encrypted" in result.output
    assert "users.totp_secret: 1 value(s), 1 re-encrypted" in result.output
    assert "platform_users.totp_secret: 1 value(s), 1 re-encrypted" in result.output
    assert "keys: ok, 10 value(s) re-encrypted" in result.output
    rotated = _tokens(owner_engine)
    assert all(Fernet(new.encode()).decrypt(t.encode()) for tokens in rotated.values() for t in tokens)
    assert [Fernet(new.encode()).decrypt(f) for f in _stored_files(app, seeded)] == [PDF]

    keys(new)  # the old key dropped: everything still reads
    assert _plaintexts(app, seeded) == before
    # The idempotent replay of the request that created the endpoint shows the same secret again.
    replay = _create_endpoint(app, seeded.host, seeded.api_secret)
    assert replay.status_code == 200 and replay.json["secret"] == seeded.endpoint_secret

    again = _rotate(app)
    assert again.exit_code == 0, again.output
    assert "keys: ok, 0 value(s) re-encrypted" in again.output


def test_an_interrupted_rotation_finishes_on_the_next_run(app, seeded, keys, owner_engine):
    old = app.config["ENCRYPTION_KEYS"][0]
    before = _plaintexts(app, seeded)
    new = crypto.generate_key()
    keys(new, old)

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(report: crypto.RotationReport) -> None:
        raise Interrupted  # as if the process died right after its first committed batch

    with app.app_context(), platform_scope(db.session), pytest.raises(Interrupted):
        crypto.rotate(db.session, batch_size=1, progress=stop_after_first_batch)
    with app.app_context():
        db.session.remove()
    under_new = [t for tokens in _tokens(owner_engine).values() for t in tokens if crypto.is_current(t)]
    assert len(under_new) == 1
    assert _plaintexts(app, seeded) == before  # half rotated, all readable

    resumed = _rotate(app, "--batch-size", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "channel_accounts.credentials_encrypted: 1 value(s), 0 re-encrypted, 1 already under the newest key" in (
        resumed.output
    )
    assert "keys: ok, 9 value(s) re-encrypted" in resumed.output
    keys(new)
    assert _plaintexts(app, seeded) == before


def test_a_value_no_key_decrypts_is_named_and_the_others_are_still_rotated(app, seeded, keys, owner_engine):
    old = app.config["ENCRYPTION_KEYS"][0]
    lost_key = Fernet(Fernet.generate_key())
    with owner_engine.begin() as conn:
        merchant = conn.execute(
            sa.text("SELECT merchant_id FROM merchant_bank_accounts ORDER BY merchant_id LIMIT 1")
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE merchant_bank_accounts SET account_encrypted = :token WHERE merchant_id = :m"),
            {"token": lost_key.encrypt(b"NL91ABNA0417164300").decode(), "m": merchant},
        )
    new = crypto.generate_key()
    keys(new, old)
    result = _rotate(app)
    assert result.exit_code == 1
    assert (
        f"cannot decrypt merchant_bank_accounts.account_encrypted in row tenant_id={seeded.tenant_id}, "
        f"merchant_id={merchant}" in result.output
    )
    assert "keys: 1 value(s) cannot be decrypted" in result.output
    stored = _tokens(owner_engine)
    assert all(crypto.is_current(t) for tokens in stored.values() for t in tokens if not lost_key_opens(lost_key, t))


def lost_key_opens(key: Fernet, token: str) -> bool:
    try:
        key.decrypt(token.encode())
    except Exception:
        return False
    return True


def test_every_encrypted_column_is_registered(app, seeded, owner_engine):
    registered = {(c.table, c.column) for c in crypto.ENCRYPTED_COLUMNS}
    # By name: a model column called *_encrypted is in the registry, and the registry names real columns.
    named = {(t.name, c.name) for t in db.metadata.sorted_tables for c in t.columns if c.name.endswith("_encrypted")}
    assert named - registered == set(), "add these columns to core.crypto.ENCRYPTED_COLUMNS"
    for table, column in registered:
        assert column in db.metadata.tables[table].c, f"{table}.{column} is registered but does not exist"
    # By content: no text or JSON column of the seeded database holds a Fernet token unregistered.
    with owner_engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
            )
        ).all()
        holding = set()
        for table, column in columns:
            found = conn.execute(
                sa.text(f'SELECT 1 FROM "{table}" WHERE "{column}"::text ~ :pattern LIMIT 1'),
                {"pattern": FERNET_TOKEN.pattern},
            ).first()
            if found:
                holding.add((table, column))
    assert ("webhook_endpoints", "secret_encrypted") in holding  # the scan sees what it should
    assert holding - registered == set(), "these columns hold encrypted values: register them in core.crypto"


def test_a_document_stored_before_encryption_is_encrypted_by_the_rotation(app, seeded, keys):
    [path] = _document_files(app, seeded)
    path.write_bytes(PDF)  # as every document was stored before documents were encrypted
    assert _plaintexts(app, seeded)["files"] == [PDF]  # still served
    result = _rotate(app)
    assert result.exit_code == 0, result.output
    assert "kyc_documents (files): 1 value(s), 1 re-encrypted" in result.output
    assert crypto.is_encrypted_file(path.read_bytes())
    assert _plaintexts(app, seeded)["files"] == [PDF]
