"""Merchant API keys: the use cases (create, authenticate, roll, revoke, list) and the merchant's
pages. A secret is shown once and stored nowhere; keys of other merchants and tenants stay out of reach."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import PASSWORD

from core.db import db
from tenants import api_keys
from tenants.api_keys import ApiKey
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import tenant_context
from tenants.models import User

OWNER = "owner@corner.example.com"
STAFF = "staff@corner.example.com"
OTHER_OWNER = "owner@other.example.com"
SECRET_RE = re.compile(r"sk_(?:test|live)_[A-Za-z0-9_-]{40}")
FORBIDDEN = "Your account is not allowed to open this page."


@pytest.fixture
def shop(make):
    """Tenant acme with merchant Corner Shop (owner and staff) and a second merchant, Other Shop."""
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Shop", OWNER)
    make.user(tenant, STAFF, "staff", merchant_id=merchant)
    other = make.merchant(tenant, "Other Shop", OTHER_OWNER)
    return tenant, merchant, other


def _owner_actor(app, tenant) -> Actor:
    with app.app_context(), tenant_context(db.session, tenant.id):
        owner = db.session.execute(sa.select(User).where(User.email == OWNER)).scalar_one()
        actor = Actor(kind="user", id=owner.id, email=owner.email)
    return actor


def _create(app, tenant, merchant, mode="test", name="Web shop", actor=None) -> tuple[ApiKey, str]:
    with app.app_context():
        key, secret = api_keys.create_key(tenant.id, merchant, mode, name, actor or Actor.system())
        db.session.remove()
    return key, secret


def _authenticate(app, tenant_id, secret, now=None) -> ApiKey | None:
    with app.app_context():
        key = api_keys.authenticate(tenant_id, secret, now=now)
        db.session.remove()
    return key


def _key_row(owner_engine, key_id) -> dict:
    with owner_engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM api_keys WHERE id = :i"), {"i": key_id}).mappings().one())


def _everything_stored(owner_engine) -> str:
    """Every api_keys and audit_events row, as text."""
    with owner_engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT row_to_json(k)::text FROM api_keys k")).scalars().all()
        events = conn.execute(sa.text("SELECT row_to_json(e)::text FROM audit_events e")).scalars().all()
    return "\n".join([*keys, *events])


# --- use cases ---------------------------------------------------------------------------


def test_create_returns_a_secret_that_authenticates(app, shop, owner_engine):
    tenant, merchant, _ = shop
    actor = _owner_actor(app, tenant)
    key, secret = _create(app, tenant, merchant, actor=actor)

    assert SECRET_RE.fullmatch(secret) and secret.startswith("sk_test_")
    assert len(secret) == len("sk_test_") + 40
    assert key.masked == f"sk_test_…{secret[-4:]}"
    row = _key_row(owner_engine, key.id)
    assert row["merchant_id"] == merchant and row["mode"] == "test" and row["name"] == "Web shop"
    assert row["prefix"] == "sk_test_" and row["last4"] == secret[-4:]
    assert row["created_by"] == actor.id and row["created_at"] is not None
    assert row["expires_at"] is None and row["revoked_at"] is None

    found = _authenticate(app, tenant.id, secret)
    assert found is not None and found.id == key.id and found.merchant_id == merchant

    live, live_secret = _create(app, tenant, merchant, mode="live", name="Production")
    assert live_secret.startswith("sk_live_") and live.prefix == "sk_live_"
    assert _authenticate(app, tenant.id, live_secret).id == live.id
    assert secret != live_secret


def test_wrong_secrets_do_not_authenticate(app, shop):
    tenant, merchant, _ = shop
    _, secret = _create(app, tenant, merchant)
    other_char = "A" if secret[-1] != "A" else "B"
    for wrong in (
        secret[:-1] + other_char,
        secret[:-1],
        secret + "x",
        secret.replace("sk_test_", "sk_live_"),
        "",
        "sk_test_",
        "x" * 10_000,
    ):
        assert _authenticate(app, tenant.id, wrong) is None, wrong


def test_create_refuses_bad_input(app, ctx, shop):
    tenant, merchant, _ = shop
    with pytest.raises(InvalidInput) as exc:
        api_keys.create_key(tenant.id, merchant, "test", "   ", Actor.system())
    assert exc.value.field == "name"
    with pytest.raises(InvalidInput) as exc:
        api_keys.create_key(tenant.id, merchant, "prod", "Web shop", Actor.system())
    assert exc.value.field == "mode"
    with pytest.raises(InvalidInput):
        api_keys.create_key(tenant.id, merchant, "test", "x" * 101, Actor.system())
    with pytest.raises(InvalidInput):
        api_keys.create_key(tenant.id, uuid.uuid4(), "test", "Web shop", Actor.system())
    assert api_keys.list_keys(tenant.id, merchant) == []


def test_live_keys_only_for_active_merchants(app, shop, owner_engine):
    tenant, merchant, _ = shop
    live, live_secret = _create(app, tenant, merchant, mode="live")
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE merchants SET status = 'suspended' WHERE id = :m"), {"m": merchant})

    with app.app_context(), pytest.raises(InvalidInput) as exc:
        api_keys.create_key(tenant.id, merchant, "live", "Production", Actor.system())
    assert exc.value.field == "mode"
    assert _authenticate(app, tenant.id, live_secret) is None
    # Test keys stay available.
    _, test_secret = _create(app, tenant, merchant, mode="test")
    assert _authenticate(app, tenant.id, test_secret) is not None


def test_revoked_key_is_refused(app, shop, owner_engine):
    tenant, merchant, _ = shop
    key, secret = _create(app, tenant, merchant)
    with app.app_context():
        assert api_keys.revoke_key(key, Actor.system()) is True
        assert api_keys.revoke_key(key, Actor.system()) is False
        db.session.remove()
    assert _key_row(owner_engine, key.id)["revoked_at"] is not None
    assert _authenticate(app, tenant.id, secret) is None
    with app.app_context(), pytest.raises(InvalidInput):
        api_keys.roll_key(key, 0, Actor.system())


def test_roll_keeps_the_old_key_until_it_expires(app, shop, owner_engine):
    tenant, merchant, _ = shop
    old, old_secret = _create(app, tenant, merchant, name="Backend")
    with app.app_context():
        new, new_secret = api_keys.roll_key(old, 1, Actor.system())
        db.session.remove()

    assert new.id != old.id and new_secret != old_secret
    assert (new.name, new.mode, new.merchant_id) == ("Backend", "test", merchant)
    expires_at = _key_row(owner_engine, old.id)["expires_at"]
    assert timedelta(minutes=59) < expires_at - api_keys.utcnow() <= timedelta(hours=1)
    assert _key_row(owner_engine, new.id)["expires_at"] is None

    # Before the expiry both secrets work; from it on only the new one.
    assert _authenticate(app, tenant.id, old_secret).id == old.id
    assert _authenticate(app, tenant.id, new_secret).id == new.id
    later = expires_at + timedelta(seconds=1)
    assert _authenticate(app, tenant.id, old_secret, now=later) is None
    assert _authenticate(app, tenant.id, new_secret, now=later).id == new.id

    # A rolled key is not rolled again (revoke it to end it now).
    with app.app_context(), pytest.raises(InvalidInput):
        api_keys.roll_key(old, 0, Actor.system())


def test_roll_with_zero_hours_ends_the_old_key_now(app, shop):
    tenant, merchant, _ = shop
    old, old_secret = _create(app, tenant, merchant)
    with app.app_context():
        _, new_secret = api_keys.roll_key(old, 0, Actor.system())
        db.session.remove()
    assert _authenticate(app, tenant.id, old_secret) is None
    assert _authenticate(app, tenant.id, new_secret) is not None


@pytest.mark.parametrize("hours", [-1, 169, "24", 1.5, True])
def test_roll_refuses_odd_expiries(app, ctx, shop, hours):
    tenant, merchant, _ = shop
    key, _ = api_keys.create_key(tenant.id, merchant, "test", "Web shop", Actor.system())
    with pytest.raises(InvalidInput):
        api_keys.roll_key(key, hours, Actor.system())


def test_last_used_is_written_at_most_once_a_minute(app, shop, owner_engine):
    tenant, merchant, _ = shop
    key, secret = _create(app, tenant, merchant)
    assert _key_row(owner_engine, key.id)["last_used_at"] is None
    start = api_keys.utcnow()

    _authenticate(app, tenant.id, secret, now=start)
    assert _key_row(owner_engine, key.id)["last_used_at"] == start
    _authenticate(app, tenant.id, secret, now=start + timedelta(seconds=59))
    assert _key_row(owner_engine, key.id)["last_used_at"] == start
    _authenticate(app, tenant.id, secret, now=start + timedelta(seconds=61))
    assert _key_row(owner_engine, key.id)["last_used_at"] == start + timedelta(seconds=61)


def test_the_database_holds_no_secret(app, shop, owner_engine):
    tenant, merchant, _ = shop
    key, secret = _create(app, tenant, merchant, actor=_owner_actor(app, tenant))
    with app.app_context():
        rolled, rolled_secret = api_keys.roll_key(key, 24, Actor.system())
        api_keys.revoke_key(rolled, Actor.system())
        db.session.remove()
    _authenticate(app, tenant.id, secret)

    stored = _everything_stored(owner_engine)
    assert key.last4 in stored  # the check below is not vacuous
    for value in (secret, rolled_secret):
        assert value not in stored
        assert value[len("sk_test_") :] not in stored
    with owner_engine.connect() as conn:
        events = conn.execute(sa.text("SELECT action, changes::text FROM audit_events ORDER BY created_at")).all()
    assert [a for a, _ in events if a.startswith("api_key.")] == [
        "api_key.created",
        "api_key.rolled",
        "api_key.created",
        "api_key.revoked",
    ]
    for _, changes in events:
        assert api_keys.hash_secret(secret) not in changes
        assert api_keys.hash_secret(rolled_secret) not in changes


def test_another_tenants_secret_does_not_authenticate(app, make, shop):
    tenant, merchant, _ = shop
    beta = make.tenant("beta")
    beta_merchant = make.merchant(beta, "Beta Shop", "owner@beta-shop.example.com")
    beta_key, beta_secret = _create(app, beta, beta_merchant)
    _, acme_secret = _create(app, tenant, merchant)

    assert _authenticate(app, tenant.id, beta_secret) is None
    assert _authenticate(app, beta.id, acme_secret) is None
    # Controls: each secret works on its own tenant.
    assert _authenticate(app, beta.id, beta_secret).id == beta_key.id
    assert _authenticate(app, tenant.id, acme_secret) is not None
    with app.app_context():
        assert api_keys.list_keys(tenant.id, beta_merchant) == []


def test_list_keys_shows_one_merchants_keys_newest_first(app, shop):
    tenant, merchant, other = shop
    first, _ = _create(app, tenant, merchant, name="First")
    with app.app_context():
        second, _ = api_keys.roll_key(first, 24, Actor.system())
        db.session.remove()
    _create(app, tenant, other, name="Other's")
    with app.app_context():
        keys = api_keys.list_keys(tenant.id, merchant)
        assert [k.id for k in keys] == [second.id, first.id]
        assert [k.state() for k in keys] == ["active", "expiring"]


# --- the merchant's pages ----------------------------------------------------------------


def _signed_in(site, tenant, email_):
    client = site(tenant.host)
    assert client.login(email_, PASSWORD).status_code == 302, f"{email_} could not sign in"
    return client


def _session_contents(app, response) -> str:
    """The decoded session cookies a response sets (the secret must not be in them)."""
    serializer = app.session_interface.get_signing_serializer(app)
    found = []
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        found.append(header)
        if name == app.config["SESSION_COOKIE_NAME"] and value:
            found.append(repr(serializer.loads(value)))
    return "\n".join(found)


def test_owner_creates_a_key_and_sees_the_secret_once(app, site, shop, owner_engine):
    tenant, merchant, _ = shop
    client = _signed_in(site, tenant, OWNER)
    page = client.get("/merchant/api-keys")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'href="/merchant/api-keys"' in html  # the nav link
    assert "No keys yet." in html
    assert f'stripe.api_base = "http://{tenant.host}"' in html
    assert '<label for="name">Name</label>' in html

    response = client.submit("/merchant/api-keys", {"name": "Web shop", "mode": "test"}, form_page="/merchant/api-keys")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    secrets_shown = SECRET_RE.findall(html)
    assert len(secrets_shown) == 1, "the secret is shown exactly once"
    secret = secrets_shown[0]
    assert secret.startswith("sk_test_")
    assert "shown only this once" in html
    assert secret not in _session_contents(app, response)
    assert secret not in response.headers.get("Location", "")

    key = _authenticate(app, tenant.id, secret)
    assert key is not None and key.merchant_id == merchant and key.name == "Web shop"

    # Afterwards: only the masked form, on the list and anywhere else.
    for path in ("/merchant/api-keys", "/merchant/"):
        later = client.get(path).get_data(as_text=True)
        assert secret not in later
        assert secret[len("sk_test_") : -4] not in later
    assert f"sk_test_…{secret[-4:]}" in client.get("/merchant/api-keys").get_data(as_text=True)
    assert secret not in _everything_stored(owner_engine)


def test_owner_creates_a_live_key(app, site, shop):
    tenant, _, _ = shop
    client = _signed_in(site, tenant, OWNER)
    response = client.submit(
        "/merchant/api-keys", {"name": "Production", "mode": "live"}, form_page="/merchant/api-keys"
    )
    assert response.status_code == 200
    (secret,) = SECRET_RE.findall(response.get_data(as_text=True))
    assert secret.startswith("sk_live_")
    assert _authenticate(app, tenant.id, secret).mode == "live"


def test_create_with_a_missing_name_shows_the_error(app, site, shop, owner_engine):
    tenant, _, _ = shop
    client = _signed_in(site, tenant, OWNER)
    response = client.submit("/merchant/api-keys", {"name": "", "mode": "test"}, form_page="/merchant/api-keys")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'aria-invalid="true"' in html and not SECRET_RE.search(html)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 0


def test_staff_sees_the_list_but_cannot_create_roll_or_revoke(app, site, shop, owner_engine):
    tenant, merchant, _ = shop
    key, secret = _create(app, tenant, merchant, name="Backend")
    before = _key_row(owner_engine, key.id)
    client = _signed_in(site, tenant, STAFF)

    page = client.get("/merchant/api-keys")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Backend" in html and key.masked in html
    assert "Create the key" not in html and "/roll" not in html and "/revoke" not in html

    token = client.csrf_token("/merchant/api-keys")
    for path, data in (
        ("/merchant/api-keys", {"name": "Sneaky", "mode": "live"}),
        (f"/merchant/api-keys/{key.id}/roll", {"expires_in": "0"}),
        (f"/merchant/api-keys/{key.id}/revoke", {}),
    ):
        response = client.post(path, data={**data, "csrf_token": token})
        assert response.status_code == 403, path
        assert FORBIDDEN in response.get_data(as_text=True)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 1
    assert _key_row(owner_engine, key.id) == before
    assert _authenticate(app, tenant.id, secret) is not None


def test_owner_rolls_a_key_through_the_page(app, site, shop, owner_engine):
    tenant, merchant, _ = shop
    key, old_secret = _create(app, tenant, merchant, name="Backend")
    client = _signed_in(site, tenant, OWNER)
    html = client.get("/merchant/api-keys").get_data(as_text=True)
    assert f'<label for="expires-in-{key.id}">' in html

    response = client.submit(f"/merchant/api-keys/{key.id}/roll", {"expires_in": "24"}, form_page="/merchant/api-keys")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    (new_secret,) = SECRET_RE.findall(html)
    assert new_secret != old_secret and key.masked in html
    assert new_secret not in _session_contents(app, response)

    expires_at = _key_row(owner_engine, key.id)["expires_at"]
    assert timedelta(hours=23, minutes=59) < expires_at - api_keys.utcnow() <= timedelta(hours=24)
    assert _authenticate(app, tenant.id, old_secret).id == key.id
    assert _authenticate(app, tenant.id, new_secret).name == "Backend"

    listing = client.get("/merchant/api-keys").get_data(as_text=True)
    assert "rolled; works until" in listing and new_secret not in listing

    # Rolling now: the old secret stops at once.
    new_key = _authenticate(app, tenant.id, new_secret)
    response = client.submit(
        f"/merchant/api-keys/{new_key.id}/roll", {"expires_in": "0"}, form_page="/merchant/api-keys"
    )
    assert response.status_code == 200
    assert _authenticate(app, tenant.id, new_secret) is None


def test_owner_revokes_a_key_through_the_page(app, site, shop):
    tenant, merchant, _ = shop
    key, secret = _create(app, tenant, merchant, name="Backend")
    client = _signed_in(site, tenant, OWNER)
    response = client.submit(f"/merchant/api-keys/{key.id}/revoke", form_page="/merchant/api-keys")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/merchant/api-keys")
    assert _authenticate(app, tenant.id, secret) is None
    html = client.get("/merchant/api-keys").get_data(as_text=True)
    assert "is revoked" in html and "revoked 20" in html


def test_a_key_of_another_merchant_of_the_same_tenant_is_404(app, site, shop, owner_engine):
    tenant, _, other = shop
    key, secret = _create(app, tenant, other, name="Other's key")
    before = _key_row(owner_engine, key.id)
    client = _signed_in(site, tenant, OWNER)

    assert "Other's key" not in client.get("/merchant/api-keys").get_data(as_text=True)
    for path, data in (
        (f"/merchant/api-keys/{key.id}/roll", {"expires_in": "0"}),
        (f"/merchant/api-keys/{key.id}/revoke", {}),
    ):
        response = client.submit(path, data, form_page="/merchant/api-keys")
        assert response.status_code == 404, path
        assert "Page not found" in response.get_data(as_text=True)
    assert _key_row(owner_engine, key.id) == before
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 1
    assert _authenticate(app, tenant.id, secret) is not None
    # Control: its own merchant's owner can revoke it.
    other_owner = _signed_in(site, tenant, OTHER_OWNER)
    response = other_owner.submit(f"/merchant/api-keys/{key.id}/revoke", form_page="/merchant/api-keys")
    assert response.status_code == 302


def test_tenant_staff_and_anonymous_visitors_do_not_reach_the_keys(site, shop):
    tenant, _, _ = shop
    admin = _signed_in(site, tenant, tenant.admin_email)
    assert admin.get("/merchant/api-keys").status_code == 403
    anonymous = site(tenant.host)
    response = anonymous.get("/merchant/api-keys")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
