"""The one SQLAlchemy handle of the platform.

Every package's models derive from `db.Model`; the naming convention keeps constraint names
stable so that Alembic's autogenerate compares cleanly against the migrations.
"""

import time

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Use cases commit inside a tenant context and hand objects back to callers outside it;
# expiring on commit would make those objects reload (and vanish) under another context.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a round trip only when it was idle for `idle_seconds` or
    more (a server restart or a dropped link shows there), instead of on every checkout as
    `pool_pre_ping` does: a busy pool skips the extra `SELECT 1` that would otherwise come
    with each of a payment's two transactions. A dead connection is replaced transparently."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:  # noqa: ARG001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:  # noqa: ARG001
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            # End the transaction the ping opened: the connection is handed out idle, so that
            # a caller may still choose its isolation level (`flask ledger check`, `audit verify`).
            dbapi_connection.rollback()
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(f"pooled connection unusable: {error}") from error
