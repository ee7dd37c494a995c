"""Risk and AML monitoring: a tenant's rules, the screening of each payment, alerts and the review
of held payments. Sits above payments (`clearing → risk → payments`); importing it installs the
screening into `payments.intents.screen`."""

from risk import screening  # noqa: F401
