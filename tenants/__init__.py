"""Tenancy: tenants, domains, brand, users and roles, host resolution, isolation, provisioning.

Knows nothing of payments and never imports `portal` or `flask.request`.
"""
