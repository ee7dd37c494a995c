"""Which site a request's host name belongs to: the platform console, a tenant, or nothing.

A tenant is reached on one of its domains (`tenant_domains`) or on `<slug>.<platform domain>`.
The look-up is the SQL function `tenant_site_for_host()` (over `tenant_for_host()`), which alone
may read across tenants to answer it, with the tenant's status; an unknown host resolves to
nothing, and the portal answers 404 (fail closed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tenants import isolation


@dataclass(frozen=True)
class Site:
    kind: str  # "platform" | "tenant" | "unknown"
    tenant_id: uuid.UUID | None = None
    tenant_status: str | None = None  # the tenant's status ("active", "suspended") when it is one

    @property
    def is_platform(self) -> bool:
        return self.kind == "platform"

    @property
    def is_tenant(self) -> bool:
        return self.kind == "tenant"


def normalise(host: str) -> str:
    """`Acme.Example.com.:8080` -> `acme.example.com`; IPv6 literals keep their brackets."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0].rstrip(".")


def resolve(session: Session, host: str, platform_host: str, platform_domain: str) -> Site:
    """The site of `host`; for a tenant's host, that tenant is also made the current tenant
    (`isolation.activate_tenant_of`: the look-up and the RLS setting in one statement)."""
    name = normalise(host)
    if not name:
        return Site("unknown")
    if name == normalise(platform_host):
        return Site("platform")
    found = isolation.activate_tenant_of(
        session,
        "SELECT tenant_id, status FROM tenant_site_for_host(:host, :domain)",
        {"host": name, "domain": normalise(platform_domain)},
    )
    if found is None:
        return Site("unknown")
    return Site("tenant", found.tenant_id, found.status)
