"""Test fixtures: a real PostgreSQL database built by the migrations, a real Redis, the app,
clients bound to a host (platform or a tenant), factories that take the tenant explicitly.

`DATABASE_URL` names the server (the CI's, or the embedded one `make test` starts); the suite
creates its own database `payplat_test` on it. Every test starts from empty tables and an
empty Redis database.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import logscan
import psycopg
import pyotp
import pytest
import sqlalchemy as sa
from redis import Redis
from sqlalchemy.engine import make_url

from core.db import db
from portal import create_app, i18n, jobs, theming
from portal.config import RATE_LIMITS, sqlalchemy_url
from tenants import accounts, provisioning, two_factor
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context
from tenants.models import Merchant, PlatformUser, Tenant, User

PASSWORD = "correct-horse-battery"
logscan.remember("password", PASSWORD)
# Overridable so that two suites can run side by side on one server. Under pytest-xdist each worker
# (gw0, gw1, ...) has a database and a Redis database of its own: `payplat_test_gw1`, Redis db 14.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(XDIST_WORKER[2:]) if XDIST_WORKER.startswith("gw") else 0
TEST_DATABASE = os.environ.get("PAYPLAT_TEST_DATABASE", "payplat_test") + (f"_{XDIST_WORKER}" if XDIST_WORKER else "")
TEST_REDIS_DB = (int(os.environ.get("PAYPLAT_TEST_REDIS_DB", "15")) - _WORKER_INDEX) % 16
MIGRATION_LOCK = 7_345_001  # a server-wide advisory lock: workers migrate one at a time (the app role is shared)


def pytest_configure(config):
    # The log scan (tests/logscan.py): every log record of the session, searched at its end for the
    # secrets the factories below `remember` and for anything shaped like a secret.
    config.pluginmanager.register(logscan, "logscan")


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit("DATABASE_URL is not set: run the suite with `make test`", returncode=2)
    return url


def _redis_url() -> str:
    url = make_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").replace("redis://", "postgresql://", 1))
    return (
        url.set(database=str(TEST_REDIS_DB))
        .render_as_string(hide_password=False)
        .replace("postgresql://", "redis://", 1)
    )


@pytest.fixture(scope="session")
def owner_url() -> str:
    """The test database, as its owner (the role the migrations run as)."""
    server = make_url(sqlalchemy_url(_server_url()))
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    return server.set(database=TEST_DATABASE).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def app(owner_url, tmp_path_factory):
    i18n.compile_catalogues()  # `make test` compiled them already; a plain pytest run may not have
    instance = tmp_path_factory.mktemp("instance")
    application = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": owner_url,
            "REDIS_URL": _redis_url(),
            "INSTANCE_DIR": instance,
            "MAIL_DIR": instance / "mail",
            "UPLOAD_DIR": instance / "uploads",
            "MAIL_BACKEND": "file",
            "PLATFORM_DOMAIN": "localhost",
            "PLATFORM_HOST": "localhost",
            "PUBLIC_PORT": "",
            # The suite signs in often from one address: limits out of reach (test_rate_limits lowers them).
            "RATE_LIMITS": dict.fromkeys(RATE_LIMITS, "100000/second"),
        }
    )
    logscan.remember("app secret key", application.config["SECRET_KEY"])
    for key in application.config["ENCRYPTION_KEYS"]:
        logscan.remember("encryption key", key)
    admin = make_url(owner_url).set(drivername="postgresql", database="postgres").render_as_string(False)
    with application.app_context(), psycopg.connect(admin, autocommit=True) as lock:
        from flask_migrate import upgrade

        # The first migration creates the server's app role: two workers must not both try.
        lock.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            upgrade()
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def owner_engine(owner_url, app):
    engine = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def tenant_tables(app) -> list[str]:
    """Every table with a tenant_id column, from the models' metadata."""
    return sorted(t.name for t in db.metadata.sorted_tables if "tenant_id" in t.c)


@pytest.fixture(autouse=True)
def clean_state(request, app, owner_engine):
    """Empty tables, Redis and the mail folder before each test."""
    tables = ", ".join(t.name for t in db.metadata.sorted_tables)
    with owner_engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
    Redis.from_url(app.config["REDIS_URL"]).flushdb()
    shutil.rmtree(app.config["MAIL_DIR"], ignore_errors=True)
    AUTHENTICATORS.clear()
    yield


# --- two-factor sign-in ------------------------------------------------------------------


