"""Double-entry accounts, journal entries and balances; knows nothing of payments.

Built by the payment-core issue.
"""
