"""A tenant's brand: validate and save the draft, store a logo, publish the draft.

The draft is what the tenant admin edits and previews; only publishing changes what payers,
merchants and e-mails see. Every save and publish is audited with the changed fields.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image, UnidentifiedImageError

from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import TenantBrand
from tenants.provisioning import normalise_email

COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
LOGO_FORMATS = {"PNG", "JPEG", "GIF", "WEBP"}
LOGO_MAX_PIXELS = 2000


def brand(tenant_id: uuid.UUID, stage: str = "published") -> TenantBrand:
    return db.session.execute(
        sa.select(TenantBrand).where(TenantBrand.tenant_id == tenant_id, TenantBrand.stage == stage)
    ).scalar_one()


def clean_values(values: dict[str, Any], themes: Collection[str]) -> dict[str, Any]:
    """Validated brand values, or InvalidInput naming the first bad field."""
    display_name = (values.get("display_name") or "").strip()
    if not display_name:
        raise InvalidInput(gettext("Give the portal a display name."), "display_name")
    if len(display_name) > 120:
        raise InvalidInput(gettext("Use at most 120 characters."), "display_name")
    cleaned: dict[str, Any] = {"display_name": display_name}
    for name in ("primary_color", "accent_color"):
        color = (values.get(name) or "").strip()
        if not COLOR_RE.match(color):
            raise InvalidInput(gettext("%(color)s is not a colour: use the form #1a2b3c.", color=repr(color)), name)
        cleaned[name] = color.lower()
    theme = values.get("theme") or "default"
    if theme not in themes:
        raise InvalidInput(gettext("Unknown theme '%(theme)s'.", theme=theme), "theme")
    cleaned["theme"] = theme
    support = (values.get("support_email") or "").strip()
    cleaned["support_email"] = normalise_email(support, "support_email") if support else None
    return cleaned


def save_draft(
    tenant_id: uuid.UUID, values: dict[str, Any], themes: Collection[str], actor: audit.Actor
) -> TenantBrand:
    """Validate and store the draft brand (the logo is set by `store_logo`). Commits."""
    cleaned = clean_values(values, themes)
    draft = brand(tenant_id, "draft")
    before = draft.values()
    for key, value in cleaned.items():
        setattr(draft, key, value)
    diff = audit.changes(before, draft.values())
    if diff:
        audit.record(tenant_id, actor, "brand.draft_saved", "brand", tenant_id, diff)
    db.session.commit()
    return draft


def store_logo(tenant_id: uuid.UUID, data: bytes, upload_dir: Path, max_bytes: int, actor: audit.Actor) -> str:
    """Validate an uploaded logo by its content, re-encode it as PNG and attach it to the draft.

    Only real PNG/JPEG/GIF/WebP images up to `max_bytes` and 2000 px a side are accepted;
    re-encoding drops anything but pixels. The stored name is derived from the content, never
    from the uploaded file name. Commits.
    """
    if not data:
        raise InvalidInput(gettext("Choose an image file."), "logo")
    if len(data) > max_bytes:
        raise InvalidInput(gettext("The logo is larger than %(size)s KiB.", size=max_bytes // 1024), "logo")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            image_format, size = probe.format, probe.size
            probe.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(
            gettext("That file is not an image we can read: upload a PNG, JPEG, GIF or WebP."), "logo"
        ) from exc
    if image_format not in LOGO_FORMATS:
        raise InvalidInput(gettext("Upload a PNG, JPEG, GIF or WebP image."), "logo")
    if max(size) > LOGO_MAX_PIXELS:
        raise InvalidInput(
            gettext("The logo is larger than %(limit)s pixels on a side.", limit=LOGO_MAX_PIXELS),
            "logo",
        )
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGBA").save(out, format="PNG", optimize=True)
    png = out.getvalue()
    name = hashlib.sha256(png).hexdigest()[:32] + ".png"
    folder = upload_dir / "logos" / str(tenant_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(png)
    draft = brand(tenant_id, "draft")
    before = draft.logo_file
    draft.logo_file = name
    audit.record(
        tenant_id, actor, "brand.logo_uploaded", "brand", tenant_id, {"logo_file": {"before": before, "after": name}}
    )
    db.session.commit()
    return name


def logo_path(upload_dir: Path, tenant_id: uuid.UUID, name: str) -> Path | None:
    """Where a stored logo lives, for names this module produced; None for anything else."""
    if not re.fullmatch(r"[0-9a-f]{32}\.png", name or ""):
        return None
    path = upload_dir / "logos" / str(tenant_id) / name
    return path if path.is_file() else None


def publish(tenant_id: uuid.UUID, actor: audit.Actor) -> dict[str, Any]:
    """Copy the draft brand to the published one; returns the changed fields. Commits."""
    draft = brand(tenant_id, "draft")
    published = brand(tenant_id, "published")
    before = published.values()
    for key, value in draft.values().items():
        setattr(published, key, value)
    diff = audit.changes(before, published.values())
    audit.record(tenant_id, actor, "brand.published", "brand", tenant_id, diff)
    db.session.commit()
    return diff
