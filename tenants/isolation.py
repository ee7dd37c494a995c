"""Tenant isolation: which tenant the current unit of work belongs to, enforced twice.

1. PostgreSQL row-level security is the backstop. Every transaction starts with
   `set_config('app.tenant_id', <id>, true)` (transaction-local, so a pooled connection never
   carries it into the next request); the policies created by the migrations compare each
   row's `tenant_id` with it, and an unset tenant matches nothing.
2. The ORM adds `tenant_id = <current>` to every query on a tenant-owned model
   (`do_orm_execute` + `with_loader_criteria`), so a forgotten filter is caught before SQL.

Code that must see across tenants (the platform console, provisioning, schedulers that loop
over tenants) uses `platform_scope()`, the one named way out; it sets `app.scope = 'platform'`,
which the policies accept in place of a tenant.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, scoped_session, with_loader_criteria

PLATFORM = "platform"

_tenant_id: ContextVar[uuid.UUID | None] = ContextVar("tenant_id", default=None)
_scope: ContextVar[str] = ContextVar("scope", default="")


class TenantOwned:
    """Mixin for every tenant-owned model: brings `tenant_id`, which leads the primary key."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True, sort_order=-10
    )


def current_tenant_id() -> uuid.UUID | None:
    return _tenant_id.get()


def in_platform_scope() -> bool:
    return _scope.get() == PLATFORM


def _apply_settings(session: Session) -> None:
    """Write the current context into the open transaction of `session`, if there is one."""
    if isinstance(session, scoped_session):
        session = session()
    if session.in_transaction():
        _set_config(session.connection())


def _set_config(connection) -> None:
    tenant = _tenant_id.get()
    connection.exec_driver_sql(
        "SELECT set_config('app.tenant_id', %s, true), set_config('app.scope', %s, true)",
        (str(tenant) if tenant else "", _scope.get()),
    )


def activate_tenant(session: Session, tenant_id: uuid.UUID | None) -> None:
    """Make `tenant_id` the tenant of this context (a request, a job, a CLI command)."""
    _switch(session, tenant_id, "")


def activate_tenant_of(session: Session, tenant_sql: str, params: dict) -> sa.Row | None:
    """Run `tenant_sql` (a SELECT of at most one row whose first column is a tenant id) and make
    that tenant the tenant of this context, writing the setting in the same statement: one round
    trip where a look-up and `activate_tenant` take two. Returns the row (None, and the context
    stays empty, when it found nothing)."""
    row = session.execute(
        sa.text(
            "SELECT found.*, set_config('app.tenant_id', coalesce(found.tenant_id::text, ''), true) AS _tenant,"
            f" set_config('app.scope', '', true) AS _scope FROM ({tenant_sql}) AS found"
        ),
        params,
    ).first()
    tenant = row.tenant_id if row is not None else None
    _tenant_id.set(tenant)
    _scope.set("")
    return row if tenant is not None else None


def _switch(session: Session, tenant_id: uuid.UUID | None, scope: str) -> tuple:
    """Set the context, writing it into the open transaction only when it changes. Returns the
    tokens that restore the previous context."""
    changed = _tenant_id.get() != tenant_id or _scope.get() != scope
    tokens = (_tenant_id.set(tenant_id), _scope.set(scope))
    if changed:
        _apply_settings(session)
    return tokens


def _restore(session: Session, tokens: tuple) -> None:
    before = (_tenant_id.get(), _scope.get())
    _tenant_id.reset(tokens[0])
    _scope.reset(tokens[1])
    if (_tenant_id.get(), _scope.get()) != before:
        _apply_settings(session)


def reset(session: Session | None = None) -> None:
    """Forget the tenant and scope; used at the start and end of each request and job."""
    _tenant_id.set(None)
    _scope.set("")
    if session is not None:
        _apply_settings(session)


@contextlib.contextmanager
def platform_scope(session: Session) -> Iterator[None]:
    """The named cross-tenant path: sees every tenant's rows while the block runs.

    Used only by the platform console, provisioning and tenant-looping schedulers.
    """
    tokens = _switch(session, None, PLATFORM)
    try:
        yield
    finally:
        _restore(session, tokens)


@contextlib.contextmanager
def tenant_context(session: Session, tenant_id: uuid.UUID) -> Iterator[None]:
    """Run a block as `tenant_id` and restore the previous context afterwards."""
    tokens = _switch(session, tenant_id, "")
    try:
        yield
    finally:
        _restore(session, tokens)


def install(session_class: type[Session]) -> None:
    """Hook the isolation into every session of `session_class` (called once at start-up)."""
    if getattr(session_class, "_tenant_isolation_installed", False):
        return
    session_class._tenant_isolation_installed = True  # type: ignore[attr-defined]

    @event.listens_for(session_class, "after_begin")
    def _after_begin(session, transaction, connection):  # noqa: ARG001
        # A new transaction starts with neither setting (a transaction-local value never outlives
        # its transaction), which is what an empty context means: nothing to write then.
        if _tenant_id.get() is not None or _scope.get():
            _set_config(connection)

    @event.listens_for(session_class, "do_orm_execute")
    def _add_tenant_filter(state: ORMExecuteState):
        if not (state.is_select or state.is_update or state.is_delete):
            return
        if state.execution_options.get("skip_tenant_filter") or in_platform_scope():
            return
        # With no tenant, RLS already returns nothing; the ORM filter adds a clear intent.
        state.statement = state.statement.options(_tenant_criteria(_tenant_id.get()))


@functools.lru_cache(maxsize=1024)
def _tenant_criteria(tenant: uuid.UUID | None):
    """The ORM's tenant filter for one tenant, built once per tenant (building it analyses the
    lambda, a cost every query would otherwise pay)."""
    return with_loader_criteria(TenantOwned, lambda cls: cls.tenant_id == tenant, include_aliases=True)


def activate_platform_scope(session: Session) -> None:
    """Enter platform scope for the rest of this request (the platform host's requests only)."""
    _tenant_id.set(None)
    _scope.set(PLATFORM)
    _apply_settings(session)
