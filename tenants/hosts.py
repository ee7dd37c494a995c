"""Which site a request's host name belongs to: the platform console, a tenant, or nothing.

A tenant is reached on one of its domains (`tenant_domains`) or on `<slug>.<platform domain>`.
The look-up is the SQL function `tenant_for_host()`, which alone may read across tenants to
answer it; an unknown host resolves to nothing, and the portal answers 404 (fail closed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Site:
    kind: str  # "platform" | "tenant" | "unknown"
    tenant_id: uuid.UUID | None = None

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
    name = normalise(host)
    if not name:
        return Site("unknown")
    if name == normalise(platform_host):
        return Site("platform")
    tenant_id = session.execute(
        sa.text("SELECT tenant_for_host(:host, :domain)"),
        {"host": name, "domain": normalise(platform_domain)},
    ).scalar()
    if tenant_id is None:
        return Site("unknown")
    return Site("tenant", tenant_id)
