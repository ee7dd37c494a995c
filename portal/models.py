"""Imports every package's models so that the metadata (and Alembic) sees all tables."""

import tenants.models  # noqa: F401
