"""The one SQLAlchemy handle of the platform.

Every package's models derive from `db.Model`; the naming convention keeps constraint names
stable so that Alembic's autogenerate compares cleanly against the migrations.
"""

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
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
