"""Command line: `flask tenants ...`, `flask platform ...`, `flask ledger check`, `flask demo load`, `flask worker`,
`flask keys generate|rotate`, `flask db backup|restore`."""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

import ledger
from core.db import db
from portal import invitations, jobs, theming
from tenants import accounts, provisioning
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope
from tenants.models import Tenant

tenants_cli = AppGroup("tenants", help="Provision and list tenants.")
platform_cli = AppGroup("platform", help="Platform administrators.")
demo_cli = AppGroup("demo", help="Demo data for development.")
ledger_cli = AppGroup("ledger", help="The double-entry ledger.")


def _theme_colors():
    return {name: theme.colors for name, theme in theming.themes().items()}


@tenants_cli.command("create")
@click.option("--name", required=True, help="Display name, e.g. 'Acme Payments'.")
@click.option("--slug", required=True, help="Lower-case id; the portal is at <slug>.<platform domain>.")
@click.option("--domain", "domains", multiple=True, help="A custom domain (repeatable); the first is primary.")
@click.option("--theme", default="default", show_default=True, help="Theme folder name.")
@click.option("--admin-email", required=True, help="The tenant admin, who receives an invitation.")
@click.option("--time-zone", default="UTC", show_default=True)
def create_tenant(name, slug, domains, theme, admin_email, time_zone):
    """Provision a tenant and e-mail its admin an invitation link."""
    spec = provisioning.TenantSpec(
        name=name, slug=slug, admin_email=admin_email, theme=theme, domains=list(domains), time_zone=time_zone
    )
    with platform_scope(db.session):
        try:
            tenant, admin = provisioning.provision_tenant(spec, Actor.system(), _theme_colors())
        except InvalidInput as exc:
            raise click.ClickException(f"{exc.field}: {exc.message}" if exc.field else exc.message) from exc
        link = invitations.send_invitation(tenant, admin)
    click.echo(f"created tenant {tenant.slug} ({tenant.id})")
    click.echo(f"invitation for {admin.email}: {link}")


@tenants_cli.command("list")
def list_tenants():
    """List every tenant with its status and hosts."""
    with platform_scope(db.session):
        rows = db.session.execute(sa.select(Tenant).order_by(Tenant.slug)).scalars().all()
        click.echo(f"{'slug':<20} {'status':<10} {'name':<30} domains")
        for tenant in rows:
            domains = ", ".join(d.domain for d in tenant.domains) or "-"
            click.echo(f"{tenant.slug:<20} {tenant.status:<10} {tenant.name:<30} {domains}")


def _set_status(slug: str, status: str) -> None:
    with platform_scope(db.session):
        tenant = db.session.execute(sa.select(Tenant).where(Tenant.slug == slug)).scalar_one_or_none()
        if tenant is None:
            raise click.ClickException(f"no tenant with slug {slug!r}; see `flask tenants list`")
        provisioning.set_tenant_status(tenant, status, Actor.system())
    click.echo(f"{slug}: {status}")


@tenants_cli.command("suspend")
@click.argument("slug")
def suspend_tenant(slug):
    """Suspend a tenant: its portal shows a notice and nobody can sign in."""
    _set_status(slug, "suspended")


@tenants_cli.command("reactivate")
@click.argument("slug")
def reactivate_tenant(slug):
    """Reactivate a suspended tenant."""
    _set_status(slug, "active")


@platform_cli.command("create-admin")
@click.option("--email", required=True)
@click.password_option()
def create_admin(email, password):
    """Create a platform admin, or set the password of an existing one."""
    user = accounts.create_platform_admin(email, password)
    click.echo(f"platform admin {user.email} ready")


@ledger_cli.command("check")
def check_ledger():
    """Check every tenant's books: entries balance, cached balances equal their lines."""
    # One snapshot for all the queries, so postings committed meanwhile cannot skew the counts.
    if not db.session().in_transaction():
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    with platform_scope(db.session):
        problems = ledger.check(db.session)
        entries, accounts_ = ledger.counts(db.session)
    db.session.rollback()
    if problems:
        for problem in problems:
            click.echo(str(problem))
        click.echo(f"ledger: {len(problems)} problem(s) ({entries} entries, {accounts_} accounts)")
        raise SystemExit(1)
    click.echo(f"ledger: ok ({entries} entries, {accounts_} accounts)")


@demo_cli.command("load")
def load_demo():
    """Load the demo data (idempotent) and print the addresses and logins."""
    from portal import demo

    demo.load()
    demo.print_logins()


