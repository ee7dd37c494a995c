"""Imports every package's models so that the metadata (and Alembic) sees all tables."""

import billing.models  # noqa: F401
import clearing.models  # noqa: F401
import core.sweeps  # noqa: F401
import ledger.models  # noqa: F401
import onboarding.models  # noqa: F401
import payments.models  # noqa: F401
import payments.order_models  # noqa: F401
import payments.terminals  # noqa: F401
import payments.webhooks  # noqa: F401
import risk.models  # noqa: F401
import tenants.api_keys  # noqa: F401
import tenants.models  # noqa: F401