@dataclass
class Authenticator:
    """The authenticator app of a person the factory enrolled: their secret and recovery codes.
    The sign-in helpers (`SiteClient.login`, the browser tests' `sign_in`) type its codes."""

    secret: str
    recovery_codes: list[str]
    last_step: int | None = None

    def next_code(self) -> str:
        """A code the server has not seen: the current step's, else the next step's (both stay
        valid across a step boundary), else a recovery code (a person signing in a third time
        within one step)."""
        totp = pyotp.TOTP(self.secret)
        current = totp.timecode(datetime.now(UTC))
        for step in (current, current + 1):
            if self.last_step is None or step > self.last_step:
                self.last_step = step
                return totp.generate_otp(step)
        return self.recovery_codes.pop()


AUTHENTICATORS: dict[str, Authenticator] = {}  # by e-mail; emptied before each test


def second_factor_code(email_: str) -> str | None:
    """The code `email_`'s authenticator would give now (None: the factory did not enrol them)."""
    authenticator = AUTHENTICATORS.get(email_.strip().lower())
    return authenticator.next_code() if authenticator else None


@pytest.fixture
def ctx(app):
    """An app context for calling use cases directly."""
    with app.app_context():
        yield
        db.session.remove()


# --- factories ---------------------------------------------------------------------------


@dataclass
class TenantInfo:
    id: uuid.UUID
    slug: str
    host: str
    admin_email: str


class Factory:
    """Creates tenants, merchants and users through the real use cases."""

    def __init__(self, app):
        self.app = app

    def tenant(
        self, slug: str, theme: str = "default", domains=(), name: str | None = None, admin_email: str | None = None
    ) -> TenantInfo:
        with self.app.app_context():
            colors = {n: t.colors for n, t in theming.themes().items()}
            spec = provisioning.TenantSpec(
                name=name or slug.title(),
                slug=slug,
                admin_email=admin_email or f"admin@{slug}.example.com",
                theme=theme,
                domains=list(domains),
            )
            with platform_scope(db.session):
                tenant, admin = provisioning.provision_tenant(spec, Actor.system(), colors)
                tenant_id, email_ = tenant.id, admin.email
            with tenant_context(db.session, tenant_id):
                user = db.session.execute(sa.select(User).where(User.tenant_id == tenant_id)).scalar_one()
                accounts.set_password(user, PASSWORD)
                db.session.commit()
            db.session.remove()
        return TenantInfo(tenant_id, slug, f"{slug}.localhost", email_)

    def user(self, tenant: TenantInfo, email_: str, role: str, merchant_id=None, password: str | None = PASSWORD):
        with self.app.app_context():
            logscan.remember("password", password)
            user = provisioning.invite_user(tenant.id, email_, role, Actor.system(), merchant_id=merchant_id)
            with tenant_context(db.session, tenant.id):
                user = db.session.merge(user)
                if password:
                    accounts.set_password(user, password)
                db.session.commit()
                user_id = user.id
            db.session.remove()
        return user_id

    def channel_account(self, tenant_id, name: str = "Sandbox", **fields):
        """A channel account of the tenant (a USD sandbox taking cards unless `fields` say otherwise); its id."""
        from payments.channel_accounts import ChannelAccountInput, create_channel_account

        spec = {"type": "sandbox", "currency": "USD", "products": ["card"], **fields}
        for value in spec.get("credentials", {}).values():
            logscan.remember("channel credential", value)
        with self.app.app_context(), tenant_context(db.session, tenant_id):
            account = create_channel_account(
                tenant_id, ChannelAccountInput(name=name, **spec), set(spec["products"]), Actor.system()
            )
            account_id = account.id
            db.session.remove()
        return account_id

    def merchant(self, tenant: TenantInfo, name: str, owner_email: str, password: str | None = PASSWORD):
        with self.app.app_context():
            logscan.remember("password", password)
            merchant, owner = provisioning.create_merchant(tenant.id, name, owner_email, Actor.system())
            merchant_id = merchant.id
            with tenant_context(db.session, tenant.id):
                owner = db.session.merge(owner)
                if password:
                    accounts.set_password(owner, password)
                db.session.commit()
            db.session.remove()
        return merchant_id

    def platform_admin(self, email_: str = "root@platform.example.com", enrolled: bool = True) -> str:
        """A platform admin. The platform requires two-factor sign-in of them: unless `enrolled`
        is False, they are enrolled with an authenticator the sign-in helpers use."""
        with self.app.app_context():
            admin = accounts.create_platform_admin(email_, PASSWORD)
            if enrolled:
                with platform_scope(db.session):
                    admin = db.session.get(PlatformUser, admin.id)
                    self._enrol(admin)
            db.session.remove()
        return email_

    def enrol(self, tenant: TenantInfo, email_: str) -> Authenticator:
        """Enrol a tenant user in two-factor sign-in (the sign-in helpers then type its codes)."""
        with self.app.app_context(), tenant_context(db.session, tenant.id):
            user = db.session.execute(
                sa.select(User).where(User.tenant_id == tenant.id, User.email == email_)
            ).scalar_one()
            authenticator = self._enrol(user)
            db.session.remove()
        return authenticator

    @staticmethod
    def _enrol(account) -> Authenticator:
        secret = pyotp.random_base32()
        logscan.remember("TOTP secret", secret)
        codes = two_factor.enrol_with_secret(account, secret, Actor.system())
        for code in codes:
            logscan.remember("recovery code", code)
        authenticator = AUTHENTICATORS[account.email] = Authenticator(secret, codes)
        return authenticator

    def get_tenant(self, slug: str) -> Tenant:
        with self.app.app_context(), platform_scope(db.session):
            tenant = db.session.execute(sa.select(Tenant).where(Tenant.slug == slug)).scalar_one()
            db.session.expunge(tenant)
            return tenant

    def merchant_row(self, tenant: TenantInfo, merchant_id) -> Merchant:
        with self.app.app_context(), tenant_context(db.session, tenant.id):
            return db.session.get(Merchant, (tenant.id, merchant_id))