@click.command("worker")
@click.option("--queue", "queues", multiple=True, help="Queues to work (default: all).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--with-scheduler/--without-scheduler", default=True, show_default=True)
def worker(queues, burst, with_scheduler):
    """Run an RQ worker inside the app context."""
    names = queues or jobs.QUEUES
    # The sweep chains start with the first worker, not with the first payment, and every worker that
    # is not a burst keeps them scheduled (`AppWorker`).
    w = jobs.AppWorker(
        [jobs.queue(name) for name in names],
        connection=jobs.redis_connection(),
        job_class=jobs.AppJob,
        keeps_sweeps=not burst,
    )
    current_app.logger.info("worker on queues %s", ", ".join(names))
    w.work(burst=burst, with_scheduler=with_scheduler)


# --- audit log (`flask audit verify`) --------------------------------------------------------

audit_cli = AppGroup("audit", help="The tamper-evident audit log.")


@audit_cli.command("verify")
def verify_audit():
    """Walk every tenant's audit chain; name each edited or deleted record (exit 1 if any)."""
    from tenants import audit

    report = audit.verify(db.session)
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


# --- end of the audit log's commands ---------------------------------------------------------


# --- operations: encryption keys, backups (docs/OPERATIONS.md) --------------------------------

keys_cli = AppGroup("keys", help="The encryption keys of secrets at rest (PAYPLAT_ENCRYPTION_KEYS).")


@keys_cli.command("generate")
def generate_key():
    """Print a new encryption key (to put first in PAYPLAT_ENCRYPTION_KEYS)."""
    from core import crypto

    click.echo(crypto.generate_key())


@keys_cli.command("rotate")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1), help="Rows per transaction.")
def rotate_keys(batch_size):
    """Re-encrypt every stored secret under the newest key (the first of PAYPLAT_ENCRYPTION_KEYS).

    Runs beside the app: each batch is its own short transaction, and values already under the
    newest key are skipped, so it can be interrupted and run again."""
    from core import crypto
    from onboarding import documents

    def progress(report: crypto.RotationReport) -> None:
        click.echo(f"  {report.name}: {report.rows} read, {report.rotated} re-encrypted so far")

    keys = len(current_app.config["ENCRYPTION_KEYS"])
    click.echo(f"keys: re-encrypting under the newest of {keys} key(s), {batch_size} rows per batch")
    with platform_scope(db.session):
        reports = crypto.rotate(db.session, batch_size=batch_size, progress=progress)
        upload_dir = Path(current_app.config["UPLOAD_DIR"])
        reports.append(documents.reencrypt_files(db.session, upload_dir, batch_size=batch_size, progress=progress))
    db.session.remove()
    click.echo("keys: summary")
    for report in reports:
        click.echo(f"  {report.summary()}")
    failed = [(report, key) for report in reports for key in report.failed]
    if failed:
        for report, key in failed:
            click.echo(f"cannot decrypt {report.name} in row {key}: its key is not in PAYPLAT_ENCRYPTION_KEYS")
        click.echo(f"keys: {len(failed)} value(s) cannot be decrypted; keep every old key until they are fixed")
        raise SystemExit(1)
    total = sum(report.rotated for report in reports)
    click.echo(f"keys: ok, {total} value(s) re-encrypted; every secret is under the newest key")


def _owner_database():
    from portal import operations

    return operations.Database.from_url(current_app.config["DATABASE_URL"])


@click.command("backup")
@with_appcontext
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def backup_database(path):
    """Back up the app database (pg_dump -Fc) to PATH (default: instance/backups/<db>-<time>.dump)."""
    from portal import operations

    database = _owner_database()
    path = path or operations.default_path(Path(current_app.config["INSTANCE_DIR"]) / "backups", database.name)
    try:
        size = operations.backup(database, path)
    except operations.OperationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backup: wrote {path} ({operations.human_size(size)}) of {database.label}")


@click.command("restore")
@with_appcontext
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore_database(path, yes):
    """Replace the app database's contents with the backup at PATH (all or nothing)."""
    from portal import operations

    database = _owner_database()
    try:
        program = operations.check_archive(database, path)
        if not yes:
            click.confirm(
                f"Replace every table of {database.label} with the backup {path}? Data written since is lost",
                abort=True,
            )
        db.session.remove()
        db.engine.dispose()  # the app's own idle connections must not hold the tables being replaced
        operations.restore(database, path, program)
    except operations.OperationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restore: {database.label} now holds the backup {path} ({operations.human_size(path.stat().st_size)})")


def init_app(app: Flask) -> None:
    from flask_migrate.cli import db as db_cli  # Flask-Migrate's `flask db` group

    for command in (tenants_cli, platform_cli, ledger_cli, demo_cli, worker, audit_cli, keys_cli):
        app.cli.add_command(command)
    db_cli.add_command(backup_database)
    db_cli.add_command(restore_database)
