"""Provisioning tenants (platform scope only) and their people: staff, merchants, merchant users."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import available_timezones

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError

from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.errors import InvalidInput
from tenants.isolation import in_platform_scope, tenant_context
from tenants.models import MERCHANT_ROLES, TENANT_ROLES, Merchant, Tenant, TenantBrand, TenantDomain, User

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
RESERVED_SLUGS = frozenset({"www", "admin", "platform", "api", "static", "mail", "app", "console"})


@dataclass(frozen=True)
class ThemeColors:
    primary: str
    accent: str


@dataclass
class TenantSpec:
    name: str
    slug: str
    admin_email: str
    theme: str = "default"
    domains: Sequence[str] = field(default_factory=list)
    time_zone: str = "UTC"
    default_locale: str = "en"


def normalise_email(value: str, field_name: str = "email") -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInput(gettext("%(value)s is not a valid e-mail address.", value=repr(value)), field_name) from exc


def parse_domains(text: str | Sequence[str]) -> list[str]:
    """Split a comma/space/newline separated list into normalised host names."""
    items = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text)
    domains = []
    for item in items:
        name = item.strip().lower().rstrip(".")
        if not name:
            continue
        if not DOMAIN_RE.match(name):
            raise InvalidInput(gettext("%(item)s is not a valid domain name.", item=repr(item)), "domains")
        if name not in domains:
            domains.append(name)
    return domains


def provision_tenant(spec: TenantSpec, actor: audit.Actor, themes: Mapping[str, ThemeColors]) -> tuple[Tenant, User]:
    """Create a tenant with its domains, brand (draft and published) and first admin. Commits.

    The admin has no password yet: the caller sends the invitation link.
    """
    if not in_platform_scope():
        raise PermissionError("provisioning a tenant needs platform scope")
    name = spec.name.strip()
    slug = spec.slug.strip().lower()
    if not name:
        raise InvalidInput(gettext("Give the tenant a name."), "name")
    if not SLUG_RE.match(slug):
        raise InvalidInput(gettext("Use lower-case letters, digits and hyphens (at most 63)."), "slug")
    if slug in RESERVED_SLUGS:
        raise InvalidInput(gettext("'%(slug)s' is reserved; choose another slug.", slug=slug), "slug")
    if spec.theme not in themes:
        raise InvalidInput(gettext("Unknown theme '%(theme)s'.", theme=spec.theme), "theme")
    if spec.time_zone not in available_timezones():
        raise InvalidInput(
            gettext(
                "%(time_zone)s is not a time zone; use a name like Asia/Shanghai or UTC.",
                time_zone=repr(spec.time_zone),
            ),
            "time_zone",
        )
    admin_email = normalise_email(spec.admin_email, "admin_email")
    domains = parse_domains(spec.domains)

    if db.session.execute(sa.select(Tenant.id).where(Tenant.slug == slug)).first():
        raise InvalidInput(gettext("The slug '%(slug)s' is taken.", slug=slug), "slug")
    taken = db.session.execute(sa.select(TenantDomain.domain).where(TenantDomain.domain.in_(domains))).scalars().all()
    if taken:
        raise InvalidInput(gettext("Domain already in use: %(taken)s.", taken=", ".join(sorted(taken))), "domains")

    tenant = Tenant(id=uuid.uuid4(), name=name, slug=slug, time_zone=spec.time_zone, default_locale=spec.default_locale)
    db.session.add(tenant)
    db.session.flush()
    for index, domain in enumerate(domains):
        db.session.add(TenantDomain(tenant_id=tenant.id, domain=domain, is_primary=index == 0))
    colors = themes[spec.theme]
    for stage in ("draft", "published"):
        db.session.add(
            TenantBrand(
                tenant_id=tenant.id,
                stage=stage,
                display_name=name,
                theme=spec.theme,
                primary_color=colors.primary,
                accent_color=colors.accent,
            )
        )
    admin = User(tenant_id=tenant.id, email=admin_email, name="", role="admin")
    db.session.add(admin)
    audit.record(
        tenant.id,
        actor,
        "tenant.provisioned",
        "tenant",
        tenant.id,
        audit.created(name=name, slug=slug, domains=domains, theme=spec.theme, admin_email=admin_email),
    )
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise InvalidInput(gettext("The slug or a domain was taken in the meantime; try again."), "slug") from exc
    return tenant, admin


def set_tenant_status(tenant: Tenant, status: str, actor: audit.Actor) -> None:
    """Suspend or reactivate a tenant. Suspended: its portal shows a notice, nobody signs in. Commits."""
    if not in_platform_scope():
        raise PermissionError("changing a tenant's status needs platform scope")
    if status not in ("active", "suspended"):
        raise InvalidInput(gettext("Unknown status %(status)s.", status=repr(status)), "status")
    if tenant.status == status:
        return
    before = tenant.status
    tenant.status = status
    tenant.suspended_at = datetime.now(UTC) if status == "suspended" else None
    action = "tenant.suspended" if status == "suspended" else "tenant.reactivated"
    audit.record(tenant.id, actor, action, "tenant", tenant.id, {"status": {"before": before, "after": status}})
    db.session.commit()


TENANT_LOCALES = ("en", "zh")


def set_tenant_preferences(tenant: Tenant, default_locale: str, time_zone: str, actor: audit.Actor) -> bool:
    """The tenant's default language and time zone, set by its admin. Audited. Commits.

    Only these two columns are a tenant's to change (the `tenants` row's policy and trigger,
    migration 0023). Returns whether anything changed.
    """
    if default_locale not in TENANT_LOCALES:
        raise InvalidInput(gettext("Choose English or Chinese."), "default_locale")
    if time_zone not in available_timezones():
        raise InvalidInput(
            gettext("%(zone)s is not a time zone; use a name like Asia/Shanghai or UTC.", zone=repr(time_zone)),
            "time_zone",
        )
    before = {"default_locale": tenant.default_locale, "time_zone": tenant.time_zone}
    after = {"default_locale": default_locale, "time_zone": time_zone}
    diff = audit.changes(before, after)
    if not diff:
        return False
    tenant.default_locale = default_locale
    tenant.time_zone = time_zone
    audit.record(tenant.id, actor, "tenant.preferences_changed", "tenant", tenant.id, diff)
    db.session.commit()
    return True


def invite_user(
    tenant_id: uuid.UUID,
    email: str,
    role: str,
    actor: audit.Actor,
    merchant_id: uuid.UUID | None = None,
    name: str = "",
) -> User:
    """Add a user without a password to a tenant (staff) or to one of its merchants. Commits.

    The caller sends the invitation link; until it is used the user cannot sign in.
    """
    allowed = MERCHANT_ROLES if merchant_id else TENANT_ROLES
    if role not in allowed:
        raise InvalidInput(gettext("Choose a role among: %(allowed)s.", allowed=", ".join(allowed)), "role")
    email = normalise_email(email)
    with tenant_context(db.session, tenant_id):
        exists = db.session.execute(sa.select(User.id).where(User.tenant_id == tenant_id, User.email == email)).first()
        if exists:
            raise InvalidInput(gettext("%(email)s already has an account here.", email=email), "email")
        user = User(tenant_id=tenant_id, email=email, name=name.strip(), role=role, merchant_id=merchant_id)
        db.session.add(user)
        db.session.flush()
        audit.record(
            tenant_id,
            actor,
            "user.invited",
            "user",
            user.id,
            audit.created(email=email, role=role, merchant_id=str(merchant_id) if merchant_id else None),
        )
        try:
            db.session.commit()
        except IntegrityError as exc:
            db.session.rollback()
            raise InvalidInput(gettext("%(email)s already has an account here.", email=email), "email") from exc
    return user


def create_merchant(tenant_id: uuid.UUID, name: str, owner_email: str, actor: audit.Actor) -> tuple[Merchant, User]:
    """Create a merchant under a tenant with its owner (invited, no password yet). Commits.

    Tenant staff vouch for a merchant they create, so it starts approved (no KYC review); a
    merchant that signs up itself starts as a draft (`onboarding.signup`)."""
    name = name.strip()
    if not name:
        raise InvalidInput(gettext("Give the merchant a name."), "name")
    owner_email = normalise_email(owner_email, "owner_email")
    with tenant_context(db.session, tenant_id):
        if db.session.execute(sa.select(User.id).where(User.tenant_id == tenant_id, User.email == owner_email)).first():
            raise InvalidInput(
                gettext("%(owner_email)s already has an account here.", owner_email=owner_email), "owner_email"
            )
        merchant = Merchant(tenant_id=tenant_id, id=uuid.uuid4(), name=name, onboarding_status="approved")
        db.session.add(merchant)
        db.session.flush()
        owner = User(tenant_id=tenant_id, email=owner_email, role="owner", merchant_id=merchant.id)
        db.session.add(owner)
        db.session.flush()
        audit.record(
            tenant_id,
            actor,
            "merchant.created",
            "merchant",
            merchant.id,
            audit.created(name=name, owner_email=owner_email),
        )
        db.session.commit()
    return merchant, owner


def set_user_active(user: User, active: bool, actor: audit.Actor) -> bool:
    """Enable or disable a user's sign-in; returns whether anything changed. Commits.

    Nobody disables their own account, so a tenant cannot lock out its last admin by mistake.
    """
    if actor.id == user.id and not active:
        raise InvalidInput(gettext("You cannot disable your own account."), "active")
    if user.is_active == active:
        return False
    audit.record(
        user.tenant_id,
        actor,
        "user.enabled" if active else "user.disabled",
        "user",
        user.id,
        {"is_active": {"before": user.is_active, "after": active}},
    )
    user.is_active = active
    db.session.commit()
    return True
