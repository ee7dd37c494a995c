"""Merchant onboarding: sign-up with e-mail verification, the business profile, KYC documents,
submission and the tenant's review (approve, reject, request changes).

Sits above clearing (the payout bank account) and billing (the fee schedule set at approval):
`portal → onboarding → clearing → payments → billing → tenants`. Never imports `portal` or
`flask.request`; use cases own their transaction.
"""
