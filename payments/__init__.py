"""The shared payment core: products, routing, channel adapters, intents, refunds, webhooks.

Built by the payment-core issue; depends on billing, ledger and tenants, never on portal.
"""