@pytest.fixture
def make(app) -> Factory:
    return Factory(app)


# --- clients -----------------------------------------------------------------------------

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


class SiteClient:
    """A browser-like test client on one host: keeps cookies, fills in CSRF tokens."""

    def __init__(self, app, host: str):
        self.host = host
        self.client = app.test_client()
        self.base_url = f"http://{host}"

    def get(self, path: str, **kwargs):
        return self.client.get(path, base_url=self.base_url, **kwargs)

    def post(self, path: str, data=None, **kwargs):
        return self.client.post(path, base_url=self.base_url, data=data, **kwargs)

    def csrf_token(self, page: str = "/login") -> str:
        html = self.get(page).get_data(as_text=True)
        match = CSRF_RE.search(html)
        assert match, f"no CSRF token on {page}"
        return match.group(1) or match.group(2)

    def submit(self, path: str, data: dict | None = None, form_page: str | None = None, **kwargs):
        """POST like a browser would: with the CSRF token of the page that shows the form."""
        payload = dict(data or {})
        payload["csrf_token"] = self.csrf_token(form_page or path)
        return self.post(path, data=payload, **kwargs)

    def login(self, email_: str, password: str = PASSWORD):
        """Sign in; for someone the factory enrolled in two-factor sign-in, type the code too."""
        response = self.submit("/login", {"email": email_, "password": password})
        if response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login/code":
            code = second_factor_code(email_)
            if code is not None:
                return self.submit("/login/code", {"code": code})
        return response


@pytest.fixture
def site(app):
    """`site("acme.localhost")` -> a client on that host."""

    def build(host: str) -> SiteClient:
        return SiteClient(app, host)

    return build


# --- jobs and mail -----------------------------------------------------------------------


@pytest.fixture
def run_jobs(app):
    """Work every queued job with a real RQ worker (burst mode) and return how many finished."""

    def work() -> int:
        with app.app_context():
            queues = [jobs.queue(name) for name in jobs.QUEUES]

            def finished() -> int:
                return sum(queue.finished_job_registry.count for queue in queues)

            before = finished()
            # The app's worker class, as `flask worker` runs: it logs jobs by id, never their arguments.
            worker = jobs.AppWorker(queues, connection=jobs.redis_connection())
            worker.work(burst=True, with_scheduler=False)
            return finished() - before

    return work


@pytest.fixture
def outbox(app, run_jobs):
    """Deliver queued mail and return the messages written by the file backend."""

    def read() -> list[email.message.EmailMessage]:
        run_jobs()
        folder = Path(app.config["MAIL_DIR"])
        if not folder.exists():
            return []
        files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime)
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]

    return read


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def link_in(message) -> str:
    match = re.search(r"https?://\S+", text_of(message))
    assert match, "no link in the e-mail"
    return match.group(0)
